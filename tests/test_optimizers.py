"""nengo_onnx.optimizers against Keras's update equations, written out in numpy."""

import inspect

import nengo
import numpy as np
import pytest
from nengo.exceptions import ValidationError

import nengo_onnx
from nengo_onnx import optimizers

N_STEPS = 6


def grads_and_var(rng, shape=(4, 3)):
    var = rng.standard_normal(shape).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in range(N_STEPS)]
    return var, grads


def reference_sgd(w, grads, lr, momentum, nesterov):
    w, m = w.astype(np.float64), np.zeros(w.shape)
    for g in grads:
        if momentum == 0:
            w = w - lr * g
            continue
        m = momentum * m - lr * g
        w = w + (momentum * m - lr * g if nesterov else m)
    return w


def reference_adam(w, grads, lr, b1, b2, eps, wd=0.0):
    w, m, v = w.astype(np.float64), np.zeros(w.shape), np.zeros(w.shape)
    for t, g in enumerate(grads, start=1):
        w = w - lr * wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        w = w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    return w


def reference_rmsprop(w, grads, lr, rho, momentum, eps):
    w, v, mom = w.astype(np.float64), np.zeros(w.shape), np.zeros(w.shape)
    for g in grads:
        v = rho * v + (1 - rho) * g**2
        step = lr * g / np.sqrt(v + eps)
        if momentum > 0:
            mom = momentum * mom + step
            w = w - mom
        else:
            w = w - step
    return w


def reference_adagrad(w, grads, lr, init, eps):
    w, acc = w.astype(np.float64), np.full(w.shape, init)
    for g in grads:
        acc = acc + g**2
        w = w - lr * g / np.sqrt(acc + eps)
    return w


def run(opt, var, grads):
    var = var.copy()
    for g in grads:
        opt.apply([g], [var])
    return var


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd(rng, momentum, nesterov):
    var, grads = grads_and_var(rng)
    opt = optimizers.SGD(learning_rate=0.05, momentum=momentum, nesterov=nesterov)
    expected = reference_sgd(var, grads, 0.05, momentum, nesterov)
    assert np.allclose(run(opt, var, grads), expected, atol=1e-5)
    assert opt.iterations == N_STEPS


def test_adam(rng):
    var, grads = grads_and_var(rng)
    opt = optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6)
    expected = reference_adam(var, grads, 0.01, 0.8, 0.99, 1e-6)
    assert np.allclose(run(opt, var, grads), expected, atol=1e-5)


@pytest.mark.parametrize("weight_decay", [0.0, 0.004, 0.1])
def test_adamw(rng, weight_decay):
    var, grads = grads_and_var(rng)
    opt = optimizers.AdamW(learning_rate=0.02, weight_decay=weight_decay)
    expected = reference_adam(var, grads, 0.02, 0.9, 0.999, 1e-7, wd=weight_decay)
    assert np.allclose(run(opt, var, grads), expected, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_rmsprop(rng, momentum):
    var, grads = grads_and_var(rng)
    opt = optimizers.RMSprop(learning_rate=0.01, rho=0.8, momentum=momentum)
    expected = reference_rmsprop(var, grads, 0.01, 0.8, momentum, 1e-7)
    assert np.allclose(run(opt, var, grads), expected, atol=1e-5)


def test_adagrad(rng):
    var, grads = grads_and_var(rng)
    opt = optimizers.Adagrad(learning_rate=0.1, initial_accumulator_value=0.2)
    expected = reference_adagrad(var, grads, 0.1, 0.2, 1e-7)
    assert np.allclose(run(opt, var, grads), expected, atol=1e-5)


@pytest.mark.parametrize(
    "cls, defaults",
    [
        (optimizers.SGD, {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False}),
        (
            optimizers.Adam,
            {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
        ),
        (
            optimizers.AdamW,
            {
                "learning_rate": 0.001,
                "weight_decay": 0.004,
                "beta_1": 0.9,
                "beta_2": 0.999,
                "epsilon": 1e-7,
            },
        ),
        (
            optimizers.RMSprop,
            {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7},
        ),
        (
            optimizers.Adagrad,
            {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7},
        ),
    ],
)
def test_keras_names_and_defaults(cls, defaults):
    params = inspect.signature(cls).parameters
    for name, value in defaults.items():
        assert params[name].default == value
    opt = cls()
    for name, value in defaults.items():
        assert getattr(opt, name) == value
    assert type(opt).__name__ in repr(opt)


def test_slots_persist_per_key(rng):
    """Each variable keeps its own moments; several variables step together."""
    a, grads_a = grads_and_var(rng, (3,))
    b, grads_b = grads_and_var(rng, (2, 2))
    opt = optimizers.Adam(0.01)
    a_out, b_out = a.copy(), b.copy()
    for ga, gb in zip(grads_a, grads_b):
        opt.apply([ga, gb], [a_out, b_out], keys=["a", "b"])
    assert np.allclose(a_out, reference_adam(a, grads_a, 0.01, 0.9, 0.999, 1e-7), atol=1e-5)
    assert np.allclose(b_out, reference_adam(b, grads_b, 0.01, 0.9, 0.999, 1e-7), atol=1e-5)


def test_apply_gradients_and_schedule(rng):
    var, grads = grads_and_var(rng)
    opt = optimizers.SGD(learning_rate=lambda step: 0.1 / (1 + step))
    out = var.copy()
    for g in grads:
        opt.apply_gradients([(g, out)])
    expected = var.astype(np.float64)
    for step, g in enumerate(grads):
        expected = expected - 0.1 / (1 + step) * g
    assert np.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: optimizers.SGD(learning_rate=-1),
        lambda: optimizers.SGD(momentum=1.5),
        lambda: optimizers.Adam(beta_1="x"),
        lambda: optimizers.RMSprop(rho=-0.1),
        lambda: optimizers.Adagrad(initial_accumulator_value=-1),
        lambda: optimizers.AdamW(weight_decay=np.nan),
    ],
)
def test_invalid_arguments(make):
    with pytest.raises(ValidationError):
        make()


def test_guide_example_nesterov_momentum_trains(rng):
    """The guide's optimizer (momentum 0.9 with Nesterov) trains a network."""
    with nengo.Network(seed=0) as net:
        inp = nengo.Node(np.zeros(2))
        ens = nengo.Ensemble(20, 2, neuron_type=nengo.RectifiedLinear(amplitude=0.01))
        out = nengo.Node(size_in=2)
        nengo.Connection(inp, ens, synapse=None)
        nengo.Connection(ens, out, synapse=None)
        p = nengo.Probe(out)
    x = rng.uniform(-1, 1, (16, 2, 2))
    data = {inp: x, p: x**2}
    with nengo_onnx.Simulator(net, minibatch_size=8, progress_bar=False) as sim:
        before = sim.loss(data)
        sim.train(
            data, optimizers.SGD(learning_rate=1e-2, momentum=0.9, nesterov=True), n_epochs=20
        )
        assert sim.loss(data) < 0.5 * before
