"""Regression tests for training failures found by trying networks as users build them:
two objectives that made onnxruntime's GemmSumFusion abort, gradients through every
synapse type (a broadcast ``Where`` gradient of the wrong shape), and parameters that no
gradient reaches (which made ``generate_artifacts`` fail)."""

import warnings

import nengo
import numpy as np
import pytest

import nengo_onnx
from nengo_onnx import objectives, optimizers
from nengo_onnx.compiler.params import param_groups
from nengo_onnx.compiler.signals import view_indices
from tests.helpers import finite_differences, param_value, trainable_params


class Recorder(optimizers.Optimizer):
    """An optimizer that keeps the gradients `train` applies and changes nothing."""

    def __init__(self):
        super().__init__(0.0)
        self.grads = {}

    def update(self, key, grad, var, lr):
        self.grads[key] = np.array(grad, dtype=np.float64)


def applied_gradients(sim, data, objective=None):
    """``{Param: gradient}`` that one `train` step (all data in one minibatch) applies."""
    recorder = Recorder()
    sim.train(data, recorder, objective=objective, shuffle=False)
    groups = param_groups(sim.program, trainable_params(sim))
    by_base = {grp.base: recorder.grads[grp.name] for grp in groups}
    return {
        p: by_base[p.signal(sim.model).base]
        .reshape(-1)[view_indices(p.signal(sim.model)).ravel()]
        .reshape(p.signal(sim.model).shape)
        for p in trainable_params(sim)
    }


def check_against_finite_differences(sim, data, objective=None):
    fds = {
        p: finite_differences(sim, data, p, objective=objective, n=4)
        for p in trainable_params(sim)
    }
    grads = applied_gradients(sim, data, objective)
    assert set(grads) == set(fds)
    for param, fd in fds.items():
        grad = grads[param].ravel()[: fd.size]
        scale = np.max(np.abs(fd))
        assert np.allclose(grad, fd, rtol=2e-3, atol=1e-4 * scale + 1e-9), (param.name, grad, fd)


# -- two objectives, one probe reached without a synapse, one on the neurons -----------------


def two_probe_net(probe_kind, neuron_type=None, dtype=None):
    with nengo.Network(seed=0) as net:
        if dtype is not None:
            nengo_onnx.configure_settings(dtype=dtype)
        net.a = nengo.Node([0])
        net.e = nengo.Ensemble(5, 1, neuron_type=neuron_type or nengo.LIF())
        nengo.Connection(net.a, net.e)
        if probe_kind == "probe":
            net.p = nengo.Probe(net.e)
        else:
            out = nengo.Node(size_in=1)
            nengo.Connection(net.e, out, synapse=None)
            net.p = nengo.Probe(out)
        net.pn = nengo.Probe(net.e.neurons)
    return net


def mse_and_rates(outputs, targets):
    return objectives.mse(outputs[0], targets[0]) + objectives.Regularize()(outputs[1])


@pytest.mark.parametrize("probe_kind", ["probe", "connection"])
@pytest.mark.parametrize("tuple_key", [False, True])
@pytest.mark.parametrize("n_steps", [3, 5])
def test_mse_with_rate_regularizer_trains(probe_kind, tuple_key, n_steps):
    """onnxruntime's GemmSumFusion failed on these gradient graphs (n_steps >= 3)."""
    net = two_probe_net(probe_kind)
    objective = (
        {(net.p, net.pn): mse_and_rates}
        if tuple_key
        else {net.p: objectives.mse, net.pn: objectives.Regularize()}
    )
    data = {net.a: np.ones((2, n_steps, 1)), net.p: np.ones((2, n_steps, 1))}
    if tuple_key:  # a tuple key takes targets for each of its probes
        data[net.pn] = np.zeros((2, n_steps, 5))
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        bias = np.array(sim.data[net.e].bias)
        history = sim.train(data, optimizers.SGD(1e-6), objective=objective)
        assert np.isfinite(history["loss"][0])
        assert not np.array_equal(sim.data[net.e].bias, bias)


def test_mse_with_rate_regularizer_gradients():
    net = two_probe_net("probe", neuron_type=nengo.LIFRate(amplitude=0.01), dtype="float64")
    rng = np.random.RandomState(1)
    data = {net.a: rng.uniform(-1, 1, (2, 4, 1)), net.p: rng.uniform(-1, 1, (2, 4, 1))}
    objective = {net.p: objectives.mse, net.pn: objectives.Regularize(weight=0.1)}
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        check_against_finite_differences(sim, data, objective)


# -- gradients through every synapse type --------------------------------------------------


SYNAPSES = {
    "None": None,
    "Lowpass": nengo.Lowpass(0.005),
    "Lowpass(0)": nengo.Lowpass(0),
    "Alpha": nengo.Alpha(0.004),
    "Triangle": nengo.synapses.Triangle(0.004),
    "LinearFilter": nengo.LinearFilter([0.002, 1], [1e-5, 0.007, 1]),  # D != 0, 2 states
    "discrete LinearFilter": nengo.LinearFilter([0.2, 0.1], [1, -0.6], analog=False),
}


def synapse_net(synapse, recurrent, neuron_type=None, n_neurons=8, seed=0):
    with nengo.Network(seed=seed) as net:
        nengo_onnx.configure_settings(dtype="float64")  # exact finite differences
        net.inp = nengo.Node(np.zeros(2))
        net.ens = nengo.Ensemble(
            n_neurons, 2, neuron_type=neuron_type or nengo.LIFRate(amplitude=0.01)
        )
        out = nengo.Node(size_in=2)
        nengo.Connection(net.inp, net.ens, synapse=None, transform=[[1, 0.5], [0, 1]])
        if recurrent:
            rng = np.random.RandomState(seed)
            nengo.Connection(
                net.ens.neurons,
                net.ens.neurons,
                synapse=synapse,
                transform=rng.uniform(-0.2, 0.2, (n_neurons, n_neurons)),
            )
            nengo.Connection(net.ens, out, synapse=None)
        else:
            nengo.Connection(net.ens, out, synapse=synapse)
        net.p = nengo.Probe(out)
    return net


@pytest.mark.parametrize("recurrent", [False, True], ids=["feedforward", "recurrent"])
@pytest.mark.parametrize("synapse", list(SYNAPSES), ids=list(SYNAPSES))
def test_synapse_gradients_match_finite_differences(synapse, recurrent):
    if recurrent and synapse == "None":
        pytest.skip("a recurrent connection without a synapse is an algebraic loop")
    net = synapse_net(SYNAPSES[synapse], recurrent)
    rng = np.random.RandomState(2)
    x = rng.uniform(-1, 1, (2, 6, 2))
    data = {net.inp: x, net.p: x**2}
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        check_against_finite_differences(sim, data)


def test_recurrent_triangle_trains():
    """A recurrent Triangle synapse: the train step failed in a Reshape of the Where gradient."""
    with nengo.Network(seed=0) as net:
        a = nengo.Node([0])
        e = nengo.Ensemble(12, 1, neuron_type=nengo.RectifiedLinear())
        nengo.Connection(a, e)
        conn = nengo.Connection(
            e.neurons,
            e.neurons,
            synapse=nengo.synapses.Triangle(0.01),
            transform=np.eye(12) * 0.01,
        )
        p = nengo.Probe(e)
    data = {a: np.ones((4, 12, 1)), p: np.ones((4, 12, 1))}
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        weights = np.array(sim.data[conn].weights)
        history = sim.train(data, optimizers.SGD(1e-4))
        assert np.isfinite(history["loss"][0])
        assert not np.array_equal(sim.data[conn].weights, weights)


# -- parameters that no gradient reaches ---------------------------------------------------


NEURON_TYPES = {
    "LIF": nengo.LIF(amplitude=0.01),
    "LIFRate": nengo.LIFRate(amplitude=0.01),
    "RectifiedLinear": nengo.RectifiedLinear(amplitude=0.01),
    "SpikingRectifiedLinear": nengo.SpikingRectifiedLinear(amplitude=0.01),
    "Sigmoid": nengo.Sigmoid(),
    "Tanh": nengo.Tanh(),
    "Izhikevich": nengo.Izhikevich(),
    "AdaptiveLIF": nengo.AdaptiveLIF(amplitude=0.01),
    "AdaptiveLIFRate": nengo.AdaptiveLIFRate(amplitude=0.01),
    "RegularSpiking": nengo.RegularSpiking(nengo.LIFRate(), amplitude=0.01),
    "StochasticSpiking": nengo.StochasticSpiking(nengo.RectifiedLinear(), amplitude=0.01),
    "PoissonSpiking": nengo.PoissonSpiking(nengo.LIFRate(), amplitude=0.01),
}
UNREACHED = "no gradient of the objective reaches"


def train_recording(sim, data, **kwargs):
    """``(history, [warning messages about unreached parameters])``."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        history = sim.train(data, optimizers.Adam(0.01), **kwargs)
    return history, [str(w.message) for w in record if UNREACHED in str(w.message)]


def values(sim):
    return {p: param_value(sim, p) for p in trainable_params(sim)}


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("neuron_type", list(NEURON_TYPES), ids=list(NEURON_TYPES))
def test_unreached_parameters_are_left_unchanged(neuron_type, optimize):
    """Izhikevich neurons stay spiking in training (no rate form): nothing upstream of
    them gets a gradient. The rest trains, also where merged signals mix the two."""
    with nengo.Network(seed=1) as net:
        inp = nengo.Node(np.zeros(2))
        ens = nengo.Ensemble(10, 2, neuron_type=NEURON_TYPES[neuron_type], label="tested")
        other = nengo.Ensemble(10, 2, neuron_type=nengo.LIFRate(amplitude=0.01), label="other")
        out = nengo.Node(size_in=2)
        conn_in = nengo.Connection(inp, ens, transform=[[1, 0.5], [0, 1]], synapse=None)
        nengo.Connection(inp, other, transform=[[1, 0], [0.5, 1]], synapse=None)
        nengo.Connection(ens, out, synapse=0.005)
        nengo.Connection(other, out, synapse=0.005)
        p = nengo.Probe(out)
    rng = np.random.RandomState(3)
    x = rng.uniform(-1, 1, (4, 6, 2))
    data = {inp: x, p: x**2}
    with nengo_onnx.Simulator(net, minibatch_size=2, optimize=optimize, progress_bar=False) as sim:
        before = values(sim)
        history, messages = train_recording(sim, data)
        after = values(sim)
        assert np.isfinite(history["loss"][0])
        assert np.isfinite(sim.loss(data))
    if neuron_type == "Izhikevich":
        unreached = {p for p in before if p.obj in (ens, ens.neurons, conn_in)}
        assert {p.key for p in unreached} == {"encoders", "bias", "weights"}
        assert len(messages) == 1
        for param in unreached:
            assert f"{param.key} of {param.obj}" in messages[0]
        assert "other" not in messages[0]
    else:
        unreached = set()
        assert messages == []
    for param in before:
        if param in unreached:
            assert np.array_equal(after[param], before[param]), param.name
        else:
            assert not np.allclose(after[param], before[param]), param.name


def test_only_izhikevich_network_trains_nothing_with_one_warning():
    """A network of only Izhikevich neurons: nothing to train, one warning, no failure."""
    with nengo.Network(seed=0) as net:
        a = nengo.Node([0.5])
        e = nengo.Ensemble(10, 1, neuron_type=nengo.Izhikevich())
        nengo.Connection(a, e)
        p = nengo.Probe(e, synapse=0.01)
    data = {a: np.full((2, 5, 1), 0.5), p: np.ones((2, 5, 1))}
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        before = values(sim)
        history, messages = train_recording(sim, data)
        assert np.isfinite(history["loss"][0])
        assert len(messages) == 1
        for param, value in values(sim).items():
            assert np.array_equal(value, before[param])


def test_zero_weights_are_reached():
    """A parameter that is zero now still gets a gradient (it is no constant)."""
    with nengo.Network(seed=0) as net:
        inp = nengo.Node(np.zeros(2))
        ens = nengo.Ensemble(10, 2, neuron_type=nengo.RectifiedLinear(amplitude=0.01))
        out = nengo.Node(size_in=2)
        nengo.Connection(inp, ens, synapse=None)
        conn = nengo.Connection(ens, out, transform=np.zeros((2, 2)), synapse=None)
        p = nengo.Probe(out)
    x = np.random.RandomState(0).uniform(-1, 1, (2, 3, 2))
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        _, messages = train_recording(sim, {inp: x, p: x**2})
        assert messages == []
        assert np.any(sim.data[conn].weights != 0)


@pytest.mark.parametrize("truncation", [1, 2])
def test_recurrent_weights_unreached_in_one_step_windows(truncation):
    """With one-step windows the recurrent weights act only after the window: their
    truncated gradient is zero, and they are named; with longer windows they train."""
    with nengo.Network(seed=0) as net:
        inp = nengo.Node(np.zeros(2))
        ens = nengo.Ensemble(10, 2, neuron_type=nengo.LIFRate(amplitude=0.01))
        out = nengo.Node(size_in=2)
        nengo.Connection(inp, ens, synapse=None)
        rec = nengo.Connection(ens, ens, synapse=0.005, transform=0.5)
        nengo.Connection(ens, out, synapse=None)
        p = nengo.Probe(out)
    x = np.random.RandomState(0).uniform(-1, 1, (2, 5, 2))
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        weights = np.array(sim.data[rec].weights)
        _, messages = train_recording(sim, {inp: x, p: x**2}, truncation=truncation)
        if truncation == 1:
            assert len(messages) == 1 and f"weights of {rec}" in messages[0]
            assert np.array_equal(sim.data[rec].weights, weights)
        else:
            assert messages == []
            assert not np.allclose(sim.data[rec].weights, weights)


@pytest.mark.parametrize("transform", [None, "dense"])
def test_train_on_connection_input_probe(transform):
    """Targets for Probe(conn, "input") have the size of what it records (the pre's
    output), not Probe.size_in (the connection's output size)."""
    with nengo.Network(seed=0) as net:
        e = nengo.Ensemble(3, 4, neuron_type=nengo.RectifiedLinear())
        kwargs = {} if transform is None else {"transform": 0.1 * np.ones((4, 3))}
        c = nengo.Connection(e.neurons, e, **kwargs) if transform else nengo.Connection(e, e)
        p = nengo.Probe(c, "input")
    width = 3  # both record the 3 neurons' activities (c's input)
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.train({p: np.ones((1, 2, width))}, optimizers.SGD(0.01))
        assert p.size_in == 4
        with pytest.raises(nengo.exceptions.ValidationError, match="size"):
            sim.train({p: np.ones((1, 2, width + 1))}, optimizers.SGD(0.01))
