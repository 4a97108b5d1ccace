"""Turn zero ``Reset``s followed by increments into operators that set.

1. An increment (``DotInc``, ``SparseDotInc``, ``BsrDotInc``, ``ElementwiseInc``,
   ``ConvInc``, ``ConvTransposeInc`` or an incrementing ``Copy``) that writes
   only elements of one ``Reset(dst, 0)``, each once, elements that no other
   operator writes, becomes its set form: `.DotSet` and friends (``Y[...] = ...``
   instead of ``Y[...] += ...``), or a setting ``Copy``.
2. The Reset then only needs the elements that are left: those other operators
   write, and those that nobody writes whose initial value is not zero. It goes
   when none are left; it shrinks to a view when they are one contiguous run of
   a 1-D base (Nengo's merger packs the Resets of many signals into one);
   otherwise nothing changes.
3. Nengo's check that no two sets of a base may share memory (which strided
   views may) holds: increments whose set form would break it stay.
"""

import numpy as np
from nengo.builder.operator import Copy, Reset

from nengo_onnx.compiler.operators import SET_FORMS, set_form
from nengo_onnx.passes.util import indices, ordered_ops, rebuild_checked, writers_by_base, writes


def _written_elements(op):
    """The flat base indices that ``op`` increments, each once, or ``None``."""
    if op.sets or op.updates or len(op.incs) != 1:
        return None
    idx = indices(op.incs[0])
    if type(op) is Copy:
        if not op.inc:
            return None
        if op.dst_slice is not None:
            idx = idx[op.dst_slice]
    elif type(op) not in SET_FORMS:
        return None
    flat = idx.ravel()
    if np.unique(flat).size != flat.size:
        return None  # repeated elements accumulate: not a set
    if any(sig.base is op.incs[0].base for sig in op.reads):
        return None
    return flat


def _absorb(reset, writers):
    """``(increments that absorb reset, Resets that replace it)``, or ``None``."""
    base = reset.dst.base
    elements = indices(reset.dst).ravel()
    if np.any(reset.value != 0) or np.unique(elements).size != elements.size:
        return None
    in_reset = np.zeros(base.size, dtype=bool)
    in_reset[elements] = True
    count = np.zeros(base.size, dtype=np.int64)  # writers of each element, but reset
    others = [op for op in writers if op is not reset]
    for op in others:
        for sig in writes(op):
            if sig.base is base:
                np.add.at(count, indices(sig).ravel(), 1)
    # Nengo rejects two sets of signals that may share memory (strided views can)
    sets = [sig for op in others for sig in op.sets if sig.base is base]
    covered = np.zeros(base.size, dtype=bool)
    incs = []
    for op in others:
        written = _written_elements(op)
        if written is None or op.incs[0].base is not base:
            continue
        if not (in_reset[written].all() and (count[written] == 1).all()):
            continue
        if any(op.incs[0].may_share_memory(sig) for sig in sets):
            continue
        incs.append(op)
        sets.append(op.incs[0])
        covered[written] = True
    if not incs:
        return None
    initial = np.asarray(base.initial_value).reshape(-1)
    left = np.flatnonzero(in_reset & ~covered & ((count > 0) | (initial != 0)))
    if left.size == 0:
        return incs, []
    if base.ndim == 1 and np.array_equal(left, np.arange(left[0], left[-1] + 1)):
        view = base[int(left[0]) : int(left[-1]) + 1]
        if not any(view.may_share_memory(sig) for sig in sets):
            return incs, [Reset(view, tag=reset.tag)]
    return None


def fuse_reset_incs(graph):
    ops = ordered_ops(graph)
    writers = writers_by_base(ops)
    new_ops = []
    replaced = {}
    for op in ops:
        if type(op) is not Reset:
            continue
        absorbed = _absorb(op, writers[op.dst.base])
        if absorbed is None:
            continue
        incs, resets = absorbed
        replaced.update((inc, [set_form(inc)]) for inc in incs)
        replaced[op] = resets
    if not replaced:
        return graph
    for op in ops:
        new_ops.extend(replaced.get(op, [op]))
    return rebuild_checked(graph, new_ops, "fuse_reset_incs")
