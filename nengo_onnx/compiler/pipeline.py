"""The compiler pipeline: the passes, in the order they run."""

from nengo_onnx.passes.feed_inputs import feed_inputs
from nengo_onnx.passes.merge import merge
from nengo_onnx.passes.split_host import split_host

try:
    from nengo_onnx.passes.simplify import SIMPLIFY
except ImportError:  # pragma: no cover
    SIMPLIFY = ()


def run_passes(graph, optimize=True):
    """Run the passes over a built model's operator graph.

    1. ``feed_inputs``: input Nodes and time-only operators become fed inputs.
    2. ``merge`` (if ``optimize``): same-kind operators batched over packed signals.
    3. simplifications (if ``optimize``), repeated until nothing changes.
    4. ``split_host``: the step cut into ONNX segments around Python-only operators.

    Unrolling (`nengo_onnx.passes.unroll.unroll`) runs per ONNX segment when the
    runtime emits it, since it depends on the block length.
    """
    graph = feed_inputs(graph)
    if optimize:
        graph = merge(graph)
        graph = simplify(graph)
    return split_host(graph)


def simplify(graph):
    """Apply the simplification passes until the operator count stops changing."""
    while True:
        before = graph.number_of_nodes()
        for simplification in SIMPLIFY:
            graph = simplification(graph)
        if graph.number_of_nodes() == before:
            return graph
