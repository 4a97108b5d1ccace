"""The pipeline: the passes that run, loud failures, the invariant check, debug counts."""

import subprocess
import sys

import nengo
import networkx as nx
import numpy as np
import pytest
from nengo.builder import Model
from nengo.builder.operator import Copy, Reset
from nengo.builder.signal import Signal
from nengo.exceptions import BuildError

import nengo_onnx
from nengo_onnx.compiler import pipeline
from nengo_onnx.compiler.graph import operator_graph, rebuild
from nengo_onnx.compiler.invariants import check_graph, valued_bases
from nengo_onnx.passes.util import rebuild_checked


def signals(n=3, size=2):
    return [Signal(np.zeros(size), name=f"s{i}") for i in range(n)]


def cyclic_ops():
    """``y = x`` and ``x = y``: each reads what the other sets."""
    x, y, _ = signals()
    return [Copy(x, y, tag="x to y"), Copy(y, x, tag="y to x")]


def small_net():
    with nengo.Network(seed=0) as net:
        u = nengo.Node(np.sin)
        a = nengo.Ensemble(10, 1)
        b = nengo.Ensemble(10, 1)
        nengo.Connection(u, a)
        nengo.Connection(a, b, synapse=0.01)
        nengo.Connection(a, b, synapse=0.01, transform=0.5)
        nengo.Probe(b, synapse=0.01)
    return net


def test_invariants_are_checked_in_the_tests():
    assert pipeline.CHECK_INVARIANTS  # tests/conftest.py


def test_invariants_are_off_by_default():
    code = "from nengo_onnx.compiler import pipeline; assert not pipeline.CHECK_INVARIANTS"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pass_making_a_cycle_raises_naming_it():
    model = Model(dt=0.001)
    graph = operator_graph(model, [])

    def make_cycle(graph):
        return rebuild_checked(graph, cyclic_ops(), "make_cycle")

    with pytest.raises(BuildError, match="pass make_cycle made the operator graph cyclic"):
        pipeline.run_pass(make_cycle, graph)


def test_check_names_the_pass_of_a_cycle():
    """A pass that builds its graph without `rebuild_checked` is caught between passes."""
    model = Model(dt=0.001)

    def sloppy(graph):
        return rebuild(graph, cyclic_ops())

    with pytest.raises(BuildError, match="pass sloppy made the operator graph cyclic") as info:
        pipeline.run_pass(sloppy, operator_graph(model, []))
    assert "x to y" in str(info.value) and "y to x" in str(info.value)


def test_check_catches_two_setters_of_one_signal():
    x, y, _ = signals(size=4)
    first, second = Copy(x[:2], y[:2], tag="first"), Copy(x[1:3], y[1:3], tag="second")
    graph = nx.DiGraph(model=Model(dt=0.001))  # by hand: nengo's own check would assert
    graph.add_nodes_from([first, second])
    with pytest.raises(BuildError, match="pass twice_set left several operators that set") as info:
        check_graph(graph, after="twice_set")
    assert "first" in str(info.value) and "second" in str(info.value)
    # rebuild_checked reports it too, naming the pass, instead of nengo's bare assertion
    with pytest.raises(BuildError, match="pass twice_set broke Nengo's operator rules"):
        rebuild_checked(graph, [Copy(x, y), Reset(y)], "twice_set")


def test_check_catches_a_repeated_operator():
    ops = [Copy(*signals()[:2])]
    graph = operator_graph(Model(dt=0.001), ops)
    with pytest.raises(BuildError, match="pass repeat listed operators twice"):
        rebuild_checked(graph, ops + ops, "repeat")


def test_check_catches_a_lost_value():
    x, y, z = signals()
    set_y, read_y = Copy(x, y, tag="set y"), Copy(y, z, tag="read y")
    graph = operator_graph(Model(dt=0.001), [set_y, read_y])
    valued = valued_bases(graph)
    with pytest.raises(BuildError, match="pass drop removed every operator that sets or upd"):
        check_graph(rebuild(graph, [read_y]), after="drop", valued=valued)
    check_graph(rebuild(graph, []), after="drop", valued=valued)  # its reader went too


def test_check_catches_stale_edges():
    x, y, z = signals()
    graph = nx.DiGraph(model=Model(dt=0.001))
    graph.add_nodes_from([Copy(x, y), Copy(y, z)])  # y's reader must follow its setter
    with pytest.raises(BuildError, match="pass stale left 1 dependencies out"):
        check_graph(graph, after="stale")


def passes_run(capsys, monkeypatch, **kwargs):
    """The names of the passes that ran, in order (from the debug output)."""
    monkeypatch.setenv(pipeline.DEBUG_ENV, "1")
    with nengo_onnx.Simulator(small_net(), progress_bar=False, **kwargs):
        pass
    err = capsys.readouterr().err
    return [
        line.split()[2].rstrip(":")
        for line in err.splitlines()
        if line.startswith("nengo-onnx: after ")
    ], err


def test_debug_env_prints_counts(capsys, monkeypatch):
    _, err = passes_run(capsys, monkeypatch)
    line = next(line for line in err.splitlines() if line.startswith("nengo-onnx: after merge:"))
    assert "operators (" in line and "DotInc" in line
    monkeypatch.setenv(pipeline.DEBUG_ENV, "0")
    with nengo_onnx.Simulator(small_net(), progress_bar=False):
        pass
    assert "nengo-onnx: after" not in capsys.readouterr().err


def test_the_pipeline_list_is_what_runs(capsys, monkeypatch):
    names, _ = passes_run(capsys, monkeypatch)
    simplifications = [p.__name__ for p in pipeline.SIMPLIFY]
    # the simplifications run (at least once each, in order) inside `simplify`
    first = names.index(simplifications[0])
    inner = names[first : names.index("simplify")]
    assert inner[: len(simplifications)] == simplifications
    assert len(inner) % len(simplifications) == 0
    assert names[:first] + names[names.index("simplify") :] == [
        p.__name__ for p in pipeline.PASSES
    ]
    names, _ = passes_run(capsys, monkeypatch, optimize=False)
    assert names == [p.__name__ for p in pipeline.PASSES if p not in pipeline.OPTIMIZATIONS]
