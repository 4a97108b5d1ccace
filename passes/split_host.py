"""Split one step into ONNX segments around operators that must run in Python.

1. An operator that no emitter handles and that reads the network's own signals
   (a Python ``Node`` function of its input, a user ``Process`` with input) cannot
   be an ONNX op: it runs in Python.
2. Operators that only carry values computed in Python to such an operator (the
   fed value of an input Node or a function of time, copied, reset or scaled on
   the way: `CARRIERS`) run in Python too, in float64 with nengo's own step
   functions, so that Python functions see exactly the values nengo.Simulator
   gives them (``Node(lambda t, x: ...)`` fed from ``Node(lambda t: t)`` gets
   ``x[0] == t``), not values rounded by a float32 graph on the way.

The step is cut at the Python operators: ``graph.graph["segments"]`` becomes a
list of ``("onnx", [ops...])`` and ``("host", op)`` entries in schedule order,
run one after the other every step. A graph without Python operators is one
ONNX segment (rule 2 applies only where rule 1 found some).
"""

from nengo.builder.operator import Copy, DotInc, ElementwiseInc, Reset

from nengo_onnx.compiler.emit import find_emitter
from nengo_onnx.compiler.graph import step_order
from nengo_onnx.compiler.operators import DotSet, ElementwiseSet, FeedInput

#: Operator types that may run in Python to carry Python-computed values (rule 2):
#: exactly these classes, whose nengo step functions (or the set forms', which zero
#: then increment) compute what the emitters do.
CARRIERS = (FeedInput, Copy, Reset, ElementwiseInc, DotInc, ElementwiseSet, DotSet)


def _carriers(ops, host, model):
    """The operators of rule 2: writers of what Python operators read, recursively,
    whose own inputs are all Python-computed (or constant)."""
    writers = {}
    for op in ops:
        for sig in op.sets + op.incs + op.updates:
            writers.setdefault(sig.base, []).append(op)
    always_known = {model.time.base, model.step.base}
    verdict = {}

    def carries(op):
        if op in host:
            return True
        if op not in verdict:
            verdict[op] = False  # (a loop is not a carrier)
            # an operator may read another part of a base it writes (merged signals)
            verdict[op] = type(op) in CARRIERS and all(known(sig.base, op) for sig in op.reads)
        return verdict[op]

    def known(base, reader=None):
        if base in always_known:
            return True
        return all(carries(w) for w in writers.get(base, []) if w is not reader)

    moved = set()
    for op in ops:
        if op in host:
            for sig in op.reads:
                if sig.base not in always_known and known(sig.base):
                    moved.update(w for w in writers.get(sig.base, []) if w not in host)
    # the carriers' own inputs' writers, transitively
    frontier = list(moved)
    while frontier:
        op = frontier.pop()
        for sig in op.reads:
            for w in writers.get(sig.base, []):
                if w not in host and w not in moved:
                    moved.add(w)
                    frontier.append(w)
    return moved


def split_host(graph):
    ops = step_order(graph)
    host = {op for op in ops if find_emitter(op)[0] is None}
    if host:
        host |= _carriers(ops, host, graph.graph["model"])
    segments, current = [], []
    for op in ops:
        if op not in host:
            current.append(op)
            continue
        if current:
            segments.append(("onnx", current))
            current = []
        segments.append(("host", op))
    if current:
        segments.append(("onnx", current))
    new = graph.copy()
    new.graph["segments"] = segments
    return new
