"""From ONNX: a convolutional network in ONNX, inside a spiking Nengo network, trained end to end.

A small convolutional network is built here as an ONNX model (with onnx's own
helpers: no download; a model exported by PyTorch, Keras or any other framework
works the same way) and inserted into a Nengo network with ``OnnxNode``, in
front of an ensemble of spiking LIF neurons that classifies scikit-learn's
bundled 8x8 digits. ``sim.train`` trains the ONNX model's weights and the Nengo
weights together (the LIF neurons run as smoothed rates during training); the
trained network then runs with spiking neurons, in ``nengo_onnx.Simulator`` and,
after ``freeze_params``, in plain ``nengo.Simulator``.

Run it with ``python docs/examples/from_onnx.py [--quick] [--out DIR]``;
``docs/examples/from_onnx.md`` explains each step.
"""

import argparse
import os
import time

import nengo
import numpy as np
from onnx import TensorProto, helper, numpy_helper

import nengo_onnx

HERE = os.path.dirname(os.path.abspath(__file__))
#: The figures this script writes (the test suite checks that they exist).
FIGURES = ("from_onnx_training.png", "from_onnx_kernels.png")


def conv_model(n_kernels=8, n_features=32, seed=0):
    """``[N, 1, 8, 8]`` images -> ``[N, n_features]`` features, as an ONNX model.

    ``Conv`` (3x3, padded) -> ``Relu`` -> ``MaxPool`` (2x2) -> ``Flatten`` ->
    ``Gemm``, with He-initialized weights. Its float initializers (``kernels``,
    ``kernel_bias``, ``dense``, ``dense_bias``) become trainable parameters.
    """
    rng = np.random.RandomState(seed)
    n_flat = n_kernels * 4 * 4
    weights = {
        "kernels": rng.randn(n_kernels, 1, 3, 3) * np.sqrt(2 / 9),
        "kernel_bias": np.zeros(n_kernels),
        "dense": rng.randn(n_flat, n_features) * np.sqrt(2 / n_flat),
        "dense_bias": np.zeros(n_features),
    }
    nodes = [
        helper.make_node("Conv", ["image", "kernels", "kernel_bias"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "dense", "dense_bias"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_features",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def build_network(model, n_neurons=64, seed=0):
    """``image -> OnnxNode(conv) -> LIF neurons -> digit``."""
    with nengo.Network(seed=seed, label="conv + spiking classifier") as net:
        nengo_onnx.configure_settings(lif_smoothing=0.01)
        net.config[nengo.Connection].synapse = None
        net.image = nengo.Node(np.zeros(64), label="image")
        net.conv = nengo_onnx.OnnxNode(model, label="conv")
        net.hidden = nengo.Ensemble(
            n_neurons, 1, neuron_type=nengo.LIF(amplitude=0.01), label="hidden"
        )
        net.digit = nengo.Node(size_in=10, label="digit")
        nengo.Connection(net.image, net.conv)
        nengo.Connection(
            net.conv, net.hidden.neurons, transform=_dense(n_neurons, net.conv.size_out)
        )
        nengo.Connection(net.hidden.neurons, net.digit, transform=_dense(10, n_neurons))
        net.p_digit = nengo.Probe(net.digit, label="digit_out")
    return net


def _dense(n_out, n_in):
    limit = np.sqrt(6.0 / (n_in + n_out))  # Glorot uniform
    return nengo.transforms.Dense((n_out, n_in), init=nengo.dists.Uniform(-limit, limit))


def load_digits(n_train=1440, n_test=352, seed=0):
    """scikit-learn's digits in [0, 1], shuffled (they are ordered by writer)."""
    from sklearn.datasets import load_digits as sklearn_digits  # noqa: PLC0415

    digits = sklearn_digits()
    order = np.random.RandomState(seed).permutation(len(digits.target))
    x = (digits.data[order] / 16.0).astype(np.float32)
    y = digits.target[order]
    return x[:n_train], y[:n_train], x[n_train : n_train + n_test], y[n_train : n_train + n_test]


def spiking_accuracy(sim, net, x, y, n_steps):
    """Accuracy of the output averaged over ``n_steps`` spiking steps per image."""
    predictions = []
    batch = sim.minibatch_size
    for i in range(0, len(x), batch):
        sim.reset()
        sim.run_steps(n_steps, data={net.image: np.tile(x[i : i + batch, None], (1, n_steps, 1))})
        predictions.append(np.argmax(sim.data[net.p_digit].mean(axis=1), axis=-1))
    return float(np.mean(np.concatenate(predictions) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast configuration")
    parser.add_argument("--out", default=HERE, help="directory for the figures")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    epochs, n_steps, n_nengo = (3, 20, 4) if args.quick else (10, 30, 16)
    start = time.time()

    x_train, y_train, x_test, y_test = load_digits()
    if args.quick:
        x_test, y_test = x_test[:96], y_test[:96]
    model = conv_model()
    net = build_network(model)
    kernels_before = net.conv.get_params()["kernels"]
    train_data = {net.image: x_train[:, None], net.p_digit: np.eye(10)[y_train][:, None]}
    objective = {net.p_digit: nengo_onnx.objectives.softmax_cross_entropy}

    with nengo_onnx.Simulator(net, minibatch_size=32, progress_bar=False) as sim:
        acc_before = spiking_accuracy(sim, net, x_test, y_test, n_steps)
        history = sim.train(
            train_data, nengo_onnx.optimizers.Adam(3e-3), n_epochs=epochs, objective=objective
        )
        acc_after = spiking_accuracy(sim, net, x_test, y_test, n_steps)
        kernels_after = sim.data[net.conv].params["kernels"]
        sim.freeze_params(net)  # the trained weights go into the Nengo objects and the model
    print(
        f"spiking test accuracy ({n_steps} steps per image): {acc_before:.3f} before "
        f"training, {acc_after:.3f} after ({epochs} epochs, loss {history['loss'][-1]:.3f})"
    )

    # the frozen network is an ordinary Nengo network: nengo.Simulator runs it too
    # (calling onnxruntime for the OnnxNode every step), one image at a time
    correct = 0
    for image, label in zip(x_test[:n_nengo], y_test[:n_nengo]):
        net.image.output = image
        with nengo.Simulator(net, progress_bar=False) as ref:
            ref.run_steps(n_steps)
        correct += int(np.argmax(ref.data[net.p_digit].mean(axis=0)) == label)
    net.image.output = np.zeros(64)
    print(f"nengo.Simulator: {correct}/{n_nengo} of the first test images right")

    plot(args.out, history["loss"], acc_before, acc_after, kernels_before, kernels_after)
    print(f"figures in {args.out}; {time.time() - start:.1f} s")


def plot(out, losses, acc_before, acc_after, kernels_before, kernels_after):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(7, 3))
    ax0.plot(np.arange(1, len(losses) + 1), losses, "o-", ms=3)
    ax0.set(xlabel="epoch", ylabel="cross-entropy", title="sim.train (rates)")
    ax1.bar(["before", "after"], [acc_before, acc_after], color=["0.6", "C0"])
    for i, acc in enumerate([acc_before, acc_after]):
        ax1.text(i, acc + 0.02, f"{acc:.3f}", ha="center")
    ax1.set(ylim=(0, 1.1), ylabel="test accuracy", title="spiking, before and after")
    fig.tight_layout()
    fig.savefig(os.path.join(out, FIGURES[0]), dpi=80)

    n = len(kernels_before)
    vmax = max(np.abs(kernels_before).max(), np.abs(kernels_after).max())
    fig, axes = plt.subplots(2, n, figsize=(n * 0.8, 2))
    for row, (kernels, name) in enumerate(
        ((kernels_before, "initial"), (kernels_after, "trained"))
    ):
        for i in range(n):
            axes[row, i].imshow(kernels[i, 0], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            axes[row, i].set_xticks([])
            axes[row, i].set_yticks([])
        axes[row, 0].set_ylabel(name, fontsize=8)
    fig.suptitle("The ONNX model's 3x3 kernels", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, FIGURES[1]), dpi=80)
    plt.close("all")


if __name__ == "__main__":
    main()
