"""Emit an ONNX model for a block of operators unrolled over K steps.

The model's inputs are the state of every base signal it reads or writes (named
``state.<signal>``) and the per-step inputs (``[B, K, ...]``: input Nodes,
time-only values, random numbers); its outputs are the new state
(``state_out.<signal>``) and, for each probe, its value at the end of each step
(``probe.<name>``, ``[B, K, *shape]``). The names come from the program's
`nengo_onnx.compiler.names.Names`.
"""

from dataclasses import dataclass, field

from nengo_onnx.compiler.emit import emit
from nengo_onnx.compiler.emit.context import EmitContext
from nengo_onnx.compiler.onnx_graph import DEFAULT_OPSET, GraphBuilder


@dataclass
class Block:
    """An emitted ONNX model and what its inputs and outputs mean."""

    model: object
    n_steps: int
    state: list  # (base signal, input name, output name) for the written bases
    step_inputs: dict  # name -> (shape per item and step, dtype)
    state_inputs: list = field(default_factory=list)  # (base signal, input name)
    probes: list = field(default_factory=list)  # (output name, shape)


def emit_block(
    steps,
    signals,
    *,
    n_steps,
    minibatch_size,
    dtype,
    dt,
    probes=(),
    state_in=None,
    state_out=None,
    opset=DEFAULT_OPSET,
    name="nengo_onnx",
    training=False,
    settings=None,
):
    """Emit ``steps`` (``(t, op)`` pairs in order) as one ONNX model.

    Parameters
    ----------
    probes : list of (output name, Signal)
        Signals recorded at the end of every step.
    state_in, state_out : list of base Signals, optional
        Bases taken as inputs and given as outputs (default: all written bases).
    training : bool
        Emit the training forms of operators (rate neurons for spiking ones).
    settings : Settings or None
        The network's validated settings (`nengo_onnx.config.settings_of`);
        ``None`` means the defaults.
    """
    graph = GraphBuilder(name=name, opset=opset)
    ctx = EmitContext(
        graph,
        signals,
        dtype,
        minibatch_size,
        dt,
        n_steps=n_steps,
        training=training,
        settings=settings,
    )
    state_in = signals.state_bases() if state_in is None else state_in
    state, state_inputs = [], []
    names = signals.names
    for base in state_in:
        in_name = graph.input(names.state(base), signals.dtype_of(base, dtype), ctx.shape(base))
        ctx.env[base] = in_name
        state_inputs.append((base, in_name))

    records = {key: [] for key, _ in probes}
    t_prev = 0
    for t, op in steps:
        if t != t_prev:
            _record(ctx, probes, records)
            t_prev = t
        ctx.t = t
        emit(op, ctx)
    _record(ctx, probes, records)

    state_out = state_in if state_out is None else state_out
    for base in state_out:
        out_name = names.state_out(base)
        graph.output(out_name, ctx.env[base], signals.dtype_of(base, dtype), ctx.shape(base))
        state.append((base, names.state(base), out_name))

    probe_outputs = []
    for key, sig in probes:
        values = records[key]
        full = [minibatch_size, len(values), *sig.shape]
        # steps side by side along the feature axis, then one Reshape to [B, K, ...]
        parts = [ctx.reshape(v, [minibatch_size, -1]) for v in values]
        value = parts[0] if len(parts) == 1 else graph.node("Concat", parts, axis=1)
        value = ctx.reshape(value, full)
        graph.output(key, value, signals.dtype_of(sig, dtype), full)
        probe_outputs.append((key, tuple(sig.shape)))

    return Block(
        model=graph.model(),
        n_steps=n_steps,
        state=state,
        step_inputs=ctx.step_inputs,
        probes=probe_outputs,
        state_inputs=state_inputs,
    )


def _record(ctx, probes, records):
    for key, sig in probes:
        records[key].append(ctx.read_batched(sig))
