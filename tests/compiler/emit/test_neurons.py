"""Neuron emitters against ``nengo.Simulator``, and their training (rate) forms.

Nengo runs in float32 here (``precision.bits = 32``) so that spike trains can
be compared one to one with nengo-onnx's float32 graphs.
"""

import nengo
import numpy as np
import pytest
import scipy.stats
from nengo.dists import Choice, Uniform
from nengo.tests.test_neurons import SpikingTanh

import nengo_onnx
from nengo_onnx import ort_setup
from nengo_onnx.compiler.block import emit_block
from nengo_onnx.compiler.emit.context import EmitContext
from nengo_onnx.compiler.emit.neurons import lif_rate, soft_lif_rate
from nengo_onnx.compiler.onnx_graph import GraphBuilder
from nengo_onnx.config import Settings
from nengo_onnx.passes.unroll import unroll, unrolled_order
from tests.helpers import rate_form

DT = 0.001
B = 2


@pytest.fixture
def float32_nengo():
    old = nengo.rc.get("precision", "bits")
    nengo.rc.set("precision", "bits", "32")
    yield
    nengo.rc.set("precision", "bits", old)


def per_neuron(cls, arrays, **kwargs):
    """An instance of ``cls`` whose parameters in ``arrays`` are per-neuron arrays.

    Nengo's parameters only take scalars, so a subclass answers these names.
    """

    def getattribute(self, name):
        return arrays[name] if name in arrays else cls.__getattribute__(self, name)

    return type(f"PerNeuron{cls.__name__}", (cls,), {"__getattribute__": getattribute})(**kwargs)


# -- deterministic types against nengo -----------------------------------------------------


class QuickIzhikevich(nengo.Izhikevich):
    """Izhikevich dynamics, with a cheap stand-in for nengo's build-time rate estimate.

    Nengo estimates Izhikevich rates by simulating every neuron for a second each
    time it needs them (gains, decoders); only the step is under test here.
    """

    def rates(self, x, gain, bias):
        return 10 * np.maximum(self.current(x, gain, bias) - 4, 0)

    def max_rates_intercepts(self, gain, bias):
        return self.rates(1, gain, bias)[0], (4 - bias) / gain


# Izhikevich is numerically unstable for currents near -30 (nengo's own comment),
# where one-ulp differences in J change spike trains: keep J high.
STABLE = {"encoders": Choice([[1, 0]]), "gain": Uniform(5, 15), "bias": Uniform(0, 10)}
DETERMINISTIC = [
    (nengo.RectifiedLinear(amplitude=0.5), {}),
    (nengo.SpikingRectifiedLinear(amplitude=0.5), {}),
    (nengo.SpikingRectifiedLinear(initial_state={"voltage": Choice([0.9])}), {}),
    (nengo.Sigmoid(tau_ref=0.002), {"max_rates": Uniform(300, 450)}),
    (nengo.Tanh(), {}),
    (nengo.LIFRate(amplitude=0.5), {}),
    (nengo.LIF(), {}),
    (nengo.LIF(tau_rc=0.03, tau_ref=0.001, min_voltage=-1, amplitude=0.3), {}),
    (
        nengo.LIF(initial_state={"voltage": Choice([0.99]), "refractory_time": Choice([0.0015])}),
        {},
    ),
    (nengo.AdaptiveLIFRate(tau_n=0.1, inc_n=0.05), {}),
    (nengo.AdaptiveLIF(tau_n=0.1, inc_n=0.05), {}),
    (QuickIzhikevich(), STABLE),
    (QuickIzhikevich(reset_voltage=-55, reset_recovery=4, coupling=0.25), STABLE),
    (nengo.RegularSpiking(nengo.LIFRate()), {}),
    (nengo.RegularSpiking(nengo.RectifiedLinear(), amplitude=0.5), {}),
    (SpikingTanh(), {}),
    (SpikingTanh(amplitude=2.0, initial_state={"voltage": Choice([0.0])}), {}),
]


def drive(t):
    return [0.5 + 0.4 * np.sin(8 * t), 0.6 * np.cos(5 * t)]


def ensemble_net(neuron_type, n=16, decoded=True, **ens_kwargs):
    with nengo.Network(seed=3) as net:
        u = nengo.Node(drive)
        a = nengo.Ensemble(n, 2, neuron_type=neuron_type, **ens_kwargs)
        nengo.Connection(u, a, synapse=None)
        probes = {"output": nengo.Probe(a.neurons)}
        if decoded:
            probes["decoded"] = nengo.Probe(a, synapse=0.01)
        for name in neuron_type.state:
            probes[name] = nengo.Probe(a.neurons, name)
        if isinstance(neuron_type, nengo.neurons.RatesToSpikesNeuronType):
            probes["rate_out"] = nengo.Probe(a.neurons, "rate_out")
    return net, probes


def run_both(net, probes, steps, ref=None, **kwargs):
    """Probe data of nengo-onnx and of ``nengo.Simulator`` (or ``ref``, if given)."""
    if ref is None:
        with nengo.Simulator(net, progress_bar=False) as nengo_sim:
            nengo_sim.run_steps(steps)
        ref = {k: nengo_sim.data[p] for k, p in probes.items()}
    with nengo_onnx.Simulator(net, progress_bar=False, **kwargs) as sim:
        sim.run_steps(steps)
    return {k: sim.data[p] for k, p in probes.items()}, ref


_REFERENCES = {}  # nengo's results are the same for every simulator option: run once


def reference(key, net, probes, steps):
    if key not in _REFERENCES:
        _, _REFERENCES[key] = run_both(net, probes, steps)
    return _REFERENCES[key]


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("unroll_simulation", [1, 5])
@pytest.mark.parametrize(
    "neuron_type, ens_kwargs",
    DETERMINISTIC,
    ids=[f"{i}-{type(nt).__name__}" for i, (nt, _) in enumerate(DETERMINISTIC)],
)
def test_matches_nengo(neuron_type, ens_kwargs, optimize, unroll_simulation, float32_nengo):
    net, probes = ensemble_net(neuron_type, **ens_kwargs)
    ref = reference(("float32", id(neuron_type)), net, probes, 200)
    ours, ref = run_both(
        net,
        probes,
        200,
        ref=ref,
        optimize=optimize,
        unroll_simulation=unroll_simulation,
        minibatch_size=B,
    )
    for key, value in ref.items():
        assert ours[key].shape == (B, *value.shape), key
        for item in ours[key]:
            if key == "output" and neuron_type.spiking:
                # spike trains: identical (float32 on both sides)
                assert np.array_equal(item, value), key
            else:
                scale = max(np.abs(value).max(), 1e-3)
                assert np.allclose(item, value, rtol=1e-4, atol=1e-5 * scale), key
    if neuron_type.spiking:
        assert ref["output"].any()  # the comparison saw spikes


PER_NEURON = [
    per_neuron(
        nengo.LIF,
        {
            "tau_rc": np.linspace(0.01, 0.05, 8),
            "tau_ref": np.linspace(0.001, 0.004, 8),
            "amplitude": np.linspace(0.5, 2, 8),
        },
    ),
    per_neuron(
        nengo.AdaptiveLIF, {"tau_n": np.linspace(0.05, 1, 8), "inc_n": np.linspace(0.01, 0.2, 8)}
    ),
    per_neuron(nengo.LIFRate, {"tau_rc": np.linspace(0.01, 0.05, 8)}),
    per_neuron(
        nengo.AdaptiveLIFRate,
        {"tau_rc": np.linspace(0.01, 0.05, 8), "inc_n": np.linspace(0.01, 0.2, 8)},
    ),
    per_neuron(nengo.Tanh, {"tau_ref": np.linspace(0.002, 0.005, 8)}),
    per_neuron(nengo.Sigmoid, {"tau_ref": np.linspace(0.002, 0.005, 8)}),
    per_neuron(nengo.RectifiedLinear, {"amplitude": np.linspace(0.5, 2, 8)}),
    per_neuron(nengo.SpikingRectifiedLinear, {"amplitude": np.linspace(0.5, 2, 8)}),
]


@pytest.mark.parametrize("neuron_type", PER_NEURON, ids=lambda nt: type(nt).__name__)
def test_per_neuron_parameters(neuron_type, float32_nengo):
    """Per-neuron parameter arrays: each neuron behaves like nengo's with its own scalars.

    Nengo's own step functions do not all take arrays, so the reference steps each
    neuron alone, with scalar parameters, on the currents nengo-onnx computed
    (gains and biases are given, since nengo's ``gain_bias`` needs scalars too).
    """
    n, steps = 8, 100
    gain, bias = np.linspace(1, 5, n), np.linspace(-1, 3, n)
    # (no decoders: solving for them takes nengo's rates, with scalars only)
    net, probes = ensemble_net(neuron_type, n=n, decoded=False, gain=gain, bias=bias)
    with net:
        probes["J"] = nengo.Probe(net.ensembles[0].neurons, "input")
    with nengo_onnx.Simulator(
        net, progress_bar=False, minibatch_size=B, unroll_simulation=5
    ) as sim:
        sim.run_steps(steps)
        neurons = net.ensembles[0].neurons
        init = {k: sim.model.sig[neurons][k].initial_value for k in neuron_type.state}
    base = type(neuron_type).__mro__[1]
    params = _scalar_params(neuron_type, base, n)
    J = sim.data[probes["J"]][0]
    output = sim.data[probes["output"]]
    assert output.any()
    for i in range(n):
        scalar = base(**params[i])
        state = {k: np.array(v[i : i + 1], dtype=np.float32) for k, v in init.items()}
        out = np.zeros(1, dtype=np.float32)
        for t in range(steps):
            scalar.step(DT, J[t, i : i + 1], out, **state)
            if neuron_type.spiking:
                assert np.all(output[:, t, i] == out[0]), (i, t)
            else:
                assert np.allclose(output[:, t, i], out[0], rtol=1e-4, atol=1e-4), (i, t)


def _scalar_params(neuron_type, base, n):
    import inspect  # noqa: PLC0415

    names = [
        k
        for k in inspect.signature(base.__init__).parameters
        if k not in ("self", "initial_state")
    ]
    values = {k: np.broadcast_to(getattr(neuron_type, k), (n,)) for k in names}
    return [{k: float(v[i]) for k, v in values.items()} for i in range(n)]


# -- stochastic types ----------------------------------------------------------------------


@pytest.mark.parametrize("optimize, unroll_simulation", [(True, 5), (False, 1)])
@pytest.mark.parametrize(
    "neuron_type",
    [
        nengo.StochasticSpiking(nengo.LIFRate()),
        nengo.PoissonSpiking(nengo.LIFRate(), amplitude=0.5),
        nengo.StochasticSpiking(nengo.Tanh(), amplitude=2.0),
        nengo.PoissonSpiking(nengo.Tanh()),
    ],
    ids=lambda nt: f"{type(nt).__name__}-{type(nt.base_type).__name__}",
)
def test_stochastic_mean_rates(neuron_type, optimize, unroll_simulation, float32_nengo):
    """Mean spike rates equal ``amplitude * rate`` (nengo's base rates) within noise."""
    steps = 1000
    with nengo.Network(seed=5) as net:
        u = nengo.Node([0.6, -0.4])
        a = nengo.Ensemble(12, 2, neuron_type=neuron_type, max_rates=Uniform(100, 200))
        nengo.Connection(u, a, synapse=None)
        p_out = nengo.Probe(a.neurons)
        p_rate = nengo.Probe(a.neurons, "rate_out")
    ours, ref = run_both(
        net,
        {"out": p_out, "rate": p_rate},
        steps,
        optimize=optimize,
        unroll_simulation=unroll_simulation,
        minibatch_size=B,
    )
    assert np.allclose(ours["rate"], ref["rate"][None], rtol=1e-4, atol=1e-3)
    rate = ref["rate"][-1]  # constant input: the base rates are constant
    amp = neuron_type.amplitude
    assert np.all(np.isin(np.round(np.abs(ours["out"]) * DT / amp, 3), np.arange(10)))
    # the two items draw different numbers
    assert not np.array_equal(ours["out"][0], ours["out"][1])
    mean = ours["out"].mean(axis=(0, 1))
    std = amp * np.sqrt(np.abs(rate) / (B * steps * DT))  # Poisson's, larger than rounding's
    assert np.all(np.abs(mean - amp * rate) <= 5 * std + 1e-6)
    # nengo's own spike output has the same mean
    assert np.all(np.abs(ref["out"].mean(axis=0) - amp * rate) <= 8 * std + 1e-6)


def rate_net(neuron_type, rates, n_each):
    """Neurons whose base rate is exactly ``rates`` (gain 0, bias = rate)."""
    bias = np.repeat(np.asarray(rates, dtype=float), n_each)
    with nengo.Network(seed=2) as net:
        a = nengo.Ensemble(
            bias.size, 1, neuron_type=neuron_type, gain=np.zeros(bias.size), bias=bias
        )
        probe = nengo.Probe(a.neurons)
    return net, probe


def test_poisson_counts_distribution():
    """Per-step spike counts follow Poisson(lam), including lam > 1 and the normal branch."""
    lams = [0.05, 0.8, 4.0, 15.0, 40.0]
    n_each, steps = 20, 250
    nt = nengo.PoissonSpiking(nengo.RectifiedLinear(), amplitude=0.5)
    net, probe = rate_net(nt, np.array(lams) / DT, n_each)
    with nengo_onnx.Simulator(
        net, progress_bar=False, minibatch_size=B, unroll_simulation=5, seed=1
    ) as sim:
        sim.run_steps(steps)
        counts = sim.data[probe] * DT / nt.amplitude
    assert np.allclose(counts, np.round(counts), atol=1e-3)
    counts = np.round(counts).reshape(B * steps, len(lams), n_each)
    for i, lam in enumerate(lams):
        c = counts[:, i].ravel()
        n = c.size
        assert abs(c.mean() - lam) < 5 * np.sqrt(lam / n), lam
        assert abs(c.var() - lam) < 6 * lam * np.sqrt(2 / n) + 6 * np.sqrt(lam / n), lam
        if lam < 20:
            # the pmf, bin by bin, where the expected count is large
            k = np.arange(int(lam + 6 * np.sqrt(lam) + 2))
            expected = scipy.stats.poisson.pmf(k, lam) * n
            observed = np.bincount(c.astype(int), minlength=k.size)[: k.size]
            big = expected > 20
            assert np.all(np.abs(observed[big] - expected[big]) < 5 * np.sqrt(expected[big]))


def test_stochastic_rounding_counts():
    """StochasticSpiking: counts are floor(lam) or floor(lam) + 1, the latter w.p. frac(lam)."""
    lams = [0.3, 2.25]
    n_each, steps = 20, 250
    nt = nengo.StochasticSpiking(nengo.RectifiedLinear())
    net, probe = rate_net(nt, np.array(lams) / DT, n_each)
    with nengo_onnx.Simulator(net, progress_bar=False, minibatch_size=B, seed=4) as sim:
        sim.run_steps(steps)
        counts = np.round(sim.data[probe] * DT).reshape(B * steps, len(lams), n_each)
    for i, lam in enumerate(lams):
        c = counts[:, i].ravel()
        low = np.floor(lam)
        assert set(np.unique(c)) <= {low, low + 1}
        frac = lam - low
        assert abs((c == low + 1).mean() - frac) < 5 * np.sqrt(frac * (1 - frac) / c.size)


def test_stochastic_different_seeds():
    nt = nengo.PoissonSpiking(nengo.RectifiedLinear())
    net, probe = rate_net(nt, [300.0], 10)
    outs = []
    for seed in (0, 0, 1):
        with nengo_onnx.Simulator(net, progress_bar=False, seed=seed) as sim:
            sim.run_steps(50)
            outs.append(sim.data[probe])
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


# -- training forms ------------------------------------------------------------------------


def currents(steps, n):
    """Test currents: below and around threshold, a range of rates, large values."""
    rng = np.random.RandomState(0)
    fixed = np.array([-50.0, -1.0, 0.0, 0.5, 0.999, 1.0, 1.001, 1.5, 3.0, 30.0, 1e3])
    J = np.empty((B, steps, n))
    J[..., : fixed.size] = fixed
    J[..., fixed.size :] = rng.uniform(-2, 20, size=(B, steps, n - fixed.size))
    return J


def neuron_block(neuron_type, J, training=True, settings=None, dtype=np.float32):
    """Run the network ``Node -> neurons`` (``J`` as given) as one emitted block.

    Returns the neuron outputs ``[B, steps, n]``, the block, and the state after it.
    """
    n, steps = J.shape[-1], J.shape[1]
    with nengo.Network(seed=1) as net:
        u = nengo.Node(np.zeros(n))
        a = nengo.Ensemble(n, 2, neuron_type=neuron_type, gain=np.ones(n), bias=np.zeros(n))
        nengo.Connection(u, a.neurons, synapse=None)
        probe = nengo.Probe(a.neurons)
    with nengo_onnx.Simulator(
        net, progress_bar=False, minibatch_size=B, optimize=False, unroll_simulation=1
    ) as sim:
        program = sim.program
        order = unrolled_order(unroll(program.step_operators(), steps))
        block = emit_block(
            order,
            program.signals,
            n_steps=steps,
            minibatch_size=B,
            dtype=dtype,
            dt=program.dt,
            probes=program.probe_signals,
            training=training,
            settings=settings,
        )
        feeds = {name: sim.runtime.store[base] for base, name in block.state_inputs}
        feeds = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in feeds.items()}
        key = program.inputs[u]
        for name in block.step_inputs:
            assert name == key, f"unexpected step input {name}"
        feeds[key] = J.astype(dtype)
        session = ort_setup.inference_session(block.model.SerializeToString())
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        pname = program.probes[probe]
        state = {base: outputs[out] for base, _, out in block.state}
        return outputs[pname], block, state, sim.model.sig[a.neurons]


def expected_rates(rate_type, J):
    n = J.shape[-1]
    return rate_type.rates(J.reshape(-1, n), np.ones(n), np.zeros(n)).reshape(J.shape)


@pytest.mark.parametrize(
    "neuron_type, amplitude",
    [
        (nengo.LIF(amplitude=0.7, tau_rc=0.03), 1.0),
        (nengo.SpikingRectifiedLinear(amplitude=2.0), 1.0),
        (nengo.RegularSpiking(nengo.LIFRate(amplitude=2.0), amplitude=0.5), 0.5),
        (nengo.RegularSpiking(nengo.Sigmoid()), 1.0),
        (nengo.StochasticSpiking(nengo.Tanh(), amplitude=0.5), 0.5),
        (nengo.PoissonSpiking(nengo.LIFRate(tau_ref=0.001)), 1.0),
        (SpikingTanh(amplitude=3.0), 3.0),
        (nengo.LIFRate(amplitude=0.5), 1.0),
        (nengo.Tanh(), 1.0),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, nengo.neurons.NeuronType) else str(x),
)
def test_training_rate_forms(neuron_type, amplitude):
    J = currents(3, 16)
    out, block, _, _ = neuron_block(neuron_type, J)
    assert not any(k.startswith("rand.") for k in block.step_inputs)
    base = getattr(neuron_type, "base_type", None)
    rate_type = rate_form(neuron_type)
    assert not rate_type.spiking
    if base is not None:
        # nengo builds rates-to-spikes as the base type, then the conversion
        assert type(rate_type) is type(base)
        expected = amplitude * expected_rates(base, J)
    else:
        expected = expected_rates(rate_type, J)
    assert np.allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_rate_form_types():
    lif = nengo.LIF(tau_rc=0.03, tau_ref=0.001, amplitude=0.2)
    assert rate_form(lif) == nengo.LIFRate(tau_rc=0.03, tau_ref=0.001, amplitude=0.2)
    alif = nengo.AdaptiveLIF(tau_n=0.5, inc_n=0.1, amplitude=0.5)
    assert rate_form(alif) == nengo.AdaptiveLIFRate(tau_n=0.5, inc_n=0.1, amplitude=0.5)
    assert rate_form(nengo.SpikingRectifiedLinear(3.0)) == nengo.RectifiedLinear(3.0)
    assert rate_form(nengo.RegularSpiking(nengo.Tanh())) == nengo.Tanh()
    assert rate_form(nengo.PoissonSpiking(nengo.LIFRate(), amplitude=0.5)) == nengo.LIFRate(
        amplitude=0.5
    )
    assert rate_form(nengo.Izhikevich()) is None
    sigmoid = nengo.Sigmoid()
    assert rate_form(sigmoid) is sigmoid


def test_training_adaptive_lif():
    """AdaptiveLIF trains as AdaptiveLIFRate, adaptation state included."""
    nt = nengo.AdaptiveLIF(tau_n=0.01, inc_n=0.2, amplitude=0.5)
    J = currents(4, 16)
    out, _, state, sigs = neuron_block(nt, J)
    ref_type = rate_form(nt)
    n = np.repeat(sigs["adaptation"].initial_value[None].astype(np.float64), B, axis=0)
    expected = np.zeros(J.shape)
    for t in range(J.shape[1]):
        ref_type.step(DT, J[:, t], expected[:, t], adaptation=n)
    assert np.any(n > 0)
    assert np.allclose(out, expected, rtol=1e-5, atol=1e-4)
    adaptation = [v for base, v in state.items() if base is sigs["adaptation"].base]
    assert np.allclose(adaptation[0], n, rtol=1e-5, atol=1e-6)


def test_training_izhikevich_stays_spiking():
    J = np.broadcast_to(np.linspace(0, 30, 16), (B, 10, 16))
    out, _, _, _ = neuron_block(nengo.Izhikevich(), J, training=True)
    spiking, _, _, _ = neuron_block(nengo.Izhikevich(), J, training=False)
    assert np.array_equal(out, spiking)
    assert set(np.unique(out)) <= {0.0, 1.0 / DT}


def test_training_mean_matches_spiking():
    """Rate forms carry the amplitude of the spiking output's mean."""
    steps = 1000
    for nt, J in [
        (nengo.LIF(amplitude=0.3), [1.5, 3.0, 8.0, 20.0]),
        (nengo.SpikingRectifiedLinear(amplitude=0.01), [-5.0, 150.0, 300.0, 800.0]),
        (nengo.RegularSpiking(nengo.LIFRate(amplitude=2), amplitude=0.5), [1.5, 3, 8, 20]),
        (SpikingTanh(amplitude=0.5), [-0.5, 0.1, 0.3, 0.8]),
    ]:
        trained, _, _, _ = neuron_block(nt, np.broadcast_to(J, (B, 1, 4)))
        with nengo.Network(seed=1) as net:
            u = nengo.Node(J)
            a = nengo.Ensemble(4, 2, neuron_type=nt, gain=np.ones(4), bias=np.zeros(4))
            nengo.Connection(u, a.neurons, synapse=None)
            probe = nengo.Probe(a.neurons)
        with nengo_onnx.Simulator(net, progress_bar=False) as sim:
            sim.run_steps(steps)
        mean = sim.data[probe].mean(axis=0)
        # a regular spike train's mean is off by at most one spike over the run
        spike = np.max(np.abs(mean)) / 1000 + nt.amplitude / (steps * DT)
        assert np.allclose(mean, trained[0, 0], rtol=0.01, atol=spike), nt


def soft_lif_reference(J, sigma, tau_rc=0.02, tau_ref=0.002, amplitude=1.0):
    """NengoDL's SoftLIFRate, in float64."""
    x = (J - 1) / sigma
    valid = x > -20
    xs = np.where(valid, x, 0)
    z = np.logaddexp(0, xs) * sigma
    q = np.where(valid, np.log1p(1 / z), -x - np.log(sigma))
    return amplitude / (tau_ref + tau_rc * q)


def test_soft_lif_training():
    nt = nengo.LIF(amplitude=0.5)
    J = currents(2, 16)
    for sigma in (1.0, 0.05):
        out, _, _, _ = neuron_block(nt, J, settings=Settings(lif_smoothing=sigma))
        assert np.all(np.isfinite(out))
        assert np.allclose(out, soft_lif_reference(J, sigma, amplitude=0.5), rtol=1e-4, atol=1e-4)
    # small sigma: the LIF rate, away from the threshold
    out, _, _, _ = neuron_block(nt, J, settings=Settings(lif_smoothing=1e-4))
    rates = expected_rates(nengo.LIFRate(amplitude=0.5), J)
    far = np.abs(J - 1) > 0.01
    assert np.allclose(out[far], rates[far], rtol=1e-3, atol=1e-2)
    assert np.all(out[~far] < 0.5 * 60)  # near threshold, small (LIF rate 0 to ~40 Hz)
    # lif_smoothing unset, or None: plain LIFRate
    for settings in (None, Settings(lif_smoothing=None)):
        out, _, _, _ = neuron_block(nt, J, settings=settings)
        assert np.allclose(out, rates, rtol=1e-5, atol=1e-4)


def _soft_lif_model(sigma, dtype=np.float32, n=None):
    graph = GraphBuilder()
    ctx = EmitContext(graph, None, dtype, 1, DT)
    J = graph.input("J", dtype, [1, n])
    rate = soft_lif_rate(ctx, nengo.LIF(), J, sigma)
    graph.output("rate", rate, dtype, [1, n])
    return graph.model()


EDGE_J = np.array(
    [-1e30, -1e4, -30.0, -1.0, 0.0, 0.99, 0.999999, 1.0, 1.000001, 1.01, 2.0, 1e3, 1e6, 1e30]
)


@pytest.mark.parametrize("sigma", [1e-4, 0.02, 1.0])
def test_soft_lif_finite_differences(sigma):
    """SoftLIF is finite with finite, non-negative slopes everywhere, even for extremes."""
    session = ort_setup.inference_session(
        _soft_lif_model(sigma, np.float64, EDGE_J.size).SerializeToString()
    )

    def f(J):
        return session.run(None, {"J": J[None]})[0][0]

    rate = f(EDGE_J)
    assert np.all(np.isfinite(rate)) and np.all(rate >= 0)
    assert np.allclose(rate, soft_lif_reference(EDGE_J, sigma), rtol=1e-8, atol=1e-12)
    h = 1e-6 * np.maximum(np.abs(EDGE_J), 1e-2) * min(sigma * 100, 1)
    slope = (f(EDGE_J + h) - f(EDGE_J - h)) / (2 * h)
    assert np.all(np.isfinite(slope)) and np.all(slope >= -1e-6)
    assert np.all(slope[(EDGE_J > 0.5) & (EDGE_J < 10)] > 0)


def test_soft_lif_onnxruntime_gradients(tmp_path):
    """onnxruntime-training differentiates SoftLIF and the LIF rate, finitely."""
    training = ort_setup.import_training()
    n = EDGE_J.size
    graph = GraphBuilder()
    ctx = EmitContext(graph, None, np.float32, 1, DT)
    x = graph.input("x", np.float32, [1, n])
    w = graph.initializer("w", np.ones(n, dtype=np.float32), unique=False)
    J = ctx.node("Mul", [x, w])
    lif = nengo.LIF()
    y = ctx.node("Add", [soft_lif_rate(ctx, lif, J, 0.02), lif_rate(ctx, lif, J)])
    graph.output("y", y, np.float32, [1, n])
    training.artifacts.generate_artifacts(
        graph.model(),
        requires_grad=["w"],
        frozen_params=[],
        loss=training.artifacts.LossType.L1Loss,
        optimizer=training.artifacts.OptimType.SGD,
        artifact_directory=str(tmp_path),
    )
    state = training.api.CheckpointState.load_checkpoint(str(tmp_path / "checkpoint"))
    module = training.api.Module(str(tmp_path / "training_model.onnx"), state)
    module.train()
    xv = np.clip(EDGE_J, -1e30, 1e30).astype(np.float32)[None]
    loss = module(xv, np.zeros((1, n), dtype=np.float32))
    assert np.isfinite(loss)
    grad = state.parameters["w"].grad
    assert np.all(np.isfinite(grad))


# -- direct mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("minibatch_size", [None, 2])
def test_direct_mode_plain(minibatch_size):
    """Direct ensembles without functions: no SimNeurons, everything in ONNX."""
    with nengo.Network(seed=0) as net:
        u = nengo.Node(drive)
        a = nengo.Ensemble(1, 2, neuron_type=nengo.Direct())
        b = nengo.Ensemble(20, 2)
        nengo.Connection(u, a)
        nengo.Connection(a, b, transform=[[0.5, 0], [0, -1]])
        probes = {"a": nengo.Probe(a), "b": nengo.Probe(b, synapse=0.01)}
    ours, ref = run_both(net, probes, 100, minibatch_size=minibatch_size)
    for key in probes:
        assert np.allclose(ours[key], ref[key], atol=1e-5)


@pytest.mark.parametrize("minibatch_size", [None, 2])
def test_direct_mode_functions(minibatch_size):
    """Direct ensembles with functions run their functions in Python (host path)."""
    with nengo.Network(seed=0) as net:
        u = nengo.Node(drive)
        a = nengo.Ensemble(1, 2, neuron_type=nengo.Direct())
        b = nengo.Ensemble(1, 2, neuron_type=nengo.Direct())
        c = nengo.Ensemble(30, 2)
        nengo.Connection(u, a)
        nengo.Connection(a, b, function=lambda x: [x[0] * x[1], x[0] ** 2])
        nengo.Connection(b, c, synapse=0.005)
        nengo.Connection(c, b, synapse=0.01, transform=0.1)
        probes = {
            "a": nengo.Probe(a),
            "b": nengo.Probe(b, synapse=0.01),
            "c": nengo.Probe(c, synapse=0.01),
        }
    ours, ref = run_both(net, probes, 100, minibatch_size=minibatch_size, unroll_simulation=5)
    for key in probes:
        assert np.allclose(ours[key], ref[key], atol=1e-5)


@pytest.mark.parametrize("minibatch_size", [None, 2])
def test_direct_mode_1d(minibatch_size):
    """Nengo's classic: a 1-D Direct ensemble computing a function, into a 1-D LIF one."""
    with nengo.Network(seed=0) as net:
        u = nengo.Node(drive)
        a = nengo.Ensemble(1, 2, neuron_type=nengo.Direct())
        b = nengo.Ensemble(20, 1)
        nengo.Connection(u, a)
        nengo.Connection(a, b, function=lambda x: x[0] * x[1])
        probes = {"a": nengo.Probe(a), "b": nengo.Probe(b, synapse=0.01)}
    ours, ref = run_both(net, probes, 50, minibatch_size=minibatch_size)
    for key in probes:
        assert np.allclose(ours[key], ref[key], atol=1e-5)


def test_rate_form_per_neuron():
    tau_rc = np.linspace(0.01, 0.05, 4)
    lif = per_neuron(nengo.LIF, {"tau_rc": tau_rc}, amplitude=0.5)
    rate = rate_form(lif)
    assert isinstance(rate, nengo.LIFRate) and not isinstance(rate, nengo.LIF)
    assert np.array_equal(rate.tau_rc, tau_rc) and rate.amplitude == 0.5


@pytest.mark.parametrize(
    "neuron_type, ens_kwargs",
    [
        (nengo.LIF(), {}),
        (nengo.AdaptiveLIF(tau_n=0.1, inc_n=0.05), {}),
        (nengo.Sigmoid(tau_ref=0.002), {"max_rates": Uniform(300, 450)}),
        (QuickIzhikevich(), STABLE),
        (SpikingTanh(), {}),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, nengo.neurons.NeuronType) else "",
)
def test_float64(neuron_type, ens_kwargs):
    """With ``dtype="float64"``, the results are nengo's (float64 by default)."""
    net, probes = ensemble_net(neuron_type, **ens_kwargs)
    with net:
        nengo_onnx.configure_settings(dtype="float64")
    ours, ref = run_both(net, probes, 200, minibatch_size=B, unroll_simulation=5)
    for key, value in ref.items():
        assert ours[key].dtype == np.float64
        for item in ours[key]:
            if key == "output" and neuron_type.spiking:
                assert np.array_equal(item, value), key
            else:
                assert np.allclose(item, value, rtol=1e-9, atol=1e-9), key


def test_stochastic_float64():
    nt = nengo.PoissonSpiking(nengo.RectifiedLinear())
    net, probe = rate_net(nt, [4000.0], 10)
    with net:
        nengo_onnx.configure_settings(dtype="float64")
    with nengo_onnx.Simulator(net, progress_bar=False, minibatch_size=B) as sim:
        sim.run_steps(100)
    counts = sim.data[probe] * DT
    assert sim.data[probe].dtype == np.float64
    assert np.allclose(counts, np.round(counts)) and abs(counts.mean() - 4) < 0.3


@pytest.mark.parametrize("optimize", [True, False])
def test_stochastic_independent_streams(optimize):
    """Each population (merged or not) draws its own random numbers."""
    nt = nengo.StochasticSpiking(nengo.RectifiedLinear())
    with nengo.Network(seed=0) as net:
        ens = [
            nengo.Ensemble(10, 1, neuron_type=nt, gain=np.zeros(10), bias=np.full(10, 400.0))
            for _ in range(2)
        ]
        probes = [nengo.Probe(e.neurons) for e in ens]
    with nengo_onnx.Simulator(net, progress_bar=False, optimize=optimize) as sim:
        sim.run_steps(100)
    a, b = (sim.data[p] for p in probes)
    assert a.any() and b.any() and not np.array_equal(a, b)
    assert not np.array_equal(a[:, :5], a[:, 5:])


def test_rate_form_keeps_adaptation_initial_state():
    alif = nengo.AdaptiveLIF(initial_state={"adaptation": Choice([0.5]), "voltage": Choice([0.1])})
    rate = rate_form(alif)
    assert set(rate.initial_state) == {"adaptation"}
    assert rate_form(
        nengo.RegularSpiking(nengo.LIFRate(amplitude=2), amplitude=0.5)
    ) == nengo.LIFRate(amplitude=1.0)
