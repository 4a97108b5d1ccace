"""Hypothesis strategies for random valid Nengo networks, built as a user builds them.

A generated network is a `NetSpec`: plain data (tuples of small records, each
holding the Python source of one Nengo object), so that hypothesis can shrink it
and print it. ``spec.code()`` is the network as Python source, ``spec.build()``
executes exactly that source (so a repro is, by construction, the network that
failed) and ``spec.repro(check)`` prints a self-contained script.

The helper functions that Nodes and Connections use are defined at module level
here, so that networks using them pickle (property d) and their source can be
printed in a repro.
"""

import inspect
import textwrap
from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

import hypothesis.strategies as st
import nengo
import numpy as np

import nengo_onnx

DT = 0.001


# --- helper functions used by the generated networks (module level: picklable) ---


def wave(t):
    """A function of time: one smooth dimension."""
    return np.sin(20 * t)


def ramp2(t):
    """A function of time: two dimensions."""
    return [10 * t, 1 - 20 * t]


def after_3ms(t):
    """A step at t = 3 ms: a strict threshold on ``t`` shows how ``t`` is rounded."""
    return [1.0 if t > 0.003 else -0.5]


def square_in(t, x):
    """A Python function of a Node's input (runs in Python every step)."""
    return x * x


def sum_in(t, x):
    """A Python function of a Node's input and of time."""
    return [np.sum(x) + t]


def gate_in(t, x):
    """A Python function of a Node's input with a strict threshold on ``t``."""
    return x if t > 0.003 else -x


def clip_in(t, x):
    """A Python function of a Node's input."""
    return np.clip(x, -0.3, 0.3)


def square(x):
    """A decoded function: same size."""
    return x * x


def product(x):
    """A decoded function: to one dimension."""
    return [x[0] * x[-1]]


def pad(x):
    """A decoded function: one dimension more."""
    return np.concatenate([x, [np.sum(x)]])


def neg_abs(x):
    """A decoded function with a kink."""
    return -np.abs(x)


class RaiseAt:
    """A Node output that raises at step ``step`` (for the interrupted-run property).

    It compares ``t`` with a half-step margin, so that the step it raises at does not
    depend on how ``t`` is rounded (issue 8 item 10 is checked elsewhere).
    """

    def __init__(self, step, dt=DT):
        self.step = step
        self.dt = dt

    def __call__(self, t, *x):
        if t > (self.step - 0.5) * self.dt:
            raise Interrupted(f"interrupted at t={t}")
        return None

    def __repr__(self):
        return f"RaiseAt({self.step})"


class Interrupted(Exception):
    """Raised by `RaiseAt`."""


TIME_FUNCTIONS = {"wave": 1, "ramp2": 2, "after_3ms": 1}  # name -> size_out
INPUT_FUNCTIONS = {
    "square_in": None,
    "sum_in": 1,
    "clip_in": None,
    "gate_in": None,
}  # None: size_in
CONN_FUNCTIONS = {"square": 0, "product": None, "pad": 1, "neg_abs": 0}  # size change
HELPERS = {
    name: globals()[name]
    for name in [*TIME_FUNCTIONS, *INPUT_FUNCTIONS, *CONN_FUNCTIONS, "RaiseAt", "Interrupted"]
}


def function_size(name, size_in):
    """The output size of a decoded helper function on ``size_in`` dimensions."""
    change = CONN_FUNCTIONS[name]
    return 1 if change is None else size_in + change


# --- neuron types ---


@dataclass(frozen=True)
class NeuronKind:
    """A neuron type: its source, and what the properties need to know about it."""

    source: str  # e.g. "nengo.LIF()"
    spiking: bool
    stochastic: bool  # random spikes: nengo-onnx cannot match nengo's random stream
    rate: Optional[str]  # the rate form training uses (None: no rate form)


NEURONS = [
    NeuronKind("nengo.LIF()", True, False, "nengo.LIFRate()"),
    NeuronKind("nengo.LIF(amplitude=0.05)", True, False, "nengo.LIFRate(amplitude=0.05)"),
    NeuronKind("nengo.LIFRate()", False, False, "nengo.LIFRate()"),
    NeuronKind("nengo.RectifiedLinear()", False, False, "nengo.RectifiedLinear()"),
    NeuronKind("nengo.SpikingRectifiedLinear()", True, False, "nengo.RectifiedLinear()"),
    NeuronKind("nengo.Sigmoid()", False, False, "nengo.Sigmoid()"),
    NeuronKind("nengo.Tanh()", False, False, "nengo.Tanh()"),
    NeuronKind("nengo.Direct()", False, False, "nengo.Direct()"),
    NeuronKind("nengo.Izhikevich()", True, False, None),
    NeuronKind("nengo.AdaptiveLIF()", True, False, "nengo.AdaptiveLIFRate()"),
    NeuronKind("nengo.AdaptiveLIFRate()", False, False, "nengo.AdaptiveLIFRate()"),
    NeuronKind("nengo.RegularSpiking(nengo.LIFRate())", True, False, "nengo.LIFRate()"),
    NeuronKind("nengo.RegularSpiking(nengo.Tanh())", True, False, "nengo.Tanh()"),
    NeuronKind(
        "nengo.StochasticSpiking(nengo.RectifiedLinear())", True, True, "nengo.RectifiedLinear()"
    ),
    NeuronKind("nengo.PoissonSpiking(nengo.LIFRate())", True, True, "nengo.LIFRate()"),
]
RATE_NEURONS = [n for n in NEURONS if not n.spiking and "Direct" not in n.source]
NEURONS_BY_SOURCE = {n.source: n for n in NEURONS}


def neuron_state_names(source):
    """The neuron type's probeable state variables (voltage, adaptation, ...)."""
    return sorted(eval(source, {"nengo": nengo}).state)


# --- synapses ---

SYNAPSES = [
    "None",
    "nengo.Lowpass(0.005)",
    "nengo.Lowpass(0)",
    "nengo.Alpha(0.004)",
    "nengo.synapses.Triangle(0.003)",
    "nengo.LinearFilter([1], [0.002 * 0.004, 0.002 + 0.004, 1])",  # general, 2nd order
    "nengo.LinearFilter([0.4], [1, -0.6], analog=False)",  # discrete
]

LABELS = [
    None,
    None,
    None,
    "a",
    "b",
    "input",
    "output",
    "const",
    "stim",
    "state",
    "step",
    "x y",
    "probe_0",
    "node_0",
]


# --- the plain-data description ---


@dataclass(frozen=True)
class Obj:
    """A Node or Ensemble: its variable name, source and sizes."""

    name: str
    kind: str  # const, time, process, passthrough, pyfunc, ensemble
    source: str
    size_in: int
    size_out: int
    neuron: str = ""  # ensembles: the neuron type's source
    n_neurons: int = 0
    noise: bool = False

    @property
    def has_neurons(self):
        return self.kind == "ensemble" and "Direct" not in self.neuron


@dataclass(frozen=True)
class Conn:
    """A Connection (or a learning rule's error connection)."""

    name: str
    source: str
    pre: str  # object names, for the structure checks
    post: str
    synapse: str
    rule: str = ""  # learning rule class name
    host: bool = False  # a Python function of a Node's output: runs in Python


@dataclass(frozen=True)
class ProbeSpec:
    """A Probe."""

    name: str
    source: str
    target: str  # the probed object's name (or "conn.learning_rule")
    attr: str
    sample_every: int = 1


@dataclass(frozen=True)
class NetSpec:
    """A random network and how to simulate it; ``code()`` is its Python source."""

    seed: int
    dtype: str  # "" (the default, float32), "float32", "float64"
    objects: Tuple[Obj, ...]
    connections: Tuple[Conn, ...]
    probes: Tuple[ProbeSpec, ...]
    n_steps: int
    split: int  # steps of the first run_steps call (0: one call)
    minibatch_size: Optional[int]
    unroll: int
    optimize: bool
    extra: Tuple[str, ...] = field(default=())  # configure_settings(...) arguments

    # --- what the properties need to know ---

    def neuron_kinds(self):
        return [NEURONS_BY_SOURCE[o.neuron] for o in self.objects if o.kind == "ensemble"]

    @property
    def float64(self):
        return self.dtype == "float64"

    @property
    def spiking(self):
        return any(n.spiking for n in self.neuron_kinds())

    @property
    def stochastic(self):
        """Random numbers nengo-onnx draws itself (so they differ from nengo's)."""
        return any(n.stochastic for n in self.neuron_kinds())

    @property
    def noisy(self):
        return any(o.noise for o in self.objects)

    @property
    def host(self):
        """Anything that runs in Python at run time (not trainable, not exportable)."""
        return any(o.kind == "pyfunc" for o in self.objects) or any(
            c.host for c in self.connections
        )

    @property
    def learning(self):
        return any(c.rule for c in self.connections)

    @property
    def izhikevich(self):
        return any("Izhikevich" in o.neuron for o in self.objects)

    def helpers(self):
        """The helper functions the code uses."""
        text = self.code(preamble=False)
        return [
            name
            for name in HELPERS
            if f"{name}(" in text or f"{name}," in text or f"{name})" in text or f"={name}" in text
        ]

    # --- source, build, repro ---

    def code(self, preamble=True, rate_twin=False, extra_lines=()):
        """The network as Python source (``net`` is the network).

        ``rate_twin``: spiking neuron types replaced by their rate forms (the network
        that rate-substitution training differentiates).
        """
        lines = []
        if preamble:
            lines += ["import numpy as np", "import nengo", "import nengo_onnx", ""]
        lines.append(f"with nengo.Network(seed={self.seed}) as net:")
        settings = ([f"dtype={self.dtype!r}"] if self.dtype else []) + list(self.extra)
        if settings:
            lines.append(f"    nengo_onnx.configure_settings({', '.join(settings)})")
        for obj in self.objects:
            source = obj.source
            if rate_twin and obj.kind == "ensemble":
                rate = NEURONS_BY_SOURCE[obj.neuron].rate
                source = source.replace(obj.neuron, rate or obj.neuron)
            lines.append(f"    {obj.name} = {source}")
        for conn in self.connections:
            lines.append(f"    {conn.name} = {conn.source}")
        for probe in self.probes:
            lines.append(f"    {probe.name} = {probe.source}")
        lines += [f"    {line}" for line in extra_lines]
        return "\n".join(lines) + "\n"

    def build(self, rate_twin=False, extra_lines=()):
        """Execute ``code()``: returns ``(net, namespace)`` (the names of the objects)."""
        namespace = {"np": np, "nengo": nengo, "nengo_onnx": nengo_onnx, **HELPERS}
        # the network is its own printed source, so a repro is exactly what failed
        exec(self.code(preamble=False, rate_twin=rate_twin, extra_lines=extra_lines), namespace)  # noqa: S102
        return namespace["net"], namespace

    def sim_kwargs(self):
        """The nengo_onnx.Simulator arguments."""
        return dict(
            minibatch_size=self.minibatch_size,
            unroll_simulation=self.unroll,
            optimize=self.optimize,
            progress_bar=False,
        )

    def run(self, sim):
        """Run ``n_steps`` steps, in two calls when ``split`` says so."""
        if 0 < self.split < self.n_steps:
            sim.run_steps(self.split)
            sim.run_steps(self.n_steps - self.split)
        else:
            sim.run_steps(self.n_steps)

    def repro(self, check=None):
        """A self-contained script: the helpers, the network, and the failing check."""
        parts = ["import numpy as np", "import nengo", "import nengo_onnx", ""]
        for name in self.helpers():
            parts.append(textwrap.dedent(inspect.getsource(HELPERS[name])))
        parts.append(self.code(preamble=False))
        parts.append(f"sim = nengo_onnx.Simulator(net, **{self.sim_kwargs()!r})")
        steps = (
            [self.split, self.n_steps - self.split]
            if 0 < self.split < self.n_steps
            else [self.n_steps]
        )
        parts += [f"sim.run_steps({n})" for n in steps]
        if check:
            parts += [
                "",
                "# the failing check (from the repository root):",
                "from tests.differential import properties",
                "from tests.differential.strategies import *",
                f"properties.{check}({self!r})",
            ]
        return "\n".join(parts)


# --- strategies ---


def values(draw, size, low=-1.0, high=1.0):
    """``size`` short floats (short, so that repros read well)."""
    return [draw(st.sampled_from([-0.8, -0.5, -0.2, 0.0, 0.3, 0.6, 0.9])) for _ in range(size)]


def labelled(draw, source, labels=LABELS):
    """Adds a label drawn from ``labels`` (names that might collide)."""
    label = draw(st.sampled_from(labels))
    if label is None:
        return source
    return source[:-1] + (", " if not source.endswith("(") else "") + f"label={label!r})"


@st.composite
def input_node(draw, name, labels=LABELS, time_functions=tuple(TIME_FUNCTIONS)):
    """A Node with no input: a constant, a function of time or a process."""
    kind = draw(st.sampled_from(["const", "time", "process"]))
    if kind == "const":
        size = draw(st.integers(1, 3))
        source = f"nengo.Node({values(draw, size)})"
    elif kind == "time":
        fn = draw(st.sampled_from(sorted(time_functions)))
        size = TIME_FUNCTIONS[fn]
        source = f"nengo.Node({fn})" if fn != "wave" else "nengo.Node(wave)"
    else:
        size = draw(st.integers(1, 3))
        process = draw(
            st.sampled_from(
                [
                    "nengo.processes.WhiteSignal(period=1.0, high=10, rms=0.5)",
                    "nengo.processes.WhiteNoise(dist=nengo.dists.Gaussian(0, 0.3))",
                    f"nengo.processes.PresentInput({[values(draw, size), values(draw, size)]}, "
                    "presentation_time=0.003)",
                    f"nengo.processes.Piecewise({{0: {values(draw, size)}, 0.005: "
                    f"{values(draw, size)}}})",
                ]
            )
        )
        source = f"nengo.Node({process}, size_out={size})"
        if "PresentInput" in process or "Piecewise" in process:
            source = f"nengo.Node({process})"
    return Obj(name, kind, labelled(draw, source, labels), 0, size)


@st.composite
def ensemble(draw, name, neurons=None, labels=LABELS):
    """An Ensemble of 1-4 dimensions with any neuron type."""
    kind = draw(st.sampled_from(neurons or NEURONS))
    n = draw(st.integers(1, 12))
    dims = draw(st.integers(1, 4))
    args = [str(n), str(dims), f"neuron_type={kind.source}"]
    if draw(st.booleans()):
        args.append(f"radius={draw(st.sampled_from([0.5, 1.5]))}")
    noise = "Direct" not in kind.source and draw(st.integers(0, 9)) == 0
    if noise:
        args.append("noise=nengo.processes.WhiteNoise(dist=nengo.dists.Gaussian(0, 0.01))")
    source = labelled(draw, f"nengo.Ensemble({', '.join(args)})", labels)
    return Obj(name, "ensemble", source, dims, dims, neuron=kind.source, n_neurons=n, noise=noise)


@st.composite
def inner_node(
    draw, name, size_in, allow_host=True, labels=LABELS, functions=tuple(INPUT_FUNCTIONS)
):
    """A Node with input: a pass-through, or a Python function of its input."""
    if allow_host and draw(st.integers(0, 2)) == 0:
        fn = draw(st.sampled_from(sorted(functions)))
        size_out = INPUT_FUNCTIONS[fn] or size_in
        return Obj(
            name,
            "pyfunc",
            labelled(draw, f"nengo.Node({fn}, size_in={size_in})", labels),
            size_in,
            size_out,
        )
    return Obj(
        name,
        "passthrough",
        labelled(draw, f"nengo.Node(size_in={size_in})", labels),
        size_in,
        size_in,
    )


def ends(objects):
    """What connections can start from (``(source, size, obj, is_neurons)``)."""
    for obj in objects:
        if obj.size_out > 0:
            yield obj.name, obj.size_out, obj, False
        if obj.has_neurons:
            yield f"{obj.name}.neurons", obj.n_neurons, obj, True


def targets(objects):
    """What connections can end at."""
    for obj in objects:
        if obj.size_in > 0:
            yield obj.name, obj.size_in, obj, False
        if obj.has_neurons:
            yield f"{obj.name}.neurons", obj.n_neurons, obj, True


def index(draw, name, size, repeats=True):
    """``name``, or a slice or list of indices of it; returns ``(source, size)``."""
    if size == 1 or draw(st.integers(0, 3)) > 0:
        return name, size
    if draw(st.booleans()):
        start = draw(st.integers(0, size - 1))
        stop = draw(st.integers(start + 1, size))
        return f"{name}[{start}:{stop}]", stop - start
    # nengo allows repeated indices on the pre side only
    picks = draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=size, unique=True))
    return f"{name}[{picks}]", len(picks)


def conv_shapes(size_in, size_out):
    """Every 1-D and 2-D Convolution (channels last) from ``size_in`` to ``size_out``."""
    found = []
    for channels in range(1, size_in + 1):
        if size_in % channels:
            continue
        spatial = size_in // channels
        shapes = [(spatial,)]
        shapes += [(h, spatial // h) for h in range(2, spatial) if spatial % h == 0]
        for shape in shapes:
            for k in range(1, max(shape) + 1):
                if any(k > s for s in shape):
                    continue
                for padding in ["valid", "same"]:
                    for stride in [1, 2]:
                        out = [
                            ((s - k) // stride + 1) if padding == "valid" else -(-s // stride)
                            for s in shape
                        ]
                        n_out = int(np.prod(out))
                        if n_out and size_out % n_out == 0:
                            found.append(
                                (
                                    shape + (channels,),
                                    (k,) * len(shape),
                                    size_out // n_out,
                                    padding,
                                    stride,
                                )
                            )
    return found


@st.composite
def transform(draw, size_mid, size_post, matrix_only=False):
    """A transform from ``size_mid`` to ``size_post`` dims; None for the default.

    ``matrix_only``: no Sparse or Convolution (nengo supports neither on decoded
    connections, nor learning on them).
    """
    kinds = ["dense"] if matrix_only else ["dense", "sparse", "conv"]
    if size_mid == size_post:
        kinds += ["default", "default", "scalar"]
    kind = draw(st.sampled_from(kinds))
    if kind == "default":
        return None
    if kind == "scalar":
        return str(draw(st.sampled_from([-0.5, 0.7, 1.3])))
    if kind == "dense":
        return f"nengo.Dense(({size_post}, {size_mid}), init=nengo.dists.Uniform(-0.7, 0.7))"
    if kind == "sparse":
        n = draw(st.integers(1, min(4, size_post * size_mid)))
        pairs = draw(
            st.lists(
                st.tuples(st.integers(0, size_post - 1), st.integers(0, size_mid - 1)),
                min_size=n,
                max_size=n,
                unique=True,
            )
        )
        return (
            f"nengo.Sparse(({size_post}, {size_mid}), indices={[list(p) for p in pairs]},"
            " init=nengo.dists.Uniform(-0.7, 0.7))"
        )
    options = conv_shapes(size_mid, size_post)
    shape, kernel, filters, padding, stride = draw(st.sampled_from(options))
    strides = (stride,) * len(kernel)
    return (
        f"nengo.Convolution({filters}, {shape}, kernel_size={kernel}, "
        f"strides={strides}, padding={padding!r}, init=nengo.dists.Uniform(-0.5, 0.5))"
    )


@st.composite
def connection(draw, name, objects, allow_host=True, allow_learning=True, synapses=SYNAPSES):
    """A Connection between existing objects, with a fitting transform.

    Returns a list: the connection and, for PES and RLS, its error connection.
    """
    pre_name, pre_size, pre, pre_neurons = draw(st.sampled_from(list(ends(objects))))
    post_name, post_size, post, post_neurons = draw(st.sampled_from(list(targets(objects))))
    pre_src, size = index(draw, pre_name, pre_size)
    post_src, post_size = index(draw, post_name, post_size, repeats=False)
    args = [pre_src, post_src]
    host = False
    # a decoded function (from an Ensemble or a Node; a Node's runs in Python)
    # (nengo allows no function on a pass-through Node or on neurons)
    function_ok = not pre_neurons and (
        pre.kind == "ensemble" or allow_host and pre.kind != "passthrough"
    )
    if function_ok and draw(st.integers(0, 3)) == 0:
        fn = draw(st.sampled_from(sorted(CONN_FUNCTIONS)))
        args.append(f"function={fn}")
        size = function_size(fn, size)
        # a Node's function, and a Direct ensemble's, run in Python
        host = pre.kind != "ensemble" or "Direct" in pre.neuron
    rule = ""
    decoded = pre.kind == "ensemble" and not pre_neurons
    if (
        allow_learning
        and draw(st.integers(0, 4)) == 0
        and (decoded and pre.has_neurons or pre_neurons)
    ):
        rule = draw(st.sampled_from(["PES", "RLS", "BCM", "Oja", "Voja"]))
        if rule in ("BCM", "Oja"):
            # these need a full weight matrix: neurons to neurons
            if not (
                pre_neurons and post_neurons and pre_src == pre_name and post_src == post_name
            ):
                rule = ""
        if rule == "RLS" and post_neurons:
            rule = ""  # nengo's own RLS fails at run time on a neurons post
        if rule == "Voja" and (
            post_neurons
            or post.kind != "ensemble"
            or post_src != post_name
            or not post.has_neurons
        ):
            rule = ""
    tr = (
        f"nengo.Dense(({post_size}, {size}), init=nengo.dists.Uniform(-0.3, 0.3))"
        if rule in ("BCM", "Oja")
        else draw(transform(size, post_size, matrix_only=decoded or rule))
    )
    if tr is not None:
        args.append(f"transform={tr}")
    elif size != post_size:
        return []  # cannot happen: transform() gives a matrix when sizes differ
    if (
        decoded
        and not rule
        and post.kind == "ensemble"
        and not post_neurons
        and pre.has_neurons
        and post.has_neurons
        and draw(st.integers(0, 5)) == 0
    ):
        args.append("solver=nengo.solvers.LstsqL2(weights=True)")
    synapse = draw(st.sampled_from(synapses))
    if post is pre and synapse == "None":
        synapse = "nengo.Lowpass(0.005)"  # a loop needs a delay (nengo rejects cycles)
    args.append(f"synapse={synapse}")
    rates = {
        "PES": "nengo.PES(learning_rate=1e-4)",
        "RLS": "nengo.RLS(learning_rate=1e-3)",
        "BCM": "nengo.BCM(learning_rate=1e-9)",
        "Oja": "nengo.Oja(learning_rate=1e-6)",
        "Voja": "nengo.Voja(learning_rate=1e-3)",
    }
    if rule:
        args.append(f"learning_rule_type={rates[rule]}")
    conns = [
        Conn(
            name, f"nengo.Connection({', '.join(args)})", pre.name, post.name, synapse, rule, host
        )
    ]
    if rule in ("PES", "RLS"):
        # the error signal, from any object, through a matrix of the right shape
        src_name, src_size, src, _ = draw(st.sampled_from(list(ends(objects))))
        # nengo: the error has the size of the post side (the ensemble's, for neurons)
        error_size = post.size_in if post_neurons else post_size
        conns.append(
            Conn(
                f"{name}_error",
                f"nengo.Connection({src_name}, {name}.learning_rule, transform=nengo.Dense(("
                f"{error_size}, {src_size}), init=nengo.dists.Uniform(-0.5, 0.5)))",
                src.name,
                name,
                "nengo.Lowpass(0.005)",
            )
        )
    return conns


def probeables(spec_objects, connections, target):
    """The probeable attributes of ``target`` (an object, neurons, connection, rule)."""
    if target.endswith(".learning_rule"):
        conn = next(c for c in connections if c.name == target.split(".")[0])
        return list(getattr(nengo, conn.rule).probeable)
    if target.endswith(".neurons"):
        obj = next(o for o in spec_objects if o.name == target.split(".")[0])
        return ["output", "input"] + neuron_state_names(obj.neuron)
    if any(c.name == target for c in connections):
        return ["output", "input", "weights"]
    obj = next(o for o in spec_objects if o.name == target)
    if obj.kind == "ensemble":
        if "Direct" in obj.neuron:
            return ["decoded_output", "input"]
        return ["decoded_output", "input", "scaled_encoders"]
    return ["output"]


@st.composite
def probe(draw, name, objects, connections, labels=LABELS, attrs=None):
    """A Probe of any probeable attribute, filtered or not, sampled or not."""
    choices = [o.name for o in objects if o.kind != "pyfunc" or o.size_out > 0]
    choices += [f"{o.name}.neurons" for o in objects if o.has_neurons]
    choices += [c.name for c in connections if not c.name.endswith("_error")]
    choices += [f"{c.name}.learning_rule" for c in connections if c.rule]
    target = draw(st.sampled_from(choices))
    options = probeables(objects, connections, target)
    if attrs is not None:
        options = [a for a in options if a in attrs] or options[:1]
    attr = draw(st.sampled_from(options))
    args = [target, repr(attr)]
    synapse = draw(st.sampled_from(["None", "None", "0.01", "nengo.Alpha(0.004)"]))
    if synapse != "None":
        args.append(f"synapse={synapse}")
    sample_every = draw(st.sampled_from([1, 1, 1, 2, 3] if attrs is None else [1]))
    if sample_every > 1:
        args.append(f"sample_every={sample_every * DT!r}")
    source = labelled(draw, f"nengo.Probe({', '.join(args)})", labels)
    return ProbeSpec(name, source, target, attr, sample_every)


@st.composite
def networks(
    draw,
    trainable=False,
    allow_host=True,
    allow_learning=True,
    dtypes=None,
    max_steps=24,
    include_known=False,
):
    """A random valid network (`NetSpec`).

    ``trainable``: rate neurons mostly (some spiking, trained by rate substitution),
    no Python functions at run time, no online learning, probes of outputs only;
    the networks `properties.check_gradients` differentiates.

    ``include_known``: also generate what the open issue 8 items break (see
    `properties.KNOWN_OPEN`); by default those features are left out.
    """
    from .properties import known_open

    labels = [x for x in LABELS if x != "const" or not known_open(2, include_known)]
    time_functions = [
        f for f in TIME_FUNCTIONS if f != "after_3ms" or not known_open(10, include_known)
    ]
    input_functions = [
        f for f in INPUT_FUNCTIONS if f != "gate_in" or not known_open(10, include_known)
    ]
    synapses = [
        s for s in SYNAPSES if not (trainable and "Triangle" in s and known_open(3, include_known))
    ]
    attrs = None
    if trainable:
        allow_host, allow_learning = False, False
        attrs = ("output", "decoded_output", "input")
    objects = []
    for i in range(draw(st.integers(1 if trainable else 0, 2))):
        objects.append(draw(input_node(f"node{i}", labels, time_functions)))
    neurons = None
    if trainable:
        neurons = RATE_NEURONS * 4 + [
            n
            for n in NEURONS
            if n.spiking
            and not n.stochastic
            and not ("Izhikevich" in n.source and known_open(4, include_known))
        ]
    for i in range(draw(st.integers(1, 3))):
        objects.append(draw(ensemble(f"ens{i}", neurons, labels)))
    for i in range(draw(st.integers(0, 2))):
        objects.append(
            draw(
                inner_node(
                    f"mid{i}",
                    draw(st.integers(1, 4)),
                    allow_host=allow_host,
                    labels=labels,
                    functions=input_functions,
                )
            )
        )
    connections = []
    for i in range(draw(st.integers(1, 5))):
        connections += draw(
            connection(
                f"conn{i}",
                objects,
                allow_host=allow_host,
                allow_learning=allow_learning,
                synapses=synapses,
            )
        )
    probes = [
        draw(probe(f"probe{i}", objects, connections, labels, attrs))
        for i in range(draw(st.integers(1, 4)))
    ]
    dtype = draw(st.sampled_from(dtypes or ["", "float32", "float64", "float64"]))
    n_steps = draw(st.integers(1, max_steps))
    extra = ()
    if (
        trainable
        and draw(st.integers(0, 3)) == 0
        and not any(NEURONS_BY_SOURCE[o.neuron].spiking for o in objects if o.kind == "ensemble")
    ):
        # no effect without spiking neurons: the gradient must not change
        extra = (f"spiking_gradient={draw(st.sampled_from(['rate', 'surrogate']))!r}",)
    unroll = draw(st.integers(1, 6))
    return NetSpec(
        seed=draw(st.integers(0, 2**16)),
        dtype=dtype,
        objects=tuple(objects),
        connections=tuple(connections),
        probes=tuple(probes),
        n_steps=n_steps,
        split=draw(st.integers(0, n_steps - 1)) if n_steps > 1 else 0,
        minibatch_size=draw(st.sampled_from([None, None, 1, 2, 3])),
        unroll=unroll,
        optimize=draw(st.booleans()),
        extra=extra,
    )


def with_settings(spec, **changes):
    """A copy of ``spec`` with other fields (for properties that fix some)."""
    return replace(spec, **changes)
