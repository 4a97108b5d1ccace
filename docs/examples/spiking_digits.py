"""Spiking digits: train with rate LIF neurons, run with spiking LIF neurons, deploy.

scikit-learn's bundled 8x8 digits (no download) are classified by one layer of
LIF neurons. Training replaces the spiking LIF neurons by their smoothed rate
form (``configure_settings(lif_smoothing=...)``), with each image shown for one
timestep; the trained network then runs with spiking neurons, each image held
for several timesteps, and its accuracy grows with the number of timesteps.
Finally the spiking network is exported with ``nengo-onnx compile`` (one file for
any batch size) and run with ``nengo-onnx run`` (onnxruntime only), which gives the
same predictions, and ``nengo-onnx quantize`` writes it with int8 weights.

Run it with ``python docs/examples/spiking_digits.py [--quick] [--out DIR]``;
``docs/examples/spiking_digits.md`` explains each step. The network can also be
compiled on its own::

    nengo-onnx compile docs/examples/spiking_digits.py:build_network \\
        --params digits_params.npz --steps 10 --batch dynamic -o digits.onnx
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import nengo
import numpy as np

import nengo_onnx

HERE = os.path.dirname(os.path.abspath(__file__))
#: The figures this script writes (the test suite checks that they exist).
FIGURES = ("spiking_digits_loss.png", "spiking_digits_accuracy.png", "spiking_digits_raster.png")


def load_digits(n_train=1440, n_test=352, seed=0):
    """scikit-learn's digits scaled to [0, 1], shuffled: ``(x_train, y_train, x_test, y_test)``.

    (The digits are ordered by writer: shuffling puts every writer in both sets.)
    """
    from sklearn.datasets import load_digits as sklearn_digits  # noqa: PLC0415

    digits = sklearn_digits()
    order = np.random.RandomState(seed).permutation(len(digits.target))
    x = (digits.data[order] / 16.0).astype(np.float32)
    y = digits.target[order]
    return x[:n_train], y[:n_train], x[n_train : n_train + n_test], y[n_train : n_train + n_test]


def build_network(n_neurons=256, seed=0):
    """``image (64) -> LIF neurons -> digit (10)``: all-to-all weights, trained."""
    with nengo.Network(seed=seed, label="spiking digits") as net:
        # training uses the LIF rate curve, smoothed (SoftLIF) so it has a gradient at 0
        nengo_onnx.configure_settings(lif_smoothing=0.01)
        net.config[nengo.Connection].synapse = None

        net.image = nengo.Node(np.zeros(64), label="image")
        net.hidden = nengo.Ensemble(
            n_neurons, 1, neuron_type=nengo.LIF(amplitude=0.01), label="hidden"
        )
        net.digit = nengo.Node(size_in=10, label="digit")
        nengo.Connection(
            net.image,
            net.hidden.neurons,
            transform=_dense(n_neurons, 64, 1.0),
            label="image_to_hidden",
        )
        nengo.Connection(
            net.hidden.neurons,
            net.digit,
            transform=_dense(10, n_neurons, 1.0),
            label="hidden_to_digit",
        )
        net.p_digit = nengo.Probe(net.digit, label="digit_out")
        net.p_spikes = nengo.Probe(net.hidden.neurons[:40], label="spikes")
    return net


def _dense(n_out, n_in, scale):
    """A dense transform with Glorot-uniform initial weights."""
    limit = scale * np.sqrt(6.0 / (n_in + n_out))
    return nengo.transforms.Dense((n_out, n_in), init=nengo.dists.Uniform(-limit, limit))


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def train(net, x_train, y_train, epochs, params_path):
    """Train with rate neurons (one step per image); returns the loss per epoch."""
    data = {net.image: x_train[:, None, :], net.p_digit: np.eye(10)[y_train][:, None, :]}
    with nengo_onnx.Simulator(net, minibatch_size=32, progress_bar=False) as sim:
        history = sim.train(
            data,
            nengo_onnx.optimizers.Adam(1e-3),
            n_epochs=epochs,
            objective={net.p_digit: nengo_onnx.objectives.softmax_cross_entropy},
        )
        sim.save_params(params_path)
    return history["loss"]


def run_spiking(net, x_test, n_steps, params_path):
    """Run every test image for ``n_steps`` spiking steps (the whole test set at once)."""
    with nengo_onnx.Simulator(net, minibatch_size=len(x_test), progress_bar=False) as sim:
        sim.load_params(params_path)
        sim.run_steps(n_steps, data={net.image: np.tile(x_test[:, None], (1, n_steps, 1))})
        return np.array(sim.data[net.p_digit]), np.array(sim.data[net.p_spikes])


def mean_output(outputs):
    """The output averaged over the first ``t`` steps, for every ``t`` (spike counts)."""
    steps = np.arange(1, outputs.shape[1] + 1)[None, :, None]
    return np.cumsum(outputs, axis=1) / steps


def cli(*args):
    """Run ``nengo-onnx ARGS`` (the installed command, through this Python)."""
    command = [sys.executable, "-m", "nengo_onnx.cli", *map(str, args)]
    print("$ nengo-onnx " + " ".join(map(str, args)))
    subprocess.run(command, check=True)


def export_and_run(x_test, x_calibration, n_steps, params_path, workdir):
    """Compile the spiking network with its trained parameters (streaming, 10 steps
    per call, any batch size), run the file for ``n_steps``, quantize it to int8
    weights (calibrated on training images) and run that.

    Returns ``({"float32" | "int8": digit_out}, {"float32" | "int8": file size})``.
    """
    onnx_path = os.path.join(workdir, "digits.onnx")
    int8_path = os.path.join(workdir, "digits_int8.onnx")
    inputs_path = os.path.join(workdir, "digits_images.npz")
    calibration_path = os.path.join(workdir, "digits_calibration.npz")
    cli(
        "compile",
        f"{os.path.abspath(__file__)}:build_network",
        "--params",
        params_path,
        "--steps",
        10,
        "--batch",
        "dynamic",
        "-o",
        onnx_path,
        "--quiet",
    )
    np.savez(inputs_path, image=np.tile(x_test[:, None], (1, n_steps, 1)))
    np.savez(calibration_path, image=np.tile(x_calibration[:, None], (1, n_steps, 1)))
    cli("quantize", onnx_path, "-o", int8_path, "--calibration", calibration_path)
    outputs, sizes = {}, {}
    for kind, path in (("float32", onnx_path), ("int8", int8_path)):
        probes_path = os.path.join(workdir, f"digits_probes_{kind}.npz")
        cli("run", path, "--inputs", inputs_path, "-o", probes_path, "--quiet")
        with np.load(probes_path) as probes:
            outputs[kind] = probes["digit_out"]
        sizes[kind] = os.path.getsize(path)
    return outputs, sizes


def plot(out, losses, acc_steps, rate_acc, exported_acc, spikes, logits, label):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(np.arange(1, len(losses) + 1), losses, "o-")
    ax.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="Training (rate LIF)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, FIGURES[0]), dpi=80)

    fig, ax = plt.subplots(figsize=(5, 3))
    steps = np.arange(1, len(acc_steps) + 1)
    ax.plot(steps, acc_steps, label="spiking LIF (nengo_onnx.Simulator)")
    ax.axhline(rate_acc, color="k", ls="--", label="rate LIF, 1 step")
    ax.plot(steps[-1], exported_acc, "rs", label="exported .onnx, nengo-onnx run")
    low = min(min(acc_steps), rate_acc) - 0.05
    ax.set(
        xlabel="timesteps per image",
        ylabel="test accuracy",
        ylim=(max(low, 0), 1.005),
        title="Accuracy against presentation time",
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, FIGURES[1]), dpi=80)

    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(5, 4), sharex=True)
    t = np.arange(1, spikes.shape[0] + 1)
    for i in range(spikes.shape[1]):
        ax0.plot(t[spikes[:, i] > 0], np.full(np.sum(spikes[:, i] > 0), i), "k|", ms=4)
    ax0.set(ylabel="neuron", title=f"40 hidden neurons spiking (a test '{label}')")
    ax1.plot(t, logits, color="0.7", lw=1)
    ax1.plot(t, logits[:, label], color="C0", lw=2, label=f"output {label} (the answer)")
    ax1.set(xlabel="timestep", ylabel="mean output so far")
    ax1.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, FIGURES[2]), dpi=80)
    plt.close("all")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast configuration")
    parser.add_argument("--out", default=HERE, help="directory for the figures")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    epochs, n_steps = (3, 20) if args.quick else (10, 30)
    start = time.time()

    x_train, y_train, x_test, y_test = load_digits()
    if args.quick:
        x_test, y_test = x_test[:96], y_test[:96]
    net = build_network()
    with tempfile.TemporaryDirectory() as workdir:
        params = os.path.join(workdir, "digits_params.npz")
        losses = train(net, x_train, y_train, epochs, params)
        print(f"trained {epochs} epochs: loss {losses[0]:.3f} -> {losses[-1]:.3f}")

        rate_logits, _ = run_spiking(rate_network(), x_test, 1, params)
        rate_acc = accuracy(rate_logits[:, 0], y_test)
        logits, spikes = run_spiking(net, x_test, n_steps, params)
        acc_steps = [accuracy(m, y_test) for m in np.moveaxis(mean_output(logits), 1, 0)]
        print(
            f"rate accuracy {rate_acc:.3f}; spiking accuracy after 1, 5, {n_steps} steps: "
            f"{acc_steps[0]:.3f}, {acc_steps[4]:.3f}, {acc_steps[-1]:.3f}"
        )

        outputs, sizes = export_and_run(x_test, x_train[:96], n_steps, params, workdir)
        exported = outputs["float32"]
        exported_acc = accuracy(mean_output(exported)[:, -1], y_test)
        same = np.mean(
            np.argmax(mean_output(exported)[:, -1], -1)
            == np.argmax(mean_output(logits)[:, -1], -1)
        )
        print(f"exported model: accuracy {exported_acc:.3f} ({same:.1%} same predictions)")
        int8_acc = accuracy(mean_output(outputs["int8"])[:, -1], y_test)
        print(
            f"float32 file: {sizes['float32']:,} bytes, accuracy {exported_acc:.4f}; "
            f"int8 file: {sizes['int8']:,} bytes, accuracy {int8_acc:.4f}"
        )

    plot(
        args.out,
        losses,
        acc_steps,
        rate_acc,
        exported_acc,
        spikes[0],
        mean_output(logits)[0],
        y_test[0],
    )
    print(f"figures in {args.out}; {time.time() - start:.1f} s")


def rate_network():
    """The same network with rate LIF neurons (same structure: the parameters load)."""
    rate = build_network()
    rate.hidden.neuron_type = nengo.LIFRate(amplitude=0.01)
    return rate


if __name__ == "__main__":
    main()
