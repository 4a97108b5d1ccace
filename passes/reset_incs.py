"""Turn a zero ``Reset`` followed by one increment into one operator that sets.

1. A ``Reset(dst, 0)`` whose elements exactly one other operator writes, an
   increment (``DotInc``, ``SparseDotInc``, ``BsrDotInc``, ``ElementwiseInc``,
   ``ConvInc``, ``ConvTransposeInc`` or an incrementing ``Copy``) that writes
   each of those elements once and nothing else, is dropped together with the
   increment, replaced by its set form: `.DotSet` and friends (``Y[...] = ...``
   instead of ``Y[...] += ...``), or a setting ``Copy``.
2. Other writers of the same base are allowed as long as they do not touch the
   Reset's elements (Nengo's merger packs many signals into one base).
"""

import copy

import numpy as np
from nengo.builder.operator import BsrDotInc, Copy, DotInc, ElementwiseInc, Reset, SparseDotInc
from nengo.builder.transforms import ConvInc, ConvTransposeInc

from .util import indices, ordered_ops, rebuild_checked, writers_by_base, writes


class SetMixin:
    """The set form of an increment operator ``Y[...] += f(...)``: ``Y[...] = f(...)``.

    The output is in ``sets`` instead of ``incs``. ``make_step`` zeroes ``Y``
    and runs the increment, so Nengo's semantics carry over unchanged.
    """

    @property
    def Y(self):
        return self.sets[0]

    def make_step(self, signals, dt, rng):
        Y = signals[self.Y]
        inc = super().make_step(signals, dt, rng)

        def step_set():
            Y[...] = 0
            inc()

        return step_set


class DotSet(SetMixin, DotInc):
    """Implements ``Y[...] = np.dot(A, X)``."""


class SparseDotSet(SetMixin, SparseDotInc):
    """Implements ``Y[...] = A.dot(X)`` for a sparse ``A``."""


class BsrDotSet(SetMixin, BsrDotInc):
    """Implements ``Y[...] = bsr_matrix(A).dot(X)``."""


class ElementwiseSet(SetMixin, ElementwiseInc):
    """Implements ``Y[...] = A * X``."""


class ConvSet(SetMixin, ConvInc):
    """Implements ``Y[...] = conv2d(X, W)``."""


class ConvTransposeSet(SetMixin, ConvTransposeInc):
    """Implements ``Y[...] = conv2d_transpose(X, W)``."""


SET_FORMS = {
    DotInc: DotSet,
    SparseDotInc: SparseDotSet,
    BsrDotInc: BsrDotSet,
    ElementwiseInc: ElementwiseSet,
    ConvInc: ConvSet,
    ConvTransposeInc: ConvTransposeSet,
}


def set_form(op):
    """The operator that sets what ``op`` increments (a new operator)."""
    new = copy.copy(op)
    if type(op) is Copy:
        new.inc = False
        new.sets, new.incs = list(op.incs), []
        return new
    new.__class__ = SET_FORMS[type(op)]
    new.sets, new.incs = list(op.incs), []
    return new


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
    return flat


def _fusable(reset, writers):
    """The one increment that can absorb ``reset``, or ``None``."""
    if np.any(reset.value != 0):
        return None
    base = reset.dst.base
    elements = indices(reset.dst).ravel()
    mask = np.zeros(int(np.prod(base.shape)), dtype=bool)
    mask[elements] = True
    touching = [
        op for op in writers if op is not reset
        and any(sig.base is base and mask[indices(sig).ravel()].any() for sig in writes(op))
    ]
    if len(touching) != 1:
        return None
    (inc,) = touching
    written = _written_elements(inc)
    if written is None or inc.incs[0].base is not base:
        return None
    if written.size != elements.size or not mask[written].all():
        return None  # the increment must cover exactly the Reset's elements
    if any(sig.base is base for sig in inc.reads):
        return None
    return inc


def fuse_reset_incs(graph):
    ops = ordered_ops(graph)
    writers = writers_by_base(ops)
    replaced, dropped = {}, set()
    for reset in ops:
        if type(reset) is not Reset:
            continue
        inc = _fusable(reset, writers[reset.dst.base])
        if inc is not None and inc not in replaced:
            replaced[inc] = set_form(inc)
            dropped.add(reset)
    if not replaced:
        return graph
    new_ops = [replaced.get(op, op) for op in ops if op not in dropped]
    return rebuild_checked(graph, new_ops, "fuse_reset_incs")
