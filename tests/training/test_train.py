"""Simulator.train and Simulator.loss: training works, gradients are right, errors are clear."""

import json
import os

import nengo
import numpy as np
import pytest
from nengo.exceptions import SimulatorClosed, ValidationError

import nengo_onnx
from nengo_onnx import events as summaries
from nengo_onnx import objectives, optimizers
from nengo_onnx.compiler import trainable
from nengo_onnx.training import train as training
from tests.helpers import finite_differences, gradients


def feedforward(d=2, n_neurons=20, neuron_type=None, synapse=None, seed=0):
    neuron_type = neuron_type or nengo.RectifiedLinear(amplitude=0.01)
    with nengo.Network(seed=seed) as net:
        net.inp = nengo.Node(np.zeros(d), label="inp")
        net.ens = nengo.Ensemble(n_neurons, d, neuron_type=neuron_type, label="ens")
        net.out = nengo.Node(size_in=d, label="out")
        nengo.Connection(net.inp, net.ens, synapse=None)
        net.conn = nengo.Connection(net.ens, net.out, synapse=synapse, label="decode")
        net.p = nengo.Probe(net.out)
    return net


def square_data(rng, n=16, steps=3, d=2):
    x = rng.uniform(-1, 1, (n, steps, d))
    return x, x**2


def test_train_reduces_loss_and_updates_params(rng):
    net = feedforward()
    x, y = square_data(rng)
    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        before = sim.loss(data)
        weights = np.array(sim.data[net.conn].weights)
        bias = np.array(sim.data[net.ens].bias)
        history = sim.train(data, optimizers.Adam(0.01), n_epochs=15)
        after = sim.loss(data)
        assert after < 0.3 * before
        assert history["loss"][-1] < history["loss"][0]
        assert len(history["loss"]) == 15
        assert not np.allclose(sim.data[net.conn].weights, weights)
        assert not np.allclose(sim.data[net.ens].bias, bias)
        assert isinstance(sim.data[net.conn].weights, np.ndarray)
        # run sees the trained parameters
        sim.run_steps(3, data={net.inp: x[:4]})
        assert np.allclose(
            np.mean((sim.data[net.p] - y[:4]) ** 2),
            sim.loss({net.inp: x[:4], net.p: y[:4]}),
            atol=1e-6,
        )


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("unroll", [1, 4])
def test_loss_matches_run(rng, optimize, unroll):
    """sim.loss is the mean over minibatches of the objective on run's outputs."""
    net = feedforward(synapse=0.01)
    x, y = square_data(rng, n=4, steps=5)
    with nengo_onnx.Simulator(
        net, minibatch_size=2, optimize=optimize, unroll_simulation=unroll, progress_bar=False
    ) as sim:
        value = sim.loss({net.inp: x, net.p: y})
        expected = []
        for b in range(2):
            sim.reset()
            sim.run_steps(5, data={net.inp: x[2 * b : 2 * b + 2]})
            expected.append(np.mean((sim.data[net.p] - y[2 * b : 2 * b + 2]) ** 2))
        assert np.isclose(value, np.mean(expected), rtol=1e-5)


def test_no_minibatch_size(rng):
    net = feedforward()
    x, y = square_data(rng, n=3)
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        before = sim.loss({net.inp: x, net.p: y})
        sim.train({net.inp: x, net.p: y}, optimizers.Adam(0.02), n_epochs=10)
        assert sim.loss({net.inp: x, net.p: y}) < before


# -- gradients ----------------------------------------------------------------------------------


def grad_net(synapse, recurrent, seed=0):
    with nengo.Network(seed=seed) as net:
        nengo_onnx.configure_settings(dtype="float64")  # exact finite differences
        net.inp = nengo.Node(np.zeros(2))
        net.ens = nengo.Ensemble(8, 2, neuron_type=nengo.LIFRate(amplitude=0.01))
        out = nengo.Node(size_in=2)
        nengo.Connection(net.inp, net.ens, synapse=synapse, transform=[[1, 0.5], [0, 1]])
        if recurrent:
            nengo.Connection(net.ens, net.ens, synapse=synapse, transform=0.4)
        nengo.Connection(net.ens, out, synapse=synapse)
        net.p = nengo.Probe(out)
    return net


@pytest.mark.parametrize(
    "synapse, recurrent, truncation",
    [
        (None, False, None),
        (nengo.Lowpass(0.005), True, None),
        (nengo.Alpha(0.004), False, None),
        (nengo.Lowpass(0.005), True, 2),
    ],
)
def test_gradients_match_finite_differences(rng, synapse, recurrent, truncation):
    net = grad_net(synapse, recurrent)
    x, y = square_data(rng, n=4, steps=5)
    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        grads = gradients(sim, data, truncation=truncation)
        assert {p.key for p in grads} == {"encoders", "bias", "weights"}
        for param, grad in grads.items():
            if truncation is not None:
                continue  # truncated gradients are not the loss's gradient
            fd = finite_differences(sim, data, param)
            # gradients() sums over the 2 minibatches; sim.loss averages them
            assert np.allclose(grad.ravel()[: fd.size] / 2, fd, rtol=1e-3, atol=1e-8), param.name


def test_truncation(rng):
    """m >= n_steps is full BPTT; shorter windows lose the cross-window terms."""
    net = grad_net(nengo.Lowpass(0.005), recurrent=True)
    x, y = square_data(rng, n=2, steps=6)
    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        full = gradients(sim, data)
        for m in (6, 10):
            same = gradients(sim, data, truncation=m)
            for key in full:
                assert np.allclose(same[key], full[key], rtol=1e-5, atol=1e-9)
        for m in (2, 4):  # 4 leaves a shorter last window
            truncated = gradients(sim, data, truncation=m)
            assert any(not np.allclose(truncated[k], full[k], rtol=1e-3) for k in full)
        losses = {}
        for m in (None, 4):
            sim2 = nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False)
            with sim2:
                losses[m] = sim2.train(data, optimizers.SGD(0.0), truncation=m)["loss"][0]
        # the window losses add up to the whole sequence's (mean-type objectives)
        assert np.isclose(losses[None], losses[4], rtol=1e-5)


def test_truncation_without_dynamics_is_exact(rng):
    """Without state (no synapses) windows are independent: truncation changes nothing."""
    net = feedforward()
    x, y = square_data(rng, n=4, steps=5)
    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        full = gradients(sim, data)
        truncated = gradients(sim, data, truncation=2)
        for key in full:
            assert np.allclose(truncated[key], full[key], rtol=1e-4, atol=1e-8)


# -- spiking neurons ---------------------------------------------------------------------------


def test_spiking_network_trains_and_still_spikes(rng):
    net = feedforward(neuron_type=nengo.LIF(amplitude=0.01), synapse=0.01)
    with net:
        p_spikes = nengo.Probe(net.ens.neurons)
    x = np.repeat(rng.uniform(-1, 1, (8, 1, 2)), 20, axis=1)
    data = {net.inp: x, net.p: x**2}
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        before = sim.loss(data)
        sim.train(data, optimizers.Adam(0.01), n_epochs=10)
        assert sim.loss(data) < before
        sim.run_steps(20, data={net.inp: x[:4]})
        spikes = sim.data[p_spikes]
        assert np.allclose(spikes[spikes != 0], 0.01 / sim.dt)


# -- epochs, shuffling, profiling, progress ------------------------------------------------------


def test_shuffle_is_seeded(rng):
    net = feedforward()
    x, y = square_data(rng, n=8)
    data = {net.inp: x, net.p: y}
    results = []
    for seed, shuffle in [(1, True), (1, True), (2, True), (1, False)]:
        with nengo_onnx.Simulator(net, minibatch_size=2, seed=seed, progress_bar=False) as sim:
            sim.train(data, optimizers.SGD(0.05), n_epochs=2, shuffle=shuffle)
            results.append(np.array(sim.data[net.conn].weights))
    assert np.array_equal(results[0], results[1])
    assert not np.allclose(results[0], results[2])
    assert not np.allclose(results[0], results[3])


def test_profile(rng, tmp_path, monkeypatch):
    net = feedforward()
    x, y = square_data(rng, n=4)
    monkeypatch.chdir(tmp_path)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        sim.train({net.inp: x, net.p: y}, optimizers.SGD(), n_epochs=2, profile=True)
        sim.train({net.inp: x, net.p: y}, optimizers.SGD(), profile=str(tmp_path / "p.json"))
    for name in (training.PROFILE_FILE, "p.json"):
        events = json.loads((tmp_path / name).read_text())
        assert any(e.get("name") == "model_run" for e in events)
        assert any(e.get("cat") == "Node" for e in events)


def test_progress_bar(rng, capsys):
    net = feedforward()
    x, y = square_data(rng, n=4)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        sim.progress_bar = True
        sim.train({net.inp: x, net.p: y}, optimizers.SGD(), n_epochs=2)


# -- summaries --------------------------------------------------------------------------------


def test_summaries(rng, tmp_path):
    net = feedforward()
    x, y = square_data(rng, n=4)
    data = {net.inp: x, net.p: y}
    logdir = str(tmp_path / "tb")
    for _ in range(2):
        with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
            sim.tensorboard = logdir  # Simulator(..., tensorboard=logdir)
            first = sim.train(
                data,
                optimizers.SGD(0.01),
                n_epochs=2,
                summaries=["loss", net.conn, net.ens, net.ens.neurons],
            )
            sim.train(data, optimizers.SGD(0.01), summaries=["loss"])
            sim.train(data, optimizers.SGD(0.01), summaries=["loss"])
            weights = np.array(sim.data[net.conn].weights)
    assert sorted(os.listdir(logdir)) == ["run_0", "run_1"]
    events = summaries.read_run(os.path.join(logdir, "run_1"))
    tags = {tag for _, tag, _ in events}
    assert tags == {
        "loss",
        "loss_1",
        "loss_2",
        "decode.weights",
        "ens.encoders",
        "ens.neurons.bias",
    }
    losses = [v for _, tag, v in events if tag == "loss"]
    assert len(losses) == 4  # 2 epochs x 2 minibatches
    assert np.isclose(np.mean(losses[:2]), first["loss"][0], rtol=1e-6)
    hists = [v for _, tag, v in events if tag == "decode.weights"]
    assert len(hists) == 4 and hists[0]["num"] == weights.size
    assert sum(hists[-1]["bucket"]) == weights.size
    steps = [step for step, tag, _ in events if tag.startswith("loss")]
    assert steps == sorted(steps)


def test_summaries_errors(rng):
    net = feedforward()
    x, y = square_data(rng, n=2)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="summar"):
            sim.train({net.inp: x, net.p: y}, optimizers.SGD(), summaries=["weights"])
        with pytest.warns(UserWarning, match="tensorboard"):
            sim.train({net.inp: x, net.p: y}, optimizers.SGD(), summaries=["loss"])


# -- trainable configuration ------------------------------------------------------------------


def config_net():
    net = nengo.Network(seed=0)
    with net:
        nengo_onnx.configure_settings(trainable=None)
        net.a = nengo.Ensemble(5, 2, label="a")
        net.b = nengo.Ensemble(5, 2, label="b")
        nengo.Connection(net.a, net.b, label="ab")
        with nengo.Network(label="sub") as net.sub:
            net.x = nengo.Ensemble(5, 2, label="x")
        nengo.Connection(net.b, net.x, label="bx")
    return net


def trained_names(net):
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        return {p.name for p in trainable.trainable_params(sim.program)}


ALL = {
    "a.encoders",
    "a.neurons.bias",
    "b.encoders",
    "b.neurons.bias",
    "x.encoders",
    "x.neurons.bias",
    "ab.weights",
    "bx.weights",
}


def sub_off_inside(net):
    with net.sub:
        nengo_onnx.configure_settings(trainable=False)


@pytest.mark.parametrize(
    "configure, expected",
    [
        (lambda net: None, ALL),
        (
            lambda net: setattr(net.config[net.a], "trainable", False),
            ALL - {"a.encoders", "a.neurons.bias"},
        ),
        (
            lambda net: (
                setattr(net.config[net.a], "trainable", False),
                setattr(net.config[net.a.neurons], "trainable", True),
            ),
            ALL - {"a.encoders"},
        ),
        (
            lambda net: setattr(net.config[net.b.neurons], "trainable", False),
            ALL - {"b.neurons.bias"},
        ),
        (
            lambda net: setattr(net.config[nengo.Ensemble], "trainable", False),
            {"ab.weights", "bx.weights"},
        ),
        (
            lambda net: (
                setattr(net.config[nengo.Ensemble], "trainable", False),
                setattr(net.config[net.b], "trainable", True),
            ),
            {"ab.weights", "bx.weights", "b.encoders", "b.neurons.bias"},
        ),
        (
            lambda net: setattr(net.config[nengo.Connection], "trainable", False),
            ALL - {"ab.weights", "bx.weights"},
        ),
        (
            lambda net: setattr(net.config[nengo.ensemble.Neurons], "trainable", False),
            ALL - {"a.neurons.bias", "b.neurons.bias", "x.neurons.bias"},
        ),
        (
            lambda net: setattr(net.config[net.sub], "trainable", False),
            ALL - {"x.encoders", "x.neurons.bias"},
        ),
        (sub_off_inside, ALL - {"x.encoders", "x.neurons.bias"}),
        (
            lambda net: (sub_off_inside(net), setattr(net.sub.config[net.x], "trainable", True)),
            ALL,
        ),
        (
            lambda net: (
                setattr(net.config[net.sub], "trainable", False),
                setattr(net.config[net.x], "trainable", True),
            ),
            ALL,
        ),
    ],
)
def test_trainable_config(configure, expected):
    net = config_net()
    configure(net)
    assert trained_names(net) == expected


def test_untrainable_params_do_not_change(rng):
    net = feedforward()
    with net:
        nengo_onnx.configure_settings(trainable=None)
    net.config[net.ens].trainable = False
    x, y = square_data(rng, n=4)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        encoders = np.array(sim.data[net.ens].encoders)
        bias = np.array(sim.data[net.ens].bias)
        weights = np.array(sim.data[net.conn].weights)
        sim.train({net.inp: x, net.p: y}, optimizers.Adam(0.01), n_epochs=2)
        assert np.array_equal(sim.data[net.ens].encoders, encoders)
        assert np.array_equal(sim.data[net.ens].bias, bias)
        assert not np.allclose(sim.data[net.conn].weights, weights)


def test_partly_trainable_merged_signals(rng):
    """With optimize=True, encoders of two ensembles share a base: only one part trains."""
    with nengo.Network(seed=0) as net:
        nengo_onnx.configure_settings(trainable=None)
        inp = nengo.Node(np.zeros(2))
        a = nengo.Ensemble(10, 2, neuron_type=nengo.RectifiedLinear(amplitude=0.01))
        b = nengo.Ensemble(10, 2, neuron_type=nengo.RectifiedLinear(amplitude=0.01))
        out = nengo.Node(size_in=2)
        for ens in (a, b):
            nengo.Connection(inp, ens, synapse=None)
            nengo.Connection(ens, out, synapse=None)
        p = nengo.Probe(out)
    net.config[a].trainable = False
    x, y = square_data(rng, n=4)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        before = {e: np.array(sim.data[e].encoders) for e in (a, b)}
        sim.train({inp: x, p: y}, optimizers.Adam(0.01), n_epochs=2)
        assert np.array_equal(sim.data[a].encoders, before[a])
        assert not np.allclose(sim.data[b].encoders, before[b])


def test_learning_rule_targets_are_not_trained():
    with nengo.Network(seed=0) as net:
        a = nengo.Ensemble(5, 1, label="a")
        b = nengo.Ensemble(5, 1, label="b")
        conn = nengo.Connection(a, b, learning_rule_type=nengo.PES(), label="learned")
        nengo.Connection(nengo.Node([0]), conn.learning_rule)
    names = trained_names(net)
    assert "learned.weights" not in names and "a.encoders" in names


# -- validation ---------------------------------------------------------------------------------


def validation_net():
    net = feedforward()
    with net:
        net.inner = nengo.Node(size_in=2)
        nengo.Connection(net.ens, net.inner)
    return net


@pytest.mark.parametrize(
    "make_data, match",
    [
        (lambda n, x, y: {n.inp: x[:, :, :1], n.p: y}, r"\(n_inputs, n_steps, 2\)"),
        (lambda n, x, y: {n.inp: x[:, :2], n.p: y}, "same n_steps"),
        (lambda n, x, y: {n.inp: x[:3], n.p: y[:3]}, "divisible by minibatch_size"),
        (lambda n, x, y: {n.inp: x[:2], n.p: y}, "same n_inputs"),
        (lambda n, x, y: {n.inp: x}, "no targets"),
        (lambda n, x, y: {n.inner: x, n.p: y}, "size_in == 0"),
        (
            lambda n, x, y: {nengo.Node([0], add_to_container=False): x, n.p: y},
            "belongs to another network",
        ),
        (
            lambda n, x, y: {n.inp: x, nengo.Probe(n.ens, add_to_container=False): y},
            "not a probe of this",
        ),
        (lambda n, x, y: {n.inp: x[0], n.p: y}, r"\(n_inputs, n_steps, 2\)"),
        (lambda n, x, y: {n.inp: np.full_like(x, np.nan), n.p: y}, "NaN"),
        (lambda n, x, y: {n.ens: x, n.p: y}, "input Nodes or Probes"),
        (lambda n, x, y: {}, "non-empty"),
    ],
)
def test_data_errors(rng, make_data, match):
    net = validation_net()
    x, y = square_data(rng, n=4)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        data = make_data(net, x, y)
        with pytest.raises(ValidationError, match=match):
            sim.train(data, optimizers.SGD())
        with pytest.raises(ValidationError, match=match):
            sim.loss(data)


def test_objective_errors(rng):
    net = validation_net()
    with net:
        other = nengo.Probe(net.ens)
    x, y = square_data(rng, n=2)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="needs targets"):
            sim.train({net.inp: x, net.p: y}, optimizers.SGD(), objective={other: objectives.mse})
        with pytest.raises(ValidationError, match="needs targets"):
            sim.loss({net.inp: x}, objective={net.p: None})
        with pytest.raises(ValidationError, match="objective keys"):
            sim.loss({net.inp: x, net.p: y}, objective={net.ens: objectives.mse})
        with pytest.raises(ValidationError, match="function or None"):
            sim.loss({net.inp: x, net.p: y}, objective={net.p: 3})


def test_argument_errors(rng):
    net = feedforward()
    x, y = square_data(rng, n=2)
    data = {net.inp: x, net.p: y}
    sim = nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False)
    with sim:
        for kwargs in ({"n_epochs": 0}, {"truncation": 0}, {"n_epochs": 1.5}):
            with pytest.raises(ValidationError):
                sim.train(data, optimizers.SGD(), **kwargs)
        with pytest.raises(ValidationError, match="optimizer"):
            sim.train(data, "adam")
    with pytest.raises(SimulatorClosed):
        sim.train(data, optimizers.SGD())
    with pytest.raises(SimulatorClosed):
        sim.loss(data)


def test_inputs_without_data_keep_their_output(rng):
    """A Node that data does not override (a function of time) still drives training."""
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(lambda t: [np.sin(50 * t), np.cos(50 * t)])
        ens = nengo.Ensemble(20, 2, neuron_type=nengo.RectifiedLinear(amplitude=0.01))
        out = nengo.Node(size_in=2)
        nengo.Connection(stim, ens, synapse=None)
        nengo.Connection(ens, out, synapse=None)
        p = nengo.Probe(out)
    steps = 6
    t = np.arange(1, steps + 1) * 0.001
    target = np.stack([np.sin(50 * t) ** 2, np.cos(50 * t) ** 2], axis=-1)
    data = {p: np.tile(target, (4, 1, 1))}
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        before = sim.loss(data)
        sim.train(data, optimizers.Adam(0.01), n_epochs=10)
        assert sim.loss(data) < before


def test_repeated_training_reuses_graphs(rng):
    net = feedforward()
    x, y = square_data(rng, n=4)
    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        losses = [sim.train(data, optimizers.SGD(0.05))["loss"][0] for _ in range(3)]
        assert len(sim.program.training_graphs) == 1
        assert losses[2] < losses[1] < losses[0]  # each call continues from the last


def test_untrainable_network_is_reported(rng):
    """Operators that only run in Python cannot be differentiated."""
    with nengo.Network(seed=0) as net:
        inp = nengo.Node(np.zeros(2))
        ens = nengo.Ensemble(10, 2)
        host = nengo.Node(lambda t, x: np.tanh(x), size_in=2, size_out=2)
        nengo.Connection(inp, ens, synapse=None)
        nengo.Connection(ens, host, synapse=None)
        p = nengo.Probe(host)
    x, y = square_data(rng, n=2)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        assert np.isfinite(sim.loss({inp: x, p: y}))
        with pytest.raises(nengo.exceptions.SimulationError, match="Python"):
            sim.train({inp: x, p: y}, optimizers.SGD())
