"""Benchmark Simulator.train and compare with NengoDL's numbers.

Measured in one run, each training the same way NengoDL's benchmark did:

(a) scikit-learn's digits (8x8, /16; 1440 train / 352 test): Node(64) -> 256
    RectifiedLinear(amplitude=0.01) neurons -> Node(size_in=10), n_steps=1,
    minibatch 32, softmax cross-entropy, Adam(1e-3), 10 epochs: time per epoch,
    test accuracy.
(b) Node(1) -> recurrent Ensemble of 200 LIFRate(amplitude=0.01) (recurrent
    transform 0.9, synapses 0.01) -> Node(1), integrating random step inputs (new
    level every 10 steps) over 50 steps, 256 sequences, minibatch 32, MSE,
    Adam(1e-3), 10 epochs: time per epoch and loss, full BPTT and truncation=10.
(c) (a) with LIF(amplitude=0.01), trained with the rate substitution (n_steps=1)
    and spike-aware (``spiking_gradient``, the image held 30 steps), then run
    spiking with each test image held 30 steps: spiking test accuracy.

plus ``import nengo_onnx`` time (fresh interpreter) and the peak memory of a
process running (a). Times per epoch are the minimum over ``--repeats`` runs,
each after one untimed epoch that builds the training graph (its time is
reported as "build"). Prints a Markdown table.

    python tools/benchmark_training.py [--repeats 3] [--epochs 10] [--profile]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

#: NengoDL 3.6 (TensorFlow 2.12 CPU, 2 cores) on this machine type, measured on the same
#: three benchmarks (NengoDL is not installed here, so they are not run again).
NENGODL = {
    "a_epoch": 0.106,
    "a_accuracy": 0.963,
    "b_epoch": 0.317,
    "b_loss_first": 0.189,
    "b_loss": 0.0054,
    "b10_epoch": 1.93,
    "b10_loss": 0.0376,
    "c_accuracy": 0.969,
    "import": 5.0,
    "memory": (580, 720),
}

MINIBATCH = 32
THREADS = None  # onnxruntime's intra-op threads (--threads)
SPIKING_STEPS = 30


def _nengo():
    import nengo  # noqa: PLC0415

    import nengo_onnx  # noqa: PLC0415

    return nengo, nengo_onnx


# -- data and networks -------------------------------------------------------------------------


def digits():
    """``(x_train, y_train, x_test, y_test)``: images /16 in [0, 1], integer labels."""
    from sklearn.datasets import load_digits  # noqa: PLC0415

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    order = np.random.RandomState(0).permutation(len(x))
    train, test = order[:1440], order[1440 : 1440 + 352]
    return x[train], data.target[train], x[test], data.target[test]


def one_hot(labels, steps=1):
    out = np.zeros((len(labels), steps, 10), dtype=np.float32)
    out[np.arange(len(labels)), :, labels] = 1
    return out


def glorot(rng, n_out, n_in):
    limit = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, size=(n_out, n_in))


def digits_net(neuron_type, spiking_gradient=None, seed=0):
    """Node(64) -> 256 neurons (all-to-all, Glorot-uniform weights) -> Node(10).

    Neurons as in NengoDL's spiking MNIST example: max rate 100 Hz, intercept 0.
    """
    nengo, nengo_onnx = _nengo()
    rng = np.random.RandomState(seed)
    with nengo.Network(seed=seed) as net:
        if spiking_gradient is not None:
            nengo_onnx.configure_settings(spiking_gradient=spiking_gradient)
        net.config[nengo.Ensemble].max_rates = nengo.dists.Choice([100])
        net.config[nengo.Ensemble].intercepts = nengo.dists.Choice([0])
        net.config[nengo.Connection].synapse = None
        net.inp = nengo.Node(np.zeros(64), label="inp")
        hidden = nengo.Ensemble(256, 1, neuron_type=neuron_type, label="hidden")
        out = nengo.Node(size_in=10, label="out")
        nengo.Connection(net.inp, hidden.neurons, transform=glorot(rng, 256, 64))
        nengo.Connection(hidden.neurons, out, transform=glorot(rng, 10, 256))
        net.p = nengo.Probe(out, label="p")
    return net


def integrator_net(seed=0):
    nengo, _ = _nengo()
    with nengo.Network(seed=seed) as net:
        net.inp = nengo.Node(np.zeros(1), label="inp")
        ens = nengo.Ensemble(200, 1, neuron_type=nengo.LIFRate(amplitude=0.01), label="ens")
        out = nengo.Node(size_in=1, label="out")
        nengo.Connection(net.inp, ens, synapse=0.01)
        nengo.Connection(ens, ens, transform=0.9, synapse=0.01)
        nengo.Connection(ens, out, synapse=0.01)
        net.p = nengo.Probe(out, label="p")
    return net


def integrator_data(n=256, steps=50, hold=10, dt=0.001, seed=0):
    """Random levels in [-1, 1], a new one every ``hold`` steps; the target is their
    running integral ``sum(x) * dt`` (the initial network's loss is then about NengoDL's
    first-epoch 0.189; NengoDL's exact data are not known)."""
    rng = np.random.RandomState(seed)
    x = np.repeat(rng.uniform(-1, 1, (n, steps // hold, 1)), hold, axis=1)
    return x.astype(np.float32), (np.cumsum(x, axis=1) * dt).astype(np.float32)


def mean_cross_entropy(outputs, targets):
    """Softmax cross-entropy of the output averaged over time (the spiking readout)."""
    from nengo_onnx.objectives import array_namespace  # noqa: PLC0415

    xp = array_namespace(outputs, targets)
    logits = xp.mean(outputs, axis=1)
    log_softmax = logits - xp.log(xp.sum(xp.exp(logits), axis=-1, keepdims=True))
    return -xp.mean(xp.sum(targets[:, 0, :] * log_softmax, axis=-1))


mean_cross_entropy.takes_targets = True


# -- measuring ------------------------------------------------------------------------------------


def timed_training(
    make_net, data, objective, epochs, truncation=None, profile=None, loss_before=False
):
    """Train a new simulator for ``epochs`` epochs of Adam(1e-3).

    One untimed epoch with ``SGD(0)`` (no change to the parameters) first builds
    and caches the training graph. Returns ``(sim, info)``, the simulator left
    open; ``info`` has ``epoch`` (wall seconds per epoch), ``cpu`` (process CPU
    seconds per epoch, all threads), ``build`` (seconds of the first epoch,
    which builds the graph), ``loss`` (mean loss of each epoch) and, with
    ``loss_before``, ``before`` (``sim.loss`` of the untrained network).
    """
    _, nengo_onnx = _nengo()
    from nengo_onnx import optimizers  # noqa: PLC0415

    net = make_net()
    sim = nengo_onnx.Simulator(net, minibatch_size=MINIBATCH, progress_bar=False, threads=THREADS)
    sim.net = net
    data = {getattr(net, k): v for k, v in data.items()}
    objective = None if objective is None else {net.p: objective}
    info = {"before": sim.loss(data, objective)} if loss_before else {}
    start = time.perf_counter()
    sim.train(data, optimizers.SGD(0.0), n_epochs=1, objective=objective, truncation=truncation)
    info["build"] = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    history = sim.train(
        data,
        optimizers.Adam(1e-3),
        n_epochs=epochs,
        objective=objective,
        truncation=truncation,
        profile=profile or False,
    )
    info["epoch"] = (time.perf_counter() - start) / epochs
    info["cpu"] = (time.process_time() - cpu) / epochs
    info["loss"] = history["loss"]
    return sim, info


def repeated(args, key, results, make_net, data, objective, truncation=None, after=None):
    """`timed_training` ``args.repeats`` times; stores the best times under ``key``.

    ``after(sim, info)`` runs on the first repeat's simulator (e.g. to test it).
    """
    walls, cpus = [], []
    for i in range(args.repeats):
        profile = args.profile_dir and i == 0 and os.path.join(args.profile_dir, f"{key}.json")
        sim, info = timed_training(
            make_net, data, objective, args.epochs, truncation, profile, loss_before=i == 0
        )
        walls.append(info["epoch"])
        cpus.append(info["cpu"])
        if i == 0:
            results[f"{key}_build"] = info["build"]
            results[f"{key}_loss_before"] = info["before"]
            results[f"{key}_loss_first"] = info["loss"][0]
            results[f"{key}_loss"] = info["loss"][-1]
            if after is not None:
                after(sim, info)
        sim.close()
    results[f"{key}_epoch"] = min(walls)
    results[f"{key}_cpu"] = min(cpus)
    results[f"{key}_epochs"] = walls


def accuracy(trained, make_net, x, labels, steps):
    """Test accuracy of ``make_net()`` with ``trained``'s parameters, each image held
    ``steps`` steps; the class is the argmax of the output averaged over the steps."""
    _, nengo_onnx = _nengo()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "params")
        trained.save_params(path)
        net = make_net()
        with nengo_onnx.Simulator(net, minibatch_size=len(x), progress_bar=False) as sim:
            sim.load_params(path)
            sim.run_steps(steps, data={net.inp: np.repeat(x[:, None], steps, axis=1)})
            out = sim.data[net.p].mean(axis=1)
    return float(np.mean(np.argmax(out, axis=-1) == labels))


def bench_a(args, results):
    from nengo_onnx.objectives import softmax_cross_entropy  # noqa: PLC0415

    nengo, _ = _nengo()
    xtr, ytr, xte, yte = digits()
    make = lambda: digits_net(nengo.RectifiedLinear(amplitude=0.01))  # noqa: E731

    def test(sim, info):
        results["a_accuracy"] = accuracy(sim, make, xte, yte, 1)

    repeated(
        args,
        "a",
        results,
        make,
        {"inp": xtr[:, None], "p": one_hot(ytr)},
        softmax_cross_entropy,
        after=test,
    )


def bench_b(args, results):
    x, y = integrator_data()
    for key, truncation in (("b", None), ("b10", 10)):
        repeated(args, key, results, integrator_net, {"inp": x, "p": y}, None, truncation)


def bench_c(args, results):
    from nengo_onnx.objectives import softmax_cross_entropy  # noqa: PLC0415

    nengo, _ = _nengo()
    xtr, ytr, xte, yte = digits()
    lif = nengo.LIF(amplitude=0.01)
    spiking = lambda: digits_net(lif)  # noqa: E731

    def test(key):
        def after(sim, info):
            results[f"{key}_accuracy"] = accuracy(sim, spiking, xte, yte, SPIKING_STEPS)

        return after

    runs = argparse.Namespace(**{**vars(args), "repeats": 1})  # the spiking runs are long
    repeated(
        runs,
        "c",
        results,
        spiking,
        {"inp": xtr[:, None], "p": one_hot(ytr)},
        softmax_cross_entropy,
        after=test("c"),
    )
    held = {
        "inp": np.repeat(xtr[:, None], SPIKING_STEPS, axis=1),
        "p": one_hot(ytr, SPIKING_STEPS),
    }
    for mode in args.spiking_gradients:
        make = lambda mode=mode: digits_net(lif, spiking_gradient=mode)  # noqa: E731
        repeated(
            runs, f"c_{mode}", results, make, held, mean_cross_entropy, after=test(f"c_{mode}")
        )


def import_time(repeats=5):
    code = (
        "import time; t = time.perf_counter(); import nengo_onnx; print(time.perf_counter() - t)"
    )
    return min(
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(repeats)
    )


def peak_memory_mb(args):
    """ru_maxrss (MB) of a fresh process running benchmark (a) once.

    Run it before anything big: a child's ru_maxrss counts the parent's pages
    between fork and exec.
    """
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--only",
        "a",
        "--repeats",
        "1",
        "--epochs",
        str(args.epochs),
        "--json",
        os.devnull,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode})")
    return usage.ru_maxrss / 1024.0  # kilobytes on Linux


# -- report ------------------------------------------------------------------------------------


def table(results):
    rows = [
        ("| benchmark | metric | nengo_onnx | NengoDL 3.6 | goal |",),
        ("|---|---|---|---|---|",),
    ]

    def row(name, metric, key, fmt, ref=None, goal=""):
        if key not in results:
            return
        value = format(results[key], fmt)
        ref = "-" if ref is None else (format(ref, fmt) if not isinstance(ref, str) else ref)
        rows.append((f"| {name} | {metric} | {value} | {ref} | {goal} |",))

    def time_goal(key, ref):
        if key not in results:
            return ""
        ok = results[key] <= ref / 2
        return f"<= {ref / 2:.3g} s: {'met' if ok else 'missed'} ({results[key] / ref:.2f}x)"

    def at_least(key, ref):  # NengoDL's figures are rounded to 3 digits
        if key not in results:
            return ""
        return f">= {ref}: {'met' if round(results[key], 3) >= ref else 'missed'}"

    def at_most(key, ref):
        if key not in results:
            return ""
        return f"<= {ref}: {'met' if results[key] <= ref else 'missed'}"

    def timing(name, key, ref=None):
        row(
            name,
            "s / epoch (wall, best)",
            f"{key}_epoch",
            ".4f",
            ref,
            time_goal(f"{key}_epoch", ref) if ref else "",
        )
        row(name, "CPU s / epoch", f"{key}_cpu", ".4f")
        row(name, "first epoch s (builds the graph)", f"{key}_build", ".2f")

    timing("(a) digits MLP", "a", NENGODL["a_epoch"])
    row(
        "(a) digits MLP",
        "test accuracy",
        "a_accuracy",
        ".3f",
        NENGODL["a_accuracy"],
        at_least("a_accuracy", NENGODL["a_accuracy"]),
    )
    for key, label in (("b", "full BPTT"), ("b10", "truncation=10")):
        name = f"(b) integrator, {label}"
        timing(name, key, NENGODL[f"{key}_epoch"])
        row(name, "loss before training", f"{key}_loss_before", ".3g")
        row(name, "loss, epoch 1", f"{key}_loss_first", ".3g", NENGODL.get(f"{key}_loss_first"))
        row(
            name,
            "loss, epoch 10",
            f"{key}_loss",
            ".3g",
            NENGODL[f"{key}_loss"],
            at_most(f"{key}_loss", NENGODL[f"{key}_loss"]),
        )
    name = "(c) spiking digits, rate-trained"
    row(
        name,
        "spiking test accuracy",
        "c_accuracy",
        ".3f",
        NENGODL["c_accuracy"],
        at_least("c_accuracy", NENGODL["c_accuracy"]),
    )
    timing(name, "c")
    for mode in ("rate", "surrogate"):
        name = f'(c) spiking digits, spike-aware "{mode}" ({SPIKING_STEPS} steps)'
        row(
            name,
            "spiking test accuracy",
            f"c_{mode}_accuracy",
            ".3f",
            NENGODL["c_accuracy"],
            at_least(f"c_{mode}_accuracy", NENGODL["c_accuracy"]),
        )
        row(name, "loss, epoch 10", f"c_{mode}_loss", ".4f")
        timing(name, f"c_{mode}")
    row("import nengo_onnx", "s", "import", ".2f", NENGODL["import"], at_most("import", 1.0))
    row(
        "peak memory, process running (a)",
        "MB",
        "memory",
        ".0f",
        "580-720",
        at_most("memory", 250),
    )
    return "\n".join(r[0] for r in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    # memory first: a child's ru_maxrss includes the parent's pages at fork time
    parser.add_argument(
        "--only",
        nargs="+",
        default=["memory", "import", "a", "b", "c"],
        choices=["memory", "import", "a", "b", "c"],
    )
    parser.add_argument(
        "--spiking-gradients",
        nargs="*",
        default=["rate", "surrogate"],
        choices=["rate", "surrogate"],
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        dest="profile_dir",
        default=None,
        help="write onnxruntime profiles of (a) and (b) here",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="onnxruntime intra-op threads (default: one per core)",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    global THREADS
    THREADS = args.threads
    if args.profile_dir:
        os.makedirs(args.profile_dir, exist_ok=True)

    results = {}
    load = os.getloadavg()
    steps = {"a": bench_a, "b": bench_b, "c": bench_c}
    order = ["memory", "import", "a", "b", "c"]
    for name in sorted(set(args.only), key=order.index):
        start = time.perf_counter()
        if name in steps:
            steps[name](args, results)
        elif name == "import":
            results["import"] = import_time()
        elif name == "memory":
            results["memory"] = peak_memory_mb(args)
        print(f"[{name}: {time.perf_counter() - start:.1f} s]", file=sys.stderr)
    results["load_before"] = load
    results["load_after"] = os.getloadavg()
    print(table(results))
    print(
        f"\nload average before {load[0]:.2f}, after {results['load_after'][0]:.2f} "
        f"({os.cpu_count()} CPUs)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
