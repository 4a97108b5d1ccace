"""OnnxNode: ONNX models inside Nengo networks, run, trained and exported."""

import nengo
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from nengo.exceptions import ValidationError
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import nengo_onnx
from nengo_onnx import optimizers
from nengo_onnx.compiler import trainable
from tests.helpers import gradients, param_value, set_param_value

FLOAT = TensorProto.FLOAT


def make_model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(
        nodes, "test", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def mlp(n_in=4, n_hid=8, n_out=3, batch="N", dtype=np.float32, seed=0):
    """``y = tanh(x W1 + b1) W2`` built with onnx's helpers."""
    rng = np.random.RandomState(seed)
    elem = FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    inits = {
        "W1": rng.randn(n_in, n_hid) / np.sqrt(n_in),
        "b1": rng.randn(n_hid) * 0.1,
        "W2": rng.randn(n_hid, n_out) / np.sqrt(n_hid),
    }
    return make_model(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Tanh", ["h1"], ["h"]),
            helper.make_node("MatMul", ["h", "W2"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", elem, [batch, n_in])],
        [helper.make_tensor_value_info("y", elem, [batch, n_out])],
        {k: v.astype(dtype) for k, v in inits.items()},
    )


def convnet(batch="N", opset=13, seed=0):
    """Conv, Relu, MaxPool, Flatten, MatMul, Softmax on ``[batch, 1, 6, 6]`` images.

    The output's shape is left symbolic (``[batch, "K"]``), so the node infers it.
    """
    rng = np.random.RandomState(seed)
    inits = {
        "W": rng.randn(4, 1, 3, 3).astype(np.float32) * 0.5,
        "b": rng.randn(4).astype(np.float32) * 0.1,
        "W2": rng.randn(36, 5).astype(np.float32) * 0.2,
        "shape": np.array([-1, 36], dtype=np.int64),
    }
    return make_model(
        [
            helper.make_node("Conv", ["x", "W", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("MaxPool", ["r"], ["pl"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Reshape", ["pl", "shape"], ["f"]),
            helper.make_node("MatMul", ["f", "W2"], ["z"]),
            helper.make_node("Softmax", ["z"], ["y"], axis=-1),
        ],
        [helper.make_tensor_value_info("x", FLOAT, [batch, 1, 6, 6])],
        [helper.make_tensor_value_info("y", FLOAT, [batch, "K"])],
        inits,
        opset=opset,
    )


def run_alone(model, x, in_shape):
    """onnxruntime on the model alone, one item at a time (any batch axis works)."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    dtype = np.float64 if model.graph.input[0].type.tensor_type.elem_type != FLOAT else np.float32
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [
            sess.run(None, {name: xi.astype(dtype).reshape(1, *in_shape)})[0].reshape(1, -1)
            for xi in x
        ]
    )


def node_net(model, size_in, label="onnx"):
    with nengo.Network(seed=0) as net:
        net.inp = nengo.Node(lambda t: np.sin(10 * t * np.arange(1, size_in + 1)), label="inp")
        net.node = nengo_onnx.OnnxNode(model, label=label)
        nengo.Connection(net.inp, net.node, synapse=None)
        net.p_in = nengo.Probe(net.inp)
        net.p = nengo.Probe(net.node)
    return net


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("unroll, minibatch", [(1, None), (4, 3)])
def test_mlp_matches_onnxruntime(optimize, unroll, minibatch):
    model = mlp()
    net = node_net(model, 4)
    assert (net.node.size_in, net.node.size_out) == (4, 3)
    with nengo_onnx.Simulator(
        net,
        optimize=optimize,
        unroll_simulation=unroll,
        minibatch_size=minibatch,
        progress_bar=False,
    ) as sim:
        sim.run_steps(9)
    out = sim.data[net.p] if minibatch is None else sim.data[net.p]
    x = sim.data[net.p_in] if minibatch is None else sim.data[net.p_in][0]
    expected = run_alone(model, x, (4,))
    for item in out[None] if minibatch is None else out:
        assert np.allclose(item, expected, atol=1e-6)


@pytest.mark.parametrize("batch, opset", [("N", 13), (1, 11), ("N", 21)])
def test_convnet_matches_onnxruntime(batch, opset):
    """Dynamic and fixed (1) batch axes, opsets converted up to the simulator's."""
    model = convnet(batch=batch, opset=opset)
    net = node_net(model, 36)
    assert (net.node.size_in, net.node.size_out) == (36, 5)
    assert net.node.spec.batched == (batch == "N")
    with nengo_onnx.Simulator(
        net, minibatch_size=2, unroll_simulation=3, progress_bar=False
    ) as sim:
        sim.run_steps(6)
    expected = run_alone(model, sim.data[net.p_in][0], (1, 6, 6))
    assert np.allclose(sim.data[net.p][0], expected, atol=1e-6)
    assert np.allclose(sim.data[net.p][1], expected, atol=1e-6)


def test_nengo_simulator_runs_it_as_a_node():
    model = mlp()
    net = node_net(model, 4)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(5)
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(5)
    assert np.allclose(ref.data[net.p], run_alone(model, ref.data[net.p_in], (4,)), atol=1e-6)
    assert np.allclose(sim.data[net.p], ref.data[net.p], atol=1e-5)
    # the node's output function also works on its own
    x = np.linspace(-1, 1, 4)
    assert np.allclose(net.node.output(0.0, x), run_alone(model, x[None], (4,))[0], atol=1e-6)


def test_float64_model_and_simulation():
    model = mlp(dtype=np.float64)
    with nengo.Network(seed=0) as net:
        nengo_onnx.configure_settings(dtype="float64")
    with net:
        inp = nengo.Node(lambda t: [t, -t, 2 * t, 0.5])
        node = nengo_onnx.OnnxNode(model)
        nengo.Connection(inp, node, synapse=None)
        p_in, p = nengo.Probe(inp), nengo.Probe(node)
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(4)
    assert np.allclose(sim.data[p], run_alone(model, sim.data[p_in], (4,)), atol=1e-12)


def test_file_path_named_ports_and_slicing(tmp_path):
    """A model file with two outputs; the node picks one by name and is sliceable."""
    model = mlp()
    model.graph.node.append(helper.make_node("Relu", ["y"], ["y_relu"]))
    model.graph.output.append(helper.make_tensor_value_info("y_relu", FLOAT, ["N", 3]))
    path = tmp_path / "two_outputs.onnx"
    onnx.save(model, str(path))
    with nengo.Network(seed=0) as net:
        inp = nengo.Node([0.3, -0.2, 0.5, 1.0])
        node = nengo_onnx.OnnxNode(str(path), inputs="x", outputs="y_relu")
        nengo.Connection(inp, node, synapse=None)
        p = nengo.Probe(node[1:])
    assert (node.inputs, node.outputs) == ("x", "y_relu")
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(2)
    expected = np.maximum(run_alone(mlp(), np.array([[0.3, -0.2, 0.5, 1.0]]), (4,)), 0)
    assert np.allclose(sim.data[p][-1], expected[0, 1:], atol=1e-6)


# -- training ------------------------------------------------------------------------------------


def upstream_net(model, trainable_node=True):
    """``inp -> ens -> OnnxNode(mlp 2-8-1)``: the node's input comes from neurons."""
    with nengo.Network(seed=0) as net:
        net.inp = nengo.Node(np.zeros(2), label="inp")
        net.ens = nengo.Ensemble(
            20, 2, neuron_type=nengo.RectifiedLinear(amplitude=0.01), label="ens"
        )
        net.node = nengo_onnx.OnnxNode(model, trainable=trainable_node, label="mlp")
        nengo.Connection(net.inp, net.ens, synapse=None)
        net.conn = nengo.Connection(net.ens, net.node, synapse=None, label="decode")
        net.p = nengo.Probe(net.node)
    return net


def product_data(rng, n=16):
    x = rng.uniform(-1, 1, (n, 1, 2))
    return x, x[..., :1] * x[..., 1:]


def test_training_changes_its_weights(rng, tmp_path):
    net = upstream_net(mlp(2, 8, 1))
    x, y = product_data(rng)
    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        names = [p.name for p in trainable.trainable_params(sim.program)]
        assert {"mlp.W1", "mlp.b1", "mlp.W2"} <= set(names)
        before = sim.loss(data)
        w1 = np.array(sim.data[net.node].params["W1"])
        sim.train(data, optimizers.Adam(0.02), n_epochs=15)
        after = sim.loss(data)
        assert after < 0.3 * before
        trained = np.array(sim.data[net.node].params["W1"])
        assert not np.allclose(trained, w1)
        sim.run_steps(1, data={net.inp: x[:4]})
        trained_out = np.array(sim.data[net.p][:, -1])
        sim.save_params(tmp_path / "params")
        sim.freeze_params(net)

    saved = np.load(tmp_path / "params.npz")
    assert np.allclose(saved["param/mlp.W1"], trained)
    # loading restores the trained outputs in a new simulator
    with nengo_onnx.Simulator(
        upstream_net(mlp(2, 8, 1)), minibatch_size=4, progress_bar=False
    ) as sim2:
        sim2.load_params(tmp_path / "params")
        sim2.run_steps(1, data={sim2.network.inp: x[:4]})
        assert np.allclose(sim2.data[sim2.network.p][:, -1], trained_out, atol=1e-5)
    # freeze_params wrote the weights into the node's model: nengo.Simulator agrees
    assert np.allclose(net.node.get_params()["W1"], trained, atol=1e-6)
    net.inp.output = x[0, 0]
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(1)
    assert np.allclose(ref.data[net.p][-1], trained_out[0], atol=1e-4)


def test_untrainable_node_keeps_its_weights(rng):
    net = upstream_net(mlp(2, 8, 1), trainable_node=False)
    x, y = product_data(rng)
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        assert not any(p.name.startswith("mlp.") for p in trainable.trainable_params(sim.program))
        weights = np.array(sim.data[net.conn].weights)
        sim.train({net.inp: x, net.p: y}, optimizers.SGD(0.05), n_epochs=2)
        assert not np.allclose(sim.data[net.conn].weights, weights)
        assert np.array_equal(sim.data[net.node].params["W1"], net.node.get_params()["W1"])


def finite_difference(sim, data, param, index, eps=1e-3):
    original = param_value(sim, param).ravel()
    losses = []
    for sign in (1, -1):
        value = original.copy()
        value[index] += sign * eps
        set_param_value(sim, param, value)
        losses.append(sim.loss(data))
    set_param_value(sim, param, original)
    return (losses[0] - losses[1]) / (2 * eps)


def test_gradients_flow_into_upstream_parameters(rng):
    net = upstream_net(mlp(2, 8, 1))
    x, y = product_data(rng, n=4)
    data = {net.inp: x, net.p: y}
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        grads = {p.name: (p, g) for p, g in gradients(sim, data).items()}
        # (the encoders sit before the neurons' kinks: finite differences are rougher there)
        for name, rtol in (
            ("decode.weights", 0.01),
            ("ens.encoders", 0.05),
            ("mlp.W1", 0.01),
            ("mlp.W2", 0.01),
        ):
            param, grad = grads[name]
            assert np.any(grad != 0), name
            i = int(np.argmax(np.abs(grad)))
            fd = finite_difference(sim, data, param, i)
            assert np.allclose(grad.ravel()[i], fd, rtol=rtol, atol=1e-5), name


def test_convnet_trains(rng):
    with nengo.Network(seed=0) as net:
        inp = nengo.Node(np.zeros(36))
        node = nengo_onnx.OnnxNode(convnet(), label="conv")
        nengo.Connection(inp, node, synapse=None)
        p = nengo.Probe(node)
    x = rng.uniform(0, 1, (8, 1, 36))
    y = np.eye(5)[rng.randint(0, 5, 8)][:, None]
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        before = sim.loss({inp: x, p: y})
        kernel = np.array(sim.data[node].params["W"])
        sim.train({inp: x, p: y}, optimizers.Adam(0.05), n_epochs=10)
        assert sim.loss({inp: x, p: y}) < before
        assert not np.allclose(sim.data[node].params["W"], kernel)


def test_statistics_and_settings_are_not_parameters(rng):
    """Batch-norm statistics and Clip bounds stay constants; the rest trains."""
    model = make_model(
        [
            helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"]),
            helper.make_node("Clip", ["bn", "lo", "hi"], ["cl"]),
            helper.make_node("Flatten", ["cl"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", FLOAT, ["N", 1, 3, 3])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 18])],
        {
            "W": rng.randn(2, 1, 3, 3).astype(np.float32),
            "scale": np.ones(2, np.float32),
            "bias": np.zeros(2, np.float32),
            "mean": np.full(2, 0.1, np.float32),
            "var": np.full(2, 2.0, np.float32),
            "lo": np.array(-1, np.float32),
            "hi": np.array(1, np.float32),
        },
    )
    with nengo.Network(seed=0) as net:
        inp = nengo.Node(np.zeros(9))
        node = nengo_onnx.OnnxNode(model, label="bn")
        nengo.Connection(inp, node, synapse=None)
        p = nengo.Probe(node)
    assert node.param_names == ["W", "scale", "bias"]
    x, y = rng.uniform(0, 1, (8, 1, 9)), rng.uniform(-1, 1, (8, 1, 18))
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        before = sim.loss({inp: x, p: y})
        sim.train({inp: x, p: y}, optimizers.Adam(0.01), n_epochs=3)
        assert sim.loss({inp: x, p: y}) < before
        sim.run_steps(1, data={inp: x[:4]})
        out = np.array(sim.data[p][:, 0])
        sim.freeze_params([node])
    # the trained model, run on its own, gives the simulator's outputs
    assert np.allclose(out, run_alone(node.model, x[:4, 0], (1, 3, 3)), atol=1e-5)


# -- export --------------------------------------------------------------------------------------


def all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                yield from all_nodes(sub)


def test_export_inlines_the_model(tmp_path):
    model = convnet()
    net = node_net(model, 36, label="conv")
    path = tmp_path / "net.onnx"
    with nengo_onnx.Simulator(net, progress_bar=False, unroll_simulation=3) as sim:
        sim.run_steps(6)
        info = sim.export(path, fixed=6)
    exported = onnx.load(str(path))
    onnx.checker.check_model(exported, full_check=True)
    nodes = list(all_nodes(exported.graph))  # 6 steps: a Scan over blocks of 3
    assert {"Conv", "MaxPool", "Softmax"} <= {n.op_type for n in nodes}
    assert all(n.domain in ("", "ai.onnx") for n in nodes)
    graphs = [exported.graph] + [a.g for n in nodes for a in n.attribute if a.HasField("g")]
    inits = {t.name.split("/")[-1] for g in graphs for t in g.initializer}
    assert {"conv.W", "conv.b", "conv.W2"} <= inits
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = sim.data[net.p_in].astype(np.float32)[None]
    feeds = {info.inputs[0]["name"]: x}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    name = next(o["name"] for o in info.outputs if "OnnxNode" in o.get("object", ""))
    assert np.allclose(outs[name][0], sim.data[net.p], atol=1e-6)
    # a second, independent ONNX engine agrees
    reference = ReferenceEvaluator(exported).run([name], feeds)[0]
    assert np.allclose(reference[0], sim.data[net.p], atol=1e-5)


def test_trained_parameters_are_exported(rng, tmp_path):
    """train -> save_params -> export(params=...) (what `nengo-onnx compile --params` does)."""
    net = upstream_net(mlp(2, 8, 1))
    x, y = product_data(rng, n=8)
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.train({net.inp: x, net.p: y}, optimizers.Adam(0.02), n_epochs=3)
        sim.save_params(tmp_path / "params")
        sim.run_steps(1, data={net.inp: x[:4]})
        trained = np.array(sim.data[net.p][:, 0])
    path = tmp_path / "trained.onnx"
    nengo_onnx.export(
        upstream_net(mlp(2, 8, 1)), path, params=tmp_path / "params.npz", fixed=1, minibatch_size=4
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"inp": x[:4].astype(np.float32)})[0]
    assert np.allclose(out[:, 0], trained, atol=1e-5)


# -- validation ----------------------------------------------------------------------------------


def two_input_model():
    return make_model(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        [
            helper.make_tensor_value_info("a", FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", FLOAT, ["N", 2]),
        ],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 2])],
        {},
    )


def port_model(shape, elem=FLOAT):
    return make_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", elem, shape)],
        {},
    )


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (two_input_model, {}, "several inputs"),
        (two_input_model, {"inputs": "a"}, "besides 'a'"),
        (mlp, {"inputs": "nope"}, "no input 'nope'"),
        (mlp, {"outputs": "nope"}, "no output 'nope'"),
        (lambda: port_model([4]), {}, "rank 1"),
        (lambda: port_model(["N", 3], TensorProto.INT64), {}, "dtype int64"),
        (lambda: port_model([8, 3]), {}, "must be dynamic or 1"),
        (lambda: port_model(["N", "D"]), {}, "fixed positive sizes"),
        (lambda: "/does/not/exist.onnx", {}, "no ONNX model file"),
        (lambda: 42, {}, "ModelProto"),
    ],
)
def test_models_that_do_not_fit(make, kwargs, match):
    with nengo.Network():
        with pytest.raises(ValidationError, match=match):
            nengo_onnx.OnnxNode(make(), **kwargs)


def test_non_standard_domains_are_refused():
    model = port_model(["N", 2])
    model.graph.node[0].domain = "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with nengo.Network():
        with pytest.raises(ValidationError, match="only hold standard ONNX operators"):
            nengo_onnx.OnnxNode(model)
