"""Drop increments that always add zero.

1. A ``DotInc`` (or subclass) or ``ElementwiseInc`` that increments its output
   by a product with an all-zero `.FoldedConstant` operand adds nothing: it goes.
2. An incrementing ``Copy`` from an all-zero `.FoldedConstant` goes too.

Only folded constants count as zero: a parameter that starts at zero (e.g. a
zero transform that training will change) is never treated as one.
"""

import numpy as np
from nengo.builder.operator import Copy, DotInc, ElementwiseInc

from nengo_onnx.compiler.operators import FoldedConstant
from nengo_onnx.passes.util import ordered_ops, rebuild_checked


def _is_zero(sig):
    return isinstance(sig.base, FoldedConstant) and not np.any(sig.initial_value)


def _adds_zero(op):
    if isinstance(op, (DotInc, ElementwiseInc)):
        # set variants (`.fuse_reset_incs`) write zeros: not a no-op
        return bool(op.incs) and not op.sets and (_is_zero(op.A) or _is_zero(op.X))
    if type(op) is Copy:
        return op.inc and _is_zero(op.src)
    return False


def remove_zero_incs(graph):
    ops = ordered_ops(graph)
    new_ops = [op for op in ops if not _adds_zero(op)]
    if len(new_ops) == len(ops):
        return graph
    return rebuild_checked(graph, new_ops, "remove_zero_incs")
