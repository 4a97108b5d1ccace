"""Fold what only ``Reset`` writes into constants.

1. An element of a base that ``Reset`` operators write and nothing else does
   (no other sets, no incs, no updates) holds the same value whenever it is
   read: the Reset's value (reads come after sets in a step). So does an element
   of that base that nothing writes: its initial value.
2. Readers of signals made only of such elements whose emitters take unbatched
   operands (``DotInc`` and its subclasses, ``ElementwiseInc``, ``Copy``,
   linear-filter ``SimProcess`` and the groups of `.merge_synapses`) read a new
   `.FoldedConstant` signal holding that value instead.
3. A Reset whose elements are all such constants goes once no operator reads
   them any more and no probe records them (a probe reads the signal itself).
"""

import numpy as np
from nengo.builder.operator import Copy, DotInc, ElementwiseInc, Reset
from nengo.builder.processes import SimProcess
from nengo.synapses import LinearFilter

from nengo_onnx.compiler.operators import FoldedConstant, LinearFilterGroup
from nengo_onnx.passes.util import (
    LiveMask,
    indices,
    ordered_ops,
    probed_signals,
    rebuild_checked,
    replace_signals,
    writers_by_base,
    writes,
)


def _takes_constants(op):
    """Whether ``op``'s emitter accepts unbatched (constant) operands."""
    if isinstance(op, (DotInc, ElementwiseInc, Copy, LinearFilterGroup)):
        return True
    return isinstance(op, SimProcess) and isinstance(op.process, LinearFilter)


def _constant_value(base, resets):
    value = np.array(base.initial_value, copy=True)
    flat = value.reshape(-1)
    for reset in resets:
        flat[indices(reset.dst).ravel()] = reset.value
    return value


def _constant_bases(ops):
    """``{base: (value, constant)}`` for bases that Resets write.

    ``constant`` marks the (flat) elements that nothing but Resets writes;
    ``value`` is what they hold, shaped like the base.
    """
    constants = {}
    for base, writers in writers_by_base(ops).items():
        resets = [op for op in writers if type(op) is Reset]
        if not resets or base.sparse:
            continue
        constant = np.ones(base.size, dtype=bool)
        for op in writers:
            if type(op) is not Reset:
                for sig in writes(op):
                    if sig.base is base:
                        constant[indices(sig).ravel()] = False
        if constant.any():
            constants[base] = (_constant_value(base, resets), constant)
    return constants


def _is_constant(sig, constants):
    return sig.base in constants and constants[sig.base][1][indices(sig).ravel()].all()


def _fold_reads(ops, constants, needed):
    """``{signal: FoldedConstant}`` for the reads that can fold; marks the others needed."""
    mapping = {}
    for op in ops:
        reads = [sig for sig in op.reads if sig.base in constants]
        if not reads:
            continue
        foldable = _takes_constants(op) and not any(sig.base in constants for sig in writes(op))
        for sig in reads:
            if not (foldable and _is_constant(sig, constants)):
                needed.add(sig)
            elif sig not in mapping:
                value = constants[sig.base][0].reshape(-1)[indices(sig)]
                mapping[sig] = FoldedConstant(value, name=f"const<{sig.name}>", readonly=True)
    return mapping


def fold_constant_resets(graph):
    ops = ordered_ops(graph)
    constants = _constant_bases(ops)
    if not constants:
        return graph
    needed = LiveMask()
    for sig in probed_signals(graph.graph["model"]):
        needed.add(sig)
    mapping = _fold_reads(ops, constants, needed)
    new_ops = []
    for op in ops:
        if type(op) is Reset and _is_constant(op.dst, constants) and not needed.any(op.dst):
            continue
        new_ops.append(replace_signals(op, mapping))
    if len(new_ops) == len(ops) and not mapping:
        return graph
    return rebuild_checked(graph, new_ops, "fold_constant_resets")
