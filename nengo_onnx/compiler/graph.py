"""The operator graph: a networkx DiGraph of a built model's operators.

Edges follow Nengo's schedule for each base signal (sets, then incs, then reads,
then updates), as computed by ``nengo.utils.simulator.operator_dependency_graph``.
The graph carries the model (``graph.graph["model"]``) so passes can reach it.
"""

import networkx as nx
from nengo.utils.simulator import operator_dependency_graph


def operator_graph(model, operators=None):
    """Build the dependency DiGraph of ``operators`` (default: the model's)."""
    operators = list(model.operators if operators is None else operators)
    graph = nx.DiGraph(model=model)
    for i, op in enumerate(operators):
        graph.add_node(op, index=i)
    for op, successors in operator_dependency_graph(operators).items():
        graph.add_edges_from((op, succ) for succ in successors)
    return graph


def step_order(graph):
    """The operators of one step in a valid, deterministic order."""
    index = nx.get_node_attributes(graph, "index")
    return list(nx.lexicographical_topological_sort(graph, key=lambda op: index.get(op, 0)))


def rebuild(graph, operators):
    """A new operator graph over ``operators`` that keeps ``graph``'s attributes."""
    new = operator_graph(graph.graph["model"], operators)
    new.graph.update(graph.graph)
    return new
