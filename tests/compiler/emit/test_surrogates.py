"""Spike-aware training (``spiking_gradient``): spikes forward, rate gradients backward."""

import nengo
import numpy as np
import onnx
import pytest
from nengo.exceptions import ValidationError

import nengo_onnx
from nengo_onnx import optimizers, ort_setup
from nengo_onnx.compiler.emit import surrogates
from tests.helpers import gradients


def spiking_net(neuron_type, mode=None, smoothing=None, seed=0):
    with nengo.Network(seed=seed) as net:
        if mode is not None:
            nengo_onnx.configure_settings(spiking_gradient=mode)
        if smoothing is not None:
            nengo_onnx.configure_settings(lif_smoothing=smoothing)
        net.inp = nengo.Node(np.zeros(2), label="inp")
        net.ens = nengo.Ensemble(30, 2, neuron_type=neuron_type, label="ens")
        net.out = nengo.Node(size_in=2, label="out")
        nengo.Connection(net.inp, net.ens, synapse=None)
        nengo.Connection(net.ens, net.out, synapse=0.01)
        net.p = nengo.Probe(net.out)
        net.p_spikes = nengo.Probe(net.ens.neurons)
    return net


def held_data(rng, n=8, steps=20):
    x = np.repeat(rng.uniform(-1, 1, (n, 1, 2)), steps, axis=1)
    return x, x**2


@pytest.mark.parametrize("mode", ["rate", "surrogate"])
@pytest.mark.parametrize(
    "neuron_type", [nengo.LIF(amplitude=0.01), nengo.SpikingRectifiedLinear(amplitude=0.01)]
)
def test_spiking_network_trains_and_still_spikes(rng, mode, neuron_type):
    net = spiking_net(neuron_type, mode)
    x, y = held_data(rng)
    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(
        net, minibatch_size=4, unroll_simulation=5, progress_bar=False
    ) as sim:
        before = sim.loss(data)
        history = sim.train(data, optimizers.Adam(0.01), n_epochs=10)
        assert history["loss"][-1] < 0.5 * history["loss"][0]
        assert sim.loss(data) < 0.5 * before
        sim.run_steps(20, data={net.inp: x[:4]})
        spikes = sim.data[net.p_spikes]
        assert np.any(spikes != 0)
        assert np.allclose(spikes[spikes != 0], 0.01 / sim.dt)


@pytest.mark.parametrize(
    "mode, truncation, optimize",
    [(None, None, True), ("rate", None, True), ("rate", 4, True), ("surrogate", None, False)],
)
def test_training_forward_pass_spikes(rng, mode, truncation, optimize):
    """With spike-aware training the training loss is the spiking network's loss (also
    when truncated windows carry the spiking state)."""
    net = spiking_net(nengo.LIF(amplitude=0.01), mode)
    x, y = held_data(rng, steps=10)
    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(net, minibatch_size=4, optimize=optimize, progress_bar=False) as sim:
        spiking = sim.loss(data)
        trained = sim.train(data, optimizers.SGD(0.0), shuffle=False, truncation=truncation)[
            "loss"
        ][0]
    if mode is None:  # rate substitution: a different (rate) network's loss
        assert not np.isclose(trained, spiking, rtol=1e-3)
    else:
        assert np.isclose(trained, spiking, rtol=1e-4)


def soft_lif(J, tau_rc=0.02, tau_ref=0.002, amplitude=1.0, sigma=1.0):
    """NengoDL's SoftLIFRate, in float64."""
    j = sigma * np.logaddexp(0, (J - 1) / sigma)
    return amplitude / (tau_ref + tau_rc * np.log1p(1 / j))


def lif_rate(J, amplitude=1.0):
    """Nengo's LIFRate of currents ``J`` (any shape)."""
    flat = J.reshape(-1, J.shape[-1])
    return (
        nengo.LIFRate(amplitude=amplitude).rates(flat, np.ones(J.shape[-1]), 0.0).reshape(J.shape)
    )


SIGMA = surrogates.DEFAULT_SIGMA

# (neuron type, mode, lif_smoothing, rate function f whose derivative is the gradient)
CASES = {
    # rate neurons and the rate substitution: LIFRate's gradient from its output
    "lifrate": (nengo.LIFRate(amplitude=0.01), None, None, lambda J: lif_rate(J, 0.01)),
    "lif-substituted": (nengo.LIF(amplitude=0.02), None, None, lambda J: lif_rate(J, 0.02)),
    "adaptive-lifrate": (
        nengo.AdaptiveLIFRate(amplitude=0.01),
        None,
        None,
        lambda J: lif_rate(J, 0.01),
    ),
    "lif-rate": (nengo.LIF(amplitude=0.01), "rate", None, lambda J: lif_rate(J, 0.01)),
    "lif-rate-smoothed": (
        nengo.LIF(amplitude=0.01),
        "rate",
        0.1,
        lambda J: soft_lif(J, amplitude=0.01, sigma=0.1),
    ),
    "lif-surrogate": (
        nengo.LIF(amplitude=0.01),
        "surrogate",
        None,
        lambda J: soft_lif(J, amplitude=0.01, sigma=SIGMA),
    ),
    "lif-surrogate-smoothed": (
        nengo.LIF(tau_rc=0.03, amplitude=0.02),
        "surrogate",
        0.2,
        lambda J: soft_lif(J, 0.03, amplitude=0.02, sigma=0.2),
    ),
    "adaptive-lif-rate": (
        nengo.AdaptiveLIF(amplitude=0.01),
        "rate",
        None,
        lambda J: lif_rate(J, 0.01),
    ),
    "relu-rate": (
        nengo.SpikingRectifiedLinear(amplitude=0.01),
        "rate",
        None,
        lambda J: 0.01 * np.maximum(J, 0),
    ),
    "relu-surrogate": (
        nengo.SpikingRectifiedLinear(amplitude=0.01),
        "surrogate",
        0.5,
        lambda J: 0.01 * 0.5 * np.logaddexp(0, J / 0.5),
    ),
    "regular-spiking": (
        nengo.RegularSpiking(nengo.LIFRate(), amplitude=0.02),
        "surrogate",
        None,
        lambda J: 0.02 * lif_rate(J),
    ),
}


@pytest.mark.filterwarnings("ignore:Non-finite values detected")
@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("case", list(CASES))
def test_gradient_is_the_registered_derivative(rng, case):
    """dL/d(bias) through the op is sum(dL/dy * f'(J)), f' by finite differences."""
    neuron_type, mode, smoothing, rate = CASES[case]
    bias = np.array([-0.5, 0.3, 0.7, 1.3, 1.6, 2.0, 3.0, 5.0])
    n = bias.size
    steps = 1 if "adaptive" in case else 3  # later steps would see the adaptation
    with nengo.Network(seed=0) as net:
        nengo_onnx.configure_settings(spiking_gradient=mode, lif_smoothing=smoothing)
        inp = nengo.Node(np.zeros(n))
        ens = nengo.Ensemble(n, 1, neuron_type=neuron_type, gain=np.ones(n), bias=bias)
        nengo.Connection(inp, ens.neurons, synapse=None)
        p = nengo.Probe(ens.neurons)
    x = rng.uniform(-0.05, 0.05, (4, steps, n))
    g = rng.uniform(-1, 1, (4, steps, n))
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        grads = gradients(sim, {inp: x, p: g}, objective={p: None})
        grad = next(v for param, v in grads.items() if param.key == "bias")
    J = x + bias
    h = 1e-6
    expected = np.sum(g * (rate(J + h) - rate(J - h)) / (2 * h), axis=(0, 1))
    assert np.allclose(grad, expected, rtol=2e-3, atol=1e-6)


def functions_of(net, n_steps=4):
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        model = sim.program.emit(n_steps, [net.p], training=True).model
    return model


def test_default_is_rate_substitution():
    """Without the setting, LIF trains as LIFRate (an op whose gradient comes from its
    output); with it, one spiking function serves every step, and its gradient is
    registered."""
    model = functions_of(spiking_net(nengo.LIF(amplitude=0.01)))
    assert [f.name.split("_")[:2] for f in model.functions] == [["LIFRate", "FromOutput"]]
    assert not any(n.op_type.startswith("LIF_") for n in model.graph.node)

    model = functions_of(spiking_net(nengo.LIF(amplitude=0.01), "rate"))
    assert [f.domain for f in model.functions] == [surrogates.DOMAIN]
    calls = [node for node in model.graph.node if node.domain == surrogates.DOMAIN]
    assert len(calls) == 4  # one per step
    key = f"{surrogates.DOMAIN}::{calls[0].op_type}"
    assert key in ort_setup.REGISTERED_GRADIENTS
    assert calls[0].op_type.startswith("LIF_LIFRate_")
    onnx.checker.check_model(model)


def test_export_has_no_custom_domain(tmp_path):
    net = spiking_net(nengo.LIF(amplitude=0.01), "surrogate")
    path = tmp_path / "model.onnx"
    nengo_onnx.export(net, path, steps=4)
    model = onnx.load(str(path))
    assert len(model.functions) == 0
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}


def test_invalid_setting():
    """A bad ``spiking_gradient`` raises where it is set, not at training time."""
    with pytest.raises(ValidationError, match="spiking_gradient"):
        spiking_net(nengo.LIF(amplitude=0.01), "spikes")


@pytest.mark.parametrize("name", list(surrogates.DERIVATIVES))
def test_numpy_rates_match_registered_derivatives(name):
    """Each `Derivative`'s numpy rate agrees with its graph form (through onnxruntime)."""
    from onnx import helper  # noqa: PLC0415

    derivative = surrogates.DERIVATIVES[name]
    values = {"tau_rc": 0.02, "tau_ref": 0.002, "amplitude": 0.5, "sigma": 0.1}
    J = np.concatenate([np.linspace(-3.03, 0.9, 40), np.linspace(1.05, 6, 40)])
    d = surrogates._Nodes()
    names = ["J"] + list(derivative.params)
    out = derivative.build(d, *names)
    nodes = []
    for op_type, inputs, outputs, attrs in d.nodes:
        kwargs = {}
        for key, (value, _, is_tensor) in attrs.items():
            kwargs[key] = (
                onnx.numpy_helper.from_array(np.array([value], np.float32)) if is_tensor else value
            )
        nodes.append(helper.make_node(op_type, inputs, outputs, **kwargs))
    nodes.append(helper.make_node("Identity", [out], ["y"]))
    inputs = [helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, None) for k in names]
    graph = helper.make_graph(
        nodes, "d", inputs, [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    session = ort_setup.inference_session(model.SerializeToString())
    feeds = {"J": J.astype(np.float32)}
    feeds.update({k: np.array(values[k], np.float32) for k in derivative.params})
    got = np.broadcast_to(session.run(None, feeds)[0], J.shape)
    params = {k: values[k] for k in derivative.params}
    h = 1e-6
    expected = (derivative.rate(J + h, **params) - derivative.rate(J - h, **params)) / (2 * h)
    assert np.allclose(got, expected, rtol=1e-3, atol=1e-5)
