"""Merge linear filters with the same dynamics into one `.LinearFilterGroup`.

1. ``SimProcess`` operators whose process is a ``LinearFilter`` with an input,
   the same discretized ``(A, B, C, D)`` (at the model's ``dt``), the same mode
   and the same output dtype are candidates for one group.
2. Candidates join a group greedily, in step order, only when no path in the
   dependency graph links them to a member already in it (so contracting the
   group cannot make a cycle); groups are formed one after the other on the graph
   with the previous groups contracted.
3. Each group of two or more becomes one `.LinearFilterGroup`, which filters
   all its inputs at once (the emitter concatenates inputs and states along the
   feature axis, filters once and splits the results back).
"""

import networkx as nx
import numpy as np
from nengo.builder.processes import SimProcess
from nengo.synapses import LinearFilter

from nengo_onnx.compiler.operators import LinearFilterGroup
from nengo_onnx.passes.util import ordered_ops, rebuild_checked


def _key(op, dt):
    """What members of a group must share, or ``None`` if ``op`` cannot join one."""
    if type(op) is not SimProcess or op.input is None:
        return None
    if not isinstance(op.process, LinearFilter) or set(op.state) != {"X"}:
        return None
    if type(op.process).make_step is not LinearFilter.make_step:
        return None  # a subclass with its own dynamics
    ss = op.process._get_ss(dt)  # noqa: SLF001  (nengo's own discretization)
    A, B, C, D = (np.asarray(m, dtype=np.float64) for m in ss)
    arrays = tuple((m.shape, m.tobytes()) for m in (A, B, C, D))
    return (op.mode, np.dtype(op.output.dtype).str, op.t, arrays)


def _groups(graph, dt):
    """Lists of operators to merge, each free of paths between its members."""
    candidates = {}
    for op in ordered_ops(graph):
        key = _key(op, dt)
        if key is not None:
            candidates.setdefault(key, []).append(op)
    work = nx.DiGraph(graph.edges)
    work.add_nodes_from(graph.nodes)
    groups = []
    bit, related = _related(work)
    for ops in candidates.values():
        while len(ops) > 1:
            group, linked, rest = [], 0, []
            for op in ops:
                if linked & bit[op]:
                    rest.append(op)
                    continue
                group.append(op)
                linked |= related[op]
            if len(group) > 1:
                groups.append(group)
                _contract(work, group)
                bit, related = _related(work)
            ops = rest
    return groups


def _related(work):
    """A bit per operator, and for each the bits of its ancestors and descendants.

    Python integers as bit sets keep this linear in the graph's edges.
    """
    order = list(nx.topological_sort(work))
    bit = {op: 1 << i for i, op in enumerate(order)}
    desc, anc = {}, {}
    for op in reversed(order):
        mask = 0
        for succ in work.successors(op):
            mask |= bit[succ] | desc[succ]
        desc[op] = mask
    for op in order:
        mask = 0
        for pred in work.predecessors(op):
            mask |= bit[pred] | anc[pred]
        anc[op] = mask
    return bit, {op: anc[op] | desc[op] for op in order}


def _contract(work, group):
    """Contract ``group`` into its first member, in place."""
    keep = group[0]
    for op in group[1:]:
        nx.contracted_nodes(work, keep, op, self_loops=False, copy=False)


def _memory_order(group):
    """Members sorted by where their inputs lie (so the emitter can read them at once)."""
    rank = {}
    for op in group:
        rank.setdefault(op.input.base, len(rank))
    return sorted(group, key=lambda op: (rank[op.input.base], op.input.elemoffset))


def merge_synapses(graph):
    model = graph.graph["model"]
    groups = _groups(graph, model.dt)
    if not groups:
        return graph
    merged = {}
    for group in groups:
        group = _memory_order(group)
        first = group[0]
        new = LinearFilterGroup(
            [op.process for op in group],
            [op.input for op in group],
            [op.output for op in group],
            [op.state["X"] for op in group],
            first.t,
            mode=first.mode,
            tag=f"{len(group)} x {first.process}",
        )
        for op in group:
            merged[op] = new
    new_ops = list(dict.fromkeys(merged.get(op, op) for op in ordered_ops(graph)))
    return rebuild_checked(graph, new_ops, "merge_synapses")
