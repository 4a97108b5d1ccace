"""Emitters for ``SimNeurons``: a second-level registry per neuron type.

A neuron emitter is ``fn(neurons, ctx, J, state) -> (output, new_state)``, where
``J`` and the values in ``state`` are ONNX values shaped ``[B, n]`` (the state
of the neuron type, e.g. ``voltage``), and ``new_state`` maps the state names to
their next values. Lookup walks the neuron type's MRO.
"""

import numpy as np
from nengo import neurons as nn
from nengo.builder.neurons import SimNeurons

from . import emitter

NEURON_EMITTERS = {}


def neuron_emitter(*neuron_types):
    def register(fn):
        for neuron_type in neuron_types:
            NEURON_EMITTERS[neuron_type] = fn
        return fn

    return register


def find_neuron_emitter(neuron_type):
    for cls in type(neuron_type).__mro__:
        if cls in NEURON_EMITTERS:
            return NEURON_EMITTERS[cls]
    return None


def _supports(op):
    if find_neuron_emitter(op.neurons) is None:
        return f"no ONNX form for neuron type {type(op.neurons).__name__}"
    return None


@emitter(SimNeurons, supports=_supports)
def emit_sim_neurons(op, ctx):
    """Implements ``output, state = neurons.step(dt, J, **state)``."""
    fn = find_neuron_emitter(op.neurons)
    J = ctx.read_batched(op.J)
    state = {name: ctx.read_batched(sig) for name, sig in op.state.items()}
    output, new_state = fn(op.neurons, ctx, J, state)
    ctx.set(op.output, output)
    for name, value in new_state.items():
        ctx.set(op.state[name], value)


def _param(ctx, value):
    """A neuron parameter (scalar or per-neuron array) as a constant."""
    return ctx.const(np.asarray(value, dtype=ctx.dtype))


@neuron_emitter(nn.RectifiedLinear)
def emit_rectified_linear(neurons, ctx, J, state):
    """``amplitude * max(J, 0)``."""
    return ctx.node("Mul", [ctx.node("Relu", [J]), _param(ctx, neurons.amplitude)]), {}


@neuron_emitter(nn.LIFRate)
def emit_lif_rate(neurons, ctx, J, state):
    """``amplitude / (tau_ref + tau_rc * log1p(1 / (J - 1)))`` where ``J > 1``, else 0."""
    return ctx.node("Mul", [lif_rate(ctx, neurons, J), _param(ctx, neurons.amplitude)]), {}


def lif_rate(ctx, neurons, J):
    """The LIF rate of ``J``, written so no branch produces inf or NaN.

    ``Where`` passes gradients through the unselected branch too, so the
    argument of the log is clamped first (see the shared notes, 2.3).
    """
    j = ctx.node("Sub", [J, ctx.scalar(1.0)])
    positive = ctx.node("Greater", [j, ctx.scalar(0.0)])
    safe = ctx.node("Where", [positive, j, ctx.scalar(1.0)])
    log = ctx.node("Log", [ctx.node("Add", [ctx.scalar(1.0), ctx.node("Reciprocal", [safe])])])
    denom = ctx.node("Add", [_param(ctx, neurons.tau_ref),
                             ctx.node("Mul", [_param(ctx, neurons.tau_rc), log])])
    rate = ctx.node("Reciprocal", [denom])
    return ctx.node("Where", [positive, rate, ctx.scalar(0.0)])


@neuron_emitter(nn.LIF)
def emit_lif(neurons, ctx, J, state):
    """Nengo's LIF step: exact voltage decay, spike-time refractory period."""
    dt = ctx.dt
    one, zero = ctx.scalar(1.0), ctx.scalar(0.0)
    v, ref = state["voltage"], state["refractory_time"]
    tau_rc = _param(ctx, neurons.tau_rc)
    ref = ctx.node("Sub", [ref, ctx.scalar(dt)])
    delta_t = ctx.node("Clip", [ctx.node("Sub", [ctx.scalar(dt), ref]), zero, ctx.scalar(dt)])
    # expm1(-delta_t / tau_rc), written as exp(x) - 1
    decay = ctx.node("Sub", [ctx.node("Exp", [ctx.node("Neg", [
        ctx.node("Div", [delta_t, tau_rc])])]), one])
    v = ctx.node("Sub", [v, ctx.node("Mul", [ctx.node("Sub", [J, v]), decay])])
    spiked = ctx.node("Greater", [v, one])
    output = ctx.node("Where", [spiked, _param(ctx, neurons.amplitude / dt), zero])
    # spike time: dt + tau_rc * log1p(-(v - 1) / (J - 1)), only where spiked
    safe_j = ctx.node("Where", [spiked, ctx.node("Sub", [J, one]), one])
    frac = ctx.node("Div", [ctx.node("Sub", [v, one]), safe_j])
    t_spike = ctx.node("Add", [ctx.scalar(dt), ctx.node("Mul", [tau_rc, ctx.node("Log", [
        ctx.node("Sub", [one, ctx.node("Where", [spiked, frac, zero])])])])])
    v = ctx.node("Max", [v, _param(ctx, neurons.min_voltage)])
    v = ctx.node("Where", [spiked, zero, v])
    ref = ctx.node("Where", [spiked, ctx.node("Add", [_param(ctx, neurons.tau_ref), t_spike]), ref])
    return output, {"voltage": v, "refractory_time": ref}
