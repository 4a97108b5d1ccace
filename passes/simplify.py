"""The simplification passes, run after ``merge`` until the operator count settles.

1. `.fold_constant_resets`: signals only ``Reset`` writes become constants.
2. `.remove_zero_incs`: increments by a product with a zero constant go.
3. `.remove_unused`: self-copies and pure operators whose results nobody sees go.
4. `.fuse_reset_incs`: ``Reset(Y, 0)`` + one increment of ``Y`` become one set.
5. `.merge_synapses`: linear filters with the same dynamics run as one group.

Each keeps the results identical to ``nengo.Simulator``. NengoDL's
``graph_optimizer`` has the same ideas (``remove_unmodified_resets``,
``remove_zero_incs``, ``remove_reset_incs``).
"""

from nengo_onnx.passes.fold_resets import fold_constant_resets
from nengo_onnx.passes.merge_synapses import merge_synapses
from nengo_onnx.passes.remove_unused import remove_unused
from nengo_onnx.passes.reset_incs import fuse_reset_incs
from nengo_onnx.passes.zero_incs import remove_zero_incs

SIMPLIFY = (
    fold_constant_resets,
    remove_zero_incs,
    remove_unused,
    fuse_reset_incs,
    merge_synapses,
)
