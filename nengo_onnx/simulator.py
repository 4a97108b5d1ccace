"""``nengo_onnx.Simulator``: Nengo's Simulator API on ONNX, with NengoDL's batching."""

import os
import warnings
from collections.abc import Mapping

import nengo
import numpy as np
from nengo.builder import Model
from nengo.cache import get_default_decoder_cache
from nengo.exceptions import (
    ReadonlyError,
    SimulationError,
    SimulatorClosed,
    ValidationError,
)
from nengo.utils.progress import Progress, ProgressTracker

from nengo_onnx.compiler import params as params_io
from nengo_onnx.compiler.program import compile_model
from nengo_onnx.config import settings_of
from nengo_onnx.exporting.exporter import export_program
from nengo_onnx.runtime.runtime import Runtime
from nengo_onnx.runtime.signals import SignalValues
from nengo_onnx.training import keras
from nengo_onnx.training import train as training

#: Steps per ONNX call. Session creation grows faster than linearly with the
#: graph, per-call overhead is ~10 us: see docs/benchmarks.md for the measurement.
DEFAULT_UNROLL = 10


def _positive_int(value, attr, obj, allow_none=False):
    if value is None and allow_none:
        return None
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < 1
    ):
        raise ValidationError(
            f"must be a positive integer{' or None' if allow_none else ''} (got {value!r})",
            attr=attr,
            obj=obj,
        )
    return int(value)


def _check_dt(dt, obj):
    try:
        value = float(dt)
    except (TypeError, ValueError):
        value = None
    if value is None or not np.isfinite(value) or value <= 0:
        raise ValidationError(
            f"must be a positive, finite number of seconds (got {dt!r})", attr="dt", obj=obj
        )
    return value


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
        self.unroll = _positive_int(unroll_simulation, "unroll_simulation", self)
        self.minibatch_size = _positive_int(
            minibatch_size, "minibatch_size", self, allow_none=True
        )
        self.threads = _positive_int(threads, "threads", self, allow_none=True)
        dt = _check_dt(dt, self)
        if network is not None and not isinstance(network, nengo.Network):
            raise ValidationError(
                f"must be a nengo.Network or None (got {type(network).__name__})",
                attr="network",
                obj=self,
            )
        self.network = network
        self.progress_bar = progress_bar
        self.optimize = optimize
        # where train(summaries=[...]) writes TensorBoard events (run_<n> per simulator)
        self.tensorboard = None if tensorboard is None else os.fspath(tensorboard)
        self.settings = settings_of(network)  # validated now: errors belong to construction

        if model is None:
            model = Model(
                dt=dt, label=f"{network}, dt={dt:f}", decoder_cache=get_default_decoder_cache()
            )
        self.model = model
        pt = ProgressTracker(progress_bar, Progress("Building", "Build"))
        with pt:
            if network is not None:
                model.build(network, progress=pt.next_stage("Building", "Build"))
            self._compile(optimize)

        if seed is None:
            if network is not None and network.seed is not None:
                seed = network.seed + 1
            else:
                seed = np.random.randint(np.iinfo(np.int32).max)
        self.seed = seed
        self.recorded = ProbeData(
            self.model.probes,
            self.minibatch_size,
            self.dtype,
            self.dt,
            {probe: self.model.sig[probe]["in"].shape for probe in self.model.probes},
        )
        self.data = SimulationData(self.recorded, self.program.params)
        self.training_state = training.TrainingState()
        self.keras_setup = None  # what compile() set up
        self.closed = False
        self.reset(seed=seed)

    def _compile(self, optimize, params=None, compiled_graph=None):
        self.program = compile_model(
            self.model,
            self.network,
            self.settings,
            minibatch_size=self.minibatch_size or 1,
            unroll=self.unroll,
            optimize=optimize,
            threads=self.threads,
            params=params,
            compiled_graph=compiled_graph,
        )
        self.runtime = Runtime(self.program)
        self.signals = SignalValues(self.runtime, squeeze_batch=self.minibatch_size is None)
        if self.program.unrolled:
            self.program.block(self.unroll)  # compile now: errors belong to construction

    @property
    def dtype(self):
        """The simulation's floating-point dtype (``configure_settings(dtype=...)``)."""
        return self.program.dtype

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
                "manually to ensure resources are properly freed.",
                ResourceWarning,
                stacklevel=2,
            )

    def __getstate__(self):
        # onnxruntime sessions and Python step functions cannot be pickled: keep the
        # network, the built model, parameter values, state and probe data, and
        # compile again on loading
        running = not self.closed
        return {
            "network": self.network,
            "model": self.model,
            "graph": self.program.graph,
            "settings": self.settings,
            "params": self.program.params.named(),
            # a closed simulator keeps its data, not its state (as nengo's does)
            "state": self.runtime.state_arrays() if running else None,
            "time_state": {
                key: np.array(self.runtime.store[sig.base])
                for key, sig in (("step", self.model.step), ("time", self.model.time))
            }
            if running
            else None,
            "closed": self.closed,
            "recorded": self.recorded,
            "n_steps": self._n_steps,
            "seed": self.seed,
            "minibatch_size": self.minibatch_size,
            "unroll": self.unroll,
            "progress_bar": self.progress_bar,
            "optimize": self.optimize,
            "threads": self.threads,
            "tensorboard": self.tensorboard,
        }

    def __setstate__(self, state):
        self.closed = True
        self.network = state["network"]
        self.model = state["model"]
        self.settings = state["settings"]
        self.minibatch_size = state["minibatch_size"]
        self.unroll = state["unroll"]
        self.progress_bar = state["progress_bar"]
        self.optimize = state["optimize"]
        self.threads = state["threads"]
        self.tensorboard = state["tensorboard"]
        # the operator graph after the passes comes along: the same program, the same
        # state layout (running the passes again on the merged model could differ)
        self._compile(self.optimize, params=state["params"], compiled_graph=state["graph"])
        self.seed = state["seed"]
        self.recorded = ProbeData(
            self.model.probes,
            self.minibatch_size,
            self.dtype,
            self.dt,
            {probe: self.model.sig[probe]["in"].shape for probe in self.model.probes},
        )
        self.data = SimulationData(self.recorded, self.program.params)
        self.training_state = training.TrainingState()
        self.keras_setup = None
        self.closed = False
        self.reset(seed=self.seed)
        if state["state"] is not None:
            if not self.runtime.load_state(state["state"]):
                raise SimulationError(
                    "the pickled simulation state does not fit the compiled "
                    "model (a different nengo or nengo-onnx version?)"
                )
            for key, sig in (("step", self.model.step), ("time", self.model.time)):
                self.runtime.store[sig.base] = np.array(state["time_state"][key])
        self._n_steps = self.runtime.n_steps = state["n_steps"]
        self.recorded = state["recorded"]
        self.data = SimulationData(self.recorded, self.program.params)
        if state["closed"]:
            self.close()

    def close(self):
        """Close the simulator; it cannot run again (its data stays readable)."""
        self.closed = True
        self.runtime = None

    def reset(self, seed=None):
        """Reset the state and probe data (new ``seed`` changes noise, not parameters)."""
        if self.closed:
            raise SimulatorClosed("Cannot reset closed Simulator.")
        if seed is not None:
            self.seed = seed
        self.runtime.reset(self.seed)
        self._n_steps = 0
        self.recorded.clear()

    def clear_probes(self):
        """Clear the probe data recorded so far (the state is kept)."""
        self.recorded.clear()

    def run(self, time_in_seconds, data=None, progress_bar=None):
        """Simulate for ``time_in_seconds`` (rounded to a whole number of steps).

        ``data`` maps input Nodes to ``(minibatch_size, n_steps, node.size_out)``
        arrays that replace their output (NengoDL's form).
        """
        try:
            seconds = float(time_in_seconds)
        except (TypeError, ValueError):
            seconds = None
        if seconds is None or not np.isfinite(seconds):
            raise ValidationError(
                f"must be a finite number of seconds (got {time_in_seconds!r})",
                attr="time_in_seconds",
                obj=self,
            )
        if seconds < 0:
            raise ValidationError(
                f"Must be positive (got {seconds:g})", attr="time_in_seconds", obj=self
            )
        steps = int(np.round(seconds / self.dt))
        if steps == 0:
            warnings.warn(
                f"{time_in_seconds} results in running for 0 timesteps. "
                f"Simulator still at time {self.time}.",
                stacklevel=2,
            )
            return
        self.run_steps(steps, data=data, progress_bar=progress_bar)

    def step(self, data=None):
        """Advance one timestep."""
        self.run_steps(1, data=data, progress_bar=False)

    def run_steps(self, n_steps, data=None, progress_bar=None):
        """Simulate ``n_steps`` timesteps, optionally overriding input Nodes with ``data``.

        If a step fails (a Node raises, Ctrl-C), every step completed before it is
        kept: ``n_steps``, ``trange()``, the state and the probe data agree.
        """
        if self.closed:
            raise SimulatorClosed("Simulator cannot run because it is closed.")
        if (
            isinstance(n_steps, (bool, np.bool_))
            or not isinstance(n_steps, (int, np.integer))
            or n_steps < 0
        ):
            raise ValidationError(
                f"must be a non-negative integer (got {n_steps!r})", attr="n_steps", obj=self
            )
        n_steps = int(n_steps)
        feeds = self._check_data(data, n_steps)
        progress_bar = self.progress_bar if progress_bar is None else progress_bar
        with ProgressTracker(progress_bar, Progress("Simulating", "Simulation", n_steps)) as pt:
            self.runtime.run(
                n_steps, feeds, progress=pt.total_progress.step, on_block=self._record
            )

    def _record(self, outputs, n_steps):
        """Keep a finished block's probe data (each block as it finishes, so a failing
        step loses nothing before it)."""
        self.recorded.record(outputs, self.program.probes, self._n_steps, n_steps)
        self._n_steps += n_steps

    def _check_data(self, data, n_steps):
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise ValidationError(
                f"data must be a dict {{input Node: array}} (got {type(data).__name__})",
                attr="data",
                obj=self,
            )
        B = self.minibatch_size or 1
        feeds = {}
        for obj, value in data.items():
            if obj not in self.program.inputs:
                raise ValidationError(self.program.not_an_input(obj), attr="data", obj=self)
            try:
                value = np.asarray(value)
            except ValueError as err:
                raise ValidationError(
                    f"data for {obj} is not an array of numbers: {err}", attr="data", obj=self
                ) from err
            if value.dtype.kind not in "fiub":
                raise ValidationError(
                    f"data for {obj} has dtype {value.dtype}; expected numbers",
                    attr="data",
                    obj=self,
                )
            if self.minibatch_size is None and value.ndim == 2:
                value = value[None]
            expected = (B, n_steps, obj.size_out)
            if value.shape != expected:
                raise ValidationError(
                    f"data for {obj} has shape {value.shape}; expected "
                    f"(minibatch_size, n_steps, node.size_out) = {expected}",
                    attr="data",
                    obj=self,
                )
            if not np.all(np.isfinite(value)):
                raise ValidationError(f"data for {obj} contains NaN or inf", attr="data", obj=self)
            feeds[self.program.inputs[obj]] = value
        return feeds

    def trange(self, sample_every=None, dt=None):
        """Times of the probed steps (the first is ``dt``, as in nengo)."""
        if dt is not None:
            if sample_every is not None:
                raise ValidationError(
                    "Cannot specify both `dt` and `sample_every`. Use `sample_every` only.",
                    attr="dt",
                    obj=self,
                )
            warnings.warn(
                "`dt` is deprecated. Use `sample_every` instead.", DeprecationWarning, stacklevel=2
            )
            sample_every = dt
        period = 1 if sample_every is None else sample_every / self.dt
        steps = np.arange(1, self.n_steps + 1)
        return self.dt * steps[steps % period < 1]

    # -- training, parameters and export ---------------------------------------------------

    def _check_open(self):
        if self.closed:
            raise SimulatorClosed("Cannot use a closed Simulator.")

    def train(
        self,
        data,
        optimizer,
        n_epochs=1,
        objective=None,
        truncation=None,
        summaries=None,
        shuffle=True,
        profile=False,
    ):
        """Optimize the network's parameters to minimize ``objective`` on ``data``.

        Parameters
        ----------
        data : dict
            ``{input Node: (n_inputs, n_steps, node.size_out), Probe: (n_inputs,
            n_steps, probe.size_in)}``: inputs override Nodes (those without data keep
            their output); probe entries are targets.
        optimizer : `nengo_onnx.optimizers.Optimizer`
            E.g. ``Adam(1e-3)`` or ``SGD(1e-2, momentum=0.9, nesterov=True)``.
        n_epochs : int
            Passes through the data.
        objective : dict, function or None
            ``{probe or tuple of probes: f}``; ``f(outputs, targets)`` or
            ``f(outputs)``, or ``None`` (targets are dL/dy). Default: mean squared
            error on every probe with targets.
        truncation : int or None
            Truncated BPTT over windows of this many steps (None: full BPTT).
        summaries : list
            ``"loss"``, Connections, Ensembles and Neurons to log to TensorBoard
            (needs ``Simulator(..., tensorboard=dir)``).
        shuffle : bool
            Shuffle the inputs into new minibatches each epoch (seeded by ``seed``).
        profile : bool or str
            Write onnxruntime's profile (Chrome trace JSON) to
            ``nengo_onnx_profile.json`` or to the given file name.

        Returns
        -------
        dict
            ``{"loss": [mean loss of each epoch]}``.
        """
        self._check_open()
        return training.train(
            self,
            data,
            optimizer,
            n_epochs=n_epochs,
            objective=objective,
            truncation=truncation,
            summaries=summaries,
            shuffle=shuffle,
            profile=profile,
        )

    def loss(self, data, objective=None):
        """The objective on all of ``data`` (mean over minibatches), without training.

        The network runs as ``run`` runs it (spiking neurons spike), from the
        initial state, one minibatch at a time; the objectives are evaluated with
        numpy. ``data`` and ``objective`` are as for `train`; ``None`` objectives
        (targets are dL/dy) add nothing.
        """
        self._check_open()
        return training.loss(self, data, objective=objective)

    # -- NengoDL 3's Keras-style API (nengo_onnx.training.keras) --------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Set the optimizer, losses and metrics of `fit` and `evaluate` (Keras's ``compile``).

        Parameters
        ----------
        optimizer : `nengo_onnx.optimizers.Optimizer` or str
            An optimizer, or a name (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``,
            ``"adagrad"``: Keras's defaults).
        loss : str, callable, `nengo_onnx.losses.Loss`, list or dict
            ``fn(y_true, y_pred)`` (Keras's order), a `nengo_onnx.losses` name or object,
            for every probe with targets; or ``{probe or probe name: loss}``; or a list in
            the order of ``sim.model.probes``. Several losses are summed.
        metrics : str, callable, list or dict
            Metrics (`nengo_onnx.metrics`) for every probe with targets (a name, a
            function or a list of them), or ``{probe or probe name: metric(s)}``.
        """
        self._check_open()
        keras.compile(self, optimizer, loss=loss, metrics=metrics)

    def fit(
        self,
        x=None,
        y=None,
        n_steps=None,
        epochs=1,
        validation_data=None,
        callbacks=None,
        shuffle=True,
    ):
        """Train with the `compile` settings (Keras's ``fit``), through `train`.

        Parameters
        ----------
        x : dict, list, array or None
            Inputs ``{input Node or name: (n, n_steps, node.size_out)}``, a list in the
            order of the input Nodes, one array for the only input Node, or None (the
            Nodes keep their own output).
        y : dict, list or array
            Targets ``{Probe or name: array}`` (for the sparse losses, class labels
            ``(n, n_steps, 1)``), or one array for the only probe with a loss.
        n_steps : int, optional
            Timesteps (checked against ``x``; needed where ``x`` is None).
        epochs : int
            Passes through the data.
        validation_data : tuple, optional
            ``(x_val, y_val)``, evaluated (as `evaluate` does, spiking) after each epoch:
            ``val_loss`` and ``val_<probe>_<metric>``.
        callbacks : list of `nengo_onnx.callbacks.Callback`
            Called at the start and end of training, of each epoch and after each
            minibatch (e.g. ``EarlyStopping``, ``TensorBoard``).
        shuffle : bool
            New random minibatches each epoch.

        Returns
        -------
        `nengo_onnx.callbacks.History`
            ``history.history``: ``{"loss": [...], "<probe>_<metric>": [...],
            "val_loss": [...], ...}``, one value per epoch.
        """
        self._check_open()
        return keras.fit(
            self,
            x=x,
            y=y,
            n_steps=n_steps,
            epochs=epochs,
            validation_data=validation_data,
            callbacks=callbacks,
            shuffle=shuffle,
        )

    def evaluate(self, x=None, y=None, n_steps=None):
        """The `compile` losses and metrics on ``x`` and ``y`` (as for `fit`).

        The network runs as `run` runs it (spiking neurons spike), from the initial
        state. Returns ``{"loss": sum of the losses, "<probe>_loss": each (with several
        losses), "<probe>_<metric>": ...}``, each a mean over examples and timesteps.
        """
        self._check_open()
        return keras.evaluate(self, x=x, y=y, n_steps=n_steps)

    def predict(self, x=None, n_steps=None):
        """The outputs of every probe on the inputs ``x`` (as for `fit`):
        ``{probe: (n, n_steps, probe.size_in)}``.

        The network runs as `run` runs it, from the initial state, one minibatch at a
        time (``n`` must be a multiple of ``minibatch_size``; with ``x=None``, ``n`` is
        ``minibatch_size``); the simulator's own state and probe data are untouched.
        """
        self._check_open()
        return keras.predict(self, x=x, n_steps=n_steps)

    def predict_on_batch(self, x=None, n_steps=None):
        """`predict` on exactly one minibatch (``minibatch_size`` examples)."""
        self._check_open()
        return keras.predict(self, x=x, n_steps=n_steps, on_batch=True)

    def get_nengo_params(self, objs, as_dict=False):
        """Constructor arguments that rebuild ``objs`` with the current (trained)
        parameters in another, plain nengo network (NengoDL's ``get_nengo_params``).

        ``objs``: an Ensemble or Connection, or a list of them. Ensembles get
        ``encoders``, ``normalize_encoders=False``, ``gain``, ``bias``, ``max_rates``,
        ``intercepts``; decoded Connections ``solver=NoSolver(...)``, ``function``,
        ``transform``; others their ``transform``. Returns a dict (one object), a list,
        or ``{label: dict}`` with ``as_dict=True``. See
        `nengo_onnx.compiler.params.nengo_params`.
        """
        self._check_open()
        return params_io.nengo_params(self.program, objs, as_dict=as_dict)

    def save_params(self, path, include_state=False):
        """Save every trainable parameter (and optionally the simulation state) to ``path``.

        Written atomically as ``path + ".npz"``. Parameters are stored per Nengo
        object (``"ens.encoders"``, ``"conn.weights"``, ...), so they load into any
        simulator of a network with the same structure, e.g. the spiking version
        of a rate network. ``include_state=True`` (NengoDL's option) also stores the
        current simulation state (synapse and neuron states); it loads into a
        simulator whose state has the same layout. Returns the file name.
        """
        self._check_open()
        state = self.runtime.state_arrays() if include_state else None
        return params_io.save(self.program, path, state=state)

    def load_params(self, path):
        """Load parameters saved by `save_params` into this simulator.

        Fails with `ParamsMismatchError` when the saved network's parameters differ
        from this one's (names or shapes), and with ``ValidationError`` naming the
        file when it cannot be read or holds NaN, inf or out-of-range values. Saved
        simulation state is restored when this simulator's state has the same
        layout, with a warning otherwise.
        """
        self._check_open()
        state = params_io.load(self.program, path)
        if state and not self.runtime.load_state(state):
            warnings.warn(
                f"the simulation state saved in {os.fspath(path)} does not fit this "
                "simulator (another network structure, neuron types, minibatch "
                "size or optimize setting); only the parameters were loaded",
                stacklevel=2,
            )

    def freeze_params(self, objs):
        """Write the simulator's (trained) parameters back into the Nengo objects.

        ``objs`` is a Network or a list of Ensembles, Connections, OnnxNodes and
        Networks; ``nengo.Simulator`` then reproduces this simulator (see
        `nengo_onnx.compiler.params.freeze`).
        """
        self._check_open()
        params_io.freeze(self.program, objs)

    def export(self, path, steps=None, fixed=None, opset=None, batch=None):
        """Write an ONNX inference model of the network, with its current parameters.

        ``steps=K``: a streaming model of K steps per call (default:
        ``unroll_simulation``); ``fixed=N``: N steps from the initial state.
        ``opset``: 13 to 21 (default: the oldest the network can be written at).
        ``batch``: the model's batch size is the simulator's ``minibatch_size``
        (default), or any (``"dynamic"``: a symbolic batch axis). See
        `nengo_onnx.exporting.exporter`. Returns an ``ExportInfo``.
        """
        if self.closed:
            raise SimulatorClosed("Cannot export a closed Simulator.")
        return export_program(
            self.program,
            path,
            steps=steps,
            fixed=fixed,
            opset=opset,
            seed=self.seed,
            batch=batch,
        )


class ProbeData:
    """The data of each probe, kept block by block as the simulation runs.

    Each block's values are thinned to the probe's ``sample_every`` when they
    arrive, so memory follows the sampled data, not the steps run.
    """

    def __init__(self, probes, minibatch_size, dtype, dt, shapes):
        self.probes = list(probes)
        self.shapes = shapes  # {probe: shape of what it records}
        self.minibatch_size = minibatch_size
        self.dtype = dtype
        self.dt = dt
        self.clear()

    def clear(self):
        self._parts = {probe: [] for probe in self.probes}
        self._arrays = {}

    def __contains__(self, probe):
        return probe in self._parts

    def record(self, outputs, ports, first_step, n_steps):
        """Keep ``outputs`` (``{port: [B, n_steps, ...]}``) of steps ``first_step + 1 ...``."""
        steps = None
        for probe in self.probes:
            values = outputs[ports[probe]]
            if probe.sample_every is not None:
                if steps is None:
                    steps = np.arange(first_step + 1, first_step + n_steps + 1)
                values = values[:, steps % (probe.sample_every / self.dt) < 1]
            self._parts[probe].append(values)  # (each block's arrays are new)
        self._arrays.clear()

    def array(self, probe):
        """All of ``probe``'s data: ``(minibatch_size, steps, ...)``, or ``(steps, ...)``
        without a minibatch size (read-only)."""
        if probe not in self._arrays:
            parts = self._parts[probe]
            B = self.minibatch_size or 1
            arr = (
                np.concatenate(parts, axis=1)
                if parts
                else np.zeros((B, 0, *self.shapes[probe]), dtype=self.dtype)
            )
            arr = arr if self.minibatch_size is not None else arr[0]
            arr.setflags(write=False)
            self._arrays[probe] = arr
        return self._arrays[probe]


class SimulationData(Mapping):
    """``sim.data``: probe data and built parameters (with current values), as in nengo."""

    def __init__(self, recorded, params):
        self.recorded = recorded
        self.params = params

    def __getitem__(self, key):
        if isinstance(key, nengo.Probe) and key in self.recorded:
            return self.recorded.array(key)
        return self.params.built(key)

    def __iter__(self):
        return iter(self.params.model.params)

    def __len__(self):
        return len(self.params.model.params)

    def __contains__(self, key):
        return key in self.params.model.params
