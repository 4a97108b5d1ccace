"""Merge independent operators of the same kind into one batched operator.

Uses Nengo's own operator merger (``nengo.builder.optimizer``), which packs the
signals of mergeable operators (Resets, Copies, ElementwiseIncs, DotIncs,
SimNeurons of one neuron type) into contiguous views of new base signals and
replaces each group by one operator over them. DotIncs with different matrices
become one block-sparse ``BsrDotInc``.

Notes
-----
Nengo's merger rewrites ``model.sig`` and the operators' signal lists in place,
so this pass changes the model that the graph carries; the returned graph is new.
"""

from nengo.builder.optimizer import optimize as nengo_optimize

from nengo_onnx.graph import rebuild


def merge(graph):
    model = graph.graph["model"]
    model.operators = list(graph.nodes)
    dg = {op: set(graph.successors(op)) for op in graph.nodes}
    nengo_optimize(model, dg)
    return rebuild(graph, list(dg))
