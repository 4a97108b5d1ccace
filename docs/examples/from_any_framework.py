"""From any framework: a scikit-learn MLP -> ONNX -> a spiking Nengo network, trained, exported.

scikit-learn trains a multi-layer perceptron on its bundled 8x8 digits; skl2onnx
writes it as ONNX; ``nengo_onnx.Converter`` turns the ONNX graph into a native
Nengo network (Connections and an Ensemble of ReLU neurons), checked against
onnxruntime with ``converter.verify``. The same conversion with
``swap_activations`` gives a spiking network, whose accuracy is measured; it is
then trained further with the neurons spiking (``spiking_gradient="rate"``) and
exported to a ``.onnx`` file, run with onnxruntime only.

Run it with ``python docs/examples/from_any_framework.py [--quick] [--out DIR]``;
``docs/examples/from_any_framework.md`` explains each step.
"""

import argparse
import os
import tempfile
import time

import nengo
import numpy as np
import onnx

import nengo_onnx

HERE = os.path.dirname(os.path.abspath(__file__))
#: The figures this script writes (the test suite checks that they exist).
FIGURES = ("from_any_framework_accuracy.png",)


def load_digits(n_train=1440, seed=0):
    """scikit-learn's digits scaled to [0, 1], shuffled: ``(x_train, y_train, x_test, y_test)``."""
    from sklearn.datasets import load_digits as sklearn_digits  # noqa: PLC0415

    digits = sklearn_digits()
    order = np.random.RandomState(seed).permutation(len(digits.target))
    x = (digits.data[order] / 16.0).astype(np.float32)
    y = digits.target[order]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def sklearn_to_onnx(x_train, y_train, hidden=64):
    """Train an MLP with scikit-learn and convert it with skl2onnx; returns the logits model."""
    from skl2onnx import to_onnx  # noqa: PLC0415
    from sklearn.neural_network import MLPClassifier  # noqa: PLC0415

    clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=300, random_state=0)
    clf.fit(x_train, y_train)
    full = to_onnx(clf, x_train[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    # skl2onnx's graph ends in Softmax, ArgMax and ai.onnx.ml operators (the labels); keep
    # the float logits, the input of the Softmax, as the model's output
    softmax = next(n for n in full.graph.node if n.op_type == "Softmax")
    logits = onnx.utils.Extractor(full).extract_model(["X"], [softmax.input[0]])
    return clf, logits


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def spiking_accuracy(sim, converter, x, y, n_steps):
    """Accuracy of the output averaged over the first ``t`` steps, for every ``t``."""
    (node,) = converter.inputs.values()
    (probe,) = converter.outputs.values()
    sim.reset()
    sim.run_steps(n_steps, data={node: np.tile(x[:, None], (1, n_steps, 1))})
    out = np.array(sim.data[probe])
    mean = np.cumsum(out, axis=1) / np.arange(1, n_steps + 1)[None, :, None]
    return np.array([accuracy(mean[:, t], y) for t in range(n_steps)]), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast configuration")
    parser.add_argument("--out", default=HERE, help="directory for the figures")
    args = parser.parse_args(argv)
    epochs, n_train, n_steps = (1, 320, 10) if args.quick else (5, 1440, 20)
    start = time.time()

    x_train, y_train, x_test, y_test = load_digits()
    clf, model = sklearn_to_onnx(x_train, y_train)
    rate_acc = float(np.mean(clf.predict(x_test) == y_test))
    print(f"scikit-learn MLP: test accuracy {rate_acc:.3f}")

    # 1. the rate network: native Nengo objects computing what onnxruntime computes
    converter = nengo_onnx.Converter(model)
    converter.verify(x_test)
    print("converted rate network matches onnxruntime on every test digit")

    # 2. spiking: ReLU -> spiking ReLU, faster firing, filtered outputs
    spiking = nengo_onnx.Converter(
        model,
        swap_activations={"Relu": nengo.SpikingRectifiedLinear()},
        scale_firing_rates=20,
        synapse=0.005,
    )
    with spiking.net:
        # train with the neurons spiking, through the rate curve's gradient
        nengo_onnx.configure_settings(spiking_gradient="rate")
    (node,) = spiking.inputs.values()
    (probe,) = spiking.outputs.values()
    with nengo_onnx.Simulator(
        spiking.net, minibatch_size=len(x_test), progress_bar=False, seed=0
    ) as sim:
        before, _ = spiking_accuracy(sim, spiking, x_test, y_test, n_steps)
        params = sim.save_params(os.path.join(tempfile.mkdtemp(), "converted"))
    print(f"spiking, {n_steps} steps: accuracy {before[-1]:.3f}")

    # 3. train further, spiking (each digit held for n_steps steps)
    data = {
        node: np.tile(x_train[:n_train, None], (1, n_steps, 1)),
        probe: np.tile(np.eye(10)[y_train[:n_train]][:, None], (1, n_steps, 1)),
    }
    with nengo_onnx.Simulator(spiking.net, minibatch_size=32, progress_bar=False, seed=0) as sim:
        sim.load_params(params)
        history = sim.train(
            data,
            nengo_onnx.optimizers.Adam(1e-3),
            n_epochs=epochs,
            objective={probe: nengo_onnx.objectives.softmax_cross_entropy},
        )
        params = sim.save_params(os.path.join(tempfile.mkdtemp(), "trained"))
    print("training loss per epoch:", np.round(history["loss"], 4).tolist())
    with nengo_onnx.Simulator(
        spiking.net, minibatch_size=len(x_test), progress_bar=False, seed=0
    ) as sim:
        sim.load_params(params)
        after, out = spiking_accuracy(sim, spiking, x_test, y_test, n_steps)
        # 4. export the trained spiking network: n_steps steps from the initial state
        path = os.path.join(tempfile.mkdtemp(), "digits_spiking.onnx")
        info = sim.export(path, fixed=n_steps)
    print(f"spiking after training, {n_steps} steps: accuracy {after[-1]:.3f}")

    from nengo_onnx.exporting.runner import ExportedModel  # noqa: PLC0415

    exported = ExportedModel(path)
    # the exported inputs: the image, and the converter's constant bias Node (its default)
    in_name = next(i["name"] for i in info.inputs if i["label"] == "X")
    out_name = info.outputs[0]["name"]
    result = exported.run({in_name: np.tile(x_test[:, None], (1, n_steps, 1))}, n_steps)
    exported_acc = accuracy(np.asarray(result[out_name]).mean(axis=1), y_test)
    name = os.path.basename(path)
    print(f"exported {name} ({info.file_size} bytes): accuracy {exported_acc:.3f}")
    plot(args.out, rate_acc, before, after, exported_acc)
    print(f"done in {time.time() - start:.0f} s")


def plot(out, rate_acc, before, after, exported_acc):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    steps = np.arange(1, len(before) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.axhline(rate_acc, color="k", ls="--", label="scikit-learn MLP (rates)")
    ax.plot(steps, before, label="converted, spiking")
    ax.plot(steps, after, label="converted, spiking, trained further")
    ax.plot(steps[-1], exported_acc, "rs", label="exported .onnx (onnxruntime)")
    ax.set_xlabel("timesteps each digit is shown")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, FIGURES[0]), dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
