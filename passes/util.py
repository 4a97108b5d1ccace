"""Helpers shared by the simplification passes: element indices, writers, rebuilding.

Not a pass.
"""

import copy
from collections import Counter, defaultdict

import networkx as nx
import numpy as np
from nengo.exceptions import BuildError

from nengo_onnx.compiler.graph import rebuild
from nengo_onnx.compiler.signals import view_indices as indices  # noqa: F401  (used by passes)


def writes(op):
    return op.sets + op.incs + op.updates


def writers_by_base(ops):
    """``{base: [ops writing any part of it]}`` (each op once per base)."""
    writers = defaultdict(list)
    for op in ops:
        for base in dict.fromkeys(sig.base for sig in writes(op)):
            writers[base].append(op)
    return writers


def probed_signals(model):
    """The signals that probes record (``model.sig[probe]["in"]``)."""
    return [model.sig[probe]["in"] for probe in model.probes]


class LiveMask:
    """Per-base boolean masks of elements that something needs to see.

    A pass adds signals with `add`; `any` tells whether any element of a signal
    is marked.
    """

    def __init__(self):
        self.masks = {}

    def add(self, sig):
        base = sig.base
        if base not in self.masks:
            self.masks[base] = np.zeros(int(np.prod(base.shape)), dtype=bool)
        self.masks[base][indices(sig).ravel()] = True

    def any(self, sig):
        mask = self.masks.get(sig.base)
        return mask is not None and bool(mask[indices(sig).ravel()].any())


def replace_signals(op, mapping):
    """A copy of ``op`` with its signals replaced by ``mapping`` (``op`` if none is).

    Nengo operators keep their signals in the ``sets``, ``incs``, ``reads`` and
    ``updates`` lists (properties such as ``DotInc.X`` read them from there, so
    Nengo's own optimizer can swap signals); new lists on a shallow copy leave
    the original operator untouched.
    """
    if not any(sig in mapping for sig in op.all_signals):
        return op
    new = copy.copy(op)
    new.sets = [mapping.get(s, s) for s in op.sets]
    new.incs = [mapping.get(s, s) for s in op.incs]
    new.reads = [mapping.get(s, s) for s in op.reads]
    new.updates = [mapping.get(s, s) for s in op.updates]
    return new


def rebuild_checked(graph, operators, pass_name):
    """`rebuild` over ``operators``; ``BuildError`` naming ``pass_name`` if that breaks it.

    A pass must never repeat an operator, give a view two setters or updaters
    (Nengo's rule) or create a cycle: each is a bug in that pass, reported where
    it happens rather than undone (which would hide it).
    """
    repeated = [op for op, n in Counter(operators).items() if n > 1]
    if repeated:
        raise BuildError(f"pass {pass_name} listed operators twice: {repeated}")
    try:
        new = rebuild(graph, operators)
    except AssertionError as e:  # Nengo's validate_ops, inside operator_dependency_graph
        raise BuildError(f"pass {pass_name} broke Nengo's operator rules: {e}") from e
    if not nx.is_directed_acyclic_graph(new):
        cycle = [u for u, _ in nx.find_cycle(new)]
        raise BuildError(f"pass {pass_name} made the operator graph cyclic; the cycle: {cycle}")
    return new


def ordered_ops(graph):
    """The graph's operators in their ``index`` order (rebuilt graphs keep it)."""
    index = nx.get_node_attributes(graph, "index")
    return sorted(graph.nodes, key=lambda op: index.get(op, 0))
