"""Exported ONNX models against nengo_onnx.Simulator and nengo.Simulator, in two engines."""

import json
import os
import subprocess
import sys
import textwrap

import nengo
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from nengo.exceptions import SimulatorClosed, ValidationError
from onnx.reference import ReferenceEvaluator

import nengo_onnx
from nengo_onnx.exporting.exporter import ExportError, input_values

N_STEPS = 30


def channel_net(neuron_type=None, seed=0):
    """Node(np.sin) and a constant Node into two ensembles, three probes."""
    neuron_type = nengo.LIF() if neuron_type is None else neuron_type
    with nengo.Network(seed=seed, label="channel") as net:
        net.stim = nengo.Node(lambda t: np.sin(20 * t), label="stim")
        net.bias = nengo.Node([0.3], label="bias")
        net.a = nengo.Ensemble(30, 1, neuron_type=neuron_type, label="a")
        net.b = nengo.Ensemble(20, 1, neuron_type=neuron_type, label="b")
        nengo.Connection(net.stim, net.a)
        nengo.Connection(net.bias, net.a)
        nengo.Connection(net.a, net.b, function=lambda x: x**2)
        net.p_b = nengo.Probe(net.b, synapse=0.01, label="b out")
        net.p_spikes = nengo.Probe(net.a.neurons, label="spikes")
        net.p_stim = nengo.Probe(net.stim, label="stim")  # same label as the Node
    return net


def sessions(path):
    """``(name, run)`` for onnxruntime and onnx's reference evaluator."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ref = ReferenceEvaluator(onnx.load(str(path)))
    return [
        ("onnxruntime", lambda feeds: dict(zip(names, sess.run(None, feeds)))),
        ("reference", lambda feeds: dict(zip(ref.output_names, ref.run(None, feeds)))),
    ]


def run_streaming(run, model, inputs, n_steps):
    """Run a streaming model block after block, from all-zero state."""
    meta = metadata(model)
    K = meta["steps"]
    batch = next(iter(inputs.values())).shape[0] if inputs else 1

    def shape(dims):  # a dynamic batch axis ("batch") takes the inputs' batch
        return [batch if isinstance(d, str) else d for d in dims]

    state = {s["name"]: np.zeros(shape(s["shape"]), s["dtype"]) for s in meta["states"]}
    outputs = {o["name"]: [] for o in meta["outputs"]}
    for start in range(0, n_steps, K):
        feeds = {k: v[:, start : start + K] for k, v in inputs.items()}
        results = run({**feeds, **state})
        state = {s["name"]: results[s["output"]] for s in meta["states"]}
        for name in outputs:
            outputs[name].append(results[name])
    return {k: np.concatenate(v, axis=1) for k, v in outputs.items()}


def metadata(model):
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    meta = {}
    for prop in model.metadata_props:
        try:
            meta[prop.key] = json.loads(prop.value)
        except ValueError:
            meta[prop.key] = prop.value
    return meta


def probe_data(sim, net):
    """The simulator's probe data with a batch axis, by exported name."""
    names = {net.p_b: "b_out", net.p_spikes: "spikes", net.p_stim: "stim_1"}

    def batched(x):
        return x if sim.minibatch_size else x[None]

    return {name: batched(sim.data[p]) for p, name in names.items()}


@pytest.mark.parametrize("neuron_type", [nengo.LIFRate(), nengo.LIF()])
@pytest.mark.parametrize("form", ["streaming", "fixed_unrolled", "fixed_scan"])
def test_matches_simulators(tmp_path, neuron_type, form):
    net = channel_net(neuron_type)
    path = tmp_path / "model.onnx"
    kwargs = {"streaming": {}, "fixed_unrolled": {"fixed": 5}, "fixed_scan": {"fixed": N_STEPS}}[
        form
    ]
    n_steps = 5 if form == "fixed_unrolled" else N_STEPS
    with nengo_onnx.Simulator(net, unroll_simulation=5, progress_bar=False) as sim:
        info = sim.export(path, **kwargs)
        inputs = input_values(sim.program, n_steps, sim.seed)
        sim.run_steps(n_steps)
    expected = probe_data(sim, net)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(n_steps)

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert info.form == form.split("_")[0]
    for engine, run in sessions(path):
        if form == "streaming":
            out = run_streaming(run, model, inputs, n_steps)
        else:
            out = run(inputs)
        assert set(out) >= set(expected), engine
        for name, value in expected.items():
            assert out[name].shape == value.shape, (engine, name)
            assert np.allclose(out[name], value, atol=1e-5), (engine, name)
        # and against nengo itself
        assert np.allclose(out["b_out"][0], ref.data[net.p_b], atol=1e-4), engine
        assert np.allclose(out["stim_1"][0], ref.data[net.p_stim], atol=1e-6), engine
        assert np.array_equal(out["spikes"][0] > 0, ref.data[net.p_spikes] > 0), engine


def test_streaming_interface_and_metadata(tmp_path):
    net = channel_net()
    path = tmp_path / "model.onnx"
    with nengo_onnx.Simulator(net, unroll_simulation=4, progress_bar=False) as sim:
        info = sim.export(path)
    model = onnx.load(str(path))
    meta = metadata(model)
    assert info.steps == meta["steps"] == meta["K"] == 4
    assert meta["format"] == "streaming" and meta["dt"] == 0.001
    assert meta["opset"] == 13 and model.opset_import[0].version == 13
    assert all(o.domain in ("", "ai.onnx") for o in model.opset_import)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    assert meta["nengo_version"] == nengo.__version__
    assert meta["nengo_onnx_version"] == nengo_onnx.__version__

    ins = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    outs = {
        o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output
    }
    # inputs named after the input Nodes, outputs after the probes (sanitized, unique)
    assert ins["stim"] == [1, 4, 1] and ins["bias"] == [1, 4, 1]
    assert outs["b_out"] == [1, 4, 1] and outs["spikes"] == [1, 4, 30]
    assert outs["stim_1"] == [1, 4, 1]
    assert [p["name"] for p in meta["inputs"]] == ["stim", "bias"]
    stim = meta["inputs"][0]
    assert stim["label"] == "stim" and stim["shape"] == [1] and stim["source"] == "function"
    assert meta["inputs"][1]["default"] == [0.3]
    labels = {p["name"]: p["label"] for p in meta["outputs"]}
    assert labels == {"b_out": "b out", "spikes": "spikes", "stim_1": "stim"}
    # explicit state: every state input has an output of the same shape
    assert meta["states"]
    for state in meta["states"]:
        assert state["name"].startswith("state.") and state["output"].startswith("state_out.")
        assert ins[state["name"]] == outs[state["output"]] == state["shape"]
        assert "0x" not in state["name"]  # no memory addresses in names
    assert "state.a.neurons.voltage" in ins or any("voltage" in n for n in ins)


def test_export_function_minibatch_and_opsets(tmp_path):
    net = channel_net(nengo.RectifiedLinear())
    n_steps, batch = 10, 2
    rng = np.random.RandomState(1)
    data = rng.uniform(-1, 1, size=(batch, n_steps, 1)).astype(np.float32)
    with nengo_onnx.Simulator(
        net, minibatch_size=batch, unroll_simulation=5, progress_bar=False
    ) as sim:
        sim.run_steps(n_steps, data={net.stim: data})
    expected = probe_data(sim, net)
    for opset in (13, 17, None):
        path = tmp_path / f"model_{opset}.onnx"
        info = nengo_onnx.export(net, path, steps=5, minibatch_size=batch, opset=opset)
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == (opset or 13) == info.opset
        inputs = {"stim": data, "bias": np.full((batch, n_steps, 1), 0.3, np.float32)}
        for engine, run in sessions(path):
            out = run_streaming(run, model, inputs, n_steps)
            for name, value in expected.items():
                assert np.allclose(out[name], value, atol=1e-5), (opset, engine, name)

    path = tmp_path / "fixed.onnx"
    nengo_onnx.export(net, path, fixed=n_steps, minibatch_size=batch, opset=15)
    model = onnx.load(str(path))
    assert not any(i.name.startswith("state.") for i in model.graph.input)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [
        batch,
        n_steps,
        1,
    ]
    for engine, run in sessions(path):
        out = run(inputs)
        for name, value in expected.items():
            assert np.allclose(out[name], value, atol=1e-5), (engine, name)


def test_nonzero_initial_state_learning(tmp_path):
    """States with nonzero initial values (PES weights) start right from zeros."""
    with nengo.Network(seed=2) as net:
        net.stim = nengo.Node(lambda t: np.sin(10 * t), label="stim")
        a = nengo.Ensemble(20, 1, neuron_type=nengo.RectifiedLinear(), label="a")
        b = nengo.Node(size_in=1, label="b")
        nengo.Connection(net.stim, a)
        conn = nengo.Connection(a, b, learning_rule_type=nengo.PES(learning_rate=1e-3))
        nengo.Connection(b, conn.learning_rule)
        nengo.Connection(net.stim, conn.learning_rule, transform=-1)
        net.p = nengo.Probe(b, label="b")
        net.w = nengo.Probe(conn, "weights", label="weights")
    path = tmp_path / "pes.onnx"
    with nengo_onnx.Simulator(net, unroll_simulation=5, progress_bar=False) as sim:
        if any(kind == "host" for kind, _ in sim.program.segments):
            pytest.skip("PES runs in Python in this build")
        sim.export(path)
        inputs = input_values(sim.program, 20, sim.seed)
        sim.run_steps(20)
    model = onnx.load(str(path))
    meta = metadata(model)
    assert any(s["initial"] == "stored" for s in meta["states"])
    for engine, run in sessions(path):
        out = run_streaming(run, model, inputs, 20)
        assert np.allclose(out["b"][0], sim.data[net.p], atol=1e-5), engine
        assert np.allclose(out["weights"][0], sim.data[net.w], atol=1e-6), engine


def test_time_only_process_is_an_input(tmp_path):
    with nengo.Network(seed=3) as net:
        stim = nengo.Node(nengo.processes.WhiteSignal(1, high=5), size_out=1, label="signal")
        a = nengo.Ensemble(
            10, 1, neuron_type=nengo.LIFRate(), noise=nengo.processes.WhiteNoise(seed=1), label="a"
        )
        nengo.Connection(stim, a)
        p = nengo.Probe(a, synapse=0.005, label="a")
    path = tmp_path / "noise.onnx"
    with nengo_onnx.Simulator(net, unroll_simulation=5, progress_bar=False) as sim:
        info = sim.export(path, fixed=10)
        inputs = input_values(sim.program, 10, sim.seed)
        sim.run_steps(10)
    kinds = {p["name"]: p["kind"] for p in info.inputs}
    assert kinds["signal"] == "node"
    assert sorted(kinds.values()) == ["feed", "node"]
    for engine, run in sessions(path):
        assert np.allclose(run(inputs)["a"][0], sim.data[p], atol=1e-5), engine


def test_unexportable_objects_are_listed(tmp_path):
    with nengo.Network() as net:
        stim = nengo.Node([0.5], label="stim")
        f = nengo.Node(lambda t, x: x * 2, size_in=1, label="doubler")
        g = nengo.Node(lambda t, x: x + 1, size_in=1, size_out=1)
        nengo.Connection(stim, f)
        nengo.Connection(f, g)
        nengo.Probe(g)
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"old")
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ExportError) as info:
            sim.export(path)
    message = str(info.value)
    assert "Node 'doubler'" in message and "<Node (unlabeled)" in message
    assert "\n" not in message
    assert path.read_bytes() == b"old"  # nothing written
    with pytest.raises(ExportError, match="doubler"):
        nengo_onnx.export(net, tmp_path / "other.onnx")
    assert not (tmp_path / "other.onnx").exists()
    assert [p for p in os.listdir(tmp_path) if p.endswith(".partial")] == []


def test_validation(tmp_path):
    net = channel_net(nengo.RectifiedLinear())
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="not both"):
            sim.export(tmp_path / "x.onnx", steps=5, fixed=10)
        for bad in (0, -1, 2.5, True):
            with pytest.raises(ValidationError, match="positive integer"):
                sim.export(tmp_path / "x.onnx", steps=bad)
        for opset in (12, 22):
            with pytest.raises(ValidationError, match="opset|13 to 21"):
                sim.export(tmp_path / "x.onnx", opset=opset)
        with pytest.raises(ExportError, match="does not exist"):
            sim.export(tmp_path / "missing" / "x.onnx")
    with pytest.raises(SimulatorClosed):
        sim.export(tmp_path / "x.onnx")
    with pytest.raises(ValidationError, match="nengo.Network"):
        nengo_onnx.export("net", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


PLAIN_ORT = textwrap.dedent("""
    import sys
    import numpy as np
    import onnxruntime as ort

    model, expected = sys.argv[1], np.load(sys.argv[2])
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in sess.get_inputs()}
    dtypes = {"tensor(float)": np.float32, "tensor(int32)": np.int32,
              "tensor(int64)": np.int64}
    state = {n: np.zeros(i.shape, dtypes[i.type]) for n, i in ins.items()
             if n.startswith("state.")}
    stim = expected["stim_input"]
    K = ins["stim"].shape[1]
    out = []
    for start in range(0, stim.shape[1], K):
        names = [o.name for o in sess.get_outputs()]
        feeds = dict(state, stim=stim[:, start:start + K], bias=np.full((1, K, 1), 0.3, "f4"))
        res = dict(zip(names, sess.run(None, feeds)))
        state = {n.replace("state_out.", "state.", 1): v for n, v in res.items()
                 if n.startswith("state_out.")}
        out.append(res["b_out"])
    assert np.allclose(np.concatenate(out, axis=1), expected["b_out"], atol=1e-5)
    assert not any(m == "nengo" or m.startswith(("nengo.", "nengo_onnx")) for m in sys.modules)
    print("ok")
""")


def test_runs_with_only_onnxruntime_and_numpy(tmp_path):
    net = channel_net()
    path = tmp_path / "model.onnx"
    with nengo_onnx.Simulator(net, unroll_simulation=5, progress_bar=False) as sim:
        sim.export(path)
        inputs = input_values(sim.program, 20, sim.seed)
        sim.run_steps(20)
    np.savez(tmp_path / "expected.npz", stim_input=inputs["stim"], b_out=sim.data[net.p_b][None])
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_ORT)
    result = subprocess.run(
        [sys.executable, str(script), str(path), str(tmp_path / "expected.npz")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


STANDALONE_RUNNER = textwrap.dedent("""
    import importlib.util, sys
    sys.modules["nengo"] = None  # importing nengo now fails
    spec = importlib.util.spec_from_file_location("runner", sys.argv[1])
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    sys.exit(runner.main(sys.argv[2:]))
""")


def test_runner_is_standalone(tmp_path):
    net = channel_net(nengo.LIFRate())
    path = tmp_path / "model.onnx"
    with nengo_onnx.Simulator(net, unroll_simulation=5, progress_bar=False) as sim:
        sim.export(path)
        np.savez(tmp_path / "in.npz", **input_values(sim.program, 23, sim.seed))
        sim.run_steps(23)
    script = tmp_path / "standalone.py"
    script.write_text(STANDALONE_RUNNER)
    runner_file = os.path.join(os.path.dirname(nengo_onnx.__file__), "exporting", "runner.py")
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            runner_file,
            str(path),
            "--inputs",
            str(tmp_path / "in.npz"),
            "-o",
            str(tmp_path / "out.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "out.npz") as out:
        assert sorted(out.files) == ["b_out", "spikes", "stim_1"]
        assert np.allclose(out["b_out"][0], sim.data[net.p_b], atol=1e-5)  # 23: not whole blocks


def test_no_inputs_sample_every_and_runner(tmp_path):
    """A network without inputs (the Scan still runs), and a subsampled probe."""
    from nengo_onnx.exporting.runner import ExportedModel

    with nengo.Network(seed=4) as net:
        a = nengo.Ensemble(10, 1, label="a")
        p = nengo.Probe(a, synapse=0.01, sample_every=0.003)
        q = nengo.Probe(a.neurons, "voltage")
    with nengo_onnx.Simulator(net, unroll_simulation=5, progress_bar=False) as sim:
        sim.run_steps(20)
        for kwargs in ({"fixed": 20}, {"fixed": 20, "opset": 15}, {"steps": 3}):
            path = tmp_path / "model.onnx"
            info = sim.export(path, **kwargs)
            assert [p["name"] for p in info.inputs] == []
            assert info.outputs[0]["sample_every"] == pytest.approx(3)
            out = ExportedModel(path).run(n_steps=20)
            assert out["probe_0"].shape == (1, 6, 1)
            assert np.allclose(out["probe_0"][0], sim.data[p], atol=1e-5)
            assert np.allclose(out["probe_1"][0], sim.data[q], atol=1e-5)
            if info.form == "fixed":
                ref = ReferenceEvaluator(onnx.load(str(path)))
                results = dict(zip(ref.output_names, ref.run(None, {})))
                assert np.allclose(results["probe_1"][0], sim.data[q], atol=1e-5)
