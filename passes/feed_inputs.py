"""Replace input Nodes and time-only operators by `.FeedInput` operators.

1. An input Node (``size_in == 0`` with an output) gets a ``FeedInput`` named
   ``input.<node>`` that sets its output signal, replacing its ``SimPyFunc`` or
   ``SimProcess`` (or nothing, for a constant output), so ``data`` can override it.
2. Any other operator that reads nothing but time and that no emitter handles
   (``SimPyFunc`` of ``t``, a ``SimProcess`` without input such as neuron noise)
   becomes a ``FeedInput`` named ``feed.<signal>``, with the same set/inc/update mode.

3. ``FeedInput`` operators already in the graph (a model compiled before, then
   pickled or reused) are kept as they are.

The runtime computes the fed values with Nengo's own step functions
(`nengo_onnx.runtime.host.TimeFeeder`), so they match ``nengo.Simulator`` exactly.
"""

from nengo.builder.operator import SimPyFunc
from nengo.builder.processes import SimProcess

from nengo_onnx.compiler.graph import rebuild
from nengo_onnx.compiler.operators import FeedInput


def _mode(op):
    if op.sets:
        return "set"
    return "inc" if op.incs else "update"


def _time_only(op, model):
    if not isinstance(op, (SimPyFunc, SimProcess)):
        return False
    if isinstance(op, SimPyFunc) and op.output is None:
        return False
    return all(sig.base is model.time.base for sig in op.reads)


def feed_inputs(graph):
    model = graph.graph["model"]
    input_nodes = graph.graph["input_nodes"]  # {Node: port name}
    names = graph.graph["names"]
    feeds = {}  # key -> (FeedInput, source op or None, node or None)
    replaced = {}
    by_output = {}
    for op in graph.nodes:
        for sig in op.sets + op.incs + op.updates:
            by_output.setdefault(sig, op)

    used = set()
    for op in graph.nodes:
        if isinstance(op, FeedInput):
            feeds[op.key] = (op, op.source, op.node)
            used.add(op.key)

    for node, key in input_nodes.items():
        if key in feeds:  # fed already (rule 3)
            continue
        sig = model.sig[node]["out"]
        source = by_output.get(sig)
        feed = FeedInput(key, sig, mode="set", source=source, node=node, tag=f"input {node}")
        feeds[key] = (feed, source, node)
        used.add(key)
        if source is not None:
            replaced[source] = feed

    for op in graph.nodes:
        if op in replaced or not _time_only(op, model):
            continue
        base = names.feed(op.output)
        key, n = base, 0
        while key in used:
            n += 1
            key = f"{base}_{n}"
        used.add(key)
        feed = FeedInput(key, op.output, mode=_mode(op), source=op, tag=str(op))
        feeds[key] = (feed, op, None)
        replaced[op] = feed

    operators = [replaced.get(op, op) for op in graph.nodes]
    # feeds of constant Nodes replace no operator: add them (unless already there)
    extra = [f for f, source, _ in feeds.values() if source is None and f not in graph]
    new = rebuild(graph, operators + extra)
    new.graph["feeds"] = feeds
    return new
