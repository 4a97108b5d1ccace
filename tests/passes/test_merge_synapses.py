"""`merge_synapses`: linear filters with the same dynamics run as one group."""

from collections import Counter

import nengo
import networkx as nx
import numpy as np
import pytest
from nengo.builder import Model
from nengo.builder.processes import SimProcess

from nengo_onnx.compiler.graph import operator_graph
from nengo_onnx.compiler.operators import LinearFilterGroup
from nengo_onnx.compiler.pipeline import SIMPLIFY
from nengo_onnx.compiler.program import built_graph
from nengo_onnx.passes.feed_inputs import feed_inputs
from nengo_onnx.passes.merge_synapses import merge_synapses

from .test_simplify import check_matches_nengo

N_STEPS = 25
GENERAL = nengo.LinearFilter([0.002, 1], [0.01, 1])  # with passthrough (D != 0)
GAIN = nengo.LinearFilter([0.5], [1])  # no state


def build(net):
    model = Model(dt=0.001)
    model.build(net)
    return model


def fed_graph(net):
    model = build(net)
    return feed_inputs(built_graph(model, net))


SYNAPSES = (
    0.01,
    0.01,
    0.01,
    nengo.Alpha(0.005),
    nengo.Alpha(0.005),
    GENERAL,
    GENERAL,
    GAIN,
    GAIN,
    0.02,
)


def filter_net(synapses=SYNAPSES):
    """One ensemble feeding one ensemble per synapse (several synapses repeat)."""
    with nengo.Network(seed=4) as net:
        net.u = nengo.Node(lambda t: [np.sin(7 * t), np.cos(11 * t)])
        net.a = nengo.Ensemble(30, 2, neuron_type=nengo.LIFRate())
        nengo.Connection(net.u, net.a, synapse=None)
        net.ps = []
        for i, synapse in enumerate(synapses):
            post = nengo.Ensemble(10, 2, neuron_type=nengo.RectifiedLinear(), label=f"e{i}")
            nengo.Connection(net.a, post, synapse=synapse, transform=0.5 + 0.1 * i)
            net.ps.append(nengo.Probe(post, synapse=0.01))
        net.ps.append(nengo.Probe(net.a, synapse=GENERAL))
    return net


def filters(graph):
    return Counter(
        str(op.process) if isinstance(op, SimProcess) else f"group of {op.processes[0]}"
        for op in graph.nodes
        if isinstance(op, (SimProcess, LinearFilterGroup))
    )


def test_merge_counts():
    net = filter_net()
    graph = fed_graph(net)
    merged = merge_synapses(graph)
    before, after = filters(graph), filters(merged)
    assert before["Lowpass(tau=0.01)"] == 3 + 10  # connections + probes
    # one group per repeated synapse (same A, B, C, D and mode); the 0.02 one stays alone
    assert after["group of Lowpass(tau=0.01)"] == 1
    assert after["Lowpass(tau=0.01)"] == 0
    assert after["group of Alpha(tau=0.005)"] == 1
    assert after[f"group of {GENERAL}"] == 1 and after[str(GENERAL)] == 0
    assert after[f"group of {GAIN}"] == 1
    assert after["Lowpass(tau=0.02)"] == 1
    groups = [op for op in merged.nodes if isinstance(op, LinearFilterGroup)]
    assert sum(g.n for g in groups) + sum(after[k] for k in after if "group" not in k) == sum(
        before.values()
    )
    n_removed = sum(g.n - 1 for g in groups)
    assert merged.number_of_nodes() == graph.number_of_nodes() - n_removed
    assert merged.graph.keys() == graph.graph.keys()
    assert nx.is_directed_acyclic_graph(merged)
    assert merge_synapses(merged) is merged  # nothing left to merge


def chained_net():
    """A probe's synapse filtering a connection's filtered output: a path between them."""
    with nengo.Network(seed=5) as net:
        net.u = nengo.Node(lambda t: [np.sin(9 * t), t])
        net.a = nengo.Ensemble(20, 2, neuron_type=nengo.RectifiedLinear())
        net.b = nengo.Ensemble(20, 2, neuron_type=nengo.RectifiedLinear())
        nengo.Connection(net.u, net.a, synapse=None)
        net.conn = nengo.Connection(net.a, net.b, synapse=0.01)
        net.p_conn = nengo.Probe(net.conn, "output", synapse=0.01)
        net.p_b = nengo.Probe(net.b, synapse=0.01)
    return net


def test_never_merges_along_a_path():
    net = chained_net()
    graph = fed_graph(net)
    model = graph.graph["model"]
    lowpass = [
        op
        for op in graph.nodes
        if isinstance(op, SimProcess) and str(op.process) == "Lowpass(tau=0.01)"
    ]
    conn_filter = next(op for op in lowpass if op.output is model.sig[net.conn]["weighted"])
    chained = next(op for op in lowpass if op.input is conn_filter.output)
    assert nx.has_path(graph, chained, conn_filter)

    merged = merge_synapses(graph)
    assert nx.is_directed_acyclic_graph(merged)
    for group in (op for op in merged.nodes if isinstance(op, LinearFilterGroup)):
        assert not {conn_filter.output, chained.output} <= set(group.outputs)
    assert filters(merged)["group of Lowpass(tau=0.01)"] == 1  # the other two merge


def test_group_make_step_is_nengo():
    """Nengo's own Simulator runs the groups' ``make_step``: same as without merging."""
    net = filter_net()
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(N_STEPS)
    model = build(net)
    graph = merge_synapses(operator_graph(model))
    model.operators = list(graph.nodes)
    with nengo.Simulator(None, model=model, progress_bar=False, optimize=False) as sim:
        sim.run_steps(N_STEPS)
    for probe in net.ps:
        assert np.allclose(sim.data[probe], ref.data[probe])


@pytest.mark.parametrize("unroll", [1, 4])
@pytest.mark.parametrize("make_net", [filter_net, chained_net])
def test_matches_nengo(make_net, unroll, monkeypatch):
    net = make_net()
    for passes in ([merge_synapses], SIMPLIFY):
        sim = check_matches_nengo(net, passes, monkeypatch, unroll)
        assert any(isinstance(op, LinearFilterGroup) for op in sim.program.graph.nodes)
