"""Objectives: numpy values, tracing custom array-API objectives, their errors."""

import array_api_compat
import nengo
import numpy as np
import pytest
from nengo.exceptions import SimulationError, ValidationError

import nengo_onnx
from nengo_onnx import objectives, optimizers
from tests.helpers import gradients


def net_and_data(rng, d=2, n=4, steps=3, synapse=0.01):
    with nengo.Network(seed=0) as net:
        net.inp = nengo.Node(np.zeros(d))
        net.ens = nengo.Ensemble(10, d, neuron_type=nengo.LIFRate(amplitude=0.01))
        out = nengo.Node(size_in=d)
        nengo.Connection(net.inp, net.ens, synapse=None)
        nengo.Connection(net.ens, out, synapse=synapse)
        net.p = nengo.Probe(out)
        net.pn = nengo.Probe(net.ens.neurons)
    x = rng.uniform(-1, 1, (n, steps, d))
    return net, x, x**2


def assert_same_grads(a, b, rtol=1e-4):
    assert a.keys() == b.keys()
    for key in a:
        assert np.allclose(a[key], b[key], rtol=rtol, atol=1e-7), key.name


def test_numpy_values(rng):
    y = rng.standard_normal((2, 3, 4)).astype(np.float32)
    t = rng.standard_normal((2, 3, 4)).astype(np.float32)
    assert np.isclose(objectives.mse(y, t), np.mean((y - t) ** 2))
    probs = np.exp(y) / np.exp(y).sum(axis=-1, keepdims=True)
    onehot = np.eye(4, dtype=np.float32)[rng.randint(4, size=(2, 3))]
    expected = -np.mean(np.sum(onehot * np.log(probs), axis=-1))
    assert np.isclose(objectives.softmax_cross_entropy(y, onehot), expected, rtol=1e-5)
    assert np.isclose(objectives.Regularize()(y), np.sqrt(np.sum(y**2)), rtol=1e-5)
    assert np.isclose(
        objectives.Regularize(order=1, axis=2, weight=0.5)(y),
        0.5 * np.mean(np.sum(np.abs(y), axis=2)),
        rtol=1e-5,
    )
    assert np.isclose(
        objectives.Regularize(order=3, axis=1)(y),
        np.mean(np.sum(np.abs(y) ** 3, axis=1) ** (1 / 3)),
        rtol=1e-5,
    )


def test_regularize_arguments():
    assert objectives.Regularize(order="fro").order == 2
    for kwargs in ({"order": 0}, {"axis": 1.5}, {"weight": "x"}):
        with pytest.raises(ValidationError):
            objectives.Regularize(**kwargs)


def test_custom_objective_matches_builtin(rng):
    net, x, y = net_and_data(rng)

    def my_mse(outputs, targets):
        xp = array_api_compat.array_namespace(outputs, targets)
        return xp.mean((outputs - targets) ** 2)

    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        assert np.isclose(sim.loss(data, objective={net.p: my_mse}), sim.loss(data))
        assert_same_grads(gradients(sim, data, objective={net.p: my_mse}), gradients(sim, data))


def test_output_only_objectives(rng):
    """``f(outputs)`` needs no targets; Regularize is traced and built in alike."""
    net, x, _ = net_and_data(rng)

    def l2(outputs):
        xp = array_api_compat.array_namespace(outputs)
        return xp.sqrt(xp.sum(outputs * outputs)) * 0.1

    data = {net.inp: x}
    reg = objectives.Regularize(weight=0.1)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        assert np.isclose(sim.loss(data, {net.pn: reg}), sim.loss(data, {net.pn: l2}))
        grads = gradients(sim, data, objective={net.pn: reg})
        assert_same_grads(grads, gradients(sim, data, objective={net.pn: l2}))
        assert any(np.any(g != 0) for g in grads.values())


def test_tuple_keys_and_sums(rng):
    net, x, y = net_and_data(rng)

    def pair(outputs, targets):
        xp = array_api_compat.array_namespace(outputs[0])
        return xp.mean((outputs[0] - targets[0]) ** 2) + 0.5 * xp.mean(outputs[1] ** 2)

    zeros = np.zeros((x.shape[0], x.shape[1], 10))
    data = {net.inp: x, net.p: y, net.pn: zeros}
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        both = sim.loss(data, {(net.p, net.pn): pair})
        separate = sim.loss(data, {net.p: objectives.mse, net.pn: objectives.mse})
        assert np.isclose(both, separate - 0.5 * sim.loss(data, {net.pn: objectives.mse}))
        assert_same_grads(
            gradients(sim, data, {(net.p, net.pn): pair}),
            {
                k: a + 0.5 * b
                for (k, a), b in zip(
                    gradients(sim, data, {net.p: objectives.mse}).items(),
                    gradients(sim, data, {net.pn: objectives.mse}).values(),
                )
            },
        )


def test_none_objective_takes_the_gradient_as_given(rng):
    """Targets for ``{p: None}`` are dL/dy: 2 (y - t) / size gives the MSE gradients."""
    net, x, y = net_and_data(rng, n=2)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        sim.run_steps(x.shape[1], data={net.inp: x})
        out = sim.data[net.p]
        dy = 2 * (out - y) / out.size
        assert_same_grads(
            gradients(sim, {net.inp: x, net.p: dy}, objective={net.p: None}),
            gradients(sim, {net.inp: x, net.p: y}),
            rtol=1e-3,
        )


def test_softmax_cross_entropy_trains(rng):
    net, x, _ = net_and_data(rng, n=8, steps=1, synapse=None)
    labels = (x[..., 0] > x[..., 1]).astype(int)
    onehot = np.eye(2)[labels]
    data = {net.inp: x, net.p: onehot}
    obj = {net.p: objectives.softmax_cross_entropy}
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        before = sim.loss(data, obj)
        sim.train(data, optimizers.Adam(0.05), n_epochs=10, objective=obj)
        assert sim.loss(data, obj) < before


def test_non_scalar_objective_is_named(rng):
    net, x, y = net_and_data(rng)

    def elementwise(outputs, targets):
        return outputs - targets

    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="elementwise.*scalar"):
            sim.loss(data, objective={net.p: elementwise})
        with pytest.raises(ValidationError, match="elementwise.*scalar"):
            sim.train(data, optimizers.SGD(), objective={net.p: elementwise})


def test_untraceable_objective_is_named(rng):
    net, x, y = net_and_data(rng)

    def uses_python(outputs, targets):
        return float(np.asarray(outputs).sum())  # leaves the array namespace

    def not_differentiable(outputs, targets):
        xp = array_api_compat.array_namespace(outputs)
        return xp.max(outputs - targets)

    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="uses_python"):
            sim.train(data, optimizers.SGD(), objective={net.p: uses_python})
        with pytest.raises((ValidationError, SimulationError), match="not_differentiable"):
            sim.train(data, optimizers.SGD(), objective={net.p: not_differentiable})
