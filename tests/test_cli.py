"""The ``nengo-onnx`` command: compile, run, inspect, and its errors."""

import json
import os
import subprocess
import sys
import textwrap

import nengo
import numpy as np
import pytest

import nengo_onnx
from nengo_onnx import optimizers
from nengo_onnx.cli import load_network, main
from nengo_onnx.exporting.exporter import ExportError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "docs", "examples", "communication_channel.py")

NET_FILE = textwrap.dedent("""
    import nengo
    import numpy as np

    def build():
        with nengo.Network(seed=0, label="trainable") as net:
            net.x = nengo.Node(np.zeros(1), label="x")
            a = nengo.Ensemble(20, 1, neuron_type=nengo.LIFRate(), label="a")
            nengo.Connection(net.x, a)
            y = nengo.Node(size_in=1, label="y")
            nengo.Connection(a, y, function=lambda x: 0)
            net.p = nengo.Probe(y, label="y")
        return net
""")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compile_run_inspect_example(tmp_path, capsys):
    onnx_path = tmp_path / "channel.onnx"
    inputs = tmp_path / "inputs.npz"
    code, out, err = run_main(
        capsys, "compile", EXAMPLE, "-o", onnx_path, "--save-inputs", inputs, "--input-steps", 50
    )
    assert code == 0, err
    assert onnx_path.exists() and inputs.exists()
    for text in (
        "operators",
        "after the passes",
        "parameters",
        "stim",
        "[1, 10, 1]",
        "b_out",
        "KiB",
    ):
        assert text in out

    probes = tmp_path / "probes.npz"
    code, out, err = run_main(capsys, "run", onnx_path, "--inputs", inputs, "-o", probes)
    assert code == 0, err
    assert "50/50" in err  # progress
    namespace = {}
    with open(EXAMPLE) as f:
        exec(f.read(), namespace)  # noqa: S102
    net = namespace["network"]
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(50)
    with np.load(probes) as data:
        assert sorted(data.files) == ["a_out", "b_out", "stim_probe"]
        assert data["b_out"].shape == (1, 50, 1)
        for probe in net.probes:
            assert np.allclose(data[probe.label][0], sim.data[probe], atol=1e-5)

    # without inputs, the function Node's input is zeros, with a warning
    code, out, err = run_main(capsys, "run", onnx_path, "--steps", 20, "-q")
    assert code == 0 and out == ""
    assert "warning: no values for input 'stim' (Node 'stim')" in err

    code, out, err = run_main(capsys, "inspect", onnx_path)
    assert code == 0, err
    for text in (
        "format: streaming",
        "dt: 0.001",
        "nengo_version",
        "opset: 13",
        "stim",
        "b_out",
        "state.",
        "MatMul",
    ):
        assert text in out
    code, out, err = run_main(capsys, "inspect", onnx_path, "--json")
    report = json.loads(out)
    assert report["metadata"]["steps"] == 10 and report["ops"]


def test_compile_forms_and_options(tmp_path, capsys):
    model = write(tmp_path, "mynet.py", NET_FILE)
    path = tmp_path / "fixed.onnx"
    code, _, err = run_main(
        capsys,
        "compile",
        f"{model}:build",
        "-o",
        path,
        "--fixed",
        20,
        "--minibatch",
        3,
        "--opset",
        17,
        "--dt",
        0.002,
    )
    assert code == 0, err
    report = json.loads(run_main(capsys, "inspect", path, "--json")[1])
    meta = report["metadata"]
    assert meta["format"] == "fixed" and meta["steps"] == 20 and meta["dt"] == 0.002
    assert meta["minibatch_size"] == 3 and report["opsets"]["ai.onnx"] == 17
    assert report["inputs"][0] == {"name": "x", "shape": [3, 20, 1], "dtype": "float32"}

    data = np.random.RandomState(0).uniform(-1, 1, (3, 20, 1))
    np.savez(tmp_path / "x.npz", x=data)
    code, _, err = run_main(
        capsys, "run", path, "--inputs", tmp_path / "x.npz", "-o", tmp_path / "y.npz"
    )
    assert code == 0, err
    namespace = {}
    exec(NET_FILE, namespace)  # noqa: S102
    net = namespace["build"]()
    with nengo_onnx.Simulator(net, minibatch_size=3, dt=0.002, progress_bar=False) as sim:
        sim.run_steps(20, data={net.x: data})
    with np.load(tmp_path / "y.npz") as out:
        assert np.allclose(out["y"], sim.data[net.p], atol=1e-5)

    # a fixed model runs exactly its length
    code, _, err = run_main(capsys, "run", path, "--steps", 7)
    assert code == 1 and "exactly 20 steps" in err

    # streaming without inputs: the Node's constant; not a whole number of blocks
    path = tmp_path / "stream.onnx"
    assert run_main(capsys, "compile", f"{model}:build", "-o", path, "--steps", 4)[0] == 0
    code, out, err = run_main(capsys, "run", path, "--steps", 10, "-o", tmp_path / "z.npz")
    assert code == 0 and "warning" not in err
    with np.load(tmp_path / "z.npz") as out:
        assert out["y"].shape == (1, 10, 1)


def test_load_network(tmp_path):
    one = write(
        tmp_path,
        "one.py",
        """
        import nengo
        with nengo.Network() as net:
            sub = nengo.Network()  # nested in net: not a candidate
            net.networks.append(sub)
            nengo.Ensemble(5, 1)
    """,
    )
    assert isinstance(load_network(one), nengo.Network)
    func = write(tmp_path, "func.py", NET_FILE + "\nnetwork = build\n")
    assert load_network(func).label == "trainable"
    assert load_network(f"{func}:build").label == "trainable"
    sys.path.insert(0, str(tmp_path))
    try:
        assert load_network("func:build").label == "trainable"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("func", None)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "no such file"),
        ("empty", "defines no nengo.Network"),
        ("two", "several networks (a, b)"),
        ("attr", "has no attribute 'nope'"),
        ("notnet", "not a nengo.Network"),
        ("raises", "ZeroDivisionError"),
        ("params", "cannot read params file"),
        ("noparams", "no such params file"),
        ("python", "Node 'doubler'"),
        ("opset", "opset"),
    ],
)
def test_compile_errors(tmp_path, capsys, case, expected):
    files = {
        "empty": "x = 1\n",
        "two": "import nengo\na = nengo.Network()\nb = nengo.Network()\n",
        "attr": NET_FILE,
        "notnet": "network = 3\n",
        "raises": "1 / 0\n",
        "params": NET_FILE,
        "noparams": NET_FILE,
        "python": """
            import nengo
            with nengo.Network() as network:
                stim = nengo.Node([1])
                f = nengo.Node(lambda t, x: 2 * x, size_in=1, label="doubler")
                nengo.Connection(stim, f)
        """,
        "opset": NET_FILE,
    }
    spec = str(tmp_path / "model.py")
    if case in files:
        write(tmp_path, "model.py", files[case])
    if case in ("params", "noparams", "opset"):
        spec += ":build"
    if case == "attr":
        spec += ":nope"
    extra = []
    if case == "params":
        (tmp_path / "bad.npz").write_bytes(b"not a zip file")
        extra = ["--params", tmp_path / "bad.npz"]
    elif case == "noparams":
        extra = ["--params", tmp_path / "absent.npz"]
    elif case == "opset":
        extra = ["--opset", 9]
    out_path = tmp_path / "out.onnx"
    code, out, err = run_main(capsys, "compile", spec, "-o", out_path, *extra)
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("nengo-onnx compile: error:") and expected in err, err
    assert not out_path.exists()
    if case == "python":
        with pytest.raises(ExportError):
            main(["compile", spec, "-o", str(out_path), "--debug"])


def test_run_and_inspect_errors(tmp_path, capsys):
    code, _, err = run_main(capsys, "run", tmp_path / "absent.onnx")
    assert code == 1 and "no such file" in err and err.count("\n") == 1
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    code, _, err = run_main(capsys, "inspect", tmp_path / "junk.onnx")
    assert code == 1 and "cannot read" in err and err.count("\n") == 1
    code, _, err = run_main(capsys, "run", tmp_path / "junk.onnx")
    assert code == 1 and "cannot load" in err

    model = write(tmp_path, "m.py", NET_FILE)
    path = tmp_path / "m.onnx"
    assert run_main(capsys, "compile", f"{model}:build", "-o", path, "-q")[0] == 0
    np.savez(tmp_path / "bad.npz", nope=np.zeros((1, 5, 1)))
    code, _, err = run_main(capsys, "run", path, "--inputs", tmp_path / "bad.npz")
    assert code == 1 and "no input(s) ['nope']" in err
    np.savez(tmp_path / "bad.npz", x=np.zeros((1, 5, 2)))
    code, _, err = run_main(capsys, "run", path, "--inputs", tmp_path / "bad.npz")
    assert code == 1 and "expected (batch, n_steps, 1)" in err
    code, _, err = run_main(capsys, "run", path)
    assert code == 1 and "--steps" in err


def test_help_and_usage(capsys):
    for argv in (["--help"], ["compile", "--help"], ["run", "--help"], ["inspect", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        assert "usage: nengo-onnx" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["compile", "x.py", "--steps", "0"])
    assert info.value.code == 2
    assert main([]) == 2
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == nengo_onnx.__version__


def test_trained_params_round_trip(tmp_path, capsys):
    model = write(tmp_path, "m.py", NET_FILE)
    namespace = {}
    exec(NET_FILE, namespace)  # noqa: S102
    net = namespace["build"]()
    x = np.linspace(-1, 1, 4)[:, None, None] * np.ones((1, 10, 1))
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.train({net.x: x, net.p: x**2}, optimizers.Adam(0.02), n_epochs=5)
        sim.save_params(tmp_path / "params")
        sim.run_steps(10, data={net.x: x})
        trained = sim.data[net.p]
    with nengo_onnx.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.run_steps(10, data={net.x: x})
        untrained = sim.data[net.p]
    assert not np.allclose(trained, untrained, atol=1e-3)

    path = tmp_path / "trained.onnx"
    code, _, err = run_main(
        capsys,
        "compile",
        f"{model}:build",
        "-o",
        path,
        "--params",
        tmp_path / "params.npz",
        "--minibatch",
        4,
        "--steps",
        5,
    )
    assert code == 0, err
    np.savez(tmp_path / "x.npz", x=x)
    code, _, err = run_main(
        capsys, "run", path, "--inputs", tmp_path / "x.npz", "-o", tmp_path / "y.npz"
    )
    assert code == 0, err
    with np.load(tmp_path / "y.npz") as out:
        assert np.allclose(out["y"], trained, atol=1e-5)

    # another batch size: the saved (batch 4) state does not matter, no warning
    code, _, err = run_main(
        capsys,
        "compile",
        f"{model}:build",
        "-o",
        path,
        "--params",
        tmp_path / "params",
        "--fixed",
        10,
    )
    assert code == 0 and err == "", err
    np.savez(tmp_path / "x.npz", x=x[2:3])
    assert (
        run_main(capsys, "run", path, "--inputs", tmp_path / "x.npz", "-o", tmp_path / "y.npz")[0]
        == 0
    )
    with np.load(tmp_path / "y.npz") as out:
        assert np.allclose(out["y"], trained[2:3], atol=1e-5)


def test_main_job_command_in_subprocess(tmp_path):
    """The README's command: compile the shipped example and run it."""
    cmd = [sys.executable, "-m", "nengo_onnx.cli"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        cmd
        + [
            "compile",
            EXAMPLE,
            "-o",
            "channel.onnx",
            "--save-inputs",
            "inputs.npz",
            "--input-steps",
            "40",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    result = subprocess.run(
        cmd + ["run", "channel.onnx", "--inputs", "inputs.npz", "-o", "probes.npz"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "probes.npz").exists()
    result = subprocess.run(
        cmd + ["compile", "absent.py"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "nengo-onnx compile: error: no such file: absent.py"


def test_compile_batch_dynamic_and_quantize(tmp_path, capsys):
    """compile --batch dynamic, run it at two batch sizes, quantize with calibration."""
    example = os.path.join(
        os.path.dirname(os.path.dirname(__file__)), "docs", "examples", "spiking_digits.py"
    )
    model, q = str(tmp_path / "d.onnx"), str(tmp_path / "q.onnx")
    assert main(["compile", f"{example}:build_network", "-o", model, "--batch", "dynamic"]) == 0
    assert "minibatch batch" in capsys.readouterr().out
    rng = np.random.RandomState(0)
    for batch in (2, 5):
        np.savez(tmp_path / f"in{batch}.npz", image=rng.uniform(0, 1, (batch, 20, 64)))
        out = str(tmp_path / f"out{batch}.npz")
        assert main(["run", model, "--inputs", str(tmp_path / f"in{batch}.npz"), "-o", out]) == 0
        with np.load(out) as probes:
            assert probes["digit_out"].shape == (batch, 20, 10)
    capsys.readouterr()
    assert main(["quantize", model, "-o", q, "--calibration", str(tmp_path / "in5.npz")]) == 0
    printed = capsys.readouterr().out
    assert "2 weight matrices in int8" in printed and "digit_out:" in printed
    assert os.path.getsize(q) < os.path.getsize(model)
    assert main(["quantize", model, "-o", str(tmp_path / "q2.onnx")]) == 0
    assert "dynamic" in capsys.readouterr().out
    assert main(["run", q, "--inputs", str(tmp_path / "in2.npz"), "-q"]) == 0
    # errors: one line, exit status 1
    assert main(["quantize", str(tmp_path / "missing.onnx"), "-o", q]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", f"{example}:build_network", "--batch", "static"])
    assert exit_info.value.code == 2
