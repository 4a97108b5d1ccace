"""Spike-aware training: spiking forward pass, rate (or surrogate) gradient backward.

With ``nengo_onnx.configure_settings(spiking_gradient="rate")`` (or
``"surrogate"``), training graphs keep spiking neurons spiking: the nodes that
a spiking neuron emitter writes for one step are moved into a model-local ONNX
function in the custom domain ``nengo.ops`` (e.g. ``nengo.ops::LIF_LIFRate_<hash>``),
whose body is exactly the spiking step that ``sim.run`` executes. onnxruntime-training
does not differentiate a function's body: it uses the gradient registered for its
op type (``register_gradient_definition``), and here that gradient is

    dL/dJ = dL/d(output) * f'(J)

where ``f`` is a smooth stand-in for the neuron's rate (`Derivative`); the
neuron state (voltage, refractory time) passes no gradient. So the loss is the
spiking network's loss, and its gradient is the one rate-based training uses.

Which ``f``:

===============================  ============================  =================================
neuron type                      ``"rate"``                    ``"surrogate"``
===============================  ============================  =================================
``LIF``, ``AdaptiveLIF``         ``LIFRate`` (SoftLIF if       SoftLIF, ``sigma = lif_smoothing``
                                 ``lif_smoothing`` is set)     or `DEFAULT_SIGMA`
``SpikingRectifiedLinear``       ``RectifiedLinear``           ``sigma * softplus(J / sigma)``
``RegularSpiking(x)`` and other  ``amplitude * J`` (``J`` is   the same
rates-to-spikes types            already ``x``'s rate)
===============================  ============================  =================================

(``AdaptiveLIF`` differentiates ``f(J - n)``; its adaptation ``n`` is updated
from the spikes, with ordinary ONNX nodes, and passes gradients.)

The default (``spiking_gradient=None``) is NengoDL's rate substitution. Only
training graphs are affected: ``sim.run``, ``sim.loss`` and exported models never
contain the custom domain.

The same mechanism gives rate LIF neurons in training graphs a cheaper exact gradient,
computed from their output (`lif_rate`).

A function's body depends only on the structure of the emitted step: every
constant it reads (neuron parameters too) is a function input, so one function
serves all steps and all ensembles with the same structure, and its name (a
hash of the body and of the derivative) identifies its registered gradient in
this process.
"""

import hashlib
from dataclasses import dataclass

import numpy as np
from nengo import neurons as nn
from nengo.exceptions import ValidationError
from onnx import TensorProto, helper

from nengo_onnx import ort_setup

#: Domain of the spiking functions in training graphs.
DOMAIN = "nengo.ops"

#: SoftLIF (and softplus) smoothing of the ``"surrogate"`` gradient when
#: ``lif_smoothing`` is not set, in units of the input current ``J``.
DEFAULT_SIGMA = 0.05


def spiking_gradient(ctx):
    """The ``spiking_gradient`` setting of the graph being emitted (validated by
    `nengo_onnx.config.Settings`): None, ``"rate"`` or ``"surrogate"``."""
    return ctx.settings.spiking_gradient


def lif_smoothing(ctx):
    """The ``lif_smoothing`` setting (validated): a positive float, or None."""
    return ctx.settings.lif_smoothing


# -- derivatives ---------------------------------------------------------------------------


class _Nodes:
    """Gradient node definitions in onnxruntime's notation (``I(i)``, ``GO(0)``, ``GI(0)``)."""

    def __init__(self):
        self.nodes = []
        self._count = 0

    def const(self, value):
        return self.op("Constant", value=(float(value), "float", True))

    def op(self, op_type, *inputs, out=None, **attrs):
        if out is None:
            self._count += 1
            out = f"d{self._count}"
        self.nodes.append((op_type, list(inputs), [out], attrs))
        return out


def _lif_rate_nodes(d, J, tau_rc, tau_ref, amplitude):
    """``amplitude * tau_rc * r^2 / (x (x + 1))`` where ``x = J - 1 > 0``, else 0, with
    ``r = 1 / (tau_ref + tau_rc log(1 + 1/x))`` (the derivative of LIFRate)."""
    one, zero = d.const(1.0), d.const(0.0)
    x = d.op("Sub", J, one)
    positive = d.op("Greater", x, zero)
    safe = d.op("Where", positive, x, one)  # the unselected branch stays finite
    log = d.op("Log", d.op("Add", one, d.op("Reciprocal", safe)))
    r = d.op("Reciprocal", d.op("Add", tau_ref, d.op("Mul", tau_rc, log)))
    num = d.op("Mul", d.op("Mul", tau_rc, amplitude), d.op("Mul", r, r))
    value = d.op("Div", num, d.op("Mul", safe, d.op("Add", safe, one)))
    return d.op("Where", positive, value, zero)


def _soft_lif_nodes(d, J, tau_rc, tau_ref, amplitude, sigma):
    """The derivative of SoftLIF (`nengo_onnx.compiler.emit.neurons.soft_lif_rate`):
    ``amplitude * tau_rc * r^2 * sigmoid(x) / (z (1 + z))``, ``x = (J - 1) / sigma``,
    ``z = sigma * softplus(x)`` (with an accurate ``log1p`` in the softplus, whose
    small values set the ratio); below ``x = -20`` its limit (``sigmoid(x) / z -> 1 /
    sigma``, ``log1p(1 / z) -> -x - log(sigma)``)."""
    one, zero = d.const(1.0), d.const(0.0)
    x = d.op("Div", d.op("Sub", J, one), sigma)
    valid = d.op("Greater", x, d.const(-20.0))
    xs = d.op("Where", valid, x, zero)
    e = d.op("Exp", d.op("Neg", d.op("Abs", xs)))
    tail = _log1p_nodes(d, e, one)
    z = d.op("Mul", d.op("Add", d.op("Relu", xs), tail), sigma)
    q = d.op(
        "Where",
        valid,
        d.op("Log", d.op("Add", one, d.op("Reciprocal", z))),
        d.op("Sub", d.op("Neg", x), d.op("Log", sigma)),
    )
    r = d.op("Reciprocal", d.op("Add", tau_ref, d.op("Mul", tau_rc, q)))
    ratio = d.op(
        "Where",
        valid,
        d.op("Div", _sigmoid_nodes(d, xs, e, one), d.op("Mul", z, d.op("Add", z, one))),
        d.op("Reciprocal", sigma),
    )
    return d.op("Mul", d.op("Mul", d.op("Mul", tau_rc, amplitude), d.op("Mul", r, r)), ratio)


def _sigmoid_nodes(d, x, e, one):
    """``sigmoid(x)`` from ``e = exp(-|x|)``; onnxruntime's Sigmoid is off by up to 50 %
    below ``x = -15``, where the surrogates still need it."""
    return d.op("Div", d.op("Where", d.op("Less", x, d.const(0.0)), e, one), d.op("Add", one, e))


def _log1p_nodes(d, x, one):
    """``log1p(x)``, accurate near 0 (Goldberg: ``log(u) * x / (u - 1)``, ``u = 1 + x``)."""
    u = d.op("Add", one, x)
    um1 = d.op("Sub", u, one)
    exact = d.op("Equal", um1, d.const(0.0))
    safe = d.op("Where", exact, one, um1)
    return d.op("Where", exact, x, d.op("Div", d.op("Mul", d.op("Log", u), x), safe))


def _relu_nodes(d, J, amplitude):
    """``amplitude * (J > 0)``."""
    step = d.op("Cast", d.op("Greater", J, d.const(0.0)), to=(TensorProto.FLOAT, "int", False))
    return d.op("Mul", step, amplitude)


def _softplus_nodes(d, J, amplitude, sigma):
    """``amplitude * sigmoid(J / sigma)``, the derivative of ``amplitude * sigma *
    softplus(J / sigma)``."""
    x = d.op("Div", J, sigma)
    one = d.const(1.0)
    e = d.op("Exp", d.op("Neg", d.op("Abs", x)))
    return d.op("Mul", _sigmoid_nodes(d, x, e, one), amplitude)


def _linear_nodes(d, J, amplitude):
    """``amplitude``."""
    return amplitude


@dataclass(frozen=True)
class Derivative:
    """``f'(J)`` of a rate stand-in ``f``; its parameters are inputs ``1..k`` of the op.

    ``build(nodes, J, *params)`` writes the derivative's gradient nodes and
    returns its value; ``rate(J, **params)`` is ``f`` in numpy (float64).
    """

    name: str
    params: tuple
    build: object
    rate: object

    def gradient_nodes(self):
        """The registered definition: ``GI(0) = GO(0) * f'(I(0); I(1), ...)``."""
        d = _Nodes()
        value = self.build(d, "I(0)", *[f"I({i + 1})" for i in range(len(self.params))])
        d.op("Mul", "GO(0)", value, out="GI(0)")
        return d.nodes


def _softplus(x):
    return np.logaddexp(0.0, x)


def _np_lif_rate(J, tau_rc, tau_ref, amplitude):
    x = np.asarray(J, dtype=np.float64) - 1
    safe = np.where(x > 0, x, 1.0)
    return np.where(x > 0, amplitude / (tau_ref + tau_rc * np.log1p(1 / safe)), 0.0)


def _np_soft_lif_rate(J, tau_rc, tau_ref, amplitude, sigma):
    z = sigma * _softplus((np.asarray(J, dtype=np.float64) - 1) / sigma)
    return amplitude / (tau_ref + tau_rc * np.log1p(1 / z))


DERIVATIVES = {
    d.name: d
    for d in [
        Derivative("LIFRate", ("tau_rc", "tau_ref", "amplitude"), _lif_rate_nodes, _np_lif_rate),
        Derivative(
            "SoftLIF",
            ("tau_rc", "tau_ref", "amplitude", "sigma"),
            _soft_lif_nodes,
            _np_soft_lif_rate,
        ),
        Derivative(
            "ReLU",
            ("amplitude",),
            _relu_nodes,
            lambda J, amplitude: amplitude * np.maximum(J, 0.0),
        ),
        Derivative(
            "Softplus",
            ("amplitude", "sigma"),
            _softplus_nodes,
            lambda J, amplitude, sigma: amplitude * sigma * _softplus(J / sigma),
        ),
        Derivative(
            "Linear",
            ("amplitude",),
            _linear_nodes,
            lambda J, amplitude: amplitude * np.asarray(J, dtype=np.float64),
        ),
    ]
}


def _lif_rate_from_output_nodes(d, J, tau_rc_over_amplitude):
    """LIFRate's derivative from its output ``O = amplitude * r``: ``tau_rc / amplitude *
    O^2 / (x (x + 1))``, ``x = J - 1`` (``O = 0`` where ``x <= 0``, and ``x`` is floored
    there so that nothing divides by 0)."""
    one = d.const(1.0)
    x = d.op("Max", d.op("Sub", J, one), d.const(1e-30))
    squared = d.op("Mul", "O(0)", "O(0)")
    return d.op(
        "Div", d.op("Mul", squared, tau_rc_over_amplitude), d.op("Mul", x, d.op("Add", x, one))
    )


#: LIFRate's gradient from its output (for rate LIF neurons in training graphs).
LIF_RATE_FROM_OUTPUT = Derivative(
    "FromOutput", ("tau_rc_over_amplitude",), _lif_rate_from_output_nodes, None
)


def derivative_for(neurons, mode, smoothing):
    """``(Derivative, {param: value})`` for spiking ``neurons`` in ``mode``."""
    if isinstance(neurons, nn.RatesToSpikesNeuronType):
        return DERIVATIVES["Linear"], {"amplitude": neurons.amplitude}
    if isinstance(neurons, nn.LIF):
        params = {
            "tau_rc": neurons.tau_rc,
            "tau_ref": neurons.tau_ref,
            "amplitude": neurons.amplitude,
        }
        sigma = smoothing if mode == "rate" else smoothing or DEFAULT_SIGMA
        if sigma is None:
            return DERIVATIVES["LIFRate"], params
        return DERIVATIVES["SoftLIF"], {**params, "sigma": sigma}
    if isinstance(neurons, nn.SpikingRectifiedLinear):
        if mode == "rate":
            return DERIVATIVES["ReLU"], {"amplitude": neurons.amplitude}
        return DERIVATIVES["Softplus"], {
            "amplitude": neurons.amplitude,
            "sigma": smoothing or DEFAULT_SIGMA,
        }
    raise ValidationError(
        f"no rate gradient for {type(neurons).__name__}", attr="spiking_gradient"
    )


# -- the spiking op --------------------------------------------------------------------------


def spiking(ctx, neurons, forward, J, state, mode, name=None):
    """Emit ``forward(neurons, ctx, J, state)`` (a spiking neuron emitter) as one op
    of the ``nengo.ops`` domain whose gradient w.r.t. ``J`` is `derivative_for`'s.

    Returns ``(output, new_state)`` as ``forward`` does.
    """
    derivative, values = derivative_for(neurons, mode, lif_smoothing(ctx))
    return custom_gradient(ctx, neurons, forward, J, state, derivative, values, name)


def lif_rate(ctx, neurons, forward, J):
    """Emit LIFRate ``forward(neurons, ctx, J, {})`` as a ``nengo.ops`` op whose gradient
    is computed from its output (`LIF_RATE_FROM_OUTPUT`): a few nodes instead of the
    derivatives of every node of the rate, which are most of a rate LIF network's
    training step. Returns ``(output, {})``; None if an amplitude is 0."""
    amplitude = np.asarray(neurons.amplitude, dtype=np.float64)
    if np.any(amplitude == 0):
        return None
    values = {"tau_rc_over_amplitude": np.asarray(neurons.tau_rc) / amplitude}
    return custom_gradient(ctx, neurons, forward, J, {}, LIF_RATE_FROM_OUTPUT, values, "LIFRate")


def custom_gradient(ctx, neurons, forward, J, state, derivative, values, name=None):
    """Emit ``forward(neurons, ctx, J, state)`` as one op of the ``nengo.ops`` domain
    whose gradient w.r.t. ``J`` is ``derivative`` (parameters ``values``)."""
    params = [ctx.const(np.asarray(values[k], dtype=ctx.dtype)) for k in derivative.params]
    graph = ctx.graph
    start = len(graph.nodes)
    output, new_state = forward(neurons, ctx, J, state)
    emitted = graph.nodes[start:]
    del graph.nodes[start:]

    # nodes that read neither J nor the state (e.g. this step's random numbers) stay
    # outside: other emitters may share them
    live = {J, *state.values()}
    body, outside = [], []
    for node in emitted:
        if any(name in live for name in node.input):
            live.update(node.output)
            body.append(node)
        else:
            outside.append(node)
    graph.nodes.extend(outside)
    produced = {out for node in body for out in node.output}
    if output not in produced:  # e.g. a constant output: the op still gives it
        copy = graph.unique(f"{output}.spiking")
        body.append(helper.make_node("Identity", [output], [copy]))
        output = copy
        produced.add(copy)
    outputs = [output]
    for value in new_state.values():
        if value in produced and value not in outputs:
            outputs.append(value)
    body = _needed(body, outputs)

    inputs = [J, *params]
    for node in body:
        for value in node.input:
            if value and value not in produced and value not in inputs:
                inputs.append(value)
    op_type = _function(graph, name or type(neurons).__name__, derivative, body, inputs, outputs)
    node = helper.make_node(
        op_type, inputs, outputs, name=graph.unique(f"n_{op_type}"), domain=DOMAIN
    )
    if graph.doc:
        node.doc_string = graph.doc
    graph.nodes.append(node)
    return output, new_state


def _needed(nodes, outputs):
    """The nodes that ``outputs`` depend on, in order."""
    producers = {out: node for node in nodes for out in node.output}
    needed, stack = set(), list(outputs)
    while stack:
        node = producers.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input)
    return [node for node in nodes if id(node) in needed]


def _function(graph, label, derivative, body, inputs, outputs):
    """Add (once) the function of ``body`` to ``graph``; registers its gradient.

    Returns its op type, ``<label>_<derivative>_<hash>``.
    """
    names = {}
    # inputs by position: J and the derivative's parameters may share a name
    formal = [f"x{i}" for i in range(len(inputs))]
    for value, name in zip(inputs, formal):
        names.setdefault(value, name)
    for i, value in enumerate(outputs):
        names[value] = f"y{i}"
    nodes = []
    for i, node in enumerate(body):
        for out in node.output:
            names.setdefault(out, f"t{len(names)}")
        copy = helper.make_node(
            node.op_type,
            [names.get(v, v) if v else v for v in node.input],
            [names[v] for v in node.output],
            name=f"n{i}",
            domain=node.domain,
        )
        copy.attribute.extend(node.attribute)
        nodes.append(copy)
    opset = [helper.make_opsetid("", graph.opset)]
    proto = helper.make_function(
        DOMAIN, "F", formal, [f"y{i}" for i in range(len(outputs))], nodes, opset
    )
    digest = hashlib.sha1(
        derivative.name.encode()
        + b"\0"
        + repr(derivative.params).encode()
        + proto.SerializeToString(deterministic=True)
    ).hexdigest()[:12]
    op_type = f"{label}_{derivative.name}_{digest}"
    proto.name = op_type
    if not any(f.name == op_type and f.domain == DOMAIN for f in graph.functions):
        graph.functions.append(proto)
    graph.extra_opsets[DOMAIN] = 1
    ort_setup.register_gradient(f"{DOMAIN}::{op_type}", derivative.gradient_nodes())
    return op_type
