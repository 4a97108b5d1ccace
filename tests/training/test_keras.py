"""NengoDL 3's Keras-style API: compile, fit, evaluate, predict, callbacks,
get_nengo_params, SoftLIFRate, and NengoDL's spiking MNIST example, translated."""

import nengo
import numpy as np
import pytest
from nengo.exceptions import ValidationError

import nengo_onnx
from nengo_onnx import callbacks, events, losses, metrics, optimizers

N_CLASSES = 3


def classifier(seed=0, neuron_type=None):
    """Two inputs -> 30 neurons -> 3 logits; two probes (one without a label)."""
    with nengo.Network(seed=seed) as net:
        net.config[nengo.Connection].synapse = None
        net.inp = nengo.Node(np.zeros(2), label="inp")
        net.ens = nengo.Ensemble(
            30, 2, neuron_type=neuron_type or nengo.RectifiedLinear(amplitude=0.01)
        )
        net.out = nengo.Node(size_in=N_CLASSES)
        nengo.Connection(net.inp, net.ens)
        net.conn = nengo.Connection(
            net.ens.neurons, net.out, transform=np.random.RandomState(seed).randn(3, 30) * 0.01
        )
        net.p = nengo.Probe(net.out, label="out p")  # named "out_p"
        net.p2 = nengo.Probe(net.ens)  # named "probe"
    return net


def labelled(rng, n=64):
    x = rng.uniform(-1, 1, (n, 1, 2))
    labels = (x[:, :, :1] > 0).astype(float) + (x[:, :, 1:] > 0)
    return x, labels


def test_fit_evaluate_predict_forms(rng):
    net = classifier()
    x, y = labelled(rng)
    with nengo_onnx.Simulator(net, minibatch_size=16, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="compile"):
            sim.fit(x, {net.p: y})
        sim.compile(
            optimizer="adam",
            loss={"out_p": losses.SparseCategoricalCrossentropy(from_logits=True)},
            metrics={net.p: ["accuracy", "sparse_categorical_accuracy"]},
        )
        assert isinstance(sim.keras_setup.optimizer, optimizers.Adam)
        before = sim.evaluate(x, y)  # one array each: the only input, the only loss probe
        assert set(before) == {"loss", "out_p_accuracy", "out_p_sparse_categorical_accuracy"}
        assert before == sim.evaluate({"inp": x}, {net.p: y})
        assert before == sim.evaluate({net.inp: x}, {"out_p": y})
        sim.compile(
            optimizers.Adam(0.02),
            loss=losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics="accuracy",
        )
        history = sim.fit(
            {net.inp: x}, {"out_p": y}, epochs=6, validation_data=(x[:32], {net.p: y[:32]})
        )
        h = history.history
        assert set(h) == {"loss", "out_p_accuracy", "val_loss", "val_out_p_accuracy"}
        assert all(len(v) == 6 for v in h.values())
        assert history.epoch == list(range(6))
        assert h["loss"][-1] < 0.7 * h["loss"][0]
        assert h["out_p_accuracy"][-1] > 0.8
        with pytest.raises(ValidationError, match="2 Probes"):
            sim.evaluate(x, y)  # one array, but the loss is for every probe
        after = sim.evaluate(x, {net.p: y})
        assert after["loss"] < before["loss"]
        # evaluate's loss is the numpy Keras loss on the run's outputs
        out = sim.predict(x)
        assert set(out) == {net.p, net.p2}
        assert out[net.p].shape == (64, 1, 3) and out[net.p2].shape == (64, 1, 2)
        expected = np.mean(losses.sparse_categorical_crossentropy(y, out[net.p], from_logits=True))
        assert np.isclose(after["loss"], expected, rtol=1e-5)
        assert np.isclose(
            after["out_p_accuracy"], np.mean(metrics.accuracy(y, out[net.p])), rtol=1e-6
        )
        # the last validation is the evaluation of the trained network on x[:32]
        assert np.isclose(h["val_loss"][-1], sim.evaluate(x[:32], {net.p: y[:32]})["loss"])
        batch = sim.predict_on_batch(x[:16])
        assert np.allclose(batch[net.p], out[net.p][:16], atol=1e-6)
        with pytest.raises(ValidationError, match="exactly minibatch_size"):
            sim.predict_on_batch(x[:32])
        assert sim.n_steps == 0  # predict/evaluate leave the simulator alone
        with pytest.raises(ValidationError, match="no Probe named"):
            sim.evaluate(x, {"nope": y})


def test_mse_names_several_losses_and_no_inputs(rng):
    with nengo.Network(seed=1) as net:
        a = nengo.Node([0.5], label="a")
        ens = nengo.Ensemble(20, 1, neuron_type=nengo.RectifiedLinear(amplitude=0.01))
        nengo.Connection(a, ens, synapse=None)
        p1 = nengo.Probe(ens, synapse=None)
        p2 = nengo.Probe(ens, synapse=None, label="probe")  # second "probe": "probe_1"
    target = np.full((4, 3, 1), 0.25)
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.compile("sgd", loss={"probe": "mse", "probe_1": "mae"}, metrics=["mse", "mae"])
        res = sim.evaluate(y={p1: target, p2: target}, n_steps=3)  # x=None: the Node's output
        assert {"loss", "probe_loss", "probe_1_loss", "probe_mse", "probe_1_mae"} <= set(res)
        assert np.isclose(res["loss"], res["probe_loss"] + res["probe_1_loss"])
        assert np.isclose(res["probe_mse"], res["probe_loss"])
        assert np.isclose(res["probe_1_mae"], res["probe_1_loss"])
        pred = sim.predict(n_steps=3)
        assert pred[p1].shape == (4, 3, 1)
        # the Keras-order function is traced for training
        sim.compile(optimizers.SGD(0.1), loss=lambda y_true, y_pred: (y_pred - y_true) ** 2)
        history = sim.fit(y={p1: target}, n_steps=3, epochs=3, shuffle=False)
        assert history.history["loss"][-1] < history.history["loss"][0]
        with pytest.raises(ValidationError, match="unknown loss"):
            sim.compile("adam", loss="nope")
        with pytest.raises(ValidationError, match="unknown optimizer"):
            sim.compile("nope")


class Recorder(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", None, dict(logs)))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch, dict(logs)))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, dict(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", None, dict(logs)))


def test_callbacks_order_and_arguments(rng, tmp_path):
    net = classifier()
    x, y = labelled(rng, n=32)
    rec = Recorder()
    board = callbacks.TensorBoard(tmp_path / "logs", update_freq="batch")
    with nengo_onnx.Simulator(net, minibatch_size=16, progress_bar=False) as sim:
        sim.compile(
            optimizers.Adam(0.01),
            loss={net.p: losses.SparseCategoricalCrossentropy(from_logits=True)},
            metrics={net.p: "accuracy"},
        )
        history = sim.fit(x, y, epochs=2, validation_data=(x, y), callbacks=[rec, board])
    kinds = [(kind, i) for kind, i, _ in rec.calls]
    assert kinds == [
        ("train_begin", None),
        ("epoch_begin", 0),
        ("batch_end", 0),
        ("batch_end", 1),
        ("epoch_end", 0),
        ("epoch_begin", 1),
        ("batch_end", 0),
        ("batch_end", 1),
        ("epoch_end", 1),
        ("train_end", None),
    ]
    assert rec.model.sim is sim and rec.params == {"epochs": 2, "steps": 2}
    batch_logs = [logs for kind, _, logs in rec.calls if kind == "batch_end"]
    assert all(set(logs) == {"loss", "out_p_accuracy"} for logs in batch_logs)
    epoch_logs = [logs for kind, _, logs in rec.calls if kind == "epoch_end"]
    for e, logs in enumerate(epoch_logs):
        assert np.isclose(
            logs["loss"], np.mean([b["loss"] for b in batch_logs[2 * e : 2 * e + 2]])
        )
        assert logs == {key: values[e] for key, values in history.history.items()}
    # the TensorBoard callback's event files read back
    found = events.read_run(board.run_dir)
    tags = {(tag, step) for step, tag, _ in found}
    assert {("epoch_loss", 0), ("epoch_loss", 1), ("epoch_val_loss", 1)} <= tags
    assert {("batch_loss", k) for k in range(4)} <= tags
    values = {(tag, step): v for step, tag, v in found}
    assert np.isclose(values["epoch_loss", 1], history.history["loss"][1], rtol=1e-6)


def test_early_stopping_stops_and_restores(rng):
    net = classifier()
    x, y = labelled(rng, n=32)
    with nengo_onnx.Simulator(net, minibatch_size=16, progress_bar=False) as sim:
        # a learning rate that overshoots: the loss gets worse after the first epochs
        sim.compile(
            optimizers.SGD(50.0),
            loss={net.p: losses.SparseCategoricalCrossentropy(from_logits=True)},
        )
        stop = callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
        seen = []

        class Weights(callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen.append((logs["loss"], self.model.get_weights()))

        history = sim.fit(x, y, epochs=30, callbacks=[stop, Weights()])
        n = len(history.history["loss"])
        assert n < 30 and stop.stopped_epoch == n - 1
        best = int(np.argmin(history.history["loss"]))
        assert stop.best_epoch == best
        for now, then in zip(stop.model.get_weights(), seen[best][1]):
            assert np.array_equal(now, then)
        # the restored weights are what the simulator runs
        assert np.isclose(
            sim.evaluate(x, y)["loss"],
            np.mean(
                losses.sparse_categorical_crossentropy(y, sim.predict(x)[net.p], from_logits=True)
            ),
        )


def test_get_nengo_params_rebuilds_the_trained_network(rng):
    net = classifier(neuron_type=nengo.LIFRate(amplitude=0.01))
    with net:
        decoded = nengo.Node(size_in=1)
        dconn = nengo.Connection(net.ens, decoded, function=lambda v: v[0] * v[1])
        pd = nengo.Probe(decoded)
    x, y = labelled(rng, n=32)
    with nengo_onnx.Simulator(net, minibatch_size=16, progress_bar=False) as sim:
        sim.compile(
            optimizers.Adam(0.02),
            loss={
                net.p: losses.SparseCategoricalCrossentropy(from_logits=True),
                pd: "mse",
            },
        )
        sim.fit(x, {net.p: y, pd: x[:, :, :1] * x[:, :, 1:]}, epochs=3)
        trained = sim.predict(x[:16])
        params = sim.get_nengo_params([net.ens, net.conn, dconn])
        assert sim.get_nengo_params(net.ens.neurons).keys() == params[0].keys()
        with pytest.raises(ValidationError, match="unique"):
            sim.get_nengo_params([net.conn, dconn], as_dict=True)

    with nengo.Network(seed=5) as plain:
        inp = nengo.Node(lambda t: x[0, 0])
        ens = nengo.Ensemble(30, 2, neuron_type=nengo.LIFRate(amplitude=0.01), **params[0])
        out = nengo.Node(size_in=3)
        dec = nengo.Node(size_in=1)
        nengo.Connection(inp, ens, synapse=None)
        nengo.Connection(ens.neurons, out, synapse=None, **params[1])
        nengo.Connection(ens, dec, synapse=None, **params[2])
        p_out, p_dec = nengo.Probe(out), nengo.Probe(dec)
    with nengo.Simulator(plain, progress_bar=False) as ref:
        ref.step()
    assert np.allclose(ref.data[p_out][0], trained[net.p][0, 0], atol=1e-4)
    assert np.allclose(ref.data[p_dec][0], trained[pd][0, 0], atol=1e-4)


def soft_lif_numpy(J, sigma, tau_rc=0.02, tau_ref=0.002, amplitude=1.0):
    x = (J - 1) / sigma
    z = np.log1p(np.exp(np.minimum(x, 30))) * sigma
    z = np.where(x > 30, x * sigma, z)
    q = np.where(x > -20, np.log1p(1 / np.where(x > -20, z, 1)), -x - np.log(sigma))
    return amplitude / (tau_ref + tau_rc * q)


def test_soft_lif_rate_in_both_simulators():
    neuron = nengo_onnx.SoftLIFRate(sigma=0.5, amplitude=0.1)
    assert "sigma=0.5" in repr(neuron)
    J = np.linspace(-15, 6, 40)
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(lambda t: J)
        ens = nengo.Ensemble(40, 1, neuron_type=neuron, gain=np.ones(40), bias=np.zeros(40))
        nengo.Connection(stim, ens.neurons, synapse=None)
        p = nengo.Probe(ens.neurons)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(2)
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(2)
    expected = soft_lif_numpy(J, 0.5, amplitude=0.1)
    assert np.allclose(ref.data[p][-1], expected, rtol=1e-10)
    assert np.allclose(sim.data[p][-1], expected, rtol=1e-4, atol=1e-6)
    out = np.zeros_like(J)
    neuron.step(0.001, J, out)
    assert np.allclose(out, expected)
    assert np.allclose(neuron.rates(J, 1.0, 0.0).ravel(), expected)


def test_soft_lif_rate_trains(rng):
    net = classifier(neuron_type=nengo_onnx.SoftLIFRate(sigma=0.1, amplitude=0.01))
    x, y = labelled(rng, n=32)
    with nengo_onnx.Simulator(net, minibatch_size=16, progress_bar=False) as sim:
        sim.compile(
            optimizers.Adam(0.02),
            loss={net.p: losses.SparseCategoricalCrossentropy(from_logits=True)},
        )
        before = sim.evaluate(x, {net.p: y})["loss"]
        bias = np.array(sim.data[net.ens].bias)
        sim.fit(x, {net.p: y}, epochs=5)
        assert sim.evaluate(x, {net.p: y})["loss"] < 0.8 * before
        assert not np.allclose(sim.data[net.ens].bias, bias)


def test_spiking_mnist_example_translated():
    """NengoDL's spiking MNIST example (Keras-style), translated: plain nengo objects with
    ``nengo.Convolution`` transforms for its Conv2D layers, sklearn's 8x8 digits for MNIST.
    Only the imports and the optimizer/loss/metric objects differ from NengoDL's code."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    import nengo_onnx as nengo_dl  # was: import nengo_dl

    digits = sklearn_datasets.load_digits()
    images = digits.images.reshape((-1, 64)) / 16.0
    labels = digits.target
    train_images, train_labels = images[:600], labels[:600]
    test_images, test_labels = images[1000:1200], labels[1000:1200]

    with nengo.Network(seed=0) as net:
        # set some default parameters for the neurons that will make
        # the training progress more smoothly
        net.config[nengo.Ensemble].max_rates = nengo.dists.Choice([100])
        net.config[nengo.Ensemble].intercepts = nengo.dists.Choice([0])
        net.config[nengo.Connection].synapse = None
        neuron_type = nengo.LIF(amplitude=0.01)

        # the input node that will be used to feed in input images
        inp = nengo.Node(np.zeros(8 * 8))

        # add the first convolutional layer
        conv1 = nengo.Convolution(32, (8, 8, 1), kernel_size=(3, 3))
        x = nengo.Ensemble(conv1.size_out, 1, neuron_type=neuron_type).neurons
        nengo.Connection(inp, x, transform=conv1)

        # add the second convolutional layer
        conv2 = nengo.Convolution(64, (6, 6, 32), kernel_size=(3, 3), strides=(2, 2))
        x2 = nengo.Ensemble(conv2.size_out, 1, neuron_type=neuron_type).neurons
        nengo.Connection(x, x2, transform=conv2)

        # linear readout
        out = nengo.Node(size_in=10)
        nengo.Connection(
            x2, out, transform=nengo.Dense((10, x2.size_out), init=nengo.dists.Uniform(-0.1, 0.1))
        )

        out_p = nengo.Probe(out, label="out_p")
        out_p_filt = nengo.Probe(out, synapse=0.1, label="out_p_filt")

    minibatch_size = 50  # 200 in NengoDL's example, for 60000 images
    sim = nengo_dl.Simulator(net, minibatch_size=minibatch_size, progress_bar=False)

    # add single timestep to training data
    train_images = train_images[:, None, :]
    train_labels = train_labels[:, None, None]

    # when testing our network with spiking neurons we will need to run it
    # over time, so we repeat the input/target data for a number of
    # timesteps.
    n_steps = 30
    test_images = np.tile(test_images[:, None, :], (1, n_steps, 1))
    test_labels = np.tile(test_labels[:, None, None], (1, n_steps, 1))

    def classification_accuracy(y_true, y_pred):
        return nengo_dl.metrics.sparse_categorical_accuracy(y_true[:, -1], y_pred[:, -1])

    # note that we use `out_p_filt` when testing (to reduce the spike noise)
    sim.compile(loss={out_p_filt: classification_accuracy})
    before = sim.evaluate(test_images, {out_p_filt: test_labels})["loss"]

    # run training
    sim.compile(
        optimizer=nengo_dl.optimizers.RMSprop(0.001),
        loss={out_p: nengo_dl.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    sim.fit(train_images, {out_p: train_labels}, epochs=10)

    sim.compile(loss={out_p_filt: classification_accuracy})
    after = sim.evaluate(test_images, {out_p_filt: test_labels})["loss"]
    print(f"spiking accuracy on 8x8 digits: before {before:.3f}, after {after:.3f}")

    data = sim.predict(test_images[:minibatch_size])
    assert data[out_p_filt].shape == (minibatch_size, n_steps, 10)
    sim.close()
    # chance is 0.1; the rate network reaches about 0.9 here, the spiking one (30 steps,
    # synapse=None between the layers, few neurons) about 0.45
    assert after > 0.3
    assert after > before + 0.2
