"""The simplification passes: operator counts, and results identical to nengo."""

from collections import Counter

import nengo
import numpy as np
import pytest
from nengo.builder import Model
from nengo.builder.operator import Copy, DotInc, ElementwiseInc, Reset
from nengo.builder.probe import SimProbe
from nengo.builder.signal import Signal, SignalDict

import nengo_onnx
from nengo_onnx.compiler import pipeline
from nengo_onnx.compiler.graph import operator_graph, rebuild, step_order
from nengo_onnx.compiler.operators import (
    BsrDotSet,
    DotSet,
    ElementwiseSet,
    FoldedConstant,
    set_form,
)
from nengo_onnx.compiler.pipeline import SIMPLIFY
from nengo_onnx.compiler.program import built_graph
from nengo_onnx.passes.feed_inputs import feed_inputs
from nengo_onnx.passes.fold_resets import fold_constant_resets
from nengo_onnx.passes.merge_synapses import merge_synapses
from nengo_onnx.passes.remove_unused import remove_unused
from nengo_onnx.passes.reset_incs import fuse_reset_incs
from nengo_onnx.passes.util import indices
from nengo_onnx.passes.zero_incs import remove_zero_incs

N_STEPS = 25


def build_graph(net):
    """The operator graph as the passes see it (inputs fed, no merging: deterministic)."""
    model = Model(dt=0.001)
    model.build(net)
    return feed_inputs(built_graph(model, net))


def types(graph):
    return Counter(type(op).__name__ for op in graph.nodes)


def check_matches_nengo(net, passes, monkeypatch, unroll, atol=1e-5):
    """Run ``net`` with only ``passes`` simplifying (after ``merge``), minibatch 2."""
    monkeypatch.setattr(pipeline, "SIMPLIFY", tuple(passes))
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(N_STEPS)
    with nengo_onnx.Simulator(
        net, minibatch_size=2, unroll_simulation=unroll, progress_bar=False
    ) as sim:
        sim.run_steps(N_STEPS)
    for probe in net.all_probes:
        assert sim.data[probe].shape == (2, *ref.data[probe].shape)
        for item in sim.data[probe]:
            assert np.allclose(item, ref.data[probe], atol=atol), probe
    return sim


def idle_net():
    """An ensemble without input (its input is a zero constant) and an unused sink."""
    with nengo.Network(seed=1) as net:
        net.u = nengo.Node(lambda t: [np.sin(9 * t), np.cos(5 * t)])
        net.idle = nengo.Ensemble(15, 2, neuron_type=nengo.LIFRate())
        net.a = nengo.Ensemble(20, 2, neuron_type=nengo.RectifiedLinear())
        net.sink = nengo.Node(size_in=2)  # nobody reads or probes it
        nengo.Connection(net.u, net.a)
        nengo.Connection(net.a, net.sink, synapse=0.02)
        nengo.Connection(net.idle, net.a, transform=0.5)
        net.p_idle = nengo.Probe(net.idle.neurons)
        net.p_a = nengo.Probe(net.a, synapse=0.01)
    return net


def chain_net():
    with nengo.Network(seed=2) as net:
        net.u = nengo.Node(lambda t: [np.sin(8 * t), np.cos(6 * t)])
        net.a = nengo.Ensemble(30, 2, neuron_type=nengo.LIF())
        net.b = nengo.Ensemble(20, 2, neuron_type=nengo.LIFRate())
        nengo.Connection(net.u, net.a)
        nengo.Connection(net.a, net.b, function=lambda x: x**2)
        nengo.Connection(net.a.neurons, net.b.neurons, transform=np.full((20, 30), -1e-3))
        nengo.Connection(net.b[1], net.b[0], transform=0.3, synapse=0.02)
        net.p = nengo.Probe(net.b, synapse=0.01)
        net.pn = nengo.Probe(net.a.neurons)
        net.pb = nengo.Probe(net.b.neurons, "input")
    return net


def test_simplify_is_the_pipeline():
    assert fold_constant_resets in SIMPLIFY and merge_synapses in SIMPLIFY
    assert pipeline.simplify in pipeline.PASSES


def test_fold_constant_resets_counts():
    net = idle_net()
    graph = build_graph(net)
    model = graph.graph["model"]
    idle_in = model.sig[net.idle]["in"]
    assert any(type(op) is Reset and op.dst is idle_in for op in graph.nodes)

    folded = fold_constant_resets(graph)
    # the idle ensemble's input Reset goes; incremented or probed signals keep theirs
    assert types(folded)["Reset"] == types(graph)["Reset"] - 1
    assert not any(type(op) is Reset and op.dst is idle_in for op in folded.nodes)
    encode = [
        op
        for op in folded.nodes
        if type(op) is DotInc and op.Y is model.sig[net.idle.neurons]["in"]
    ]
    assert len(encode) == 1 and isinstance(encode[0].X, FoldedConstant)
    assert not np.any(encode[0].X.initial_value)
    assert folded.graph.keys() == graph.graph.keys()
    assert fold_constant_resets(folded).number_of_nodes() == folded.number_of_nodes()


def test_fold_keeps_probed_signals():
    """A probe reads the signal itself: its Reset stays."""
    with nengo.Network(seed=0) as net:
        node = nengo.Node(size_in=1)
        nengo.Probe(node)  # records the node's (Reset-only) input signal
    graph = build_graph(net)
    sig = graph.graph["model"].sig[node]["in"]
    assert any(type(op) is Reset and op.dst is sig for op in fold_constant_resets(graph).nodes)


def test_remove_zero_incs_counts():
    graph = fold_constant_resets(build_graph(idle_net()))
    removed = remove_zero_incs(graph)
    # the idle ensemble's encoding DotInc adds zero
    assert graph.number_of_nodes() - removed.number_of_nodes() == 1
    assert types(removed)["DotInc"] == types(graph)["DotInc"] - 1


def test_remove_zero_incs_keeps_zero_parameters():
    """A zero transform is a parameter (it may be trained): its DotInc stays."""
    with nengo.Network(seed=0) as net:
        a = nengo.Ensemble(10, 2)
        b = nengo.Ensemble(10, 2)
        nengo.Connection(a, b, transform=np.zeros((2, 2)))
    graph = build_graph(net)
    assert remove_zero_incs(graph).number_of_nodes() == graph.number_of_nodes()


def test_remove_unused_counts():
    net = idle_net()
    graph = build_graph(net)
    removed = remove_unused(graph)
    before, after = types(graph), types(removed)
    # the sink's connection: DotInc + its Reset, the synapse, the Copy into the sink,
    # and the sink's input Reset; and every SimProbe marker
    assert before["SimProbe"] > 0 and after["SimProbe"] == 0
    assert after["SimProcess"] == before["SimProcess"] - 1
    assert after["Copy"] == before["Copy"] - 1
    assert after["Reset"] == before["Reset"] - 2
    assert after["DotInc"] == before["DotInc"] - 1
    assert after["SimNeurons"] == before["SimNeurons"]
    assert remove_unused(removed) is removed


def test_remove_unused_drops_self_copies():
    with nengo.Network(seed=0) as net:
        nengo.Ensemble(5, 1)
    graph = build_graph(net)
    x = Signal(np.zeros(3), name="x")
    self_copy = Copy(x, x, tag="self copy")
    graph = rebuild(graph, list(graph.nodes) + [self_copy, SimProbe(x)])  # a self-loop
    removed = remove_unused(graph)
    assert self_copy not in removed.nodes
    assert not any(isinstance(op, SimProbe) for op in removed.nodes)


def test_fuse_reset_incs_counts():
    net = chain_net()
    graph = build_graph(net)
    fused = fuse_reset_incs(graph)
    before, after = types(graph), types(fused)
    n_fused = graph.number_of_nodes() - fused.number_of_nodes()
    assert n_fused > 0
    assert after["Reset"] == before["Reset"] - n_fused
    sets = after["DotSet"] + after["ElementwiseSet"] + after["BsrDotSet"]
    set_copies = sum(1 for op in fused.nodes if type(op) is Copy and not op.inc) - sum(
        1 for op in graph.nodes if type(op) is Copy and not op.inc
    )
    assert sets + set_copies == n_fused
    assert after["DotSet"] >= 3  # the three connections' weights
    # b's input has two writers (a's decoded output, b's recurrence): its Reset stays
    b_in = graph.graph["model"].sig[net.b]["in"]
    assert any(type(op) is Reset and op.dst is b_in for op in fused.nodes)


@pytest.mark.parametrize("unroll", [1, 4])
@pytest.mark.parametrize(
    "simplification",
    [fold_constant_resets, remove_zero_incs, remove_unused, fuse_reset_incs],
    ids=lambda fn: fn.__name__,
)
def test_each_pass_matches_nengo(simplification, unroll, monkeypatch):
    check_matches_nengo(idle_net(), [simplification], monkeypatch, unroll)
    check_matches_nengo(chain_net(), [simplification], monkeypatch, unroll)


@pytest.mark.parametrize("unroll", [1, 5])
def test_all_passes_match_nengo(unroll, monkeypatch):
    sim = check_matches_nengo(chain_net(), SIMPLIFY, monkeypatch, unroll)
    kinds = types(sim.program.graph)
    assert kinds["BsrDotSet"] + kinds["DotSet"] + kinds["ElementwiseSet"] > 0
    check_matches_nengo(idle_net(), SIMPLIFY, monkeypatch, unroll)


def test_set_forms_step_like_nengo():
    """The set forms' ``make_step`` (used in Python) zeroes ``Y``, then increments."""
    A, X = Signal(np.arange(6.0).reshape(3, 2)), Signal(np.array([1.0, -1.0]))
    cases = [
        (DotInc(A, X, Signal(np.full(3, 7.0))), DotSet, [-1.0, -1.0, -1.0]),
        (
            ElementwiseInc(
                Signal(np.array([2.0, 3.0])), Signal(np.array([4.0, 5.0])), Signal(np.ones(2))
            ),
            ElementwiseSet,
            [8.0, 15.0],
        ),
        (Copy(X, Signal(np.ones(2)), inc=True), Copy, [1.0, -1.0]),
    ]
    for inc, cls, expected in cases:
        op = set_form(inc)
        assert type(op) is cls and not op.incs and inc.incs and op.sets == inc.incs
        signals = SignalDict()
        for sig in op.all_signals:
            signals.init(sig)
        op.make_step(signals, 0.001, None)()
        assert np.allclose(signals[op.sets[0]], expected)
    assert issubclass(BsrDotSet, DotInc)


def host_net():
    with nengo.Network(seed=3) as net:
        net.f = nengo.Node(lambda t, x: x + 1.0, size_in=2)  # runs in Python
        net.a = nengo.Ensemble(10, 2, neuron_type=nengo.RectifiedLinear())
        nengo.Connection(net.f, net.a)
        net.p = nengo.Probe(net.f)
        net.pa = nengo.Probe(net.a, synapse=0.01)
    return net


def test_host_operators_keep_their_signals():
    """A Python Node reading a Reset-only input: the Reset stays (host ops read bases)."""
    net = host_net()
    graph = build_graph(net)
    f_in = graph.graph["model"].sig[net.f]["in"]
    folded = fold_constant_resets(graph)
    assert any(type(op) is Reset and op.dst is f_in for op in folded.nodes)


def test_host_network_matches_nengo(monkeypatch):
    check_matches_nengo(host_net(), SIMPLIFY, monkeypatch, unroll=3)


def run_ops(ops, n_steps=2):
    """Run ``ops`` with their own ``make_step`` in a valid step order; the signal values."""
    graph = operator_graph(Model(dt=0.001), ops)
    signals = SignalDict()
    for op in ops:
        for sig in op.all_signals:
            if sig.base not in signals:
                signals.init(sig.base)
    steps = [op.make_step(signals, 0.001, None) for op in step_order(graph)]
    for _ in range(n_steps):
        for step in steps:
            step()
    return signals


def test_fuse_reset_incs_splits_merged_resets():
    """A Reset of a packed base: the increments that alone write their part get set."""
    x = Signal(np.zeros(8), name="x")
    A, X, src, src2 = (
        Signal(np.arange(4.0).reshape(2, 2)),
        Signal(np.array([1.0, 2.0])),
        Signal(np.array([3.0, -1.0])),
        Signal(np.array([0.5, 0.25])),
    )
    ops = [
        Reset(x),
        DotInc(A, X, x[0:2]),
        Copy(src, x[2:4], inc=True),
        Copy(src, x[4:6], inc=True),
        Copy(src2, x[4:6], inc=True),
    ]  # x[6:8]: nobody
    graph = rebuild(build_graph(nengo.Network()), ops)
    fused = fuse_reset_incs(graph)
    kinds = types(fused)
    assert kinds["DotSet"] == 1 and kinds["Reset"] == 1
    assert sum(type(op) is Copy and not op.inc for op in fused.nodes) == 1
    (reset,) = [op for op in fused.nodes if type(op) is Reset]
    assert list(indices(reset.dst).ravel()) == [4, 5]  # two writers: still reset
    before, after = run_ops(ops), run_ops(list(fused.nodes))
    assert np.allclose(after[x], before[x]) and np.allclose(
        after[x], [2, 8, 3, -1, 3.5, -0.75, 0, 0]
    )

    # an element nobody writes that does not start at zero needs the Reset: unchanged
    y = Signal(np.array([0.0, 0.0, 1.0]), name="y")
    ops = [Reset(y), Copy(src, y[0:2], inc=True)]
    graph = rebuild(build_graph(nengo.Network()), ops)
    fused = fuse_reset_incs(graph)
    (reset,) = [op for op in fused.nodes if type(op) is Reset]
    assert list(indices(reset.dst).ravel()) == [2]
    assert np.allclose(run_ops(list(fused.nodes))[y], run_ops(ops)[y])


def conv_net():
    with nengo.Network(seed=6) as net:
        net.u = nengo.Node(lambda t: np.sin(np.arange(16) * t * 10 + np.arange(16)))
        a = nengo.Ensemble(16, 1, neuron_type=nengo.RectifiedLinear()).neurons
        conv = nengo.Convolution(2, (4, 4, 1), kernel_size=(3, 3), padding="same")
        nengo.Connection(
            net.u, a, transform=nengo.Convolution(1, (4, 4, 1), kernel_size=(3, 3), padding="same")
        )
        b = nengo.Node(size_in=conv.size_out)
        nengo.Connection(a, b, transform=conv)
        tc = nengo.ConvolutionTranspose(1, (4, 4, 2), kernel_size=(3, 3), padding="same")
        c = nengo.Node(size_in=tc.size_out)
        nengo.Connection(b, c, transform=tc)
        net.pc, net.pb = nengo.Probe(c), nengo.Probe(b, synapse=0.01)
    return net


@pytest.mark.parametrize("unroll", [1, 3])
def test_conv_set_forms_match_nengo(unroll, monkeypatch):
    sim = check_matches_nengo(conv_net(), SIMPLIFY, monkeypatch, unroll, atol=1e-4)
    kinds = types(sim.program.graph)
    assert kinds["ConvSet"] + kinds["ConvTransposeSet"] == 3


def test_fold_constant_elements_of_packed_signals():
    """Nengo's merger packs Reset signals together: their Reset-only parts still fold."""
    x, y, z = (
        Signal(np.zeros(4), name="x"),
        Signal(np.zeros(2), name="y"),
        Signal(np.zeros(2), name="z"),
    )
    A, src = Signal(np.arange(4.0).reshape(2, 2)), Signal(np.array([3.0, -1.0]))
    ops = [
        Reset(x, 0.5),
        Copy(src, x[0:2], inc=True),
        Reset(y),
        Reset(z),
        DotInc(A, x[2:4], y),
        DotInc(A, x[0:2], z),
    ]
    graph = rebuild(build_graph(nengo.Network()), ops)
    folded = fold_constant_resets(graph)
    dots = {op.Y: op for op in folded.nodes if type(op) is DotInc}
    assert isinstance(dots[y].X, FoldedConstant) and np.allclose(dots[y].X.initial_value, 0.5)
    assert dots[z].X is ops[-1].X
    assert types(folded)["Reset"] == 3  # x's Reset still serves x[0:2]
    before, after = run_ops(ops), run_ops(list(folded.nodes))
    for sig in (y, z):
        assert np.allclose(after[sig], before[sig])


def strided_net():
    """Connections into interleaved (strided) slices of one passthrough Node."""
    with nengo.Network(seed=7) as net:
        net.u = nengo.Node([0.3, -0.4, 0.5])
        net.a = nengo.Ensemble(20, 3, neuron_type=nengo.RectifiedLinear())
        net.b = nengo.Ensemble(20, 3, neuron_type=nengo.RectifiedLinear())
        net.c = nengo.Node(size_in=6)
        nengo.Connection(net.u, net.a)
        nengo.Connection(net.u, net.b, transform=-1)
        nengo.Connection(net.a, net.c[::2])
        nengo.Connection(net.b, net.c[1::2])
        net.p = nengo.Probe(net.c, synapse=0.01)
    return net


@pytest.mark.parametrize("unroll", [1, 3])
def test_strided_sets_stay_valid(unroll, monkeypatch):
    """Nengo rejects sets of views that may share memory: those increments stay."""
    graph = fuse_reset_incs(build_graph(strided_net()))  # rebuilding validates
    assert types(graph)["Reset"] > 0
    check_matches_nengo(strided_net(), SIMPLIFY, monkeypatch, unroll)
