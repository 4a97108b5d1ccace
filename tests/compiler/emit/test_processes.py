"""Synapses and processes (``SimProcess``) against ``nengo.Simulator``.

* Synapses (``LinearFilter`` in all of its step forms, ``Triangle``) are emitted
  as ONNX; every minibatch item is fed its own input (through ``data``) and must
  filter it exactly as ``nengo.Simulator`` does.
* Processes with an input and no ONNX form (user ``Process``/``Synapse``
  subclasses) run in Python through the host path.
* Time-only processes (noise, ``WhiteSignal``, ``PresentInput``, ``Piecewise``,
  user processes) are computed in Python and fed in: they must give nengo's values,
  for the same seed, in every minibatch item.
"""

import nengo
import nengo.synapses as syn
import numpy as np
import pytest
from nengo.builder import Model
from nengo.builder.processes import SimProcess
from nengo.processes import (
    BrownNoise,
    FilteredNoise,
    Piecewise,
    PresentInput,
    WhiteNoise,
    WhiteSignal,
)

import nengo_onnx
from nengo_onnx.compiler.emit import find_emitter
from nengo_onnx.config import configure_settings

DT = 0.001
STEPS = 23  # not a multiple of the unroll lengths: the one-step remainder runs too
B = 2
D = 2

# (optimize, unroll_simulation, minibatch_size): each of optimize, unrolling and
# batching on and off at least once
CONFIGS = [(True, 1, B), (False, 5, None), (True, 4, B)]
CONFIG_IDS = ["opt-u1-mb2", "noopt-u5", "opt-u4-mb2"]


def signal(item, steps=STEPS, d=D):
    """A smooth input with an offset, different for every minibatch item."""
    t = DT * np.arange(1, steps + 1)[:, None]
    return 0.8 * np.sin(2 * np.pi * (7 + 3 * item + np.arange(d)) * t + item) + 0.2


def assert_close(actual, expected, rtol=1e-5):
    """Float32 agreement, relative to the largest magnitude of ``expected``."""
    expected = np.asarray(expected)
    atol = rtol * max(1.0, float(np.abs(expected).max(initial=0)))
    assert actual.shape == expected.shape
    assert np.allclose(actual, expected, rtol=rtol, atol=atol), np.abs(actual - expected).max()


def run_nengo(make, item, steps=STEPS):
    net, _, probes = make(signal(item, steps))
    with nengo.Simulator(net, dt=DT, progress_bar=False) as sim:
        sim.run_steps(steps)
        return [sim.data[p] for p in probes]


def run_onnx(make, optimize, unroll, minibatch_size, steps=STEPS, dtype="float32"):
    """Probe data ``[B, steps, ...]``; item ``b`` is fed ``signal(b)``."""
    net, u, probes = make(signal(0, steps), dtype=dtype)
    n_items = minibatch_size or 1
    data = {u: np.stack([signal(b, steps) for b in range(n_items)])}
    if minibatch_size is None:
        data = {u: data[u][0]}
    with nengo_onnx.Simulator(
        net,
        dt=DT,
        progress_bar=False,
        optimize=optimize,
        unroll_simulation=unroll,
        minibatch_size=minibatch_size,
    ) as sim:
        sim.run_steps(steps, data=data)
        out = [np.asarray(sim.data[p]) for p in probes]
    return out if minibatch_size is not None else [o[None] for o in out]


def check_against_nengo(make, optimize, unroll, minibatch_size, rtol=1e-5):
    outputs = run_onnx(make, optimize, unroll, minibatch_size)
    for b in range(minibatch_size or 1):
        for actual, expected in zip(outputs, run_nengo(make, b)):
            assert_close(actual[b], expected, rtol=rtol)


# -- synapses ----------------------------------------------------------------------------

SYNAPSES = {
    "lowpass": syn.Lowpass(0.005),  # OneX
    "lowpass0": 0,  # Lowpass(0): no state (NoX)
    "none": None,  # no SimProcess at all
    "alpha": syn.Alpha(0.003),  # NoD, two states
    "third_order": syn.Lowpass(0.004).combine(syn.Alpha(0.002)),  # NoD, three states
    "integrator": syn.LinearFilter([1], [1, 0]),  # OneX with a == 1
    "passthrough": syn.LinearFilter([0.002, 1], [0.004, 1]),  # General, one state
    "passthrough2": syn.LinearFilter([1e-5, 0.002, 1], [1e-5, 0.005, 1]),  # General, two
    "discrete": syn.LinearFilter([0.5, 0.2], [1, -0.3], analog=False),  # General
    "discrete_nod": syn.LinearFilter([0.5, 0.1], [1, -0.6, 0.08], analog=False),  # NoD
    "discrete_gain": syn.LinearFilter([2.5], [1], analog=False),  # NoX with D != 1
    "euler": syn.LinearFilter([1], [0.003, 1], method="euler"),
    "triangle": syn.Triangle(0.004),
    "triangle0": syn.Triangle(0),  # one tap: the identity
}


def synapse_net(synapse):
    """A connection synapse, a probe synapse, on a full signal and on views."""

    def make(inp, dtype="float32"):
        with nengo.Network(seed=0) as net:
            configure_settings(dtype=dtype)
            u = nengo.Node(PresentInput(inp, DT))
            out = nengo.Node(size_in=D + 1)
            nengo.Connection(u, out[:D], synapse=synapse)
            nengo.Connection(u[1], out[D], synapse=synapse, transform=-2)
            probes = [
                nengo.Probe(out),
                nengo.Probe(u, synapse=synapse),
                nengo.Probe(u[0], synapse=synapse),
            ]
        return net, u, probes

    return make


@pytest.mark.parametrize("optimize, unroll, minibatch_size", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("name", list(SYNAPSES))
def test_synapse(name, optimize, unroll, minibatch_size):
    check_against_nengo(synapse_net(SYNAPSES[name]), optimize, unroll, minibatch_size)


@pytest.mark.parametrize("name", ["alpha", "passthrough2", "triangle"])
def test_synapse_float64(name):
    """With ``dtype="float64"`` the filters match nengo to double precision."""
    make = synapse_net(SYNAPSES[name])
    outputs = run_onnx(make, True, 3, None, dtype="float64")
    for actual, expected in zip(outputs, run_nengo(make, 0)):
        assert np.allclose(actual[0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["lowpass", "alpha", "triangle"])
def test_synapse_long_run(name):
    """Filter state stays right over many unrolled blocks (Triangle's tap index wraps)."""
    steps = 301
    make = synapse_net(SYNAPSES[name])
    net, u, probes = make(signal(0, steps))
    with nengo.Simulator(net, dt=DT, progress_bar=False) as ref:
        ref.run_steps(steps)
    with nengo_onnx.Simulator(net, dt=DT, progress_bar=False, unroll_simulation=10) as sim:
        sim.run_steps(150)
        sim.run_steps(151)
        for p in probes:
            assert_close(sim.data[p], ref.data[p], rtol=2e-5)


def mode_model(synapse, mode, inp):
    """A model with ``synapse`` built by hand on a fresh output signal with ``mode``.

    With ``mode="inc"`` and no reset the output accumulates the filtered input.
    """
    with nengo.Network(seed=0) as net:
        u = nengo.Node(PresentInput(inp, DT))
        probe = nengo.Probe(u)
    model = Model(dt=DT)
    model.build(net)
    model.sig[probe]["in"] = model.build(synapse, model.sig[u]["out"], mode=mode)
    return model, probe


MODE_SYNAPSES = ["lowpass", "alpha", "third_order", "passthrough", "discrete_gain", "triangle"]


@pytest.mark.parametrize("mode", ["set", "update", "inc"])
@pytest.mark.parametrize("name", MODE_SYNAPSES)
def test_synapse_modes(name, mode):
    """``set``/``update`` write the filtered value, ``inc`` adds it (Nengo's semantics)."""
    synapse = SYNAPSES[name]
    if mode == "inc" and name == "passthrough":
        pytest.skip("nengo's General step returns [1, n] and cannot increment an [n] signal")
    model, probe = mode_model(synapse, mode, signal(0))
    with nengo.Simulator(None, model=model, progress_bar=False) as ref:
        ref.run_steps(STEPS)
    model, probe2 = mode_model(synapse, mode, signal(0))
    with nengo_onnx.Simulator(None, model=model, progress_bar=False, unroll_simulation=4) as sim:
        sim.run_steps(STEPS)
        assert_close(sim.data[probe2], ref.data[probe])


def weights_net(inp, dtype="float32"):
    """Probes of 2-D connection weights through synapses: static and learned weights."""
    with nengo.Network(seed=0) as net:
        configure_settings(dtype=dtype)
        u = nengo.Node(PresentInput(inp, DT))
        a = nengo.Ensemble(6, D, neuron_type=nengo.LIFRate())
        b = nengo.Ensemble(4, D, neuron_type=nengo.LIFRate())
        nengo.Connection(u, a)
        c1 = nengo.Connection(a, b, solver=nengo.solvers.LstsqL2(weights=True))
        c2 = nengo.Connection(
            a.neurons,
            b.neurons,
            transform=np.full((4, 6), 0.02),
            learning_rule_type=nengo.BCM(learning_rate=1e-6),
        )
        probes = [
            nengo.Probe(c1, "weights", synapse=0.01),
            nengo.Probe(c2, "weights", synapse=syn.Alpha(0.003)),
            nengo.Probe(c2, "weights", synapse=syn.Triangle(0.003)),
            nengo.Probe(c2, "weights", synapse=syn.LinearFilter([0.002, 1], [0.004, 1])),
            nengo.Probe(c2, "weights"),
        ]
    return net, u, probes


@pytest.mark.parametrize("optimize, unroll, minibatch_size", CONFIGS[1:], ids=CONFIG_IDS[1:])
def test_synapse_2d_weights(optimize, unroll, minibatch_size):
    outputs = run_onnx(weights_net, optimize, unroll, minibatch_size)
    assert outputs[0].shape[2:] == (4, 6)
    check_against_nengo(weights_net, optimize, unroll, minibatch_size)


# -- which processes have an ONNX form ----------------------------------------------------


class Delay(syn.Synapse):
    """A user synapse: delays its input by ``steps`` steps (state in ``make_state``)."""

    def __init__(self, steps=3, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps

    def make_state(self, shape_in, shape_out, dt, dtype=None, y0=0):
        return {"buf": np.zeros((self.steps,) + shape_out)}

    def make_step(self, shape_in, shape_out, dt, rng, state):
        buf = state["buf"]

        def step_delay(t, x):
            out = buf[0].copy()
            buf[:-1] = buf[1:]
            buf[-1] = x
            return out

        return step_delay


class SquaredLowpass(syn.Lowpass):
    """A ``LinearFilter`` subclass with its own step: not Nengo's linear filter."""

    def make_step(self, shape_in, shape_out, dt, rng, state):
        step = super().make_step(shape_in, shape_out, dt, rng, state)
        return lambda t, x: step(t, x) ** 2


class Square(nengo.Process):
    """A user process with input: ``x ** 2 + t``."""

    def make_step(self, shape_in, shape_out, dt, rng, state):
        return lambda t, x: x**2 + t


def _sim_process(process, sig_in=True):
    sig = nengo.builder.Signal(np.zeros(2))
    return SimProcess(
        process,
        sig if sig_in else None,
        nengo.builder.Signal(np.zeros(2)),
        nengo.builder.Signal(np.zeros(())),
        mode="update",
    )


@pytest.mark.parametrize(
    "process",
    [
        syn.Lowpass(0.01),
        syn.Alpha(0.01),
        syn.LinearFilter([1], [1, 2, 1]),
        syn.LinearFilter([2], [1], analog=False),
        syn.Triangle(0.01),
    ],
    ids=str,
)
def test_supported(process):
    fn, reason = find_emitter(_sim_process(process))
    assert fn is not None and reason is None


@pytest.mark.parametrize(
    "process",
    [
        Delay(2),
        SquaredLowpass(0.01),
        Square(default_size_in=2, default_size_out=2),
    ],
    ids=lambda p: type(p).__name__,
)
def test_not_supported(process):
    fn, reason = find_emitter(_sim_process(process))
    assert fn is None and type(process).__name__ in reason


# -- processes with input, run in Python --------------------------------------------------


def host_net(kind):
    def make(inp, dtype="float32"):
        with nengo.Network(seed=1) as net:
            configure_settings(dtype=dtype)
            u = nengo.Node(PresentInput(inp, DT))
            out = nengo.Node(size_in=D)
            if kind == "node":
                n = nengo.Node(Square(default_size_in=D, default_size_out=D), size_in=D)
                nengo.Connection(u, n, synapse=None)
                nengo.Connection(n, out, synapse=0.005)
                probes = [nengo.Probe(n), nengo.Probe(out)]
            elif kind == "connection":
                nengo.Connection(u, out, synapse=Delay(3))
                probes = [nengo.Probe(out, synapse=0.004)]
            elif kind == "probe":
                probes = [nengo.Probe(u, synapse=Delay(2))]
            elif kind == "linear_subclass":
                nengo.Connection(u, out, synapse=SquaredLowpass(0.005))
                probes = [nengo.Probe(out)]
        return net, u, probes

    return make


@pytest.mark.parametrize("optimize, unroll, minibatch_size", CONFIGS[:2], ids=CONFIG_IDS[:2])
@pytest.mark.parametrize("kind", ["node", "connection", "probe", "linear_subclass"])
def test_host_process(kind, optimize, unroll, minibatch_size):
    check_against_nengo(host_net(kind), optimize, unroll, minibatch_size)


# -- time-only processes, computed in Python and fed in -----------------------------------


class Ramp(nengo.Process):
    """A user time-only process that draws from its rng and keeps state."""

    def make_state(self, shape_in, shape_out, dt, dtype=None):
        return {"count": np.zeros(1)}

    def make_step(self, shape_in, shape_out, dt, rng, state):
        offsets = rng.uniform(-1, 1, size=shape_out)
        count = state["count"]

        def step_ramp(t):
            count[...] += 1
            return t * np.arange(1, shape_out[0] + 1) + offsets + count

        return step_ramp


def time_process(name, seeded=True):
    seed = {"seed": 11} if seeded else {}
    return {
        "white": lambda: WhiteNoise(nengo.dists.Gaussian(0, 1), **seed),
        "white_uniform": lambda: WhiteNoise(nengo.dists.Uniform(-1, 1), scale=False, **seed),
        "filtered": lambda: FilteredNoise(synapse=syn.Alpha(0.005), **seed),
        "brown": lambda: BrownNoise(**seed),
        "white_signal": lambda: WhiteSignal(0.1, high=20, **seed),
        "present": lambda: PresentInput([[0.1, 0.2], [0.3, 0.4], [0.5, -0.5]], 0.004),
        "piecewise": lambda: Piecewise({0: [0.1, 0.2], 0.005: [0.5, 1], 0.015: [-1, 0]}),
        "piecewise_linear": lambda: Piecewise({0: [0, 0], 0.02: [1, -1]}, interpolation="linear"),
        "user": lambda: Ramp(**seed),
    }[name]()


TIME_PROCESSES = [
    "white",
    "white_uniform",
    "filtered",
    "brown",
    "white_signal",
    "present",
    "piecewise",
    "piecewise_linear",
    "user",
]


def time_net(name, where, seeded=True):
    """A time-only process as a Node output, an ensemble's noise, fed to neurons, or all."""
    wheres = ["node", "ens_noise", "neurons"] if where == "all" else [where]
    probes = []
    with nengo.Network(seed=3) as net:
        if "node" in wheres:
            node = nengo.Node(time_process(name, seeded), size_out=D)
            probes += [nengo.Probe(node), nengo.Probe(node, synapse=0.005)]
        if "ens_noise" in wheres:
            ens = nengo.Ensemble(
                D, D, noise=time_process(name, seeded), neuron_type=nengo.RectifiedLinear()
            )
            probes += [nengo.Probe(ens.neurons, "input"), nengo.Probe(ens.neurons)]
        if "neurons" in wheres:
            ens = nengo.Ensemble(D, D, neuron_type=nengo.RectifiedLinear())
            node = nengo.Node(time_process(name, seeded), size_out=D)
            nengo.Connection(node, ens.neurons, synapse=None, transform=0.5)
            probes += [nengo.Probe(ens.neurons, "input")]
    return net, probes


def nengo_time_data(net, probes, seed=None, steps=STEPS):
    with nengo.Simulator(net, dt=DT, progress_bar=False, seed=seed) as sim:
        sim.run_steps(steps)
        return [sim.data[p] for p in probes]


@pytest.mark.parametrize("optimize, unroll, minibatch_size", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("name", TIME_PROCESSES)
def test_time_process(name, optimize, unroll, minibatch_size):
    """Seeded time-only processes give nengo's values in every minibatch item.

    Each process is a Node output, an ensemble's noise and a Node feeding neurons.
    """
    net, probes = time_net(name, "all")
    expected = nengo_time_data(net, probes)
    with nengo_onnx.Simulator(
        net,
        dt=DT,
        progress_bar=False,
        optimize=optimize,
        unroll_simulation=unroll,
        minibatch_size=minibatch_size,
    ) as sim:
        sim.run_steps(STEPS)
        for p, exp in zip(probes, expected):
            data = sim.data[p] if minibatch_size else sim.data[p][None]
            for b in range(minibatch_size or 1):
                assert_close(data[b], exp)


@pytest.mark.parametrize("minibatch_size", [None, B])
@pytest.mark.parametrize("where", ["node", "ens_noise"])
@pytest.mark.parametrize("name", ["white", "white_signal", "user"])
def test_time_process_reset_seed(name, where, minibatch_size):
    """Unseeded processes follow the simulator's seed, through ``reset(seed=...)`` too."""
    net, probes = time_net(name, where, seeded=False)
    first = nengo_time_data(net, probes, seed=5)
    second = nengo_time_data(net, probes, seed=6)
    assert not np.allclose(first[0], second[0])

    def check(sim, expected):
        sim.run_steps(STEPS)
        for p, exp in zip(probes, expected):
            data = sim.data[p] if minibatch_size else sim.data[p][None]
            for b in range(minibatch_size or 1):
                assert_close(data[b], exp)

    with nengo_onnx.Simulator(
        net, dt=DT, progress_bar=False, seed=5, unroll_simulation=4, minibatch_size=minibatch_size
    ) as sim:
        check(sim, first)
        sim.reset(seed=6)
        check(sim, second)
        sim.reset()  # keeps the last seed
        check(sim, second)
        sim.reset(seed=5)
        check(sim, first)


def test_time_process_continues_across_runs():
    """Fed values continue from where the last ``run`` stopped (no restart per call)."""
    net, probes = time_net("filtered", "node", seeded=False)
    expected = nengo_time_data(net, probes, seed=2, steps=3 * STEPS)
    with nengo_onnx.Simulator(net, dt=DT, progress_bar=False, seed=2, unroll_simulation=5) as sim:
        sim.run_steps(STEPS)
        sim.run_steps(STEPS + 1)
        sim.run_steps(STEPS - 1)
        for p, exp in zip(probes, expected):
            assert_close(sim.data[p], exp)


def test_several_unseeded_processes():
    """Several unseeded processes draw their seeds from the simulator's rng as in nengo."""
    with nengo.Network(seed=3) as net:
        ens = nengo.Ensemble(
            D, D, noise=WhiteNoise(nengo.dists.Uniform(-1, 1)), neuron_type=nengo.RectifiedLinear()
        )
        n1 = nengo.Node(WhiteNoise(), size_out=1)
        mid = nengo.Node(size_in=1)
        nengo.Connection(n1, mid, synapse=0.01)
        n2 = nengo.Node(WhiteSignal(0.1, high=10), size_out=2)
        probes = [
            nengo.Probe(ens.neurons, "input"),
            nengo.Probe(n1),
            nengo.Probe(mid),
            nengo.Probe(n2, synapse=syn.Alpha(0.002)),
        ]
    expected = nengo_time_data(net, probes, seed=9)
    with nengo_onnx.Simulator(net, dt=DT, progress_bar=False, seed=9) as sim:
        sim.run_steps(STEPS)
        for p, exp in zip(probes, expected):
            assert_close(sim.data[p], exp)
