"""Failures found by trying networks as users build them: bookkeeping, pickling, files,
time, signatures and odd values (one test or more per failure)."""

import inspect
import os
import pickle
import warnings
import zipfile

import nengo
import numpy as np
import pytest
from nengo.exceptions import SimulationError, ValidationError

import nengo_onnx
from nengo_onnx import optimizers
from nengo_onnx.files import TMP_PREFIX, TMP_SUFFIX
from nengo_onnx.objectives import array_namespace


def small_net(seed=0, label_input="u"):
    with nengo.Network(seed=seed) as net:
        net.u = nengo.Node([0.5], label=label_input)
        net.a = nengo.Ensemble(20, 1, neuron_type=nengo.LIFRate(), label="a")
        net.out = nengo.Node(size_in=1, label="out")
        nengo.Connection(net.u, net.a)
        net.conn = nengo.Connection(net.a, net.out, synapse=0.01)
        net.p = nengo.Probe(net.out, label="p")
    return net


def training_data(net, n=4, steps=5, seed=1):
    rng = np.random.RandomState(seed)
    return {net.u: rng.uniform(-1, 1, (n, steps, 1)), net.p: rng.uniform(-1, 1, (n, steps, 1))}


# -- labels never collide with each other or with internal names -------------------------------


@pytest.mark.parametrize(
    "label", ["const", "matmul", "state.x", "probe_0", "loss", "x.y", "input", "0", "a b", ""]
)
def test_any_label_builds_and_matches_nengo(label):
    with nengo.Network(seed=1) as net:
        c = nengo.Node([0.3], label=label or None)
        d = nengo.Node([0.2], label=label or None)  # the same label twice
        e = nengo.Ensemble(10, 1, label=label or None)
        nengo.Connection(c, e)
        nengo.Connection(d, e)
        p = nengo.Probe(e, synapse=0.01, label=label or None)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(20)
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(20)
        assert np.allclose(sim.data[p], ref.data[p], atol=1e-5)
        names = set(sim.program.inputs.values())
        assert len(names) == 2  # two Nodes with one label: two inputs


# -- pickling ---------------------------------------------------------------------------------


def test_pickled_trained_simulator_behaves_like_the_original(tmp_path):
    net = small_net()
    data = training_data(net)
    with net:
        nengo_onnx.configure_settings(dtype="float64")
    with nengo_onnx.Simulator(
        net, minibatch_size=2, progress_bar=False, threads=1, tensorboard=str(tmp_path / "tb")
    ) as sim:
        sim.train(data, optimizers.Adam(0.05), n_epochs=3)
        sim.run_steps(7)
        # pickled together, as nengo's objects are: the copy's network is net2
        net2, copy = pickle.loads(pickle.dumps((net, sim)))
        assert copy.network is net2
        assert copy.dtype == np.float64 and copy.threads == 1
        assert copy.tensorboard == str(tmp_path / "tb")
        assert copy.n_steps == 7
        assert np.array_equal(copy.data[net2.p], sim.data[net.p])
        assert np.array_equal(copy.data[net2.conn].weights, sim.data[net.conn].weights)
        # runs on from the same state, with the trained weights, and takes data
        sim.run_steps(5, data={net.u: np.full((2, 5, 1), 0.3)})
        copy.run_steps(5, data={net2.u: np.full((2, 5, 1), 0.3)})
        assert np.allclose(copy.data[net2.p], sim.data[net.p])
        # saves, loads, exports, freezes, trains and evaluates like the original
        a, b = sim.save_params(tmp_path / "a"), copy.save_params(tmp_path / "b")
        with np.load(a) as fa, np.load(b) as fb:
            assert sorted(fa.files) == sorted(fb.files) and len(fa.files) > 1
            for key in fa.files:
                assert np.array_equal(fa[key], fb[key])
        copy.load_params(a)
        data2 = {net2.u: data[net.u], net2.p: data[net.p]}
        assert np.isclose(copy.loss(data2), sim.loss(data))
        copy.export(tmp_path / "copy.onnx")
        sim.export(tmp_path / "sim.onnx")
        assert (tmp_path / "copy.onnx").read_bytes() == (tmp_path / "sim.onnx").read_bytes()
        copy.freeze_params(net2)
        copy.train(data2, optimizers.SGD(0.01))
        copy.close()


# -- interrupted runs keep every completed step -----------------------------------------------


class Boom(Exception):
    pass


def failing_net():
    """A network with a Python function of a signal that raises from step ``f.fail_at``."""
    with nengo.Network(seed=0) as net:
        net.u = nengo.Node(lambda t: np.sin(10 * t))
        net.a = nengo.Ensemble(10, 1)

        def f(t, x):
            if f.fail_at is not None and t > (f.fail_at - 0.5) * 0.001:
                raise Boom()
            return x

        f.fail_at = None
        net.f = f
        net.node = nengo.Node(f, size_in=1)
        nengo.Connection(net.u, net.a)
        nengo.Connection(net.a, net.node)
        net.p = nengo.Probe(net.a, synapse=0.01)
        net.q = nengo.Probe(net.a, synapse=0.01, sample_every=0.003)
    return net


@pytest.mark.parametrize("fails_after", [0, 3, 12])
def test_failed_run_keeps_completed_steps(fails_after):
    net = failing_net()
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(2)
        net.f.fail_at = 2 + fails_after + 1
        with pytest.raises(Boom):
            sim.run_steps(20)
        done = 2 + fails_after
        assert sim.n_steps == done == len(sim.trange()) == sim.data[net.p].shape[0]
        assert sim.data[net.q].shape[0] == len(sim.trange(sample_every=0.003))
        assert np.isclose(sim.time, done * sim.dt)
        # and it runs on from there, as nengo.Simulator does
        net.f.fail_at = None
        sim.run_steps(3)
        assert sim.data[net.p].shape[0] == done + 3


def test_keyboard_interrupt_in_a_run_keeps_completed_blocks():
    with nengo.Network(seed=0) as net:
        a = nengo.Ensemble(10, 1)
        p = nengo.Probe(a)
    with nengo_onnx.Simulator(net, unroll_simulation=5, progress_bar=False) as sim:
        calls = []

        def interrupt(n):
            calls.append(n)
            if len(calls) == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            sim.runtime.run(40, progress=interrupt, on_block=sim._record)
        assert sim.n_steps == 15 == sim.data[p].shape[0] == sim.runtime.n_steps


# -- interrupted training: parameters and optimizer state agree --------------------------------


def test_interrupted_training_keeps_the_completed_minibatches():
    net = small_net()
    data = training_data(net, n=8)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        opt = optimizers.SGD(0.1)
        before = np.array(sim.data[net.conn].weights)
        calls = []
        original = opt.apply

        def apply(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        opt.apply = apply
        with pytest.raises(KeyboardInterrupt):
            sim.train(data, opt, n_epochs=2, shuffle=False)
        after_two = np.array(sim.data[net.conn].weights)
        assert not np.allclose(after_two, before)
        # the same two minibatches, uninterrupted, give the same parameters
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as ref:
        ref.train({k: v[:4] for k, v in data.items()}, optimizers.SGD(0.1), shuffle=False)
        assert np.allclose(ref.data[net.conn].weights, after_two, atol=1e-6)


def test_nonfinite_loss_names_the_cause():
    net = small_net()
    data = training_data(net)
    data[net.p] = np.full_like(data[net.p], 1e39)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        with pytest.raises(SimulationError, match="overflow float32"):
            sim.train(data, optimizers.SGD(0.1))

        def nan_objective(y, t):
            xp = array_namespace(y)
            return xp.mean((y - t) ** 2) * float("nan")

        data = training_data(net)
        with pytest.raises(SimulationError, match="objective"):
            sim.train(data, optimizers.SGD(0.1), objective={net.p: nan_objective})


# -- load_params: clear errors for every bad file ---------------------------------------------


def test_load_params_rejects_bad_values_and_files(tmp_path):
    net = small_net()
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        good = sim.save_params(tmp_path / "good")
        with np.load(good) as f:
            arrays = {k: f[k] for k in f.files}
        key = next(k for k in arrays if k.startswith("param/"))
        for bad in (np.nan, np.inf, 1e39):
            values = dict(arrays)
            values[key] = np.full_like(arrays[key], bad, dtype=np.float64)
            np.savez(tmp_path / "bad.npz", **values)
            with pytest.raises(ValidationError, match="bad.npz"):
                sim.load_params(tmp_path / "bad.npz")
        (tmp_path / "text.npz").write_text("not a zip file")
        raw = good.replace("good", "truncated")
        with open(good, "rb") as f, open(raw, "wb") as g:
            g.write(f.read()[:100])
        np.save(tmp_path / "array.npy", np.zeros(3))
        for path in (tmp_path / "text.npz", raw, tmp_path / "array.npy"):
            with pytest.raises(ValidationError, match=os.path.basename(str(path))):
                sim.load_params(path)
        with pytest.raises(ValidationError, match="missing_dir"):
            sim.save_params(tmp_path / "missing_dir" / "x")
        assert zipfile.is_zipfile(good)


def test_save_cleans_up_stale_partial_files(tmp_path):
    net = small_net()
    stale = tmp_path / f"{TMP_PREFIX}old{TMP_SUFFIX}"
    stale.write_bytes(b"partial")
    old = os.path.getmtime(stale) - 7200
    os.utime(stale, (old, old))
    fresh = tmp_path / f"{TMP_PREFIX}new{TMP_SUFFIX}"  # another process's write in progress
    fresh.write_bytes(b"partial")
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.save_params(tmp_path / "p")
    assert not stale.exists() and fresh.exists()


def test_written_files_follow_the_umask(tmp_path):
    net = small_net()
    old = os.umask(0o022)
    try:
        with nengo_onnx.Simulator(net, progress_bar=False) as sim:
            path = sim.save_params(tmp_path / "p")
            sim.export(tmp_path / "m.onnx")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "m.onnx").st_mode & 0o777 == 0o644


# -- probe memory follows the sampled data ---------------------------------------------------


def test_sampled_probes_keep_only_the_samples():
    with nengo.Network(seed=0) as net:
        a = nengo.Ensemble(10, 1)
        p = nengo.Probe(a, sample_every=0.01)
    with nengo_onnx.Simulator(net, unroll_simulation=10, progress_bar=False) as sim:
        sim.run_steps(1000)
        kept = sum(part.shape[1] for part in sim.recorded._parts[p])
        assert kept == 100 == sim.data[p].shape[0]


# -- Python functions get nengo's exact time ----------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimize", [True, False])
def test_python_functions_get_nengos_exact_time_and_values(dtype, optimize):
    """Python functions get nengo's float64 ``t`` (``t > 0.001`` is false at the first
    step), and values computed in Python on their way to them (here ``lambda t: t``,
    through a connection) arrive unrounded: ``x[0] == t`` as in nengo.Simulator."""
    seen = []
    with nengo.Network() as net:
        nengo_onnx.configure_settings(dtype=dtype)
        u = nengo.Node(lambda t: t)
        f = nengo.Node(lambda t, x: seen.append((t, x[0], t > 0.001)) or x, size_in=1)
        nengo.Connection(u, f, synapse=None)
        nengo.Connection(u, f, transform=0.5, synapse=None)
    times = {}
    for simulator in (nengo.Simulator, nengo_onnx.Simulator):
        kwargs = {} if simulator is nengo.Simulator else {"optimize": optimize}
        with simulator(net, progress_bar=False, **kwargs) as sim:
            seen.clear()
            sim.run_steps(5)
            times[simulator] = list(seen)
    assert times[nengo_onnx.Simulator] == times[nengo.Simulator]
    assert times[nengo_onnx.Simulator][0][2] is False


# -- real signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, params",
    [
        (
            "train",
            [
                "data",
                "optimizer",
                "n_epochs",
                "objective",
                "truncation",
                "summaries",
                "shuffle",
                "profile",
            ],
        ),
        ("loss", ["data", "objective"]),
        ("save_params", ["path", "include_state"]),
        ("load_params", ["path"]),
        ("freeze_params", ["objs"]),
        ("export", ["path", "steps", "fixed", "opset", "batch"]),
    ],
)
def test_methods_have_real_signatures(method, params):
    fn = getattr(nengo_onnx.Simulator, method)
    sig = inspect.signature(fn)
    assert list(sig.parameters)[1:] == params
    assert fn.__doc__ and len(fn.__doc__) > 40


# -- odd values give nengo's errors ------------------------------------------------------------


def test_odd_values_give_validation_errors():
    net = small_net()
    for dt in (0, -0.001, np.nan, "x"):
        with pytest.raises(ValidationError, match="dt"):
            nengo_onnx.Simulator(net, dt=dt, progress_bar=False)
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        for bad in (np.nan, np.inf, -np.inf, None):
            with pytest.raises(ValidationError, match="time_in_seconds"):
                sim.run(bad)
        with pytest.raises(ValidationError, match="dict"):
            sim.run_steps(3, data=[np.zeros((1, 3, 1))])
        other = small_net(seed=2)
        with pytest.raises(ValidationError, match="another network"):
            sim.run_steps(3, data={other.u: np.zeros((3, 1))})
        with pytest.raises(ValidationError, match="another network"):
            sim.train(
                {other.u: np.zeros((1, 3, 1)), net.p: np.zeros((1, 3, 1))}, optimizers.SGD(0.1)
            )


def test_no_warning_for_ordinary_use():
    net = small_net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with nengo_onnx.Simulator(net, progress_bar=False) as sim:
            sim.run_steps(3)


def test_pickle_keeps_parameters_no_operator_uses(tmp_path):
    """An unconnected Ensemble's trained-or-loaded encoders survive a pickle (found by
    the differential machine's long run)."""
    with nengo.Network(seed=3) as net:
        u = nengo.Node(nengo.processes.WhiteNoise(dist=nengo.dists.Gaussian(0, 0.3)))
        lonely = nengo.Ensemble(8, 2, neuron_type=nengo.RectifiedLinear())
        p = nengo.Probe(u)
    with nengo_onnx.Simulator(net, progress_bar=False) as sim, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = sim.save_params(tmp_path / "lonely")
        sim.load_params(path)
        sim.run_steps(2)
        net2, copy = pickle.loads(pickle.dumps((net, sim)))
        assert np.array_equal(copy.data[net2.all_ensembles[0]].encoders, sim.data[lonely].encoders)
        assert np.array_equal(copy.data[net2.all_probes[0]], sim.data[p])


def test_empty_probe_data_has_the_recorded_width():
    """Before any step, a probe's data is shaped by what it records: for
    Probe(conn, "input") the pre's width (3), not Probe.size_in (4)."""
    with nengo.Network(seed=0) as net:
        e = nengo.Ensemble(3, 4)
        c = nengo.Connection(e.neurons, e, transform=np.ones((4, 3)) * 0.1)
        p = nengo.Probe(c, "input")
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        assert sim.data[p].shape == (0, 3)
        sim.run_steps(2)
        assert sim.data[p].shape == (2, 3)
