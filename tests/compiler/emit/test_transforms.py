"""Dense, Sparse, Convolution and ConvolutionTranspose transforms against ``nengo.Simulator``.

Each network holds many connections (one per case) from input Nodes, so that one
compiled model covers them all. Every minibatch item gets its own input (through
``data``) and must equal ``nengo.Simulator`` run on that input.
"""

import nengo
import numpy as np
import pytest
import scipy.sparse
from nengo.dists import Gaussian, Uniform
from nengo.processes import PresentInput

import nengo_onnx
from nengo_onnx.config import configure_settings

DT = 0.001
STEPS = 5
B = 2
COMBOS = [(True, 1), (True, 3), (False, 1), (False, 4)]  # (optimize, unroll)


def inputs(item, size, k):
    """Input ``k``'s values for minibatch ``item``: ``[STEPS, size]``."""
    return np.random.RandomState(1000 * item + k).uniform(-1, 1, size=(STEPS, size))


class Case:
    """Builds one network; ``add_input`` makes input Nodes that ``data`` can override."""

    def __init__(self, item, seed, dtype="float64"):
        self.item = item
        self.net = nengo.Network(seed=seed)
        self.nodes = []
        self.probes = []
        with self.net:
            configure_settings(dtype=dtype)

    def add_input(self, size):
        node = nengo.Node(PresentInput(inputs(self.item, size, len(self.nodes)), DT))
        self.nodes.append(node)
        return node

    def probe(self, obj, label, **kwargs):
        self.probes.append(nengo.Probe(obj, label=label, **kwargs))


def transform_case(case, size_in, transform, size_out, label, pre=None):
    """``input -> Node(size_out)`` through ``transform`` without synapse, probed."""
    pre = case.add_input(size_in) if pre is None else pre
    post = nengo.Node(size_in=size_out, label=label)
    nengo.Connection(pre, post, transform=transform, synapse=None)
    case.probe(post, label)
    return post


def reference(make, cache={}):  # noqa: B006 (a deliberate cache)
    """``nengo.Simulator``'s probe data for every item (cached per network)."""
    if make not in cache:
        results = []
        for item in range(B):
            case = make(item)
            with nengo.Simulator(case.net, dt=DT, progress_bar=False) as sim:
                sim.run_steps(STEPS)
                results.append({p.label: sim.data[p] for p in case.probes})
        cache[make] = results
    return cache[make]


def run_onnx(make, minibatch_size=B, **kwargs):
    case = make(0)
    data = {
        node: np.stack([inputs(b, node.size_out, k) for b in range(minibatch_size)])
        for k, node in enumerate(case.nodes)
    }
    with nengo_onnx.Simulator(
        case.net, dt=DT, minibatch_size=minibatch_size, progress_bar=False, **kwargs
    ) as sim:
        # every operator is emitted: nothing runs in Python
        assert [kind for kind, _ in sim.program.segments] == ["onnx"]
        sim.run_steps(STEPS, data=data)
        return {p.label: sim.data[p] for p in case.probes}, sim


def check(make, atol=1e-10, rtol=1e-8, **kwargs):
    results, sim = run_onnx(make, **kwargs)
    refs = reference(make)
    for item in range(B):
        for label, ref in refs[item].items():
            out = results[label]
            assert out.shape == (B, *ref.shape), label
            np.testing.assert_allclose(
                out[item], ref, atol=atol, rtol=rtol, err_msg=f"{label}, item {item}"
            )
    return sim


# -- Dense -----------------------------------------------------------------------------------


def dense_net(item):
    case = Case(item, seed=1)
    with case.net:
        transform_case(case, 3, 2.5, 3, "scalar")
        transform_case(case, 3, [1.0, -2.0, 0.5], 3, "vector")
        transform_case(case, 3, np.arange(6.0).reshape(2, 3) - 2, 2, "matrix")
        transform_case(case, 1, [[1.0], [-2.0], [3.0]], 3, "column")  # [3, 1] . [1]
        transform_case(case, 3, [[1.0, 2.0, 3.0]], 1, "row")
        transform_case(case, 1, 3.0, 1, "scalar_1d")
        transform_case(case, 4, nengo.Dense((3, 4), init=Uniform(-1, 1)), 3, "dist")
        transform_case(case, 3, nengo.Dense((3, 3), init=[2.0, 1.0, -1.0]), 3, "dense_vector")
        transform_case(case, 2, nengo.Dense((2, 2), init=Gaussian(0, 1)), 2, "dist_square")

        # ensembles: encoders [n, 1] . [1], decoders, neuron -> neuron
        u = case.add_input(1)
        a = nengo.Ensemble(10, 1, neuron_type=nengo.LIFRate())
        b = nengo.Ensemble(10, 2, neuron_type=nengo.RectifiedLinear())
        nengo.Connection(u, a, transform=0.7, synapse=None)
        nengo.Connection(a, b, transform=[[1.0], [-0.5]], synapse=None)
        transform_case(case, None, -1.5, 1, "decoded_scalar", pre=a)
        for label, transform in [
            ("neurons_scalar", 0.1),
            ("neurons_vector", np.linspace(0, 0.2, 10)),
            ("neurons_matrix", np.linspace(-0.1, 0.1, 100).reshape(10, 10)),
        ]:
            c = nengo.Ensemble(10, 1, neuron_type=nengo.RectifiedLinear())
            nengo.Connection(a.neurons, c.neurons, transform=transform, synapse=None)
            case.probe(c.neurons, label)
        case.probe(b, "ens_2d", synapse=None)
        case.probe(a.neurons, "ens_1d_neurons")
    return case


@pytest.mark.parametrize("optimize, unroll", COMBOS)
def test_dense(optimize, unroll):
    check(dense_net, optimize=optimize, unroll_simulation=unroll)


# -- Sparse ----------------------------------------------------------------------------------

INDICES = np.array([[0, 0], [1, 2], [3, 4], [2, 2], [0, 4]])


def sparse_net(item):
    case = Case(item, seed=2)
    with case.net:
        transform_case(
            case,
            5,
            nengo.Sparse((4, 5), indices=INDICES, init=[1.0, 2.0, -3.0, 0.5, 4.0]),
            4,
            "sparse",
        )
        transform_case(
            case, 5, nengo.Sparse((4, 5), indices=INDICES, init=2.0), 4, "sparse_scalar"
        )
        transform_case(
            case, 5, nengo.Sparse((4, 5), indices=INDICES, init=Uniform(-1, 1)), 4, "sparse_dist"
        )
        csr = scipy.sparse.csr_matrix(([1.5, -2.0, 0.5], ([0, 2, 2], [1, 0, 3])), shape=(3, 5))
        transform_case(case, 5, nengo.Sparse((3, 5), init=csr), 3, "scipy_csr")

        u = case.add_input(1)
        a = nengo.Ensemble(6, 1, neuron_type=nengo.RectifiedLinear())
        c = nengo.Ensemble(4, 1, neuron_type=nengo.RectifiedLinear())
        nengo.Connection(u, a, synapse=None)
        coo = scipy.sparse.coo_matrix(([0.2, -0.1, 0.3], ([0, 1, 3], [5, 0, 2])), shape=(4, 6))
        nengo.Connection(
            a.neurons, c.neurons, transform=nengo.Sparse((4, 6), init=coo), synapse=None
        )
        case.probe(c.neurons, "neurons_scipy_coo")
    return case


@pytest.mark.parametrize("optimize, unroll", COMBOS)
def test_sparse(optimize, unroll):
    check(sparse_net, optimize=optimize, unroll_simulation=unroll)


# -- Convolution -----------------------------------------------------------------------------


def conv_cases_2d():
    yield "valid", nengo.Convolution(3, (5, 6, 2), kernel_size=(3, 3))
    yield (
        "same_stride",
        nengo.Convolution(3, (5, 6, 2), kernel_size=(3, 2), strides=(2, 1), padding="same"),
    )
    yield (
        "channels_first",
        nengo.Convolution(3, (2, 5, 6), kernel_size=(2, 3), strides=(1, 2), channels_last=False),
    )
    yield (
        "channels_first_same",
        nengo.Convolution(
            2, (2, 5, 6), kernel_size=(3, 3), strides=(2, 2), padding="same", channels_last=False
        ),
    )
    yield (
        "groups",
        nengo.Convolution(
            4, (5, 6, 4), kernel_size=(3, 3), groups=2, padding="same", strides=(2, 2)
        ),
    )
    yield (
        "depthwise",
        nengo.Convolution(2, (2, 5, 6), kernel_size=(3, 3), groups=2, channels_last=False),
    )
    yield (
        "big_stride",
        nengo.Convolution(2, (5, 6, 2), kernel_size=(1, 2), strides=(3, 4), padding="same"),
    )
    kernel = np.arange(2 * 2 * 2 * 3, dtype=float).reshape(2, 2, 2, 3) / 10 - 1
    yield "init_array", nengo.Convolution(3, (4, 4, 2), kernel_size=(2, 2), init=kernel)
    yield "init_gaussian", nengo.Convolution(2, (4, 4, 2), init=Gaussian(0, 0.3), padding="same")


def conv_cases_1d():
    yield "valid", nengo.Convolution(3, (7, 2), kernel_size=(3,), strides=(1,))
    yield (
        "same_stride",
        nengo.Convolution(2, (7, 2), kernel_size=(2,), strides=(2,), padding="same"),
    )
    yield (
        "channels_first",
        nengo.Convolution(3, (2, 7), kernel_size=(3,), strides=(2,), channels_last=False),
    )
    yield (
        "groups",
        nengo.Convolution(3, (7, 3), kernel_size=(3,), strides=(1,), groups=3, padding="same"),
    )


def transpose_cases_2d():
    yield "valid", nengo.ConvolutionTranspose(3, (3, 4, 2), kernel_size=(3, 3))
    yield (
        "same_stride",
        nengo.ConvolutionTranspose(
            2, (3, 4, 2), kernel_size=(3, 2), strides=(2, 2), padding="same"
        ),
    )
    yield (
        "channels_first",
        nengo.ConvolutionTranspose(
            2, (2, 3, 4), kernel_size=(2, 3), strides=(2, 1), channels_last=False
        ),
    )
    yield (
        "output_shape",
        nengo.ConvolutionTranspose(
            2,
            (3, 4, 2),
            output_shape=(6, 8, 2),
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="same",
        ),
    )
    yield (
        "output_shape_valid",
        nengo.ConvolutionTranspose(
            2, (3, 3, 2), output_shape=(8, 9, 2), kernel_size=(2, 3), strides=(3, 3)
        ),
    )
    yield (
        "big_stride",
        nengo.ConvolutionTranspose(2, (2, 3, 1), kernel_size=(1, 2), strides=(3, 2)),
    )
    yield (
        "init_gaussian",
        nengo.ConvolutionTranspose(2, (3, 3, 2), init=Gaussian(0, 0.3), padding="same"),
    )


def transpose_cases_1d():
    yield "valid", nengo.ConvolutionTranspose(2, (4, 3), kernel_size=(3,), strides=(1,))
    yield (
        "same_stride",
        nengo.ConvolutionTranspose(3, (4, 2), kernel_size=(3,), strides=(2,), padding="same"),
    )
    yield (
        "channels_first",
        nengo.ConvolutionTranspose(2, (2, 4), kernel_size=(2,), strides=(3,), channels_last=False),
    )


def conv_net(cases):
    def make(item):
        case = Case(item, seed=3)
        with case.net:
            for label, transform in cases():
                transform_case(case, transform.size_in, transform, transform.size_out, label)
            # through neurons, from a sliced input
            label, transform = next(iter(cases()))
            u = case.add_input(transform.size_in + 3)
            a = nengo.Ensemble(transform.size_in, 1, neuron_type=nengo.RectifiedLinear())
            nengo.Connection(u[3:], a.neurons, synapse=None)
            transform_case(
                case, None, transform, transform.size_out, "neurons_" + label, pre=a.neurons
            )
        return case

    make.__name__ = cases.__name__
    return make


CONV_NETS = {
    name: conv_net(cases)
    for name, cases in [
        ("conv_2d", conv_cases_2d),
        ("conv_1d", conv_cases_1d),
        ("transpose_2d", transpose_cases_2d),
        ("transpose_1d", transpose_cases_1d),
    ]
}


@pytest.mark.parametrize("net", sorted(CONV_NETS))
@pytest.mark.parametrize("optimize, unroll", COMBOS[::3])
def test_convolution(net, optimize, unroll):
    check(CONV_NETS[net], optimize=optimize, unroll_simulation=unroll)


def test_convolution_float32():
    def make(item):
        case = Case(item, seed=4, dtype="float32")
        with case.net:
            for cases in (conv_cases_2d, conv_cases_1d, transpose_cases_2d, transpose_cases_1d):
                for label, transform in cases():
                    transform_case(
                        case,
                        transform.size_in,
                        transform,
                        transform.size_out,
                        label + cases.__name__,
                    )
        return case

    check(make, atol=1e-5, rtol=1e-5, unroll_simulation=2)


def test_conv_transpose_has_gradient_ops():
    """ConvTranspose is emitted as ``Conv`` (onnxruntime-training has no ConvTranspose grad)."""
    with nengo.Network() as net:
        transform = nengo.ConvolutionTranspose(2, (3, 4, 2), strides=(2, 2), padding="same")
        nengo.Connection(
            nengo.Node(np.ones(transform.size_in)),
            nengo.Node(size_in=transform.size_out),
            transform=transform,
        )
    with nengo_onnx.Simulator(net, unroll_simulation=1, progress_bar=False) as sim:
        block, _ = sim.program.block(1)
    ops = {node.op_type for node in block.model.graph.node}
    assert "Conv" in ops and "ConvTranspose" not in ops


# -- more than 2 spatial dimensions (beyond nengo.Simulator) --------------------------------


def correlate_nd(x, kernel, strides, padding):
    """Reference N-D correlation: ``x`` ``[*spatial, C]``, ``kernel`` ``[*k, C, M]``."""
    ks = kernel.shape[:-2]
    out_shape, pads = [], []
    for size, k, s in zip(x.shape[:-1], ks, strides):
        out = -(-size // s) if padding == "same" else -(-(size - k + 1) // s)
        total = max((out - 1) * s + k - size, 0) if padding == "same" else 0
        out_shape.append(out)
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, pads + [(0, 0)])
    y = np.zeros(tuple(out_shape) + kernel.shape[-1:])
    for idx in np.ndindex(*out_shape):
        window = tuple(slice(i * s, i * s + k) for i, s, k in zip(idx, strides, ks))
        y[idx] = np.tensordot(xp[window], kernel, axes=len(ks) + 1)
    return y


@pytest.mark.parametrize(
    "padding, dtype", [("valid", "float64"), ("same", "float64"), ("same", "float32")]
)
def test_convolution_3d(padding, dtype):
    """3-D Convolution vs a direct correlation; its ConvolutionTranspose is the adjoint."""
    rng = np.random.RandomState(5)
    kernel = rng.uniform(-1, 1, size=(2, 3, 2, 2, 3))
    conv = nengo.Convolution(
        3, (4, 5, 3, 2), kernel_size=(2, 3, 2), strides=(1, 2, 2), padding=padding, init=kernel
    )
    transpose = nengo.ConvolutionTranspose(
        2,
        conv.output_shape.shape,
        output_shape=conv.input_shape.shape,
        kernel_size=(2, 3, 2),
        strides=(1, 2, 2),
        padding=padding,
        init=kernel.swapaxes(-1, -2),
    )
    x = rng.uniform(-1, 1, size=(B, STEPS, conv.size_in))
    y = rng.uniform(-1, 1, size=(B, STEPS, conv.size_out))
    with nengo.Network() as net:
        configure_settings(dtype=dtype)
        u, v = nengo.Node(np.zeros(conv.size_in)), nengo.Node(np.zeros(conv.size_out))
        p_conv = nengo.Probe(
            nengo.Connection(
                u, nengo.Node(size_in=conv.size_out), transform=conv, synapse=None
            ).post_obj
        )
        p_tr = nengo.Probe(
            nengo.Connection(
                v, nengo.Node(size_in=conv.size_in), transform=transpose, synapse=None
            ).post_obj
        )
    with nengo_onnx.Simulator(
        net, minibatch_size=B, unroll_simulation=1, progress_bar=False
    ) as sim:
        sim.run_steps(STEPS, data={u: x, v: y})
    atol = 1e-12 if dtype == "float64" else 1e-5
    for b in range(B):
        for t in range(STEPS):
            ref = correlate_nd(
                x[b, t].reshape(conv.input_shape.shape), kernel, conv.strides, padding
            )
            np.testing.assert_allclose(sim.data[p_conv][b, t], ref.ravel(), atol=atol)
            # <conv(x), y> == <x, transpose(y)>
            np.testing.assert_allclose(
                np.dot(sim.data[p_conv][b, t], y[b, t]),
                np.dot(x[b, t], sim.data[p_tr][b, t]),
                atol=100 * atol,
            )
