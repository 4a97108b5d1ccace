"""sim.data after training, save_params / load_params, freeze_params."""

import os
import warnings

import nengo
import numpy as np
import pytest
from nengo.exceptions import SimulationError, ValidationError

import nengo_onnx
from nengo_onnx import optimizers
from tests.helpers import param_value, set_param_value, trainable_params


def build(neuron_type=None, n_neurons=12, seed=0):
    neuron_type = neuron_type or nengo.LIFRate(amplitude=0.01)
    with nengo.Network(seed=seed) as net:
        net.inp = nengo.Node(np.zeros(2))
        net.a = nengo.Ensemble(n_neurons, 2, neuron_type=neuron_type, radius=1.5)
        net.b = nengo.Ensemble(10, 2, neuron_type=neuron_type)
        net.out = nengo.Node(size_in=2)
        net.c_in = nengo.Connection(net.inp, net.a, synapse=None, transform=[[1, 0.2], [0, 1]])
        net.c_ab = nengo.Connection(net.a, net.b, synapse=0.005, function=lambda x: x**2)
        net.c_full = nengo.Connection(
            net.a.neurons, net.b.neurons, synapse=0.005, transform=np.zeros((10, n_neurons))
        )
        net.c_out = nengo.Connection(net.b, net.out, synapse=0.005)
        net.p = nengo.Probe(net.out)
    return net


def trained(rng, net, minibatch_size=2, **kwargs):
    x = rng.uniform(-1, 1, (4, 4, 2))
    sim = nengo_onnx.Simulator(net, minibatch_size=minibatch_size, progress_bar=False, **kwargs)
    sim.train({net.inp: x, net.p: x**2}, optimizers.Adam(0.02), n_epochs=3)
    return sim, x


def params_of(sim, net):
    return {
        "a.encoders": np.array(sim.data[net.a].encoders),
        "a.scaled": np.array(sim.data[net.a].scaled_encoders),
        "a.bias": np.array(sim.data[net.a].bias),
        "b.bias": np.array(sim.data[net.b].bias),
        "c_in": np.array(sim.data[net.c_in].weights),
        "c_ab": np.array(sim.data[net.c_ab].weights),
        "c_full": np.array(sim.data[net.c_full].weights),
        "c_out": np.array(sim.data[net.c_out].weights),
    }


def test_sim_data_shows_trained_values(rng):
    net = build()
    with nengo.Simulator(net, progress_bar=False) as ref:
        initial = params_of(ref, net)
    sim, _ = trained(rng, net)
    with sim:
        after = params_of(sim, net)
        for key in initial:
            assert after[key].shape == initial[key].shape
            assert not np.allclose(after[key], initial[key]), key
        gain = sim.data[net.a].gain
        assert np.allclose(after["a.scaled"], after["a.encoders"] * gain[:, None] / 1.5)


@pytest.mark.parametrize("optimize", [False])
def test_save_load_round_trip(rng, tmp_path, optimize):
    net = build()
    sim, x = trained(rng, net, optimize=optimize)
    with sim:
        sim.run_steps(4, data={net.inp: x[:2]})  # some state to save
        saved = params_of(sim, net)
        path = sim.save_params(tmp_path / "params", include_state=True)
        assert os.path.exists(path)
        assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []
        sim.run_steps(4, data={net.inp: x[2:]})
        expected = np.array(sim.data[net.p][:, 4:])
    # another simulator of the same network structure gets parameters and state
    with nengo_onnx.Simulator(
        build(), minibatch_size=2, optimize=optimize, progress_bar=False
    ) as sim2:
        sim2.load_params(tmp_path / "params")
        loaded = params_of(sim2, net=sim2.network)
        for key in saved:
            assert np.allclose(loaded[key], saved[key], atol=1e-7), key
        sim2.run_steps(4, data={sim2.network.inp: x[2:]})
        assert np.allclose(sim2.data[sim2.network.p], expected, atol=1e-5)
    # parameters are stored per object: the signal layout (optimize) does not matter
    with nengo_onnx.Simulator(build(), optimize=not optimize, progress_bar=False) as sim3:
        with pytest.warns(UserWarning, match="state"):
            sim3.load_params(tmp_path / "params.npz")
        loaded = params_of(sim3, net=sim3.network)
        for key in saved:
            assert np.allclose(loaded[key], saved[key], atol=1e-7), key


def test_rate_params_load_into_spiking_network(rng, tmp_path):
    net = build(nengo.LIFRate(amplitude=0.01))
    sim, _ = trained(rng, net)
    with sim:
        sim.save_params(str(tmp_path / "rate"))
        saved = params_of(sim, net)
    spiking = build(nengo.LIF(amplitude=0.01))
    with nengo_onnx.Simulator(spiking, minibatch_size=2, progress_bar=False) as sim2:
        sim2.load_params(str(tmp_path / "rate"))
        loaded = params_of(sim2, spiking)
        for key in saved:
            assert np.allclose(loaded[key], saved[key]), key
        sim2.run_steps(5)


def test_load_mismatch_is_named(rng, tmp_path):
    net = build()
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.save_params(tmp_path / "p")
    with nengo_onnx.Simulator(build(n_neurons=13), progress_bar=False) as other:
        with pytest.raises(SimulationError, match=r"a\.encoders|ensemble_0\.encoders|shape"):
            other.load_params(tmp_path / "p")
    with nengo.Network() as small:
        nengo.Ensemble(5, 1)
    with nengo_onnx.Simulator(small, progress_bar=False) as other:
        with pytest.raises(ValidationError, match="lacks"):
            other.load_params(tmp_path / "p")
        with pytest.raises(ValidationError, match="no saved parameters"):
            other.load_params(tmp_path / "missing")


@pytest.mark.parametrize("minibatch_size", [None, 2])
def test_freeze_params_reproduces_in_nengo(rng, minibatch_size):
    net = build()
    sim, x = trained(rng, net, minibatch_size=minibatch_size)
    with sim:
        sim.reset()
        sim.run_steps(10)
        expected = np.array(sim.data[net.p])
        if minibatch_size:
            expected = expected[0]
        sim.freeze_params(net)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(10)
    assert np.allclose(ref.data[net.p], expected, atol=1e-5)
    # and into nengo_onnx again, from the frozen objects
    with nengo_onnx.Simulator(net, progress_bar=False) as sim2:
        sim2.run_steps(10)
        assert np.allclose(sim2.data[net.p], expected, atol=1e-5)


def test_freeze_some_objects(rng):
    net = build()
    sim, _ = trained(rng, net)
    with sim:
        trained_bias = np.array(sim.data[net.b].bias)
        trained_weights = np.array(sim.data[net.c_out].weights)
        sim.freeze_params([net.b, net.c_out])
    with nengo.Simulator(net, progress_bar=False) as ref:
        assert np.allclose(ref.data[net.b].bias, trained_bias)
        assert np.allclose(ref.data[net.c_out].weights, trained_weights)
        assert not np.allclose(ref.data[net.c_in].weights, sim.data[net.c_in].weights)


def test_freeze_errors():
    net = build()
    with nengo.Network():
        stranger = nengo.Ensemble(3, 1)
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="Networks, Ensembles or Connections"):
            sim.freeze_params([net.p])
        with pytest.raises(ValidationError, match="not in this simulator"):
            sim.freeze_params(stranger)


@pytest.mark.parametrize(
    "make_transform",
    [
        lambda: nengo.Sparse((2, 2), indices=[[0, 1], [1, 0]], init=[0.3, -0.2]),
        lambda: nengo.Convolution(1, (2, 1), kernel_size=(1,), strides=(1,)),
        lambda: nengo.Convolution(
            2, (4, 2), kernel_size=(3,), strides=(1,), padding="same", channels_last=False
        ),
        lambda: nengo.ConvolutionTranspose(1, (2, 1), kernel_size=(1,), strides=(1,)),
    ],
    ids=["sparse", "conv", "conv_channels_first", "conv_transpose"],
)
def test_freeze_keeps_every_transform_kind(make_transform):
    """freeze_params writes trained weights into Sparse and convolution transforms too,
    and plain nengo then reproduces the simulator."""
    with nengo.Network(seed=0) as net:
        transform = make_transform()
        a = nengo.Node(np.linspace(-0.5, 0.5, transform.size_in))
        b = nengo.Node(size_in=transform.size_out)
        conn = nengo.Connection(a, b, transform=transform, synapse=None)
        p = nengo.Probe(b)
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        param = next(q for q in trainable_params(sim) if q.obj is conn)
        set_param_value(sim, param, 1.5 * param_value(sim, param))  # (keeps sparsity)
        sim.run_steps(3)
        sim.freeze_params(net)
        expected = sim.data[p]
    assert type(conn.transform) is type(transform)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(3)
    assert np.allclose(ref.data[p], expected, atol=1e-6)


@pytest.mark.parametrize("optimize", [False, True])
def test_freeze_keeps_decoded_probes_of_trained_ensembles(optimize):
    """After training an ensemble, nengo.Simulator on the frozen network gives the same
    decoded probe data: the probes keep the decoders the simulation used (found by the
    differential machine's long run)."""
    with nengo.Network(seed=0) as net:
        nengo_onnx.configure_settings(dtype="float64")
        ens = nengo.Ensemble(12, 3, neuron_type=nengo.Sigmoid())
        decoded = nengo.Probe(ens, "decoded_output", synapse=0.01)
        rates = nengo.Probe(ens.neurons)
    data = {rates: np.random.RandomState(0).rand(1, 3, 12)}
    with nengo_onnx.Simulator(net, optimize=optimize, progress_bar=False) as sim:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the encoders get no gradient here
            sim.train(data, optimizers.SGD(0.1))
        sim.run_steps(3)
        sim.freeze_params(net)
        expected = sim.data[decoded]
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(3)
    assert np.allclose(ref.data[decoded], expected, atol=1e-12)
