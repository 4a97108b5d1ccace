"""Merge independent operators of the same kind into one batched operator.

Uses Nengo's own operator merger (``nengo.builder.optimizer``), which packs the
signals of mergeable operators (Resets, Copies, ElementwiseIncs, DotIncs,
SimNeurons of one neuron type) into contiguous views of new base signals and
replaces each group by one operator over them. DotIncs with different matrices
become one block-sparse ``BsrDotInc``.

1. Merge operators whose first signal is a view, repeatedly, while that helps.
2. Then merge operators without views once; if that merged anything, go to 1.

Notes
-----
Nengo's merger visits candidates in ``set`` order (memory addresses), so which
operators end up merged changes from run to run, and some orders leave several
SimNeurons of one type unmerged. Visiting them in schedule order instead makes
the result reproducible. The merger rewrites ``model.sig`` and the operators'
signal lists in place, so this pass changes the model that the graph carries;
the returned graph is new.
"""

from nengo.builder.optimizer import OpMergePass
from nengo.utils.simulator import operator_dependency_graph
from nengo.utils.stdlib import OrderedSet

from nengo_onnx.compiler.graph import rebuild


class _ScheduleOrderMergePass(OpMergePass):
    def __init__(self, dg):
        super().__init__(dg)
        self.might_merge = OrderedSet(dg)


def merge(graph):
    model = graph.graph["model"]
    dg = operator_dependency_graph(list(graph.nodes))
    merge_pass = _ScheduleOrderMergePass(dg)
    views_only = True
    while True:
        before = len(merge_pass.dg.forward)
        merge_pass(views_only)
        reduced = len(merge_pass.dg.forward) < before
        if not views_only and not reduced:
            break
        views_only = reduced

    for sigdict in model.sig.values():
        for key in sigdict:
            while sigdict[key] in merge_pass.sig_replacements:
                sigdict[key] = merge_pass.sig_replacements[sigdict[key]]
    model.operators = list(dg)
    return rebuild(graph, list(dg))
