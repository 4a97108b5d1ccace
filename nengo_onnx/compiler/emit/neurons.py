"""Emitters for ``SimNeurons``: a second-level registry per neuron type.

A neuron emitter is ``fn(neurons, ctx, J, state) -> (output, new_state)``, where
``J`` and the values in ``state`` are ONNX values shaped ``[B, n]`` (the state
of the neuron type, e.g. ``voltage``), and ``new_state`` maps the state names to
their next values (state left out of it keeps its value). Lookup walks the
neuron type's MRO.

Training graphs (``ctx.training``) use the *training emitters* where a type has
one: spiking types are replaced by their rate counterparts, as NengoDL does
(``LIF -> LIFRate``, ``RegularSpiking(x) -> x`` ...). Nengo builds a
``RatesToSpikesNeuronType`` (``RegularSpiking(x)`` ...) as two ``SimNeurons``:
``x`` from the current to ``rate_out``, then the conversion from ``rate_out`` to
spikes; only the second is emitted here as the spiking type, so in training it
becomes ``amplitude * rate_out``.
"""

import numpy as np
from nengo import neurons as nn
from nengo.builder.neurons import SimNeurons
from scipy.special import gammaln

from nengo_onnx.compiler.emit.registry import emitter
from nengo_onnx.compiler.emit.surrogates import (
    lif_rate as lif_rate_op,
)
from nengo_onnx.compiler.emit.surrogates import (
    lif_smoothing,
    spiking,
    spiking_gradient,
)
from nengo_onnx.neurons import SoftLIFRate

NEURON_EMITTERS = {}
TRAINING_EMITTERS = {}

#: Poisson samples: inverse-CDF over counts ``0 .. POISSON_K - 1`` while the mean
#: is below ``POISSON_NORMAL``; above it, a rounded normal (tail mass is < 1e-8).
POISSON_K = 48
POISSON_NORMAL = 20.0


def neuron_emitter(*neuron_types, training=False):
    """Register ``fn(neurons, ctx, J, state)`` for ``neuron_types``.

    With ``training=True``, ``fn`` is the form used in training graphs.
    """
    registry = TRAINING_EMITTERS if training else NEURON_EMITTERS

    def register(fn):
        for neuron_type in neuron_types:
            registry[neuron_type] = fn
        return fn

    return register


def find_neuron_emitter(neuron_type, training=False):
    """The emitter of the most specific class of ``neuron_type`` that has one.

    In training, training emitters come first (over the whole MRO): a subclass
    of ``LIF`` with an emitter of its own still trains as ``LIF`` does.
    """
    registries = [TRAINING_EMITTERS, NEURON_EMITTERS] if training else [NEURON_EMITTERS]
    for registry in registries:
        for cls in type(neuron_type).__mro__:
            if cls in registry:
                return registry[cls]
    return None


def _supports(op):
    if find_neuron_emitter(op.neurons) is None:
        return f"no ONNX form for neuron type {type(op.neurons).__name__}"
    return None


@emitter(SimNeurons, supports=_supports)
def emit_sim_neurons(op, ctx):
    """Implements ``output, state = neurons.step(dt, J, **state)``."""
    fn = find_neuron_emitter(op.neurons, training=ctx.training)
    J = ctx.read_batched(op.J)
    state = {name: ctx.read_batched(sig) for name, sig in op.state.items()}
    output, new_state = fn(op.neurons, ctx, J, state)
    ctx.set(op.output, output)
    for name, value in new_state.items():
        ctx.set(op.state[name], value)


# -- helpers ------------------------------------------------------------------------------


def _param(ctx, value):
    """A neuron parameter (scalar or per-neuron array) as a constant."""
    return ctx.const(np.asarray(value, dtype=ctx.dtype))


def _mul(ctx, a, b):
    return ctx.node("Mul", [a, b])


def _add(ctx, a, b):
    return ctx.node("Add", [a, b])


def _sub(ctx, a, b):
    return ctx.node("Sub", [a, b])


def _random_key(ctx):
    """A step-input key for this operator's uniform random numbers."""
    out = ctx.op.output
    suffix = f".{out.elemoffset}" if out.is_view else ""
    return f"rand.{ctx.signals.name(out.base)}{suffix}"


# -- rate neurons -------------------------------------------------------------------------


@neuron_emitter(nn.RectifiedLinear)
def emit_rectified_linear(neurons, ctx, J, state):
    """Implements ``output = amplitude * max(J, 0)``."""
    return _mul(ctx, ctx.node("Relu", [J]), _param(ctx, neurons.amplitude)), {}


@neuron_emitter(nn.Sigmoid)
def emit_sigmoid(neurons, ctx, J, state):
    """Implements ``output = (1 / tau_ref) / (1 + exp(-J))``."""
    inv_tau_ref = 1.0 / np.asarray(neurons.tau_ref, dtype=np.float64)
    return _mul(ctx, ctx.node("Sigmoid", [J]), _param(ctx, inv_tau_ref)), {}


@neuron_emitter(nn.Tanh)
def emit_tanh(neurons, ctx, J, state):
    """Implements ``output = (1 / tau_ref) * tanh(J)``."""
    inv_tau_ref = 1.0 / np.asarray(neurons.tau_ref, dtype=np.float64)
    return _mul(ctx, ctx.node("Tanh", [J]), _param(ctx, inv_tau_ref)), {}


@neuron_emitter(nn.LIFRate)
def emit_lif_rate(neurons, ctx, J, state):
    """Implements ``amplitude / (tau_ref + tau_rc * log1p(1 / (J - 1)))`` where ``J > 1``,
    else 0."""
    return _mul(ctx, lif_rate(ctx, neurons, J), _param(ctx, neurons.amplitude)), {}


def lif_rate(ctx, neurons, J):
    """The LIF rate of ``J`` (without amplitude), written so no branch gives inf or NaN.

    ``Where`` passes gradients through the unselected branch too, so the
    argument of the log is clamped first.
    """
    j = _sub(ctx, J, ctx.scalar(1.0))
    positive = ctx.node("Greater", [j, ctx.scalar(0.0)])
    safe = ctx.node("Where", [positive, j, ctx.scalar(1.0)])
    log = ctx.node("Log", [_add(ctx, ctx.scalar(1.0), ctx.node("Reciprocal", [safe]))])
    denom = _add(ctx, _param(ctx, neurons.tau_ref), _mul(ctx, _param(ctx, neurons.tau_rc), log))
    rate = ctx.node("Reciprocal", [denom])
    return ctx.node("Where", [positive, rate, ctx.scalar(0.0)])


def soft_lif_rate(ctx, neurons, J, sigma):
    """SoftLIF (Hunsberger & Eliasmith 2015; NengoDL's form) of ``J``, without amplitude.

    Implements ``1 / (tau_ref + tau_rc * log1p(1 / z))`` with
    ``z = sigma * log(1 + exp((J - 1) / sigma))``. The softplus is written as
    ``relu(x) + log1p(exp(-|x|))`` so it never overflows, and where
    ``x < -20`` (``z`` underflows), ``log1p(1 / z)`` is replaced by its limit
    ``-x - log(sigma)``; the other branch is then fed a safe ``x = 0``.
    """
    x = ctx.node("Div", [_sub(ctx, J, ctx.scalar(1.0)), ctx.scalar(sigma)])
    valid = ctx.node("Greater", [x, ctx.scalar(-20.0)])
    x_safe = ctx.node("Where", [valid, x, ctx.scalar(0.0)])
    # log1p: with log(1 + e), z (and the gradient's sigmoid(x) / z) is off by up to
    # 20 % for x in (-20, -10) in float32
    tail = _log1p(ctx, ctx.node("Exp", [ctx.node("Neg", [ctx.node("Abs", [x_safe])])]))
    z = _mul(ctx, _add(ctx, ctx.node("Relu", [x_safe]), tail), ctx.scalar(sigma))
    q_valid = ctx.node("Log", [_add(ctx, ctx.scalar(1.0), ctx.node("Reciprocal", [z]))])
    q_limit = _sub(ctx, ctx.node("Neg", [x]), ctx.scalar(np.log(sigma)))
    q = ctx.node("Where", [valid, q_valid, q_limit])
    denom = _add(ctx, _param(ctx, neurons.tau_ref), _mul(ctx, _param(ctx, neurons.tau_rc), q))
    return ctx.node("Reciprocal", [denom])


@neuron_emitter(SoftLIFRate)
def emit_soft_lif_rate(neurons, ctx, J, state):
    """Implements NengoDL's ``SoftLIFRate``: ``amplitude * softlif(J, sigma)`` (see
    `soft_lif_rate`); in training graphs too (it is differentiable everywhere)."""
    rate = soft_lif_rate(ctx, neurons, J, neurons.sigma)
    return _mul(ctx, rate, _param(ctx, neurons.amplitude)), {}


@neuron_emitter(nn.AdaptiveLIFRate)
def emit_adaptive_lif_rate(neurons, ctx, J, state):
    """Implements ``output = LIFRate(J - n)``, ``n += (dt / tau_n) * (inc_n * output - n)``."""
    n = state["adaptation"]
    output, _ = emit_lif_rate(neurons, ctx, _sub(ctx, J, n), {})
    return output, {"adaptation": _adapt(ctx, neurons, n, output)}


def _adapt(ctx, neurons, n, output):
    """``n + (dt / tau_n) * (inc_n * output - n)``."""
    rate = _param(ctx, ctx.dt / np.asarray(neurons.tau_n, dtype=np.float64))
    drive = _sub(ctx, _mul(ctx, _param(ctx, neurons.inc_n), output), n)
    return _add(ctx, n, _mul(ctx, rate, drive))


# -- spiking neurons ----------------------------------------------------------------------


@neuron_emitter(nn.SpikingRectifiedLinear)
def emit_spiking_rectified_linear(neurons, ctx, J, state):
    """Implements ``v += max(J, 0) * dt``, ``output = (amplitude / dt) * floor(v)``,
    ``v -= floor(v)``."""
    v = _add(ctx, state["voltage"], _mul(ctx, ctx.node("Relu", [J]), ctx.scalar(ctx.dt)))
    return _integrate_and_fire(ctx, neurons, v)


def _integrate_and_fire(ctx, neurons, v):
    n_spikes = ctx.node("Floor", [v])
    output = _mul(ctx, _param(ctx, neurons.amplitude / ctx.dt), n_spikes)
    return output, {"voltage": _sub(ctx, v, n_spikes)}


@neuron_emitter(nn.LIF)
def emit_lif(neurons, ctx, J, state):
    """Nengo's LIF step: exact voltage decay, spike-time refractory period.

    Implements ``ref -= dt``, ``v -= (J - v) * expm1(-clip(dt - ref, 0, dt) / tau_rc)``;
    where ``v > 1``: ``output = amplitude / dt``, ``v = 0`` and
    ``ref = tau_ref + dt + tau_rc * log1p((1 - v) / (J - 1))``; ``v >= min_voltage``.

    Written with few nodes, since every node costs a kernel launch per step: the
    decay of a full step is a constant (``expm1`` in float64), so only neurons
    leaving their refractory period mid-step compute one; the spike time is only
    used where a neuron spiked, and ``J - 1`` is floored so other neurons never
    produce inf or NaN there.
    """
    dt = ctx.dt
    zero = ctx.scalar(0.0)
    v, ref = state["voltage"], state["refractory_time"]
    tau_rc = np.asarray(neurons.tau_rc, dtype=np.float64)
    ref = _sub(ctx, ref, ctx.scalar(dt))
    partial = ctx.node("Greater", [ref, zero])
    delta_t = ctx.node("Clip", [_sub(ctx, ctx.scalar(dt), ref), zero, ctx.scalar(dt)])
    partial_decay = _sub(
        ctx, ctx.node("Exp", [_mul(ctx, delta_t, _param(ctx, -1 / tau_rc))]), ctx.scalar(1.0)
    )
    decay = ctx.node("Where", [partial, partial_decay, _param(ctx, np.expm1(-dt / tau_rc))])
    v = _sub(ctx, v, _mul(ctx, _sub(ctx, J, v), decay))
    spiked = ctx.node("Greater", [v, ctx.scalar(1.0)])
    output = ctx.node("Where", [spiked, _param(ctx, neurons.amplitude / dt), zero])
    j_minus_1 = ctx.node("Max", [_sub(ctx, J, ctx.scalar(1.0)), ctx.scalar(1e-6)])
    frac = ctx.node("Div", [_sub(ctx, ctx.scalar(1.0), v), j_minus_1])
    log1p = ctx.node("Log", [_add(ctx, ctx.scalar(1.0), frac)])
    spike_ref = _add(
        ctx, _mul(ctx, log1p, _param(ctx, tau_rc)), _param(ctx, np.asarray(neurons.tau_ref) + dt)
    )
    ref = ctx.node("Where", [spiked, spike_ref, ref])
    v = ctx.node("Where", [spiked, zero, ctx.node("Max", [v, _param(ctx, neurons.min_voltage)])])
    return output, {"voltage": v, "refractory_time": ref}


def _expm1(ctx, x):
    """``expm1(x)`` accurate near 0 (Kahan: ``(u - 1) * x / log(u)``, ``u = exp(x)``).

    ``exp(x) - 1`` alone loses about ``eps / |x|`` relative precision, enough to
    move float32 spike times by a step now and then.
    """
    u = ctx.node("Exp", [x])
    um1 = _sub(ctx, u, ctx.scalar(1.0))
    exact = ctx.node("Equal", [u, ctx.scalar(1.0)])
    log_u = ctx.node("Where", [exact, ctx.scalar(1.0), ctx.node("Log", [u])])
    return ctx.node("Where", [exact, x, ctx.node("Div", [_mul(ctx, um1, x), log_u])])


def _log1p(ctx, x):
    """``log1p(x)`` accurate near 0 (Goldberg: ``log(u) * x / (u - 1)``, ``u = 1 + x``)."""
    u = _add(ctx, ctx.scalar(1.0), x)
    um1 = _sub(ctx, u, ctx.scalar(1.0))
    exact = ctx.node("Equal", [um1, ctx.scalar(0.0)])
    safe = ctx.node("Where", [exact, ctx.scalar(1.0), um1])
    corrected = ctx.node("Div", [_mul(ctx, ctx.node("Log", [u]), x), safe])
    return ctx.node("Where", [exact, x, corrected])


@neuron_emitter(nn.AdaptiveLIF)
def emit_adaptive_lif(neurons, ctx, J, state):
    """Implements ``output = LIF(J - n)``, ``n += (dt / tau_n) * (inc_n * output - n)``."""
    n = state["adaptation"]
    output, new_state = emit_lif(neurons, ctx, _sub(ctx, J, n), state)
    new_state["adaptation"] = _adapt(ctx, neurons, n, output)
    return output, new_state


@neuron_emitter(nn.Izhikevich)
def emit_izhikevich(neurons, ctx, J, state):
    """Nengo's Izhikevich step (Euler, reset before the recovery update).

    Implements ``J = max(J, -30)``, ``v += (0.04 v^2 + 5 v + 140 - u + J) * 1000 * dt``;
    where ``v >= 30``: ``output = 1 / dt``, ``v = reset_voltage``; then
    ``u += tau_recovery * (coupling * v - u) * 1000 * dt``, plus ``reset_recovery``
    where spiked.
    """
    dt = ctx.scalar(ctx.dt)
    v, u = state["voltage"], state["recovery"]
    J = ctx.node("Max", [J, ctx.scalar(-30.0)])
    # same association order as nengo's expression, for float32 agreement
    dv = _mul(ctx, ctx.scalar(0.04), _mul(ctx, v, v))
    dv = _add(ctx, _add(ctx, dv, _mul(ctx, ctx.scalar(5.0), v)), ctx.scalar(140.0))
    dv = _mul(ctx, _add(ctx, _sub(ctx, dv, u), J), ctx.scalar(1000.0))
    v = _add(ctx, v, _mul(ctx, dv, dt))
    spiked = ctx.node("GreaterOrEqual", [v, ctx.scalar(30.0)])
    output = ctx.node("Where", [spiked, ctx.scalar(1.0 / ctx.dt), ctx.scalar(0.0)])
    v = ctx.node("Where", [spiked, _param(ctx, neurons.reset_voltage), v])
    du = _mul(
        ctx,
        _param(ctx, neurons.tau_recovery),
        _sub(ctx, _mul(ctx, _param(ctx, neurons.coupling), v), u),
    )
    u = _add(ctx, u, _mul(ctx, _mul(ctx, du, ctx.scalar(1000.0)), dt))
    u = ctx.node("Where", [spiked, _add(ctx, u, _param(ctx, neurons.reset_recovery)), u])
    return output, {"voltage": v, "recovery": u}


# -- rates to spikes (J is the base type's rate) ------------------------------------------


@neuron_emitter(nn.RegularSpiking)
def emit_regular_spiking(neurons, ctx, J, state):
    """Implements ``v += dt * J``, ``output = (amplitude / dt) * floor(v)``, ``v -= floor(v)``."""
    v = _add(ctx, state["voltage"], _mul(ctx, ctx.scalar(ctx.dt), J))
    return _integrate_and_fire(ctx, neurons, v)


def _expected_spikes(ctx, neurons, J):
    """``(dt * |J|, sign)`` for types that can be negative, else ``(dt * J, None)``."""
    dt = ctx.scalar(ctx.dt)
    if not neurons.negative:
        return _mul(ctx, dt, J), None
    negative = ctx.node("Less", [J, ctx.scalar(0.0)])
    sign = ctx.node("Where", [negative, ctx.scalar(-1.0), ctx.scalar(1.0)])
    return _mul(ctx, dt, ctx.node("Abs", [J])), sign


def _spike_output(ctx, neurons, n_spikes, sign):
    """``(amplitude / dt) * n_spikes`` (times ``sign(J)`` for signed types)."""
    output = _mul(ctx, _param(ctx, neurons.amplitude / ctx.dt), n_spikes)
    return output if sign is None else _mul(ctx, output, sign)


@neuron_emitter(nn.StochasticSpiking)
def emit_stochastic_spiking(neurons, ctx, J, state):
    """Implements ``frac, n = modf(dt * J)``, ``n += uniform() < frac``,
    ``output = (amplitude / dt) * n``; signed types use ``|J|`` and multiply by ``sign(J)``.
    """
    expected, sign = _expected_spikes(ctx, neurons, J)
    # expected >= 0 (rates of unsigned types are, |J| is), so floor is modf's integer part
    n_spikes = ctx.node("Floor", [expected])
    frac = _sub(ctx, expected, n_spikes)
    uniform = ctx.step_input(_random_key(ctx), ctx.op.output.shape)
    extra = ctx.node("Cast", [ctx.node("Less", [uniform, frac])], to=_onnx_float(ctx))
    return _spike_output(ctx, neurons, _add(ctx, n_spikes, extra), sign), {}


@neuron_emitter(nn.PoissonSpiking)
def emit_poisson_spiking(neurons, ctx, J, state):
    """Implements ``output = (amplitude / dt) * poisson(dt * J)``; signed types use
    ``|J|`` and multiply by ``sign(J)``.

    Poisson samples come from two uniforms per neuron and step (see `_poisson`).
    """
    expected, sign = _expected_spikes(ctx, neurons, J)
    shape = tuple(ctx.op.output.shape)
    uniforms = ctx.step_input(_random_key(ctx), (2, *shape))
    u1, u2 = ctx.node("Split", [uniforms], n_outputs=2, axis=1, num_outputs=2)
    u1, u2 = (ctx.reshape(u, [ctx.B, *shape]) for u in (u1, u2))
    return _spike_output(ctx, neurons, _poisson(ctx, expected, u1, u2), sign), {}


def _poisson(ctx, lam, u1, u2):
    """A Poisson sample of mean ``lam`` (``[B, n]``) from uniforms ``u1``, ``u2``.

    For ``lam < POISSON_NORMAL``, inverse CDF: the count of ``k`` with
    ``P(N <= k) < u1`` over ``k < POISSON_K``, where ``P(N = k) = exp(k log(lam)
    - lam - log(k!))`` and the cumulative sums come from a triangular MatMul.
    Above it, ``floor(lam + sqrt(lam) z + 1/2)`` (clipped at 0), ``z`` a standard
    normal from Box-Muller on ``(u1, u2)``.
    """
    k = np.arange(POISSON_K, dtype=np.float64)
    lam_safe = ctx.node("Max", [lam, ctx.scalar(1e-30)])  # log(0) times k = 0 is NaN
    lam3 = ctx.node("Unsqueeze", [lam_safe, ctx.const(np.array([-1]))])
    log_p = _sub(ctx, _mul(ctx, ctx.node("Log", [lam3]), _param(ctx, k)), lam3)
    p = ctx.node("Exp", [_sub(ctx, log_p, _param(ctx, gammaln(k + 1)))])
    cdf = ctx.node("MatMul", [p, _param(ctx, np.triu(np.ones((POISSON_K, POISSON_K))))])
    u3 = ctx.node("Unsqueeze", [u1, ctx.const(np.array([-1]))])
    below = ctx.node("Cast", [ctx.node("Less", [cdf, u3])], to=_onnx_float(ctx))
    small = ctx.node("ReduceSum", [below, ctx.const(np.array([-1]))], keepdims=0)

    radius = ctx.node(
        "Sqrt",
        [
            _mul(ctx, ctx.scalar(-2.0), ctx.node("Log", [_sub(ctx, ctx.scalar(1.0), u1)])),
        ],
    )  # 1 - u1 is in (0, 1]
    z = _mul(ctx, radius, _cos(ctx, _mul(ctx, ctx.scalar(2 * np.pi), u2)))
    normal = _add(ctx, _add(ctx, lam, _mul(ctx, ctx.node("Sqrt", [lam_safe]), z)), ctx.scalar(0.5))
    large = ctx.node("Relu", [ctx.node("Floor", [normal])])
    return ctx.node("Where", [ctx.node("Less", [lam, ctx.scalar(POISSON_NORMAL)]), small, large])


def _cos(ctx, x):
    """``cos(x)``; onnxruntime's CPU Cos is float32-only, so float64 goes through it."""
    if ctx.dtype == np.float32:
        return ctx.node("Cos", [x])
    from onnx import TensorProto  # noqa: PLC0415

    cos = ctx.node("Cos", [ctx.node("Cast", [x], to=TensorProto.FLOAT)])
    return ctx.node("Cast", [cos], to=_onnx_float(ctx))


def _onnx_float(ctx):
    from nengo_onnx.compiler.onnx_graph import onnx_dtype  # noqa: PLC0415

    return onnx_dtype(ctx.dtype)


# -- training forms -----------------------------------------------------------------------


# Izhikevich has no rate form: it has no training emitter, so it stays spiking.


def _lif_rate_training(neurons, ctx, J):
    """``emit_lif_rate`` as one op whose gradient comes from its output (fewer nodes to
    differentiate, see `nengo_onnx.compiler.emit.surrogates.lif_rate`)."""
    result = lif_rate_op(ctx, neurons, emit_lif_rate, J)
    return result if result is not None else emit_lif_rate(neurons, ctx, J, {})


@neuron_emitter(nn.LIFRate, training=True)
def emit_lif_rate_training(neurons, ctx, J, state):
    """LIFRate in training: the same rate, with a cheaper gradient. Subclasses with an
    emitter of their own keep it."""
    if find_neuron_emitter(neurons) is not emit_lif_rate:
        return find_neuron_emitter(neurons)(neurons, ctx, J, state)
    return _lif_rate_training(neurons, ctx, J)


@neuron_emitter(nn.AdaptiveLIFRate, training=True)
def emit_adaptive_lif_rate_training(neurons, ctx, J, state):
    """AdaptiveLIFRate in training: the same, with LIFRate's cheaper gradient."""
    if find_neuron_emitter(neurons) is not emit_adaptive_lif_rate:
        return find_neuron_emitter(neurons)(neurons, ctx, J, state)
    return _adaptive_lif_rate_training(neurons, ctx, J, state)


def _adaptive_lif_rate_training(neurons, ctx, J, state):
    n = state["adaptation"]
    output, _ = _lif_rate_training(neurons, ctx, _sub(ctx, J, n))
    return output, {"adaptation": _adapt(ctx, neurons, n, output)}


@neuron_emitter(nn.LIF, training=True)
def emit_lif_training(neurons, ctx, J, state):
    """LIF in training: ``LIFRate``, or SoftLIF with ``sigma = lif_smoothing`` if set.

    The voltage and refractory state keep their values. With the
    ``spiking_gradient`` setting, LIF spikes and gets the rate's gradient
    (`nengo_onnx.compiler.emit.surrogates`).
    """
    mode = spiking_gradient(ctx)
    if mode is not None:
        return spiking(ctx, neurons, emit_lif, J, state, mode, name="LIF")
    sigma = lif_smoothing(ctx)
    if sigma is not None:
        rate = soft_lif_rate(ctx, neurons, J, sigma)
        return _mul(ctx, rate, _param(ctx, neurons.amplitude)), {}
    return _lif_rate_training(neurons, ctx, J)


@neuron_emitter(nn.AdaptiveLIF, training=True)
def emit_adaptive_lif_training(neurons, ctx, J, state):
    """AdaptiveLIF in training: ``AdaptiveLIFRate``, updating the adaptation state.

    With ``spiking_gradient``: ``LIF(J - n)`` spikes (with the LIF rate's gradient)
    and ``n`` is updated from the spikes.
    """
    mode = spiking_gradient(ctx)
    if mode is None:
        return _adaptive_lif_rate_training(neurons, ctx, J, state)
    n = state["adaptation"]
    lif_state = {k: v for k, v in state.items() if k != "adaptation"}
    output, new_state = spiking(
        ctx, neurons, emit_lif, _sub(ctx, J, n), lif_state, mode, name="LIF"
    )
    new_state["adaptation"] = _adapt(ctx, neurons, n, output)
    return output, new_state


@neuron_emitter(nn.SpikingRectifiedLinear, training=True)
def emit_spiking_rectified_linear_training(neurons, ctx, J, state):
    """SpikingRectifiedLinear in training: ``amplitude * max(J, 0)`` (or, with
    ``spiking_gradient``, spiking with that gradient)."""
    mode = spiking_gradient(ctx)
    if mode is not None:
        return spiking(ctx, neurons, emit_spiking_rectified_linear, J, state, mode)
    return emit_rectified_linear(neurons, ctx, J, state)


@neuron_emitter(nn.RatesToSpikesNeuronType, training=True)
def emit_rates_to_spikes_training(neurons, ctx, J, state):
    """Rates-to-spikes types in training: ``amplitude * J`` (``J`` is already the rate).

    This is the mean of the spiking output: the base type's rate form. With
    ``spiking_gradient``, the type spikes, with that gradient.
    """
    mode = spiking_gradient(ctx)
    if mode is not None:
        forward = find_neuron_emitter(neurons)
        return spiking(ctx, neurons, forward, J, state, mode)
    return _mul(ctx, J, _param(ctx, neurons.amplitude)), {}
