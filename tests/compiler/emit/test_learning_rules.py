"""Learning rule emitters (PES, BCM, Oja, Voja, RLS) against ``nengo.Simulator``.

Every network is fed a different input for each minibatch item (through
``data``); each item must then learn exactly what ``nengo.Simulator`` learns on
that item's input, since learned weights are per-item state.
"""

import nengo
import numpy as np
import pytest
from nengo.processes import PresentInput

import nengo_onnx
from nengo_onnx.config import configure_settings

DT = 0.001
STEPS = 60
B = 2
D = 2


def signal(item, steps=STEPS, d=D):
    """A smooth input, different for every minibatch item."""
    t = DT * np.arange(1, steps + 1)[:, None]
    return 0.8 * np.sin(2 * np.pi * (3 + 2 * item + np.arange(d)) * t + item)


def lif(n, d, **kwargs):
    return nengo.Ensemble(n, d, neuron_type=nengo.LIF(), **kwargs)


def rate(n, d, **kwargs):
    return nengo.Ensemble(n, d, neuron_type=nengo.LIFRate(), **kwargs)


# -- networks: ``make(inp, dtype)`` -> (network, input node, probes) ----------------------


def pes_decoded(inp, dtype):
    with nengo.Network(seed=1) as net:
        configure_settings(dtype=dtype)
        u = nengo.Node(PresentInput(inp, DT))
        a, b = lif(20, D), rate(15, D)
        nengo.Connection(u, a)
        conn = nengo.Connection(
            a, b, function=lambda x: [0] * D, learning_rule_type=nengo.PES(learning_rate=5e-3)
        )
        nengo.Connection(b, conn.learning_rule)
        nengo.Connection(u, conn.learning_rule, transform=-1)
        rule = conn.learning_rule
        probes = [
            nengo.Probe(b, synapse=0.01),
            nengo.Probe(conn, "weights"),
            nengo.Probe(rule, "delta"),
            nengo.Probe(rule, "error"),
            nengo.Probe(rule, "activities"),
        ]
    return net, u, probes


def pes_1d(inp, dtype):
    """Nengo's classic example: one dimension (``np.dot`` of ``[n, 1]`` and ``[1]``)."""
    with nengo.Network(seed=7) as net:
        configure_settings(dtype=dtype)
        u = nengo.Node(PresentInput(inp, DT))
        a, b = lif(20, 1), rate(10, 1)
        nengo.Connection(u, a)
        conn = nengo.Connection(
            a, b, function=lambda x: 0, learning_rule_type=nengo.PES(learning_rate=5e-3)
        )
        nengo.Connection(b, conn.learning_rule)
        nengo.Connection(u, conn.learning_rule, transform=-1)
        probes = [nengo.Probe(b, synapse=0.01), nengo.Probe(conn, "weights")]
    return net, u, probes


pes_1d.d = 1


def pes_to_neurons(inp, dtype):
    """Decoded -> neurons, and a sliced pre/post neurons -> neurons connection."""
    with nengo.Network(seed=2) as net:
        configure_settings(dtype=dtype)
        u = nengo.Node(PresentInput(inp, DT))
        a, b = rate(12, D), rate(10, D)
        nengo.Connection(u, a)
        encoders = np.linspace(-0.5, 0.5, 10 * D).reshape(10, D)
        c1 = nengo.Connection(
            a, b.neurons, transform=encoders, learning_rule_type=nengo.PES(learning_rate=1e-3)
        )
        c2 = nengo.Connection(
            a.neurons[::2],
            b.neurons[2:8],
            transform=np.full((6, 6), 0.01),
            learning_rule_type=nengo.PES(learning_rate=1e-3),
        )
        for c in (c1, c2):
            nengo.Connection(b, c.learning_rule)
            nengo.Connection(u, c.learning_rule, transform=-1)
        probes = [
            nengo.Probe(b, synapse=0.01),
            nengo.Probe(c1, "weights"),
            nengo.Probe(c2, "weights"),
            nengo.Probe(c2.learning_rule, "delta"),
        ]
    return net, u, probes


def pes_from_neurons(inp, dtype):
    """Neurons -> ensemble (decoded post) and a full-weights ensemble -> ensemble."""
    with nengo.Network(seed=3) as net:
        configure_settings(dtype=dtype)
        u = nengo.Node(PresentInput(inp, DT))
        a, b, c = lif(16, D), rate(10, D), rate(10, D)
        nengo.Connection(u, a)
        c1 = nengo.Connection(
            a.neurons,
            b,
            transform=np.zeros((D, 16)),
            learning_rule_type=nengo.PES(learning_rate=1e-3),
        )
        c2 = nengo.Connection(
            a,
            c,
            solver=nengo.solvers.LstsqL2(weights=True),
            learning_rule_type=nengo.PES(learning_rate=1e-3, pre_synapse=None),
        )
        for post, conn in ((b, c1), (c, c2)):
            nengo.Connection(post, conn.learning_rule)
            nengo.Connection(u, conn.learning_rule, transform=-1)
        probes = [
            nengo.Probe(b, synapse=0.01),
            nengo.Probe(c, synapse=0.01),
            nengo.Probe(c1, "weights"),
            nengo.Probe(c2, "weights"),
        ]
    return net, u, probes


def bcm_oja(inp, dtype):
    """BCM on neurons -> neurons, Oja and BCM together on ensemble -> ensemble weights."""
    with nengo.Network(seed=4) as net:
        configure_settings(dtype=dtype)
        u = nengo.Node(PresentInput(inp, DT))
        a, b, c = lif(14, D), rate(10, D), rate(8, D)
        nengo.Connection(u, a)
        c1 = nengo.Connection(
            a.neurons,
            b.neurons,
            transform=np.full((10, 14), 0.02),
            learning_rule_type=nengo.BCM(learning_rate=1e-7),
        )
        c2 = nengo.Connection(
            a,
            c,
            solver=nengo.solvers.LstsqL2(weights=True),
            learning_rule_type=[
                nengo.Oja(learning_rate=1e-5, beta=2.0),
                nengo.BCM(learning_rate=1e-8, theta_synapse=0.05),
            ],
        )
        bcm, oja = c1.learning_rule, c2.learning_rule[0]
        probes = [
            nengo.Probe(b, synapse=0.01),
            nengo.Probe(c, synapse=0.01),
            nengo.Probe(c1, "weights"),
            nengo.Probe(c2, "weights"),
            nengo.Probe(bcm, "theta"),
            nengo.Probe(bcm, "delta"),
            nengo.Probe(oja, "delta"),
            nengo.Probe(c2.learning_rule[1], "delta"),
        ]
    return net, u, probes


def voja(inp, dtype):
    with nengo.Network(seed=5) as net:
        configure_settings(dtype=dtype)
        u = nengo.Node(PresentInput(inp, DT))
        learning = nengo.Node(lambda t: 1.0 if t < 0.04 else 0.2)
        b = lif(12, D, radius=1.5)
        out = nengo.Node(size_in=D)
        conn = nengo.Connection(u, b, learning_rule_type=nengo.Voja(learning_rate=0.5))
        nengo.Connection(learning, conn.learning_rule, synapse=None)
        nengo.Connection(b, out)
        rule = conn.learning_rule
        probes = [
            nengo.Probe(out, synapse=0.01),
            nengo.Probe(b, "scaled_encoders"),
            nengo.Probe(rule, "scaled_encoders"),
            nengo.Probe(rule, "delta"),
            nengo.Probe(rule, "post_filtered"),
        ]
    return net, u, probes


def rls(inp, dtype):
    with nengo.Network(seed=6) as net:
        configure_settings(dtype=dtype)
        u = nengo.Node(PresentInput(inp, DT))
        a, b = rate(15, D), rate(10, D)
        nengo.Connection(u, a)
        conn = nengo.Connection(
            a, b, function=lambda x: [0] * D, learning_rule_type=nengo.RLS(learning_rate=1e-2)
        )
        nengo.Connection(b, conn.learning_rule)
        nengo.Connection(u, conn.learning_rule, transform=-1)
        rule = conn.learning_rule
        probes = [
            nengo.Probe(b, synapse=0.01),
            nengo.Probe(conn, "weights"),
            nengo.Probe(rule, "delta"),
            nengo.Probe(rule, "inv_gamma"),
        ]
    return net, u, probes


NETWORKS = [pes_decoded, pes_1d, pes_to_neurons, pes_from_neurons, bcm_oja, voja, rls]

# -- running -------------------------------------------------------------------------------

_REFERENCE = {}


def reference(make, item, dtype="float64"):
    """``nengo.Simulator``'s probe data for ``item``'s input (cached)."""
    key = (make.__name__, item)
    if key not in _REFERENCE:
        net, _, probes = make(signal(item, d=getattr(make, "d", D)), dtype)
        with nengo.Simulator(net, dt=DT, progress_bar=False) as sim:
            sim.run_steps(STEPS)
            _REFERENCE[key] = [sim.data[p] for p in probes]
    return _REFERENCE[key]


def run_onnx(make, dtype="float64", minibatch_size=B, **kwargs):
    d = getattr(make, "d", D)
    net, u, probes = make(signal(0, d=d), dtype)
    data = np.stack([signal(b, d=d) for b in range(minibatch_size or 1)])
    if minibatch_size is None:
        data = data[0]
    with nengo_onnx.Simulator(
        net, dt=DT, minibatch_size=minibatch_size, progress_bar=False, **kwargs
    ) as sim:
        # every operator is emitted: nothing runs in Python
        assert [kind for kind, _ in sim.program.segments] == ["onnx"]
        sim.run_steps(STEPS, data={u: data})
        return [sim.data[p] for p in probes]


def assert_items_match(make, results, atol, rtol):
    for item in range(B):
        for i, (ref, out) in enumerate(zip(reference(make, item), results)):
            assert out.shape == (B, *ref.shape), f"probe {i}"
            np.testing.assert_allclose(
                out[item],
                ref,
                atol=atol,
                rtol=rtol,
                err_msg=f"{make.__name__}: probe {i}, item {item}",
            )


@pytest.mark.parametrize("make", NETWORKS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("optimize, unroll", [(True, 1), (True, 4), (False, 5)])
def test_learning_rule(make, optimize, unroll):
    results = run_onnx(make, optimize=optimize, unroll_simulation=unroll)
    assert_items_match(make, results, atol=1e-9, rtol=1e-7)


def test_items_learn_independently():
    """The items learn different weights from their different inputs."""
    results = run_onnx(pes_decoded, optimize=True, unroll_simulation=3)
    weights = results[1]
    assert not np.allclose(weights[0], weights[1])


def test_no_minibatch():
    results = run_onnx(rls, minibatch_size=None, unroll_simulation=6)
    for ref, out in zip(reference(rls, 0), results):
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("make", [pes_decoded, voja], ids=lambda f: f.__name__)
def test_float32(make):
    """float32 simulation stays close to nengo's float64 (rate post neurons, short run)."""
    results = run_onnx(make, dtype="float32", unroll_simulation=5)
    for item in range(B):
        ref = reference(make, item)
        # spiking pre neurons may shift a spike by a step in float32: compare
        # learned quantities loosely, relative to their scale
        for i in (1, 2):
            scale = np.abs(ref[i]).max()
            assert np.abs(results[i][item] - ref[i]).max() < 0.05 * scale + 1e-6, i
