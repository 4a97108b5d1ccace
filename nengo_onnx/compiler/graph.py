"""The operator graph: a networkx DiGraph of a built model's operators.

Edges follow Nengo's schedule for each base signal (sets, then incs, then reads,
then updates), as computed by ``nengo.utils.simulator.operator_dependency_graph``.
The graph carries the model (``graph.graph["model"]``) so passes can reach it.
"""

import networkx as nx
from nengo.builder.operator import Operator
from nengo.utils.simulator import operator_dependency_graph


class FeedInput(Operator):
    """Writes a value computed outside the ONNX graph into ``dst`` each step.

    Stands in for an input Node's output and for operators that depend only on
    time (``Node(np.sin)``, noise processes): the runtime computes their values
    in Python, with Nengo's own step functions, and feeds them as graph inputs.

    Notes
    -----
    1. sets ``[dst]`` if mode is ``"set"``
    2. incs ``[dst]`` if mode is ``"inc"``
    3. reads ``[]``
    4. updates ``[dst]`` if mode is ``"update"``
    """

    def __init__(self, key, dst, mode="set", source=None, node=None, tag=None):
        super().__init__(tag=tag)
        self.key = key
        self.mode = mode
        self.source = source  # the operator computing the value, if any
        self.node = node  # the input Node, if any
        self.sets = [dst] if mode == "set" else []
        self.incs = [dst] if mode == "inc" else []
        self.reads = []
        self.updates = [dst] if mode == "update" else []

    @property
    def dst(self):
        return (self.sets + self.incs + self.updates)[0]

    @property
    def _descstr(self):
        return f"{self.key} -> {self.dst}"


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
