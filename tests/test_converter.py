"""nengo_onnx.Converter: ONNX models that nobody here wrote, converted to native Nengo networks.

Each model is converted, verified against onnxruntime (rate mode, float32 round-off),
made spiking with ``swap_activations`` and its spiking accuracy measured: for the
scikit-learn MLP against the digits labels, for the random ``onnx.helper`` models as the
agreement of the spiking network's class (argmax) with onnxruntime's.
"""

import nengo
import numpy as np
import onnx
import pytest
from nengo.exceptions import ValidationError
from onnx import TensorProto, helper, numpy_helper

import nengo_onnx
from nengo_onnx import ort_setup
from nengo_onnx.converter import Converter

RNG = np.random.default_rng(0)


def make_model(nodes, in_shape, out_shape, weights, opset=17, name="model"):
    """A model with input ``x`` [N, *in_shape] and output ``y`` [N, *out_shape]."""
    inits = [
        numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k)
        for k, v in weights.items()
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def w(*shape, scale=None):
    scale = 1 / np.sqrt(np.prod(shape[1:])) if scale is None else scale
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def onnx_run(model, x):
    session = ort_setup.inference_session(model.SerializeToString(), threads=1)
    return session.run(None, {model.graph.input[0].name: x.astype(np.float32)})[0]


def spiking_outputs(converter, x, n_steps=100, average=40):
    """The spiking network's outputs: each example presented for ``n_steps`` (a minibatch)."""
    (node,) = converter.inputs.values()
    (probe,) = converter.outputs.values()
    flat = x.reshape(len(x), 1, -1)
    with nengo_onnx.Simulator(converter.net, minibatch_size=len(x), progress_bar=False) as sim:
        sim.run_steps(n_steps, data={node: np.tile(flat, (1, n_steps, 1))})
        return sim.data[probe][:, -average:].mean(axis=1)


def agreement(converter, x, model, **kwargs):
    """The fraction of examples whose spiking class matches onnxruntime's."""
    want = onnx_run(model, x).reshape(len(x), -1).argmax(axis=1)
    got = spiking_outputs(converter, x, **kwargs).argmax(axis=1)
    return float(np.mean(want == got))


# -- the models -------------------------------------------------------------------------------


def mlp_gemm():
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu1"),
        helper.make_node("Dropout", ["r"], ["d"]),
        helper.make_node("Gemm", ["d", "w2", "b2"], ["y"], alpha=0.5, beta=2.0),
    ]
    weights = {"w1": w(32, 16), "b1": w(32, scale=0.3), "w2": w(32, 10), "b2": w(10)}
    return make_model(nodes, [16], [10], weights)


def mlp_matmul():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Tanh", ["hb"], ["t"], name="tanh"),
        helper.make_node("MatMul", ["t", "w2"], ["h2"]),
        helper.make_node("Add", ["b2", "h2"], ["h2b"]),
        helper.make_node("Sigmoid", ["h2b"], ["s"], name="sigmoid"),
        helper.make_node("MatMul", ["s", "w3"], ["y"]),
    ]
    weights = {
        "w1": w(16, 24),
        "b1": w(24),
        "w2": w(24, 20),
        "b2": w(20),
        "w3": w(20, 10, scale=1.0),
    }
    return make_model(nodes, [16], [10], weights)


def cnn_2d():
    """Conv (padding, strides, groups), BatchNormalization, AveragePool, Concat, Add, Flatten."""
    nodes = [
        helper.make_node("Conv", ["x", "k1", "c1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["a", "g", "beta", "mean", "var"], ["abn"], epsilon=1e-3
        ),
        helper.make_node("Relu", ["abn"], ["ar"], name="relu_a"),
        helper.make_node("Conv", ["ar", "k2"], ["b"], strides=[2, 2], group=2),
        helper.make_node("Relu", ["b"], ["br"], name="relu_b"),
        helper.make_node("AveragePool", ["ar"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Concat", ["br", "p"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "k3", "c3"], ["c"], pads=[0, 0, 1, 1]),
        helper.make_node("Add", ["c", "p2"], ["res"]),
        helper.make_node("Relu", ["res"], ["cr"], name="relu_c"),
        helper.make_node("GlobalAveragePool", ["cr"], ["gap"]),
        helper.make_node("Flatten", ["cr"], ["f"]),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["logits"]),
        helper.make_node("Flatten", ["gap"], ["gf"]),
        helper.make_node("Gemm", ["gf", "wg"], ["glog"]),
        helper.make_node("Add", ["logits", "glog"], ["y"]),
    ]
    weights = {
        "k1": w(4, 1, 3, 3),
        "c1": w(4),
        "g": RNG.uniform(0.5, 1.5, 4),
        "beta": w(4),
        "mean": w(4),
        "var": RNG.uniform(0.5, 2, 4),
        "k2": w(4, 2, 3, 3),  # groups=2: 4 input channels in 2 groups
        "k3": w(6, 8, 2, 2),
        "c3": w(6),
        "p2": w(6, 4, 4, scale=0.1),
        "wd": w(96, 10),
        "bd": w(10),
        "wg": w(6, 10),
    }
    return make_model(nodes, [1, 9, 9], [10], weights)


def cnn_1d():
    nodes = [
        helper.make_node("Conv", ["x", "k1"], ["a"], strides=[2], auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["a"], ["ar"], name="relu1"),
        helper.make_node("Reshape", ["ar", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["y"]),
    ]
    weights = {"k1": w(3, 2, 5), "shape": np.array([0, -1], dtype=np.int64), "w": w(24, 4)}
    return make_model(nodes, [2, 16], [4], weights)


def with_fallback():
    """MaxPool and Softmax: no native Nengo form, held by OnnxNodes."""
    nodes = [
        helper.make_node("Conv", ["x", "k1", "c1"], ["a"]),
        helper.make_node("Relu", ["a"], ["ar"], name="relu1"),
        helper.make_node("MaxPool", ["ar"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["m"], ["f"]),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax"),
    ]
    weights = {"k1": w(3, 1, 3, 3), "c1": w(3), "wd": w(27, 5), "bd": w(5)}
    return make_model(nodes, [1, 8, 8], [5], weights)


MODELS = {
    "mlp_gemm": (mlp_gemm, (16,)),
    "mlp_matmul": (mlp_matmul, (16,)),
    "cnn_2d": (cnn_2d, (1, 9, 9)),
    "cnn_1d": (cnn_1d, (2, 16)),
    "fallback": (with_fallback, (1, 8, 8)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_helper_models_convert_and_verify(name):
    make, in_shape = MODELS[name]
    model = make()
    converter = Converter(model)
    assert converter.verify()
    x = RNG.standard_normal((6, *in_shape)).astype(np.float32)
    assert converter.verify({"x": x})
    # the same network in nengo's reference simulator
    assert converter.verify(x, simulator=nengo.Simulator)
    # every object is native except the fallbacks
    onnx_nodes = [n for n in converter.net.all_nodes if isinstance(n, nengo_onnx.OnnxNode)]
    assert (len(onnx_nodes) > 0) == (name == "fallback")


def test_objects_made():
    converter = Converter(cnn_2d())
    layers = converter.layers
    assert isinstance(layers["relu_a"], nengo.ensemble.Neurons)
    ens = layers["relu_a"].ensemble
    assert ens.n_neurons == 4 * 9 * 9
    assert isinstance(ens.neuron_type, nengo.RectifiedLinear)
    conns = converter.net.all_connections
    convs = [c for c in conns if isinstance(c.transform, nengo.Convolution)]
    # conv, grouped conv, average pool (depthwise), global average pool (depthwise)
    assert {c.transform.groups for c in convs} == {1, 2, 4, 6}
    assert all(not c.transform.channels_last for c in convs)
    assert set(converter.inputs) == {"x"} and set(converter.outputs) == {"y"}
    assert isinstance(converter.outputs["y"], nengo.Probe)
    # BatchNormalization folded into the first convolution: no object of its own
    assert not any(isinstance(o, nengo.Node) and "Batch" in str(o.label) for o in layers.values())


def test_no_fallback_names_the_node():
    # (unnamed nodes are named after their op type and position)
    with pytest.raises(ValidationError, match="ONNX node 'MaxPool_2' \\(MaxPool\\)"):
        Converter(with_fallback(), allow_fallback=False)


def test_verify_reports_the_largest_deviation():
    converter = Converter(mlp_gemm())
    conn = converter.layers["relu1"]
    assert isinstance(conn, nengo.ensemble.Neurons)
    # spoil one weight of the output layer
    out_conn = next(c for c in converter.net.all_connections if c.pre_obj == conn)
    out_conn.transform = nengo.Dense(out_conn.transform.shape, init=out_conn.transform.init * 1.5)
    with pytest.raises(ValueError, match="largest deviation .* at output 'y', example"):
        converter.verify()


def test_swap_scale_synapse():
    model = mlp_gemm()
    spiking = nengo.SpikingRectifiedLinear()
    converter = Converter(
        model, swap_activations={"Relu": spiking}, scale_firing_rates=50, synapse=0.005
    )
    ens = converter.layers["relu1"].ensemble
    assert isinstance(ens.neuron_type, nengo.SpikingRectifiedLinear)
    assert ens.neuron_type.amplitude == pytest.approx(1 / 50)
    assert spiking.amplitude == 1  # the given neuron type is not changed
    out = [c for c in converter.net.all_connections if c.pre_obj == ens.neurons]
    assert out and all(c.synapse == nengo.Lowpass(0.005) for c in out)
    into = [c for c in converter.net.all_connections if c.post_obj == ens.neurons]
    assert into and all(c.synapse is None for c in into)
    # the rate form of the scaled network is the original model
    assert converter.verify()

    # keyed by node name, and NengoDL's neuron-type keys
    by_name = Converter(model, swap_activations={"relu1": nengo.LIF()})
    assert isinstance(by_name.layers["relu1"].ensemble.neuron_type, nengo.LIF)
    by_type = Converter(model, swap_activations={nengo.RectifiedLinear(): spiking})
    assert isinstance(by_type.layers["relu1"].ensemble.neuron_type, nengo.SpikingRectifiedLinear)
    with pytest.warns(UserWarning, match="match no activation"):
        Converter(model, swap_activations={"Elu": spiking})
    per_node = Converter(model, scale_firing_rates={"relu1": 10})
    assert per_node.layers["relu1"].ensemble.gain.options[0] == 10


@pytest.mark.parametrize("name", ["mlp_gemm", "cnn_2d", "cnn_1d", "fallback"])
def test_spiking_accuracy(name, capsys):
    make, in_shape = MODELS[name]
    model = make()
    converter = Converter(
        model,
        swap_activations={"Relu": nengo.SpikingRectifiedLinear()},
        scale_firing_rates=100,
        synapse=0.005,
    )
    x = RNG.standard_normal((20, *in_shape)).astype(np.float32)
    acc = agreement(converter, x, model)
    with capsys.disabled():
        print(f"\n{name}: spiking class agrees with onnxruntime on {acc:.0%} of 20 inputs")
    assert acc >= 0.8


# -- a model trained by scikit-learn, converted by skl2onnx -----------------------------------


@pytest.fixture(scope="module")
def digits_mlp():
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0)
    clf.fit(x[:1500], y[:1500])
    full = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    # keep the float output: the label output goes through ArgMax and ai.onnx.ml operators
    model = onnx.utils.Extractor(full).extract_model(["X"], ["probabilities"])
    return clf, model, x[1500:], y[1500:], full


def test_sklearn_mlp(digits_mlp, capsys):
    clf, model, x_test, y_test, full = digits_mlp
    converter = Converter(model)
    assert converter.verify(x_test)  # every test example, within float32 round-off
    assert converter.verify(x_test[:50], atol=1e-6, rtol=1e-5)
    assert isinstance(converter.layers[model.graph.node[3].name], nengo.ensemble.Neurons)
    # softmax is the only fallback
    (fallback,) = [n for n in converter.net.all_nodes if isinstance(n, nengo_onnx.OnnxNode)]
    assert [n.op_type for n in fallback.model.graph.node][-1] == "Softmax"

    spiking = Converter(
        model,
        swap_activations={"Relu": nengo.SpikingRectifiedLinear()},
        scale_firing_rates=100,
        synapse=0.005,
    )
    rate_acc = float(np.mean(clf.predict(x_test) == y_test))
    out = spiking_outputs(spiking, x_test, n_steps=60, average=30)
    spiking_acc = float(np.mean(out.argmax(axis=1) == y_test))
    with capsys.disabled():
        print(
            f"\nsklearn digits MLP: rate accuracy {rate_acc:.1%}, spiking accuracy "
            f"{spiking_acc:.1%} ({len(y_test)} test digits)"
        )
    assert spiking_acc > rate_acc - 0.05

    # the full skl2onnx model also outputs labels (ArgMax, ai.onnx.ml): a clear error
    with pytest.raises(ValidationError, match="ArgMax.*extract_model"):
        Converter(full)


def test_model_from_a_path(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(mlp_matmul(), str(path))
    converter = Converter(str(path))
    assert converter.verify()
    with pytest.raises(ValidationError, match="no ONNX model file"):
        Converter(str(tmp_path / "missing.onnx"))
