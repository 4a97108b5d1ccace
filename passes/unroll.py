"""Unroll one step's operator graph over ``K`` timesteps.

The result has a node ``(t, op)`` for every operator and step, the step's edges
copied into every step, and a barrier node ``("step", t)`` between consecutive
steps (all sinks of step ``t`` -> barrier -> all sources of step ``t + 1``), so
any topological order of it runs the steps one after another, threading state.
"""

import networkx as nx

from nengo_onnx.compiler.graph import step_order


def unroll(graph, n_steps):
    order = step_order(graph)
    index = {op: i for i, op in enumerate(order)}
    sources = [op for op in order if graph.in_degree(op) == 0]
    sinks = [op for op in order if graph.out_degree(op) == 0]
    unrolled = nx.DiGraph(**graph.graph)
    unrolled.graph["n_steps"] = n_steps
    for t in range(n_steps):
        for op in order:
            unrolled.add_node((t, op), step=t, op=op, index=t * (len(order) + 1) + index[op])
        unrolled.add_edges_from(((t, a), (t, b)) for a, b in graph.edges)
        if t + 1 < n_steps:
            barrier = ("step", t)
            unrolled.add_node(barrier, step=t, op=None, index=(t + 1) * (len(order) + 1) - 1)
            unrolled.add_edges_from(((t, op), barrier) for op in sinks)
            unrolled.add_edges_from((barrier, (t + 1, op)) for op in sources)
    return unrolled


def unrolled_order(unrolled):
    """``(t, op)`` pairs of an unrolled graph in emission order (barriers left out)."""
    index = nx.get_node_attributes(unrolled, "index")
    order = nx.lexicographical_topological_sort(unrolled, key=lambda n: index[n])
    return [n for n in order if n[0] != "step"]
