"""Drop copies that do nothing and operators whose results nobody sees.

1. A setting ``Copy`` of a signal onto itself (same elements, same slices) goes.
2. ``SimProbe`` markers go: probes are recorded from ``model.probes`` directly.
3. An operator without side effects (``Reset``, ``Copy``, ``DotInc`` and
   ``ElementwiseInc`` and their set forms, linear-filter ``SimProcess`` and their
   groups) goes when no element it writes, state included, is read by an
   operator, recorded by a probe, or touched in any way by an operator that
   might have side effects (neurons, learning rules, host operators). Repeated
   until nothing goes, as dropping a reader can leave its sources unseen.
"""

import numpy as np
from nengo.builder.operator import Copy, DotInc, ElementwiseInc, Reset
from nengo.builder.probe import SimProbe
from nengo.builder.processes import SimProcess
from nengo.synapses import LinearFilter

from nengo_onnx.compiler.operators import LinearFilterGroup
from nengo_onnx.passes.util import (
    LiveMask,
    indices,
    ordered_ops,
    probed_signals,
    rebuild_checked,
    writes,
)


def _removable(op):
    """Whether ``op`` only computes its written signals (no other effects)."""
    if isinstance(op, (Reset, Copy, DotInc, ElementwiseInc)):
        return not op.updates
    if type(op) is SimProcess:
        # its state is in its own updates: nobody else needs it if nobody reads it
        process = op.process
        return (
            isinstance(process, LinearFilter)
            and op.input is not None
            and type(process).make_step is LinearFilter.make_step
        )
    return type(op) is LinearFilterGroup


def _sliced(sig, sl):
    idx = indices(sig)
    return idx if sl is None else idx[sl]


def _self_copy(op):
    return (
        type(op) is Copy
        and not op.inc
        and op.src.base is op.dst.base
        and np.array_equal(_sliced(op.src, op.src_slice), _sliced(op.dst, op.dst_slice))
    )


def _live(ops, model):
    live = LiveMask()
    for sig in probed_signals(model):
        live.add(sig)
    for op in ops:
        for sig in op.reads if _removable(op) else op.all_signals:
            live.add(sig)
    return live


def _dead(op, live):
    return _removable(op) and not any(live.any(sig) for sig in writes(op))


def remove_unused(graph):
    model = graph.graph["model"]
    ops = [op for op in ordered_ops(graph) if not _self_copy(op) and type(op) is not SimProbe]
    while True:
        live = _live(ops, model)
        kept = [op for op in ops if not _dead(op, live)]
        if len(kept) == len(ops):
            break
        ops = kept
    if len(ops) == graph.number_of_nodes():
        return graph
    return rebuild_checked(graph, ops, "remove_unused")
