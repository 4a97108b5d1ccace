"""Deployment: the documented loop, a safe runner, lean files, a dynamic batch, int8."""

import os
import re
import stat
import subprocess
import sys

import nengo
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import nengo_onnx
from nengo_onnx.exporting.exporter import input_values
from nengo_onnx.exporting.runner import ExportedModel, RunnerError
from tests.exporting.test_exporter import channel_net, run_streaming, sessions

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dense_net(seed=0):
    """An input through two dense weight matrices: MatMuls with constant weights."""
    rng = np.random.RandomState(seed)
    with nengo.Network(seed=seed, label="dense") as net:
        net.x = nengo.Node(np.zeros(64), label="x")
        net.h = nengo.Ensemble(256, 1, neuron_type=nengo.LIF(amplitude=0.01))
        net.y = nengo.Node(size_in=4, label="y")
        nengo.Connection(net.x, net.h.neurons, transform=rng.uniform(-0.3, 0.3, (256, 64)))
        nengo.Connection(
            net.h.neurons, net.y, transform=rng.uniform(-0.1, 0.1, (4, 256)), synapse=None
        )
        net.p = nengo.Probe(net.y, label="y_out")
    return net


def test_docs_run_loop_runs_as_written(tmp_path):
    """The streaming loop in docs/deploy.md, extracted and run as it is written."""
    with open(os.path.join(ROOT, "docs", "deploy.md")) as f:
        text = f.read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    loop = next(b for b in blocks if "sess = ort.InferenceSession" in b)
    nengo_onnx.export(nengo_onnx_example_network(), tmp_path / "channel.onnx", steps=10)
    script = tmp_path / "loop.py"
    script.write_text(loop + "\nassert b_out.shape == (1, 1000, 1), b_out.shape\nprint('ok')\n")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def nengo_onnx_example_network():
    import runpy  # noqa: PLC0415

    path = os.path.join(ROOT, "docs", "examples", "communication_channel.py")
    return runpy.run_path(path)["network"]


def _external_model(path, location):
    tensor = numpy_helper.from_array(np.zeros(3, np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3])],
        initializer=[tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    entry = model.metadata_props.add()
    entry.key, entry.value = "producer", "nengo-onnx"
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


@pytest.mark.parametrize("location", ["../../../../../etc/passwd", "/etc/passwd", "../x.bin"])
def test_runner_refuses_external_data_outside_the_folder(tmp_path, location):
    path = tmp_path / "sub" / "evil.onnx"
    path.parent.mkdir()
    _external_model(path, location)
    with pytest.raises(RunnerError, match="external data"):
        ExportedModel(path)
    result = subprocess.run(
        [sys.executable, "-m", "nengo_onnx.cli", "run", str(path), "--steps", "1", "-o", "o.npz"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1 and "external data" in result.stderr
    assert not (tmp_path / "o.npz").exists()


def test_runner_rejects_non_finite_inputs(tmp_path):
    net = channel_net(nengo.LIFRate())
    path = tmp_path / "model.onnx"
    nengo_onnx.export(net, path, steps=5)
    model = ExportedModel(path)
    for bad in (np.nan, np.inf):
        stim = np.zeros((1, 10, 1), np.float32)
        stim[0, 3] = bad
        with pytest.raises(RunnerError, match="non-finite"):
            model.run({"stim": stim})
    np.savez(tmp_path / "nan.npz", stim=np.full((1, 10, 1), np.nan, np.float32))
    result = subprocess.run(
        [sys.executable, "-m", "nengo_onnx.cli", "run", str(path), "--inputs", "nan.npz"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1 and "non-finite" in result.stderr


def test_written_files_get_the_umask_mode(tmp_path):
    net = channel_net(nengo.LIFRate())
    old = os.umask(0o022)
    try:
        path = tmp_path / "model.onnx"
        nengo_onnx.export(net, path, steps=5)
        out = tmp_path / "out.npz"
        out.write_bytes(b"")
        os.chmod(out, 0o640)
        from nengo_onnx.exporting.runner import save_outputs, write_file  # noqa: PLC0415

        save_outputs(out, {"a": np.zeros(2)})
        write_file(tmp_path / "new.bin", b"x")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o640  # the replaced file's mode
        assert stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode) == 0o644
    finally:
        os.umask(old)


def _initializers(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(attr.g)


def _nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)


@pytest.mark.parametrize("kwargs", [{"steps": 10}, {"fixed": 5}, {"fixed": 20}])
def test_weights_stored_once_in_matmul_layout(tmp_path, kwargs):
    path = tmp_path / "dense.onnx"
    nengo_onnx.export(dense_net(), path, **kwargs)
    model = onnx.load(str(path))
    inits = {t.name: t for t in _initializers(model.graph)}
    # no weight is transposed (or otherwise computed from constants) at run time
    for node in _nodes(model.graph):
        if node.op_type not in ("Expand",):
            assert not (node.input and all(n in inits for n in node.input if n)), node
    # every value is stored once (in each graph: a Scan body has its own)
    for graph in [model.graph] + [
        a.g for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH
    ]:
        contents = [
            (t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())
            for t in graph.initializer
        ]
        assert len(contents) == len(set(contents))
    weights = [t for t in inits.values() if len(t.dims) == 2 and min(t.dims) > 1]
    assert sorted(tuple(t.dims) for t in weights) == [(64, 256), (256, 4)]
    # MatMuls read the weights straight from initializers
    weights = {t.name for t in weights}
    readers = [n for n in _nodes(model.graph) if set(n.input) & weights]
    assert readers and all(n.op_type == "MatMul" for n in readers)


def test_quantize_dynamic_shrinks_the_file(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

    path, out = tmp_path / "dense.onnx", tmp_path / "dense_int8.onnx"
    net = dense_net()
    with net:
        nengo_onnx.configure_settings(dtype="float32")
    nengo_onnx.export(net, path, fixed=5)
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
    quantized = onnx.load(str(out))
    assert any(t.data_type == onnx.TensorProto.INT8 for t in quantized.graph.initializer)
    assert os.path.getsize(out) < os.path.getsize(path)


def test_initial_state_stored_once(tmp_path):
    net = channel_net()
    sizes = {}
    for batch in (2, 16):
        path = tmp_path / f"fixed_{batch}.onnx"
        nengo_onnx.export(net, path, fixed=20, minibatch_size=batch)
        model = onnx.load(str(path))
        sizes[batch] = sum(int(np.prod(t.dims)) for t in _initializers(model.graph))
        assert "Expand" in {n.op_type for n in model.graph.node}
    assert sizes[2] == sizes[16]


def test_scan_body_has_no_unused_inputs(tmp_path):
    path = tmp_path / "scan.onnx"
    nengo_onnx.export(channel_net(), path, fixed=20, steps=None)
    model = onnx.load(str(path))
    scans = [n for n in model.graph.node if n.op_type == "Scan"]
    assert len(scans) == 1
    body = next(a.g for a in scans[0].attribute if a.name == "body")
    used = {n for node in _nodes(body) for n in node.input}
    used |= {v.name for v in body.output}
    assert [v.name for v in body.input if v.name not in used] == []


@pytest.mark.parametrize("kwargs", [{}, {"fixed": 5}, {"fixed": 20}])
def test_dynamic_batch_serves_any_batch(tmp_path, kwargs):
    net = channel_net()
    path = tmp_path / "dynamic.onnx"
    with nengo_onnx.Simulator(net, unroll_simulation=5, progress_bar=False) as sim:
        info = sim.export(path, batch="dynamic", **kwargs)
    assert info.minibatch_size == "batch"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    batched = {"stim", "bias", "b_out", "spikes", "stim_1"}
    batched |= {p for s in info.states if s["batched"] for p in (s["name"], s["output"])}
    for port in list(model.graph.input) + list(model.graph.output):
        dims = port.type.tensor_type.shape.dim
        assert (len(dims) > 0 and dims[0].dim_param == "batch") == (port.name in batched), (
            port.name
        )
    n = kwargs.get("fixed", 20)
    for batch in (1, 3, 7):
        data = np.random.RandomState(batch).uniform(-1, 1, (batch, n, 1)).astype(np.float32)
        with nengo_onnx.Simulator(
            net, minibatch_size=batch, unroll_simulation=5, progress_bar=False
        ) as sim:
            sim.run_steps(n, data={net.stim: data})
        expected = sim.data[net.p_b] if batch > 1 else sim.data[net.p_b][None]
        inputs = {"stim": data, "bias": np.full((batch, n, 1), 0.3, np.float32)}
        for engine, run in sessions(path):
            out = run_streaming(run, model, inputs, n) if not kwargs else run(inputs)
            assert out["b_out"].shape == (batch, n, 1), engine
            assert np.allclose(out["b_out"], expected, atol=1e-5), (engine, batch)
        ran = ExportedModel(path).run({"stim": data}, n_steps=n)
        assert np.allclose(ran["b_out"], expected, atol=1e-5), batch


def test_dynamic_batch_validation(tmp_path):
    with pytest.raises(nengo.exceptions.ValidationError, match="dynamic"):
        nengo_onnx.export(channel_net(), tmp_path / "x.onnx", batch="any")
    with nengo.Network(seed=1) as net:
        a = nengo.Ensemble(10, 1)
        nengo.Probe(a)
    with pytest.raises(nengo_onnx.ExportError, match="no inputs"):
        nengo_onnx.export(net, tmp_path / "x.onnx", fixed=20, batch="dynamic")
    info = nengo_onnx.export(net, tmp_path / "x.onnx", steps=5, batch="dynamic")
    out = ExportedModel(tmp_path / "x.onnx").run(n_steps=10)
    assert info.minibatch_size == "batch" and out["probe_0"].shape == (1, 10, 1)


@pytest.mark.parametrize("calibrate", [False, True])
def test_quantize(tmp_path, calibrate):
    from nengo_onnx.exporting.quantize import quantize  # noqa: PLC0415

    net = dense_net()
    path, out = tmp_path / "dense.onnx", tmp_path / "dense_int8.onnx"
    nengo_onnx.export(net, path, steps=10, batch="dynamic")
    data = {"x": np.random.RandomState(0).uniform(0, 1, (8, 30, 64)).astype(np.float32)}
    result = quantize(path, out, calibration=data if calibrate else None)
    assert result["quantized"] == 2
    assert result["size_after"] == os.path.getsize(out) < result["size_before"]
    ran = ExportedModel(out).run(data)
    reference = ExportedModel(path).run(data)
    assert ran["y_out"].shape == reference["y_out"].shape == (8, 30, 4)
    # spikes may flip: compare the outputs averaged over time (rates)
    rates, expected = ran["y_out"].mean(axis=1), reference["y_out"].mean(axis=1)
    assert np.abs(rates - expected).max() < 0.1 * np.abs(expected).max()
    if calibrate:
        assert set(result["deviation"]) == {"y_out"}
        assert 0 < result["deviation"]["y_out"] < np.abs(reference["y_out"]).max()


def test_quantize_refuses_scan_models(tmp_path):
    from nengo_onnx.exporting.quantize import QuantizeError, quantize  # noqa: PLC0415

    path = tmp_path / "scan.onnx"
    nengo_onnx.export(dense_net(), path, fixed=20, steps=None)
    with pytest.raises(QuantizeError, match="Scan"):
        quantize(path, tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_input_values_still_match(tmp_path):
    """The exported inputs of a dynamic-batch model are those of the program."""
    net = channel_net(nengo.LIFRate())
    with nengo_onnx.Simulator(net, unroll_simulation=5, progress_bar=False) as sim:
        values = input_values(sim.program, 10, sim.seed)
    assert values["stim"].shape == (1, 10, 1)
