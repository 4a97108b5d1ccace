"""Split one step into ONNX segments around operators that must run in Python.

An operator that no emitter handles and that reads the network's own signals
(a Python ``Node`` function of its input, a user ``Process`` with input) cannot
be an ONNX op. The step is cut there: ``graph.graph["segments"]`` becomes a list
of ``("onnx", [ops...])`` and ``("host", op)`` entries in schedule order, run one
after the other every step. A graph without such operators is one ONNX segment.
"""

from nengo_onnx.compiler.emit import find_emitter
from nengo_onnx.compiler.graph import step_order


def split_host(graph):
    segments, current = [], []
    for op in step_order(graph):
        fn, _ = find_emitter(op)
        if fn is not None:
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
