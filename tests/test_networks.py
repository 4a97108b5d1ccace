"""nengo.networks built and run by nengo_onnx, against nengo.Simulator."""

import nengo
import numpy as np
import pytest

import nengo_onnx


def product():
    with nengo.Network(seed=1) as net:
        a = nengo.Node(lambda t: np.sin(5 * t))
        b = nengo.Node(lambda t: np.cos(3 * t))
        prod = nengo.networks.Product(30, 1)
        nengo.Connection(a, prod.input_a)
        nengo.Connection(b, prod.input_b)
        net.probe = nengo.Probe(prod.output, synapse=0.01)
    return net


def ensemble_array():
    with nengo.Network(seed=2) as net:
        u = nengo.Node([0.5, -0.3, 0.1])
        ea = nengo.networks.EnsembleArray(20, 3)
        nengo.Connection(u, ea.input)
        net.probe = nengo.Probe(ea.output, synapse=0.01)
    return net


def circular_convolution():
    with nengo.Network(seed=3) as net:
        a = nengo.Node([0.3, -0.2, 0.5, 0.1])
        b = nengo.Node([0.1, 0.4, -0.3, 0.2])
        cconv = nengo.networks.CircularConvolution(20, 4)
        nengo.Connection(a, cconv.input_a)
        nengo.Connection(b, cconv.input_b)
        net.probe = nengo.Probe(cconv.output, synapse=0.01)
    return net


def associative_memory():
    vocab = np.eye(4)
    with nengo.Network(seed=4) as net:
        u = nengo.Node(vocab[1] * 0.8)
        am = nengo.networks.AssociativeMemory(vocab, n_neurons=20, threshold=0.3)
        am.add_wta_network()
        nengo.Connection(u, am.input)
        net.probe = nengo.Probe(am.output, synapse=0.01)
    return net


@pytest.mark.parametrize(
    "make", [product, ensemble_array, circular_convolution, associative_memory]
)
@pytest.mark.parametrize("optimize, unroll, minibatch_size", [(True, 4, 2), (False, 1, None)])
def test_network_matches_nengo(make, optimize, unroll, minibatch_size):
    net = make()
    n_steps = 60
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(n_steps)
    with nengo_onnx.Simulator(
        net,
        optimize=optimize,
        unroll_simulation=unroll,
        minibatch_size=minibatch_size,
        progress_bar=False,
    ) as sim:
        sim.run_steps(n_steps)
    out = sim.data[net.probe]
    items = out if minibatch_size else out[None]
    for item in items:
        # spiking LIF in float32: a rare spike lands a step apart from nengo's
        assert np.allclose(item, ref.data[net.probe], atol=2e-3)
