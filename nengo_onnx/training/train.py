"""``Simulator.train`` and ``Simulator.loss`` (and, from `nengo_onnx.compiler.params`, saving,
loading and freezing parameters).

How training works (NengoDL's semantics, on onnxruntime-training):

1. The forward graph of ``m`` unrolled steps (``m = truncation`` or ``n_steps``)
   is emitted with ``training=True`` (spiking neurons take their rate form, see
   `nengo_onnx.configure_settings`), loss nodes for the objectives are added
   (graph output 0 is the float32 scalar loss), and onnxruntime-training builds
   the gradient graph (``generate_artifacts``) with the trainable parameters'
   initializers as ``requires_grad``.
2. Each minibatch starts from the simulator's initial state; each window of
   ``m`` steps (the last one may be shorter) gets the final state of the one
   before it, and the gradients of all windows are summed before one
   optimizer step (truncated BPTT; with ``truncation=None`` or ``>= n_steps``
   it is full BPTT). A window's objective is weighted by its share of the steps,
   so that for the mean-type objectives the sum over windows is the objective of
   the whole sequence.
3. The optimizer (`nengo_onnx.optimizers`) updates the parameters in place, in
   onnxruntime's own buffers. After every minibatch, the trained values are
   written into the program's parameter store, so that ``sim.data``, ``run``,
   probes, `save_params` and `freeze_params` see them (also after an
   interrupted call: see `train`).

``sim.loss`` runs the network exactly as ``run`` does (spiking neurons spike),
from the initial state, on each minibatch, and evaluates the objectives with
numpy (the same array-API functions that were traced for training).
"""

import gc
import glob
import json
import numbers
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import nengo
import numpy as np
from nengo.ensemble import Neurons
from nengo.exceptions import SimulationError, ValidationError
from nengo.utils.progress import Progress, ProgressTracker

from nengo_onnx import ort_setup
from nengo_onnx.compiler import trainable
from nengo_onnx.compiler.params import describe, param_groups
from nengo_onnx.events import EventWriter, next_run_dir
from nengo_onnx.files import write_atomically
from nengo_onnx.objectives import mse, objective_name, takes_targets
from nengo_onnx.optimizers import Optimizer
from nengo_onnx.runtime.feeds import InputFeeder
from nengo_onnx.runtime.runtime import Runtime
from nengo_onnx.training.graph import compile_window

#: File name written by ``train(..., profile=True)`` (in the working directory).
PROFILE_FILE = "nengo_onnx_profile.json"


# -- data and objectives ---------------------------------------------------------------------


@dataclass
class Term:
    """One objective: ``fn`` applied to the outputs (and targets) of ``probes``."""

    probes: tuple
    fn: object  # callable, or None: the targets are dL/dy
    tuple_key: bool

    @property
    def takes_targets(self):
        return self.fn is None or takes_targets(self.fn)

    @property
    def name(self):
        return objective_name(self.fn)


@dataclass
class Data:
    n_inputs: int
    n_steps: int
    inputs: dict  # input name -> float array [n_inputs, n_steps, size]
    targets: dict  # probe -> float array [n_inputs, n_steps, size]
    terms: list = field(default_factory=list)

    def probes(self):
        seen = []
        for term in self.terms:
            seen.extend(p for p in term.probes if p not in seen)
        return seen


def validate_data(sim, data, objective=None, terms=True):
    """Check ``data`` and ``objective`` against the network; returns a `Data`.

    Every problem is a ``ValidationError`` that says what was expected. With
    ``terms=False`` (inputs only, e.g. for predictions) the objective is not read.
    """
    if not isinstance(data, Mapping) or len(data) == 0:
        raise ValidationError(
            "data must be a non-empty dict {input Node: (n_inputs, n_steps, node.size_out) "
            "array, Probe: (n_inputs, n_steps, probe.size_in) array}",
            attr="data",
            obj=sim,
        )
    probes = set(sim.model.probes)
    inputs, targets, sizes = {}, {}, {}
    for obj, value in data.items():
        if isinstance(obj, nengo.Probe):
            if obj not in probes:
                raise ValidationError(
                    f"{obj} is not a probe of this simulator's network", attr="data", obj=sim
                )
            # the size of what the probe records (for Probe(conn, "input") that is the
            # pre's output, which Probe.size_in does not give)
            expected = int(np.prod(sim.model.sig[obj]["in"].shape))
            what = "the probed signal's size"
        elif isinstance(obj, nengo.Node):
            if obj not in sim.program.inputs:
                raise ValidationError(sim.program.not_an_input(obj), attr="data", obj=sim)
            expected, what = obj.size_out, "node.size_out"
        else:
            raise ValidationError(
                f"data keys must be input Nodes or Probes (got {describe(obj)})",
                attr="data",
                obj=sim,
            )
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiub":
            raise ValidationError(
                f"data for {obj} has dtype {arr.dtype}; expected numbers", attr="data", obj=sim
            )
        if arr.ndim != 3 or arr.shape[2] != expected or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValidationError(
                f"data for {obj} has shape {arr.shape}; expected (n_inputs, n_steps, "
                f"{what}) = (n_inputs, n_steps, {expected})",
                attr="data",
                obj=sim,
            )
        if not np.all(np.isfinite(arr)):
            raise ValidationError(f"data for {obj} contains NaN or inf", attr="data", obj=sim)
        sizes[obj] = arr.shape[:2]
        arr = np.ascontiguousarray(
            arr, dtype=np.float64 if arr.dtype == np.float64 else np.float32
        )
        if isinstance(obj, nengo.Probe):
            targets[obj] = arr
        else:
            inputs[sim.program.inputs[obj]] = arr

    (first, (n_inputs, n_steps)), *rest = sizes.items()
    for obj, (n, k) in rest:
        if k != n_steps:
            raise ValidationError(
                f"data for {obj} has {k} steps but data for {first} has {n_steps}; every "
                "entry must have the same n_steps (axis 1)",
                attr="data",
                obj=sim,
            )
        if n != n_inputs:
            raise ValidationError(
                f"data for {obj} has {n} inputs but data for {first} has {n_inputs}; every "
                "entry must have the same n_inputs (axis 0)",
                attr="data",
                obj=sim,
            )
    batch = sim.minibatch_size or 1
    if n_inputs % batch != 0:
        raise ValidationError(
            f"n_inputs ({n_inputs}) must be divisible by minibatch_size ({batch})",
            attr="data",
            obj=sim,
        )
    result = Data(n_inputs, n_steps, inputs, targets)
    if terms:
        result.terms = _terms(sim, objective, targets)
    return result


def _terms(sim, objective, targets):
    if objective is None or callable(objective) and not isinstance(objective, Mapping):
        fn = mse if objective is None else objective
        if not targets:
            raise ValidationError(
                "data has no targets (Probe entries), so there is nothing to optimize; give "
                "targets for some probe, or an objective dict for probes that need none",
                attr="data",
                obj=sim,
            )
        return [Term((p,), fn, False) for p in targets]
    if not isinstance(objective, Mapping):
        raise ValidationError(
            f"objective must be a dict {{probe or tuple of probes: function or None}}, a "
            f"function, or None (got {type(objective).__name__})",
            attr="objective",
            obj=sim,
        )
    if len(objective) == 0:
        raise ValidationError("objective is an empty dict", attr="objective", obj=sim)
    probes = set(sim.model.probes)
    terms = []
    for key, fn in objective.items():
        tuple_key = isinstance(key, (tuple, list))
        keys = tuple(key) if tuple_key else (key,)
        if not keys:
            raise ValidationError(
                "objective has an empty tuple of probes", attr="objective", obj=sim
            )
        for probe in keys:
            if not isinstance(probe, nengo.Probe) or probe not in probes:
                raise ValidationError(
                    f"objective keys must be probes of this simulator's network (or tuples "
                    f"of them); got {describe(probe)}",
                    attr="objective",
                    obj=sim,
                )
        if fn is not None and not callable(fn):
            raise ValidationError(
                f"the objective for {key} must be a function or None (got {fn!r})",
                attr="objective",
                obj=sim,
            )
        term = Term(keys, fn, tuple_key)
        if term.takes_targets:
            for probe in keys:
                if probe not in targets:
                    raise ValidationError(
                        f"{probe} has the objective {term.name}, which needs targets, but "
                        f"data has no targets for it (expected data[{probe}] of shape "
                        f"(n_inputs, n_steps, {int(np.prod(sim.model.sig[probe]['in'].shape))}))",
                        attr="data",
                        obj=sim,
                    )
        terms.append(term)
    return terms


def numpy_loss(terms, outputs, targets):
    """The summed objectives on numpy ``outputs`` and ``targets`` ({probe: array}).

    ``None`` objectives (targets are dL/dy) define no loss and add nothing.
    """
    total = 0.0
    for term in terms:
        if term.fn is None:
            continue
        ys = [outputs[p] for p in term.probes]
        args = [ys if term.tuple_key else ys[0]]
        if term.takes_targets:
            ts = [np.asarray(targets[p], dtype=ys[0].dtype) for p in term.probes]
            args.append(ts if term.tuple_key else ts[0])
        try:
            value = term.fn(*args)
        except Exception as err:
            raise ValidationError(
                f"objective {term.name} failed on numpy arrays: {type(err).__name__}: {err}",
                attr="objective",
            ) from err
        value = np.asarray(value)
        if value.ndim != 0:
            raise ValidationError(
                f"objective {term.name} must return a scalar; it returned shape {value.shape}",
                attr="objective",
            )
        total += float(value)
    return total


# -- train -------------------------------------------------------------------------------------


class TrainingState:
    """What a simulator keeps between `train` calls: the shuffling and noise stream,
    and where its summaries go."""

    def __init__(self):
        self.rng = None
        self.summary_calls = 0
        self.summary_step = 0
        self.run_dir = None


def _check_count(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValidationError(f"must be a positive integer (got {value!r})", attr=name)
    return int(value)


def _initial_state(sim, compiled):
    """The training graph's state inputs at step 0, from the program's initial state."""
    state = sim.program.initial_state(np.float32)
    return {in_name: state[base] for base, in_name, _ in compiled.state}


def _window_feeds(feeder, data, compiled, idx, start, n):
    """The inputs of one training window: the step inputs, targets and loss scale."""
    feeds = feeder(compiled.step_inputs, start, n, data.inputs, rows=idx, batch=len(idx))
    for probe, name in compiled.targets.items():
        feeds[name] = np.ascontiguousarray(
            data.targets[probe][idx, start : start + n], dtype=np.float32
        )
    feeds[compiled.scale_name] = np.array(n / data.n_steps, dtype=np.float32)
    return feeds


def training_feeder(sim, data, noise_rng):
    """The `InputFeeder` of a training call: time-only values as a run from step 0 sees
    them (computed once), random numbers from ``noise_rng``."""
    feeder = InputFeeder(sim.program, sim.seed, noise_rng)
    feeder.precompute(data.n_steps, skip=data.inputs)
    return feeder


def _windows(n_steps, truncation):
    m = n_steps if truncation is None else min(truncation, n_steps)
    return [(start, min(m, n_steps - start)) for start in range(0, n_steps, m)]


def _check_trainable_network(sim):
    if not sim.program.unrolled:
        host = [type(op).__name__ for op in sim.program.python_operators()]
        raise SimulationError(
            "cannot train this network: some operators have no ONNX form and run in "
            f"Python ({', '.join(sorted(set(host))) or 'host operators'}), so the "
            "training graph cannot be differentiated"
        )


def check_optimizer(optimizer):
    if not isinstance(optimizer, Optimizer) and not callable(getattr(optimizer, "apply", None)):
        raise ValidationError(
            "optimizer must be a nengo_onnx.optimizers optimizer, e.g. "
            f"nengo_onnx.optimizers.Adam() (got {optimizer!r})",
            attr="optimizer",
        )


def train(
    sim,
    data,
    optimizer,
    n_epochs=1,
    objective=None,
    truncation=None,
    summaries=None,
    shuffle=True,
    profile=False,
    hooks=None,
):
    """`Simulator.train` (see there for the parameters).

    If the call is interrupted (Ctrl-C, an error, a non-finite loss), the work
    done is kept: the parameters and the optimizer's state are both as after the
    last completed minibatch.

    ``hooks`` (a `TrainHooks`, or None) is called at the start and end of every
    epoch and after every minibatch; the Keras-style ``fit`` uses it
    (`nengo_onnx.training.keras`).
    """
    check_optimizer(optimizer)
    n_epochs = _check_count("n_epochs", n_epochs)
    truncation = _check_count("truncation", truncation, allow_none=True)
    if profile is not None and not isinstance(profile, (bool, str, os.PathLike)):
        raise ValidationError(f"must be a bool or a file name (got {profile!r})", attr="profile")
    data = validate_data(sim, data, objective)
    _check_trainable_network(sim)
    writer, tags = _summary_writer(sim, summaries)
    groups = param_groups(sim.program, trainable.trainable_params(sim.program))
    names = tuple(grp.name for grp in groups)
    windows = _windows(data.n_steps, truncation)
    profile_dir = tempfile.mkdtemp(prefix="nengo_onnx_profile_") if profile else None
    so = (
        ort_setup.session_options(
            threads=sim.program.threads, profile_prefix=os.path.join(profile_dir, "train")
        )
        if profile
        else None
    )
    try:
        compiled = {
            n: compile_window(
                sim.program,
                n,
                data.terms,
                names,
                session_options=so,
                cache=not profile,
                keep_state=len(windows) > 1,
                keep_probes=() if hooks is None else tuple(hooks.probes),
            )
            for n in sorted({n for _, n in windows})
        }
        candidates = unreached_candidates(sim.program, groups, compiled.values())
        history = _train_loop(
            sim,
            data,
            optimizer,
            n_epochs,
            shuffle,
            windows,
            compiled,
            groups,
            writer,
            tags,
            hooks or TrainHooks(),
            candidates,
        )
    finally:
        if writer is not None:
            writer.close()
    if profile:
        del compiled
        gc.collect()
        _write_profile(profile_dir, PROFILE_FILE if profile is True else os.fspath(profile))
    return history


def unreached_candidates(program, groups, compiled):
    """``{group name: (bool mask, [Param])}``: the elements of the parameters that no
    gradient reaches by the training graphs' analysis (in every window length).

    The analysis may claim too much (it follows values, not their derivatives), so
    `_train_loop` keeps an element only while its gradient stays exactly zero.
    """
    unreached = frozenset.intersection(*[c.unreached for c in compiled]) if compiled else ()
    params = [p for p in trainable.trainable_params(program) if p in unreached]
    candidates = {}
    for grp in groups:
        mine = [p for p in params if p.signal(program.model).base is grp.base]
        if mine:
            mask = trainable.element_mask(grp.base, [p.signal(program.model) for p in mine])
            if grp.mask is not None:
                mask &= grp.mask
            candidates[grp.name] = (mask, mine)
    return candidates


def _warn_unreached(program, unreached, candidates):
    """One warning naming the parameters whose gradient was zero throughout."""
    names = []
    for name, (_, params) in candidates.items():
        for param in params:
            index = trainable.read(unreached[name], param.signal(program.model))
            if np.all(index):
                names.append(f"{param.key} of {param.obj}")
    if names:
        warnings.warn(
            "no gradient of the objective reaches these parameters, so training leaves "
            "them unchanged (e.g. Izhikevich neurons have no rate form to differentiate, "
            "or the objective's probes do not depend on them): " + ", ".join(names),
            stacklevel=5,
        )


class TrainHooks:
    """What `train` calls during training (these do nothing; subclass to act).

    ``probes``: the probes whose outputs (the training graph's, as the optimizer
    sees them) `batch_end` receives.
    """

    probes = ()

    def epoch_begin(self, epoch):
        """Before the first minibatch of ``epoch`` (counted from 0)."""

    def batch_end(self, epoch, batch, loss, idx, outputs):
        """After minibatch ``batch`` of ``epoch``: its loss, the indices of its
        examples in the data, and ``{probe: [minibatch, n_steps, size]}`` outputs."""

    def epoch_end(self, epoch, loss):
        """After ``epoch``, with its mean loss; the parameters are stored in the
        program (and are read back afterwards, so changes made here take effect).
        Return True to stop training."""
        return False


class Parameters:
    """The trainable parameters during training, in onnxruntime's buffers.

    The optimizer updates the buffers of the first window's graph (the primary);
    a graph of another window length (the last, shorter window of truncated
    BPTT) has its own buffers, brought up to date just before it runs.
    """

    def __init__(self, primary, groups):
        self.primary = primary
        state = primary.checkpoint
        self.views = [] if state is None else [(g, state.parameters[g.name]) for g in groups]
        self.version = 0
        self._synced = {}

    def load(self, program):
        """Copy the program's current values in."""
        for grp, param in self.views:
            param.data[...] = program.signals.initial_value(grp.base, np.float32)
        self.changed()

    def changed(self):
        self.version += 1

    def prepare(self, comp):
        if comp is self.primary or comp.checkpoint is None:
            return
        if self._synced.get(id(comp)) != self.version:
            for grp, param in self.views:
                comp.checkpoint.parameters[grp.name].data[...] = param.data
            self._synced[id(comp)] = self.version

    def store(self, program):
        """Write the trained values into the program's parameter store (float64)."""
        for grp, param in self.views:
            before = program.params.value(grp.base)
            # elements training did not move keep their exact float64 values
            moved = param.data != before.astype(np.float32)
            if grp.mask is not None:
                moved &= grp.mask
            program.params.set(grp.base, np.where(moved, param.data, before))


def _train_loop(
    sim,
    data,
    optimizer,
    n_epochs,
    shuffle,
    windows,
    compiled,
    groups,
    writer,
    tags,
    hooks,
    candidates=None,
):
    tstate = sim.training_state
    if tstate.rng is None:
        tstate.rng = np.random.RandomState(sim.seed)
    rng = tstate.rng
    feeder = training_feeder(sim, data, rng)
    first = compiled[windows[0][1]]
    parameters = Parameters(first, groups)
    parameters.load(sim.program)  # the program's values are the truth between calls
    params = parameters.views
    frozen = {
        grp.name: param.data[~grp.mask].copy() for grp, param in params if grp.mask is not None
    }
    grads = {grp.name: np.zeros(param.data.shape, dtype=np.float32) for grp, param in params}
    # elements no gradient reaches keep their values; an element leaves the set as
    # soon as its gradient is not zero (the analysis behind it may claim too much)
    candidates = candidates or {}
    unreached = {name: mask.copy() for name, (mask, _) in candidates.items()}
    kept = {grp.name: param.data.copy() for grp, param in params if grp.name in unreached}
    batch = sim.program.minibatch_size
    n_batches = data.n_inputs // batch
    initial = _initial_state(sim, first)
    history = {"loss": []}
    updated = False
    try:
        for epoch in range(n_epochs):
            order = rng.permutation(data.n_inputs) if shuffle else np.arange(data.n_inputs)
            title = f"Training epoch {epoch + 1}/{n_epochs}"
            progress = Progress(title, title, n_batches)
            losses = []
            hooks.epoch_begin(epoch)
            with ProgressTracker(sim.progress_bar, progress) as tracker:
                for b in range(n_batches):
                    idx = order[b * batch : (b + 1) * batch]
                    parts = {} if hooks.probes else None
                    loss = _train_minibatch(
                        feeder, data, compiled, windows, idx, initial, parameters, grads, parts
                    )
                    if not np.isfinite(loss):
                        raise SimulationError(
                            f"the loss became {loss} in epoch {epoch + 1}, minibatch {b + 1}: "
                            f"{_nonfinite_cause(sim, data, idx, parameters)}"
                        )
                    if params:
                        for grp, _ in params:
                            if grp.mask is not None:
                                grads[grp.name][~grp.mask] = 0
                            if grp.name in unreached:
                                unreached[grp.name] &= grads[grp.name] == 0
                        optimizer.apply(
                            [grads[grp.name] for grp, _ in params],
                            [param.data for _, param in params],
                            keys=[grp.name for grp, _ in params],
                        )
                        for grp, param in params:
                            if grp.mask is not None:
                                param.data[~grp.mask] = frozen[grp.name]
                            if grp.name in unreached:
                                still = unreached[grp.name]
                                param.data[still] = kept[grp.name][still]
                        parameters.changed()
                        updated = True
                    losses.append(loss)
                    _write_summaries(sim, writer, tags, loss, params)
                    outputs = {p: np.concatenate(v, axis=1) for p, v in (parts or {}).items()}
                    hooks.batch_end(epoch, b, loss, idx, outputs)
                    mean = float(np.mean(losses))
                    tracker.total_progress.name_during = f"{title} (loss: {mean:.4g})"
                    tracker.total_progress.step()
                progress.name_after = f"{title}: loss {mean:.4g}"
            history["loss"].append(mean)
            if epoch == 0:
                _warn_unreached(sim.program, unreached, candidates)
            if type(hooks).epoch_end is not TrainHooks.epoch_end:
                if updated:
                    parameters.store(sim.program)
                stop = hooks.epoch_end(epoch, mean)
                parameters.load(sim.program)
                if stop:
                    break
    finally:
        # the optimizer's state has advanced with every completed minibatch: keep the
        # parameters of the same minibatch, so that both agree
        if updated:
            parameters.store(sim.program)
    return history


def _nonfinite_cause(sim, data, idx, parameters):
    """Why the loss is not finite, as far as can be told."""
    big = np.finfo(np.float32).max
    for probe, target in data.targets.items():
        if np.any(np.abs(target[idx]) > big):
            return (
                f"the targets for {probe} overflow float32 (|value| > {big:.3g}); "
                "training runs in float32"
            )
    for grp, param in parameters.views:
        if not np.all(np.isfinite(param.data)):
            return (
                f"parameter {grp.name} is no longer finite: the updates diverged; try a "
                "smaller learning rate"
            )
    names = ", ".join(term.name for term in data.terms if term.fn is not None)
    return (
        f"the network's outputs and parameters are finite, so the objective ({names}) "
        "returned NaN or inf for them (e.g. a log of 0, or a division by 0); or the "
        "learning rate is too large"
    )


def _train_minibatch(
    feeder, data, compiled, windows, idx, initial, parameters, grads, probe_parts=None
):
    """Forward and backward over the windows of one minibatch; sums the gradients.

    ``probe_parts`` (a dict) collects the kept probes' outputs, window by window.
    """
    state = dict(initial)
    loss = 0.0
    for w, (start, n) in enumerate(windows):
        comp = compiled[n]
        parameters.prepare(comp)
        feeds = _window_feeds(feeder, data, comp, idx, start, n)
        feeds.update(state)
        outputs = comp(feeds)
        loss += float(outputs[1])
        if w + 1 < len(windows):  # the next window starts from this one's final state
            for (_, in_name, _), value in zip(comp.state, outputs[2:]):
                state[in_name] = value
        if probe_parts is not None:
            for probe, i in comp.probe_outputs.items():
                probe_parts.setdefault(probe, []).append(outputs[i])
        for grp, _ in parameters.views:
            grad = comp.checkpoint.parameters[grp.name].grad
            if w == 0:
                grads[grp.name][...] = grad
            else:
                grads[grp.name] += grad
    return loss


def _write_profile(profile_dir, target):
    events = []
    for path in sorted(glob.glob(os.path.join(profile_dir, "*.json"))):
        try:
            with open(path) as f:
                events.extend(json.load(f))
        except (OSError, ValueError):
            continue
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    write_atomically(target, lambda f: f.write(json.dumps(events).encode("utf-8")))
    shutil.rmtree(profile_dir, ignore_errors=True)


# -- summaries ---------------------------------------------------------------------------------


def _summary_writer(sim, summaries):
    if summaries is None:
        return None, None
    if isinstance(summaries, (str, nengo.base.NengoObject, Neurons)):
        summaries = [summaries]
    tags = []
    params = trainable.all_params(sim.program)
    for item in summaries:
        if isinstance(item, str):
            if item != "loss":
                raise ValidationError(
                    f"unknown summary {item!r}: the only string summary is 'loss'",
                    attr="summaries",
                )
            tags.append(("loss", None))
            continue
        key = {nengo.Connection: "weights", nengo.Ensemble: "encoders", Neurons: "bias"}.get(
            type(item)
        )
        if key is None:
            raise ValidationError(
                f"summaries can be 'loss', Connections, Ensembles or Neurons (got "
                f"{describe(item)})",
                attr="summaries",
            )
        match = [p for p in params if p.obj == item and p.key == key]
        if not match:
            raise ValidationError(
                f"{item} has no {key} in this simulator (not in its network, "
                "or nothing to summarize)",
                attr="summaries",
            )
        tags.append((match[0].name, match[0]))
    logdir = sim.tensorboard
    if not logdir:
        warnings.warn(
            "summaries were requested but the Simulator was created without "
            "tensorboard=<directory>; ignoring them",
            stacklevel=4,
        )
        return None, None
    tstate = sim.training_state
    if tstate.run_dir is None:
        tstate.run_dir = next_run_dir(os.fspath(logdir))
    k = tstate.summary_calls
    tstate.summary_calls += 1
    suffixed = [(tag if k == 0 else f"{tag}_{k}", param) for tag, param in tags]
    return EventWriter(tstate.run_dir, suffix=f".{k}"), suffixed


def _write_summaries(sim, writer, tags, loss, params):
    if writer is None:
        return
    tstate = sim.training_state
    step = tstate.summary_step
    tstate.summary_step += 1
    live = {grp.base: param.data for grp, param in params}
    for tag, param in tags:
        if param is None:
            writer.scalar(tag, loss, step)
            continue
        sig = param.signal(sim.model)
        base = live.get(sig.base)
        value = sim.program.params.read(sig) if base is None else trainable.read(base, sig)
        writer.histogram(tag, value, step)
    writer.flush()


# -- loss -------------------------------------------------------------------------------------


def forward(sim, inputs, n_inputs, n_steps, probes):
    """Run the network as ``sim.run`` does, from the initial state, one minibatch at a
    time; yields ``(rows, {probe: [minibatch, n_steps, size]})`` per minibatch.

    ``inputs`` maps input names (``sim.program.inputs`` values) to
    ``[n_inputs, n_steps, size]`` arrays; ``n_inputs`` is a multiple of the minibatch
    size. The simulator's own state and probe data are untouched.
    """
    batch = sim.program.minibatch_size
    runtime = Runtime(sim.program)  # its own state: the simulator's run is untouched
    keys = {p: sim.program.probes[p] for p in probes}
    for b in range(n_inputs // batch):
        idx = slice(b * batch, (b + 1) * batch)
        runtime.reset(sim.seed)
        outputs = runtime.run(n_steps, {k: v[idx] for k, v in inputs.items()})
        yield idx, {p: outputs[key] for p, key in keys.items()}


def loss(sim, data, objective=None):
    """`Simulator.loss`: the objective on all of ``data`` (mean over minibatches)."""
    data = validate_data(sim, data, objective)
    losses = []
    for idx, values in forward(sim, data.inputs, data.n_inputs, data.n_steps, data.probes()):
        targets = {p: t[idx] for p, t in data.targets.items()}
        losses.append(numpy_loss(data.terms, values, targets))
    return float(np.mean(losses))
