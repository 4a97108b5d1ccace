"""Helpers shared by the simplification passes: element indices, writers, rebuilding.

Not a pass. Kept free of `nengo_onnx.compiler.emit` imports, since the emitters of the
operators that passes define (`nengo_onnx.compiler.emit.groups`) import the passes.
"""

import copy
import warnings
from collections import defaultdict

import networkx as nx
import numpy as np

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
    """`rebuild` over ``operators``, or ``graph`` itself if the result has a cycle.

    A pass should never create a cycle; this guards the simulation against a
    pass bug by skipping that pass's changes (with a warning).
    """
    new = rebuild(graph, operators)
    if not nx.is_directed_acyclic_graph(new):
        warnings.warn(f"{pass_name} made the operator graph cyclic; its changes are skipped")
        return graph
    return new


def ordered_ops(graph):
    """The graph's operators in their ``index`` order (rebuilt graphs keep it)."""
    index = nx.get_node_attributes(graph, "index")
    return sorted(graph.nodes, key=lambda op: index.get(op, 0))
