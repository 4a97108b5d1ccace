"""What every operator graph must satisfy, before and after each pass.

`check_graph` raises ``BuildError`` naming the offending operators and the pass
that ran last. The pipeline runs it between passes when
`nengo_onnx.compiler.pipeline.CHECK_INVARIANTS` is on (the tests turn it on).

1. The graph is acyclic (one step must have a schedule).
2. Each operator appears once: the ONNX and host segments of
   `nengo_onnx.passes.split_host`, when present, list every operator of the
   graph exactly once (the graph's own nodes are distinct by construction;
   ``rebuild_checked`` refuses an operator list that repeats one).
3. Each element of a base signal is set by at most one operator and updated by
   at most one operator (Nengo's ``validate_ops`` rule, per element so that
   aliased views count too).
4. The edges are Nengo's schedule for these operators: every dependency that
   ``operator_dependency_graph`` finds is an edge (a pass that changes signals
   in place must rebuild the graph).
5. Every signal an operator reads (or a probe records) is written by some
   operator, or static (no operator writes its base, so it keeps its initial
   value). Across a pass: a base that operators set or updated before it and
   that is still read is still set or updated (a pass may drop the operator
   giving a value only with the value's readers, or fold it into a constant).
"""

from collections import Counter, defaultdict

import networkx as nx
import numpy as np
from nengo.exceptions import BuildError
from nengo.utils.simulator import operator_dependency_graph

from nengo_onnx.compiler.signals import view_indices


def check_graph(graph, after=None, valued=None):
    """Raise ``BuildError`` if ``graph`` breaks one of the module's rules.

    ``after`` names the pass that made ``graph`` (``None``: the built model);
    ``valued`` is `valued_bases` of the graph before that pass (rule 5).
    """
    where = "the built model" if after is None else f"pass {after}"
    ops = list(graph.nodes)
    _check_acyclic(graph, where)
    _check_segments(graph, ops, where)
    for kind in ("sets", "updates"):
        _check_single_writer(ops, kind, where)
    _check_schedule(graph, ops, where)
    if valued is not None:
        _check_values_kept(graph, ops, valued, where)


def valued_bases(graph):
    """The bases that some operator of ``graph`` sets or updates (for rule 5)."""
    return {sig.base for op in graph.nodes for sig in op.sets + op.updates}


def _fail(where, problem, ops=()):
    listed = "".join(f"\n  {op}" for op in ops)
    raise BuildError(f"{where} {problem}{listed}")


def _check_acyclic(graph, where):
    if not nx.is_directed_acyclic_graph(graph):
        cycle = [u for u, _ in nx.find_cycle(graph)]
        _fail(where, "made the operator graph cyclic; the cycle:", cycle)


def _check_segments(graph, ops, where):
    segments = graph.graph.get("segments")
    if segments is None:
        return
    listed = [op for kind, entry in segments for op in (entry if kind == "onnx" else [entry])]
    counts = Counter(listed)
    twice = [op for op, n in counts.items() if n > 1]
    if twice:
        _fail(where, "listed operators in more than one segment:", twice)
    missing = [op for op in ops if op not in counts]
    extra = [op for op in counts if op not in graph]
    if missing or extra:
        _fail(where, "made segments that differ from the graph's operators:", missing + extra)


def _check_single_writer(ops, kind, where):
    """Rule 3 for ``kind`` (``"sets"`` or ``"updates"``)."""
    by_base = defaultdict(list)
    for op in ops:
        for sig in getattr(op, kind):
            by_base[sig.base].append((op, view_indices(sig).ravel()))
    for base, entries in by_base.items():
        if len({id(op) for op, _ in entries}) < 2:
            continue  # one operator: its own signals may not repeat (Nengo checks that)
        writers = defaultdict(list)
        for op, idx in entries:
            writers[op].append(idx)
        count = np.zeros(int(np.prod(base.shape)), dtype=np.int64)
        elements = {op: np.unique(np.concatenate(idx)) for op, idx in writers.items()}
        for idx in elements.values():
            count[idx] += 1
        if (count > 1).any():
            element = int(np.flatnonzero(count > 1)[0])
            culprits = [op for op, idx in elements.items() if element in idx]
            verb = "set" if kind == "sets" else "update"
            _fail(
                where, f"left several operators that {verb} element {element} of {base}:", culprits
            )


def _check_schedule(graph, ops, where):
    try:
        dependencies = operator_dependency_graph(ops)
    except AssertionError as e:  # Nengo's own validate_ops (rule 3 per view)
        _fail(where, f"broke Nengo's operator rules: {e}")
    missing = [
        (a, b) for a, succ in dependencies.items() for b in succ if not graph.has_edge(a, b)
    ]
    if missing:
        a, b = missing[0]
        _fail(where, f"left {len(missing)} dependencies out of the graph, e.g. from", [a, b])


def _check_values_kept(graph, ops, valued, where):
    still = valued_bases(graph)
    model = graph.graph.get("model")
    probed = [model.sig[probe]["in"] for probe in model.probes] if model is not None else []
    read = [(op, sig) for op in ops for sig in op.reads] + [(None, sig) for sig in probed]
    lost = {sig.base: op for op, sig in read if sig.base in valued and sig.base not in still}
    if lost:
        base, op = next(iter(lost.items()))
        reader = "a probe" if op is None else str(op)
        _fail(
            where,
            f"removed every operator that sets or updates {base}, which {reader} still reads",
        )
