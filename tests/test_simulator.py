"""nengo_onnx.Simulator against nengo.Simulator, and its error handling."""

import nengo
import numpy as np
import pytest
from nengo.exceptions import SimulatorClosed, ValidationError

import nengo_onnx


def chain_net(neuron_type=None, seed=0):
    neuron_type = nengo.LIF() if neuron_type is None else neuron_type
    with nengo.Network(seed=seed) as net:
        net.u = nengo.Node(lambda t: np.sin(8 * t), label="u")
        net.a = nengo.Ensemble(40, 1, neuron_type=neuron_type)
        net.b = nengo.Ensemble(30, 1, neuron_type=neuron_type)
        nengo.Connection(net.u, net.a)
        nengo.Connection(net.a, net.b, function=lambda x: x**2)
        net.p = nengo.Probe(net.b, synapse=0.01)
        net.pn = nengo.Probe(net.a.neurons)
    return net


def reference(net, n_steps):
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(n_steps)
    return ref


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("unroll", [1, 7])
def test_matches_nengo(optimize, unroll):
    net = chain_net()
    ref = reference(net, 23)
    with nengo_onnx.Simulator(
        net, optimize=optimize, unroll_simulation=unroll, progress_bar=False
    ) as sim:
        sim.run_steps(10)
        sim.run_steps(13)  # neither a multiple of the unroll length
    assert sim.data[net.p].shape == (23, 1)
    assert np.allclose(sim.data[net.p], ref.data[net.p], atol=1e-5)
    assert np.array_equal(sim.data[net.pn] > 0, ref.data[net.pn] > 0)
    assert np.allclose(sim.trange(), ref.trange())
    assert sim.n_steps == 23 and np.isclose(sim.time, ref.time)


def test_built_params_match_nengo():
    net = chain_net()
    with (
        nengo.Simulator(net, progress_bar=False) as ref,
        nengo_onnx.Simulator(net, progress_bar=False) as sim,
    ):
        for attr in ("encoders", "bias", "gain", "scaled_encoders"):
            assert np.allclose(getattr(sim.data[net.a], attr), getattr(ref.data[net.a], attr))
        conn = net.connections[1]
        assert np.allclose(sim.data[conn].weights, ref.data[conn].weights)
        assert "encoders" in str(sim.data[net.a])


def test_minibatch_data_overrides_inputs():
    net = chain_net(nengo.RectifiedLinear())
    n_steps, batch = 12, 3
    rng = np.random.RandomState(1)
    data = rng.uniform(-1, 1, size=(batch, n_steps, 1))
    with nengo_onnx.Simulator(
        net, minibatch_size=batch, unroll_simulation=5, progress_bar=False
    ) as sim:
        sim.run_steps(n_steps, data={net.u: data})
    assert sim.data[net.p].shape == (batch, n_steps, 1)
    for i in range(batch):
        net.u.output = nengo.processes.PresentInput(data[i], presentation_time=0.001)
        ref = reference(net, n_steps)
        assert np.allclose(sim.data[net.p][i], ref.data[net.p], atol=1e-5)


def test_data_without_minibatch_accepts_2d_and_3d():
    net = chain_net(nengo.RectifiedLinear())
    data = np.linspace(-1, 1, 10)[:, None]
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(10, data={net.u: data})
        first = sim.data[net.p].copy()
        sim.reset()
        sim.run_steps(10, data={net.u: data[None]})
        assert np.allclose(sim.data[net.p], first)


def test_python_function_of_signals_runs_on_host_path():
    with nengo.Network(seed=1) as net:
        u = nengo.Node(np.sin)
        square = nengo.Node(lambda t, x: x**2, size_in=1)
        ens = nengo.Ensemble(20, 1)
        nengo.Connection(u, square)
        nengo.Connection(square, ens)
        p = nengo.Probe(ens, synapse=0.01)
        ps = nengo.Probe(square)
    ref = reference(net, 30)
    with nengo_onnx.Simulator(net, progress_bar=False, minibatch_size=2) as sim:
        sim.run_steps(30)
    for i in range(2):
        assert np.allclose(sim.data[p][i], ref.data[p], atol=1e-5)
        assert np.allclose(sim.data[ps][i], ref.data[ps], atol=1e-6)


def test_reset_reproduces_run():
    net = chain_net()
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(15)
        first = sim.data[net.p].copy()
        sim.reset()
        assert sim.n_steps == 0 and sim.data[net.p].shape == (0, 1)
        sim.run_steps(15)
        assert np.array_equal(sim.data[net.p], first)


def test_float64_setting():
    net = chain_net(nengo.LIFRate())
    with net:
        nengo_onnx.configure_settings(dtype="float64")
    ref = reference(net, 20)
    with nengo_onnx.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(20)
    assert sim.data[net.p].dtype == np.float64
    assert np.allclose(sim.data[net.p], ref.data[net.p], atol=1e-10)


def test_run_zero_warns_and_negative_time_raises():
    with nengo_onnx.Simulator(chain_net(), progress_bar=False) as sim:
        with pytest.warns(UserWarning, match="0 timesteps"):
            sim.run(0)
        with pytest.raises(ValidationError, match="Must be positive"):
            sim.run(-1)


@pytest.mark.parametrize("steps", [-1, 2.5])
def test_bad_step_counts(steps):
    with nengo_onnx.Simulator(chain_net(), progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="n_steps"):
            sim.run_steps(steps)


def test_closed_simulator_raises():
    sim = nengo_onnx.Simulator(chain_net(), progress_bar=False)
    sim.close()
    for call in (lambda: sim.run_steps(1), sim.step, sim.reset):
        with pytest.raises(SimulatorClosed):
            call()


def test_bad_data():
    net = chain_net()
    with net:
        passthrough = nengo.Node(size_in=1, label="passthrough")
    other = nengo.Node(0, add_to_container=False)
    with nengo_onnx.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="size_in=1"):
            sim.run_steps(3, data={passthrough: np.zeros((2, 3, 1))})
        with pytest.raises(ValidationError, match="belongs to another network"):
            sim.run_steps(3, data={other: np.zeros((2, 3, 1))})
        with pytest.raises(ValidationError, match=r"expected .*\(2, 3, 1\)"):
            sim.run_steps(3, data={net.u: np.zeros((2, 4, 1))})
        with pytest.raises(ValidationError, match="NaN"):
            sim.run_steps(3, data={net.u: np.full((2, 3, 1), np.nan)})
        with pytest.raises(ValidationError, match="dtype"):
            sim.run_steps(3, data={net.u: np.full((2, 3, 1), "a")})


def test_bad_constructor_arguments():
    with pytest.raises(ValidationError, match="unroll_simulation"):
        nengo_onnx.Simulator(chain_net(), unroll_simulation=0)
    with pytest.raises(ValidationError, match="minibatch_size"):
        nengo_onnx.Simulator(chain_net(), minibatch_size=-2)
