"""``nengo_onnx.Simulator``: Nengo's Simulator API on ONNX, with NengoDL's batching."""

import os
import warnings
from collections.abc import Mapping

import numpy as np
import nengo
from nengo.builder import Model
from nengo.cache import get_default_decoder_cache
from nengo.exceptions import (
    ReadonlyError,
    SimulatorClosed,
    ValidationError,
)
from nengo.utils.progress import Progress, ProgressTracker

from nengo_onnx.config import settings_of
from nengo_onnx.compiler.graph import operator_graph
from nengo_onnx.compiler.pipeline import run_passes
from nengo_onnx.runtime.runtime import Runtime
from nengo_onnx.compiler.signals import SignalPlan, unique_names

#: Steps per ONNX call. Session creation grows faster than linearly with the
#: graph, per-call overhead is ~10 us: see docs/benchmarks.md for the measurement.
DEFAULT_UNROLL = 10


def input_nodes(network):
    """Nodes whose output the user can override with ``data``."""
    return [
        n for n in network.all_nodes
        if n.size_in == 0 and n.output is not None and n.size_out > 0
    ]


class Simulator:
    """Simulate a Nengo network compiled to ONNX, run by onnxruntime.

    Parameters
    ----------
    network : Network or None
        The network to simulate (or None, with ``model`` given).
    dt : float
        Length of a timestep, in seconds.
    seed : int, optional
        Seed for the simulation's randomness (default: ``network.seed + 1``).
    model : `nengo.builder.Model`, optional
        A model to build into (or an already built one, with ``network=None``).
    minibatch_size : int, optional
        Simulate this many copies of the network at once (NengoDL's batching);
        probe data then has shape ``(minibatch_size, n_steps, d)``.
    unroll_simulation : int
        Timesteps per ONNX call (the graph is unrolled this many times).
    progress_bar : bool
        Show progress while building and simulating.
    optimize : bool
        Run the merge and simplify passes (the results are the same either way).
    threads : int, optional
        onnxruntime's intra-op threads (default: one per core).
    tensorboard : str, optional
        Directory for TensorBoard summaries written by ``train(summaries=...)``.
    """

    def __init__(
        self,
        network,
        dt=0.001,
        seed=None,
        model=None,
        minibatch_size=None,
        unroll_simulation=DEFAULT_UNROLL,
        progress_bar=True,
        optimize=True,
        threads=None,
        tensorboard=None,
    ):
        self.closed = True  # until construction succeeds
        if unroll_simulation is None or int(unroll_simulation) != unroll_simulation \
                or unroll_simulation < 1:
            raise ValidationError(
                f"must be a positive integer (got {unroll_simulation!r})",
                attr="unroll_simulation", obj=self)
        if minibatch_size is not None and (int(minibatch_size) != minibatch_size
                                           or minibatch_size < 1):
            raise ValidationError(
                f"must be a positive integer or None (got {minibatch_size!r})",
                attr="minibatch_size", obj=self)
        self.network = network
        self.progress_bar = progress_bar
        self.optimize = optimize
        self.minibatch_size = minibatch_size
        self.unroll = int(unroll_simulation)
        self.threads = threads
        # where train(summaries=[...]) writes TensorBoard events (run_<n> per simulator)
        self.tensorboard = None if tensorboard is None else os.fspath(tensorboard)
        self.dtype = np.dtype(settings_of(network).dtype)  # validates every setting

        if model is None:
            model = Model(dt=float(dt), label=f"{network}, dt={dt:f}",
                          decoder_cache=get_default_decoder_cache())
        self.model = model
        pt = ProgressTracker(progress_bar, Progress("Building", "Build"))
        with pt:
            if network is not None:
                model.build(network, progress=pt.next_stage("Building", "Build"))
            self._compile(network)

        if seed is None:
            if network is not None and network.seed is not None:
                seed = network.seed + 1
            else:
                seed = np.random.randint(np.iinfo(np.int32).max)
        self.seed = seed
        self.data = SimulationData(self)
        self.closed = False
        self.reset(seed=seed)

    def _compile(self, network):
        nodes = input_nodes(network) if network is not None else []
        self._input_names = unique_names(nodes)
        self.n_built_operators = len(self.model.operators)  # before the passes
        graph = operator_graph(self.model)
        graph.graph["input_nodes"] = self._input_names
        self.graph = run_passes(graph, optimize=self.optimize)
        self.signals = SignalPlan(self.model, list(self.graph.nodes))
        self.signals.squeeze_batch = self.minibatch_size is None
        probe_names = unique_names(self.model.probes)
        self._probe_keys = probe_names
        probes = [(probe_names[p], self.model.sig[p]["in"]) for p in self.model.probes]
        self.runtime = Runtime(
            self.graph, self.signals, probes, minibatch_size=self.minibatch_size or 1,
            dtype=self.dtype, dt=self.model.dt, unroll_steps=self.unroll, threads=self.threads,
        )
        if self.runtime.unrolled:
            self.runtime.block(self.unroll)  # compile now: errors belong to construction

    # -- nengo's Simulator API ------------------------------------------------------------

    @property
    def dt(self):
        return self.model.dt

    @dt.setter
    def dt(self, dummy):
        raise ReadonlyError(attr="dt", obj=self)

    @property
    def n_steps(self):
        return self._n_steps

    @property
    def time(self):
        return self._n_steps * self.dt

    def __enter__(self):
        if self.closed:
            raise SimulatorClosed("Cannot re-open after simulator is closed")
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()

    def __del__(self):
        if not getattr(self, "closed", True):
            warnings.warn(
                "Simulator was deallocated while open. Please close simulators "
                "manually to ensure resources are properly freed.", ResourceWarning)

    def __getstate__(self):
        # onnxruntime sessions and Python step functions cannot be pickled: keep the
        # built model, the state and the probe data, and compile again on loading
        return {
            "model": self.model,
            "store": dict(self.runtime.store) if self.runtime is not None else {},
            "probe_data": self._probe_data,
            "n_steps": self._n_steps,
            "dt": self.dt,
            "seed": self.seed,
            "minibatch_size": self.minibatch_size,
            "unroll": self.unroll,
            "progress_bar": self.progress_bar,
            "optimize": self.optimize,
            "closed": self.closed,
        }

    def __setstate__(self, state):
        self.__init__(
            network=None, model=state["model"], dt=state["dt"], seed=state["seed"],
            minibatch_size=state["minibatch_size"], unroll_simulation=state["unroll"],
            progress_bar=state["progress_bar"],
            optimize=False,  # the pickled model is already optimized
        )
        self.optimize = state["optimize"]
        by_name = {self.signals.name(base): base for base in self.runtime.store}
        for base, value in state["store"].items():
            name = self.signals.name(base)
            if name in by_name:
                self.runtime.store[by_name[name]] = np.array(value)
        self._n_steps = self.runtime.n_steps = state["n_steps"]
        self._probe_data = {p: list(v) for p, v in state["probe_data"].items()}
        self.data.reset()
        if state["closed"]:
            self.close()

    def close(self):
        self.closed = True
        self.runtime = None

    def reset(self, seed=None):
        """Reset the state and probe data (new ``seed`` changes noise, not parameters)."""
        if self.closed:
            raise SimulatorClosed("Cannot reset closed Simulator.")
        if seed is not None:
            self.seed = seed
        self.runtime.reset(self.seed)
        # sim.signals[sig] reads the current state, as nengo's SignalDict does
        self.signals.store = self.runtime.store
        self.signals.minibatch_size = self.runtime.B
        self._n_steps = 0
        self._probe_data = {p: [] for p in self.model.probes}
        self.data.reset()

    def clear_probes(self):
        self._probe_data = {p: [] for p in self.model.probes}
        self.data.reset()

    def run(self, time_in_seconds, data=None, progress_bar=None):
        """Simulate for ``time_in_seconds`` (rounded to a whole number of steps)."""
        if time_in_seconds < 0:
            raise ValidationError(f"Must be positive (got {time_in_seconds:g})",
                                  attr="time_in_seconds")
        steps = int(np.round(float(time_in_seconds) / self.dt))
        if steps == 0:
            warnings.warn(f"{time_in_seconds} results in running for 0 timesteps. "
                          f"Simulator still at time {self.time}.")
            return
        self.run_steps(steps, data=data, progress_bar=progress_bar)

    def step(self, data=None):
        """Advance one timestep."""
        self.run_steps(1, data=data, progress_bar=False)

    def run_steps(self, n_steps, data=None, progress_bar=None):
        """Simulate ``n_steps`` timesteps, optionally overriding input Nodes with ``data``."""
        if self.closed:
            raise SimulatorClosed("Simulator cannot run because it is closed.")
        if isinstance(n_steps, (bool, np.bool_)) or int(n_steps) != n_steps or n_steps < 0:
            raise ValidationError(
                f"must be a non-negative integer (got {n_steps!r})", attr="n_steps", obj=self)
        n_steps = int(n_steps)
        feeds = self._check_data(data, n_steps)
        progress_bar = self.progress_bar if progress_bar is None else progress_bar
        with ProgressTracker(progress_bar, Progress("Simulating", "Simulation", n_steps)) as pt:
            outputs = self.runtime.run(n_steps, feeds, progress=pt.total_progress.step)
        self._record(outputs, n_steps)
        self._n_steps += n_steps

    def _record(self, outputs, n_steps):
        for probe in self.model.probes:
            values = outputs[self._probe_keys[probe]]
            period = 1 if probe.sample_every is None else probe.sample_every / self.dt
            steps = np.arange(self._n_steps + 1, self._n_steps + n_steps + 1)
            values = values[:, steps % period < 1]
            self._probe_data[probe].append(values)
        self.data.reset()

    def _check_data(self, data, n_steps):
        if not data:
            return {}
        B = self.minibatch_size or 1
        feeds = {}
        for obj, value in data.items():
            if obj not in self._input_names:
                if isinstance(obj, nengo.Node):
                    raise ValidationError(
                        f"{obj} is not an input Node (it has size_in={obj.size_in}); "
                        "data can only be given for Nodes with size_in == 0",
                        attr="data", obj=self)
                raise ValidationError(
                    f"{obj} is not an input Node of this network; data keys must be "
                    "Nodes with size_in == 0", attr="data", obj=self)
            value = np.asarray(value)
            if value.dtype.kind not in "fiub":
                raise ValidationError(
                    f"data for {obj} has dtype {value.dtype}; expected numbers",
                    attr="data", obj=self)
            if self.minibatch_size is None and value.ndim == 2:
                value = value[None]
            expected = (B, n_steps, obj.size_out)
            if value.shape != expected:
                raise ValidationError(
                    f"data for {obj} has shape {value.shape}; expected "
                    f"(minibatch_size, n_steps, node.size_out) = {expected}",
                    attr="data", obj=self)
            if not np.all(np.isfinite(value)):
                raise ValidationError(f"data for {obj} contains NaN or inf",
                                      attr="data", obj=self)
            feeds[self._input_names[obj]] = value
        return feeds

    def trange(self, sample_every=None, dt=None):
        """Times of the probed steps (the first is ``dt``, as in nengo)."""
        if dt is not None:
            if sample_every is not None:
                raise ValidationError("Cannot specify both `dt` and `sample_every`. "
                                      "Use `sample_every` only.", attr="dt", obj=self)
            warnings.warn("`dt` is deprecated. Use `sample_every` instead.",
                          DeprecationWarning)
            sample_every = dt
        period = 1 if sample_every is None else sample_every / self.dt
        steps = np.arange(1, self.n_steps + 1)
        return self.dt * steps[steps % period < 1]

    # -- training, parameters and export (implemented in their own modules) ----------

    def train(self, *args, **kwargs):
        """Train the network's parameters (see `nengo_onnx.training.train.train`)."""
        from nengo_onnx.training.train import train  # noqa: PLC0415

        return train(self, *args, **kwargs)

    def loss(self, *args, **kwargs):
        """Evaluate the objectives on ``data`` (see `nengo_onnx.training.train.loss`)."""
        from nengo_onnx.training.train import loss  # noqa: PLC0415

        return loss(self, *args, **kwargs)

    def save_params(self, *args, **kwargs):
        from nengo_onnx.training.train import save_params  # noqa: PLC0415

        return save_params(self, *args, **kwargs)

    def load_params(self, *args, **kwargs):
        from nengo_onnx.training.train import load_params  # noqa: PLC0415

        return load_params(self, *args, **kwargs)

    def freeze_params(self, *args, **kwargs):
        from nengo_onnx.training.train import freeze_params  # noqa: PLC0415

        return freeze_params(self, *args, **kwargs)

    def export(self, *args, **kwargs):
        """Write an inference ONNX model (see `nengo_onnx.exporting.exporter.export_simulator`)."""
        from nengo_onnx.exporting.exporter import export_simulator  # noqa: PLC0415

        return export_simulator(self, *args, **kwargs)

    def _probe_array(self, probe):
        parts = self._probe_data[probe]
        sig = self.model.sig[probe]["in"]
        B = self.minibatch_size or 1
        arr = (np.concatenate(parts, axis=1) if parts
               else np.zeros((B, 0, *sig.shape), dtype=self.dtype))
        arr = arr if self.minibatch_size is not None else arr[0]
        arr.setflags(write=False)
        return arr


class SimulationData(Mapping):
    """``sim.data``: probe data and built parameters, as in nengo."""

    def __init__(self, sim):
        self.sim = sim
        self._cache = {}

    def __getitem__(self, key):
        if isinstance(key, nengo.Probe) and key in self.sim._probe_data:
            if key not in self._cache:
                self._cache[key] = self.sim._probe_array(key)
            return self._cache[key]
        return self.sim.model.params[key]

    def __iter__(self):
        return iter(self.sim.model.params)

    def __len__(self):
        return len(self.sim.model.params)

    def __contains__(self, key):
        return key in self.sim.model.params

    def reset(self):
        self._cache.clear()
