"""The compiler pipeline: the passes, in the order they run.

Each pass is a function from an operator graph to an operator graph
(`nengo_onnx.passes`). `run_passes` runs `PASSES` in order (leaving out
`OPTIMIZATIONS` with ``Simulator(optimize=False)``), through `run_pass`, which

1. checks the graph's invariants after every pass when `CHECK_INVARIANTS` is on
   (`nengo_onnx.compiler.invariants`; the tests turn it on), and
2. prints the operator count of each operator type after every pass to stderr
   when the environment variable ``NENGO_ONNX_DEBUG_PASSES`` is set (not ``0``).

Unrolling (`nengo_onnx.passes.unroll.unroll`) runs per ONNX segment when the
runtime emits it, since it depends on the block length.
"""

import os
import sys
from collections import Counter

from nengo_onnx.compiler.invariants import check_graph, valued_bases
from nengo_onnx.passes.feed_inputs import feed_inputs
from nengo_onnx.passes.fold_resets import fold_constant_resets
from nengo_onnx.passes.merge import merge
from nengo_onnx.passes.merge_synapses import merge_synapses
from nengo_onnx.passes.remove_unused import remove_unused
from nengo_onnx.passes.reset_incs import fuse_reset_incs
from nengo_onnx.passes.split_host import split_host
from nengo_onnx.passes.zero_incs import remove_zero_incs

#: Check `nengo_onnx.compiler.invariants` after every pass (off in production,
#: where it would only cost time; tests/conftest.py turns it on).
CHECK_INVARIANTS = False

#: Set (and not "0"), the pipeline prints operator counts after every pass.
DEBUG_ENV = "NENGO_ONNX_DEBUG_PASSES"

#: The simplifications that `simplify` repeats, in order.
SIMPLIFY = (
    fold_constant_resets,  # signals only Reset writes become constants
    remove_zero_incs,  # increments by a product with a zero constant go
    remove_unused,  # self-copies and pure operators whose results nobody sees go
    fuse_reset_incs,  # Reset(Y, 0) + one increment of Y become one set
    merge_synapses,  # linear filters with the same dynamics run as one group
)


def simplify(graph):
    """The `SIMPLIFY` passes, repeated until the operator count stops changing.

    Each keeps the results identical to ``nengo.Simulator``. NengoDL's
    ``graph_optimizer`` has the same ideas (``remove_unmodified_resets``,
    ``remove_zero_incs``, ``remove_reset_incs``).
    """
    while True:
        before = graph.number_of_nodes()
        for simplification in SIMPLIFY:
            graph = run_pass(simplification, graph)
        if graph.number_of_nodes() == before:
            return graph


#: Every pass, in the order it runs.
PASSES = (
    feed_inputs,  # input Nodes and time-only operators become fed inputs
    merge,  # same-kind operators batched over packed signals (Nengo's merger)
    simplify,  # the SIMPLIFY passes, until the operator count settles
    split_host,  # the step cut into ONNX segments around Python-only operators
)

#: The passes that ``Simulator(optimize=False)`` leaves out.
OPTIMIZATIONS = (merge, simplify)


def run_passes(graph, optimize=True):
    """Run `PASSES` over a built model's operator graph (all but `OPTIMIZATIONS`
    unless ``optimize``); returns the final graph."""
    if CHECK_INVARIANTS:
        check_graph(graph)  # the built model itself, so a failure is never blamed on a pass
    for pass_ in PASSES:
        if optimize or pass_ not in OPTIMIZATIONS:
            graph = run_pass(pass_, graph)
    return graph


def run_pass(pass_, graph):
    """``pass_(graph)``, checked and reported as the module says."""
    valued = valued_bases(graph) if CHECK_INVARIANTS else None
    graph = pass_(graph)
    if CHECK_INVARIANTS:
        check_graph(graph, after=pass_.__name__, valued=valued)
    if os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
        print(f"nengo-onnx: after {pass_.__name__}: {operator_counts(graph)}", file=sys.stderr)
    return graph


def operator_counts(graph):
    """``"<n> operators (Type n, ...)"``, most frequent type first."""
    counts = Counter(type(op).__name__ for op in graph.nodes)
    listed = ", ".join(f"{name} {n}" for name, n in counts.most_common())
    return f"{graph.number_of_nodes()} operators ({listed})"
