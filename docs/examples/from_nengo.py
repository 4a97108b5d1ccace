"""From Nengo: optimize a classic Nengo model with ``sim.train``, then keep it in Nengo.

The model multiplies two inputs with one small ensemble of ten spiking LIF
neurons: the NEF's decoders leave a visible error with so few neurons.
``sim.train`` optimizes the encoders, biases and decoders end to end on the
network's actual dynamics (synapse included), with a custom objective that
scores the output once it has settled. The trained values are then written
back into the Nengo objects with ``sim.freeze_params``, and plain
``nengo.Simulator`` keeps the improvement.

Two ways of training spiking neurons are compared: NengoDL's (spiking neurons
run as their rate form during training, the default) and nengo-onnx's
spike-aware training (``configure_settings(spiking_gradient="rate")``: they
keep spiking, with the rate's gradient).

Run it with ``python docs/examples/from_nengo.py [--quick] [--out DIR]``;
``docs/examples/from_nengo.md`` explains each step.
"""

import argparse
import os
import time

import nengo
import numpy as np

import nengo_onnx
from nengo_onnx.objectives import array_namespace

HERE = os.path.dirname(os.path.abspath(__file__))
#: The figures this script writes (the test suite checks that they exist).
FIGURES = ("from_nengo_output.png", "from_nengo_loss.png")
DT = 0.001
#: Steps each input pair is held (fewer with --quick), and the steps the output takes
#: to settle (three synaptic time constants).
PRESENT, SETTLE = 50, 15


def build_network(n_neurons=10, spiking_gradient=None, seed=0):
    """``inputs (2) -> ens (LIF) -> product (1)``, decoding ``x0 * x1``."""
    with nengo.Network(seed=seed, label="product") as net:
        nengo_onnx.configure_settings(spiking_gradient=spiking_gradient)
        net.inputs = nengo.Node(np.zeros(2), label="inputs")
        # amplitude=0.01 scales the neurons' output so that the decoders are about
        # 1 in size, the scale that the optimizers' step sizes suit
        net.ens = nengo.Ensemble(
            n_neurons, 2, radius=1.4, neuron_type=nengo.LIF(amplitude=0.01), label="ens"
        )
        net.product = nengo.Node(size_in=1, label="product")
        nengo.Connection(net.inputs, net.ens, synapse=None)
        net.conn = nengo.Connection(
            net.ens, net.product, function=lambda x: x[0] * x[1], synapse=0.005, label="decoders"
        )
        net.p = nengo.Probe(net.product, label="product_probe")
    return net


def settled_mse(outputs, targets):
    """Mean squared error once the output has settled (after ``SETTLE`` steps).

    Written with array-API operations: it runs on numpy arrays and is traced
    into the training graph.
    """
    xp = array_namespace(outputs, targets)
    error = outputs[:, SETTLE:, :] - targets[:, SETTLE:, :]
    return xp.mean(error * error)


def make_data(n, seed, present=PRESENT):
    """``n`` random pairs in [-1, 1], each held ``present`` steps, and their products."""
    pairs = np.random.RandomState(seed).uniform(-1, 1, size=(n, 2))
    x = np.tile(pairs[:, None], (1, present, 1))
    return x, x[..., :1] * x[..., 1:]


def sequence_error(simulator, net, pairs, present=PRESENT):
    """Present ``pairs`` one after the other; ``(settled mse, output, target)``."""
    net.inputs.output = nengo.processes.PresentInput(pairs, present * DT)
    try:
        with simulator(net, dt=DT, progress_bar=False) as sim:
            sim.run_steps(len(pairs) * present)
            output = np.array(sim.data[net.p]).reshape(len(pairs), present)
    finally:
        net.inputs.output = np.zeros(2)
    target = np.repeat(pairs[:, :1] * pairs[:, 1:], present, axis=1)
    error = float(np.mean((output - target)[:, SETTLE:] ** 2))
    return error, output.ravel(), target.ravel()


def train(net, x, y, epochs):
    """``sim.train`` with the settled error, then ``freeze_params``; the loss history."""
    with nengo_onnx.Simulator(net, minibatch_size=32, progress_bar=False) as sim:
        history = sim.train(
            {net.inputs: x, net.p: y},
            nengo_onnx.optimizers.Adam(1e-2),
            n_epochs=epochs,
            objective={net.p: settled_mse},
        )
        sim.freeze_params(net)
    return history["loss"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast configuration")
    parser.add_argument("--out", default=HERE, help="directory for the figures")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.quick:
        n_train, epochs, n_test, present = 256, 10, 24, 30
    else:
        n_train, epochs, n_test, present = 512, 30, 64, PRESENT
    start = time.time()
    x, y = make_data(n_train, 1, present)
    test_pairs = make_data(n_test, 2, present)[0][:, 0]

    # 1. the NEF solution, in nengo.Simulator
    before, out_before, target = sequence_error(
        nengo.Simulator, build_network(), test_pairs, present
    )
    print(f"nengo.Simulator, NEF decoders: error {before:.4f}")

    results = {}
    for name, gradient in (("rate substitution (NengoDL's)", None), ("spike-aware", "rate")):
        # 2. train in nengo_onnx, 3. freeze_params writes the values into the network
        net = build_network(spiking_gradient=gradient)
        losses = train(net, x, y, epochs)
        # 4. the trained network in plain nengo.Simulator
        after, out_after, _ = sequence_error(nengo.Simulator, net, test_pairs, present)
        after_onnx, _, _ = sequence_error(nengo_onnx.Simulator, net, test_pairs, present)
        results[name] = (losses, after, out_after)
        print(
            f"trained, {name}: nengo.Simulator error {after:.4f} "
            f"(nengo_onnx.Simulator {after_onnx:.4f})"
        )

    plot(args.out, out_before, target, before, results, present)
    print(f"figures in {args.out}; {time.time() - start:.1f} s")


def plot(out, out_before, target, before, results, present, n_show=6):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    steps = n_show * present
    t = np.arange(1, steps + 1) * DT
    rows = [("NEF decoders", before, out_before, "0.5")]
    rows += [
        (f"trained, {name}", error, output, color)
        for (name, (_, error, output)), color in zip(results.items(), ("C1", "C0"))
    ]
    fig, axes = plt.subplots(len(rows), 1, figsize=(6, 5), sharex=True, sharey=True)
    for ax, (name, error, output, color) in zip(axes, rows):
        ax.plot(t, output[:steps], color=color, lw=1)
        ax.plot(t, target[:steps], "k--", lw=1.5)
        ax.set_title(f"{name}: settled mse {error:.4f}", fontsize=9)
        ax.set_ylabel("x0 * x1")
    axes[-1].set_xlabel("time [s] (dashed: target)")
    fig.suptitle("The product in nengo.Simulator", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, FIGURES[0]), dpi=80)

    fig, ax = plt.subplots(figsize=(5, 3))
    for (name, (losses, _, _)), color in zip(results.items(), ("C1", "C0")):
        ax.plot(np.arange(1, len(losses) + 1), losses, "o-", ms=3, color=color, label=name)
    ax.set(xlabel="epoch", ylabel="training loss (settled mse)", title="sim.train", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, FIGURES[1]), dpi=80)
    plt.close("all")


if __name__ == "__main__":
    main()
