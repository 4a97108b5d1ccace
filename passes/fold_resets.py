"""Fold signals that only ``Reset`` writes into constants.

1. A base written by nothing but ``Reset`` operators (no other sets, no incs, no
   updates) holds the same value whenever it is read: its initial value with the
   Resets' values written over their views (reads come after sets in a step).
2. Readers whose emitters take unbatched operands (``DotInc`` and its
   subclasses, ``ElementwiseInc``, ``Copy``, linear-filter ``SimProcess`` and the
   groups of `.merge_synapses`) read a new `.FoldedConstant` signal holding
   that value instead.
3. The Resets of a base go once no operator reads it any more and no probe
   records it (a probe reads the signal itself, at the end of each step).
"""

import numpy as np
from nengo.builder.operator import Copy, DotInc, ElementwiseInc, Reset
from nengo.builder.processes import SimProcess
from nengo.builder.signal import Signal
from nengo.synapses import LinearFilter

from .util import (
    indices,
    ordered_ops,
    probed_signals,
    rebuild_checked,
    replace_signals,
    writers_by_base,
    writes,
)


class FoldedConstant(Signal):
    """A constant signal made by folding a ``Reset`` (never a trainable parameter)."""


def _takes_constants(op):
    """Whether ``op``'s emitter accepts unbatched (constant) operands."""
    from .merge_synapses import LinearFilterGroup  # noqa: PLC0415 (circular)

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
    """``{base: value}`` for bases that only Resets write."""
    constants = {}
    for base, writers in writers_by_base(ops).items():
        if base.sparse or not all(type(op) is Reset for op in writers):
            continue
        constants[base] = _constant_value(base, writers)
    return constants


def fold_constant_resets(graph):
    ops = ordered_ops(graph)
    constants = _constant_bases(ops)
    if not constants:
        return graph
    mapping, kept = {}, {sig.base for sig in probed_signals(graph.graph["model"])}
    for op in ops:
        if type(op) is Reset:
            continue
        reads = [sig for sig in op.reads if sig.base in constants]
        if not reads:
            continue
        if not _takes_constants(op) or any(sig.base in constants for sig in writes(op)):
            kept.update(sig.base for sig in reads)
            continue
        for sig in reads:
            if sig not in mapping:
                value = constants[sig.base].reshape(-1)[indices(sig)]
                mapping[sig] = FoldedConstant(value, name=f"const<{sig.name}>", readonly=True)

    new_ops = []
    for op in ops:
        if type(op) is Reset and op.dst.base in constants and op.dst.base not in kept:
            continue
        new_ops.append(replace_signals(op, mapping))
    if len(new_ops) == len(ops) and not mapping:
        return graph
    return rebuild_checked(graph, new_ops, "fold_constant_resets")
