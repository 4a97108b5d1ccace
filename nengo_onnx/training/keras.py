"""NengoDL 3's Keras-style API: ``sim.compile``, ``fit``, ``evaluate``, ``predict``.

A layer over `nengo_onnx.training.train`, with no training loop of its own:

* ``compile`` resolves the optimizer, losses and metrics (by name, object or function,
  for every probe or per probe) into a `KerasSetup` kept on the simulator;
* ``fit`` turns ``x`` and ``y`` into ``train``'s data dict (each loss's
  ``prepare_targets`` makes its targets, e.g. one-hot vectors from class labels) and
  its losses into objectives, and calls `train.train` once, with `FitHooks`: after
  each minibatch the metrics are computed on the training graph's outputs, after each
  epoch the validation data are evaluated, and the callbacks are called;
* ``evaluate``/``predict`` run the network as ``sim.run`` does (spiking), from the
  initial state, one minibatch at a time (`train.forward`), and compute the losses
  and metrics with numpy on ``y`` as given.

Data: ``x`` is ``{input Node or its name: (n, n_steps, node.size_out)}``, a list in the
order of the input Nodes, one array when there is one input Node, or None (the Nodes
keep their own output; give ``n_steps``). ``y`` is ``{Probe or its name: array}``, a
list in the order of ``sim.model.probes``, or one array for the only probe with a loss.
Names are NengoDL's: the object's label with characters other than ``[A-Za-z0-9_.-/]``
removed (spaces and colons become ``_``), or ``node``/``probe`` without a label, made
unique (case-insensitively) with ``_1``, ``_2``, ... in the order inputs, then probes.
"""

import re
import warnings
from collections import defaultdict
from collections.abc import Mapping

import nengo
import numpy as np
from nengo.exceptions import ValidationError

from nengo_onnx import losses as losses_module
from nengo_onnx import metrics as metrics_module
from nengo_onnx import optimizers
from nengo_onnx.callbacks import Callback, History
from nengo_onnx.compiler import trainable
from nengo_onnx.compiler.params import param_groups
from nengo_onnx.objectives import array_namespace
from nengo_onnx.training import train as training

#: ``sim.compile``'s optimizer names -> class (Keras's defaults).
OPTIMIZERS = {
    "sgd": optimizers.SGD,
    "adam": optimizers.Adam,
    "adamw": optimizers.AdamW,
    "rmsprop": optimizers.RMSprop,
    "adagrad": optimizers.Adagrad,
}


# -- names ------------------------------------------------------------------------------------


def sanitize(name):
    name = str(name).replace(" ", "_").replace(":", "_")
    return re.sub(r"[^A-Za-z0-9_.\-/]", "", name)


def io_names(sim):
    """``{input Node or Probe: name}``, as NengoDL names them."""
    names, counts = {}, defaultdict(int)
    for obj in list(sim.program.inputs) + list(sim.model.probes):
        name = type(obj).__name__.lower() if obj.label is None else sanitize(obj.label)
        key = name.lower()
        if counts[key] > 0:
            name += f"_{counts[key]}"
        counts[key] += 1
        names[obj] = name
    return names


def _resolve(sim, key, kind, attr):
    """The input Node (``kind=nengo.Node``) or Probe given by object or name."""
    names = io_names(sim)
    if isinstance(key, str):
        matches = [obj for obj, name in names.items() if name == key and isinstance(obj, kind)]
        if not matches:
            known = [name for obj, name in names.items() if isinstance(obj, kind)]
            raise ValidationError(
                f"no {'input Node' if kind is nengo.Node else 'Probe'} named {key!r} "
                f"(known: {', '.join(known) or 'none'})",
                attr=attr,
            )
        return matches[0]
    if isinstance(key, kind):
        if key not in names:
            raise ValidationError(
                sim.program.not_an_input(key)
                if kind is nengo.Node
                else f"{key} is not a probe of this simulator's network",
                attr=attr,
            )
        return key
    raise ValidationError(
        f"{attr} keys must be {'input Nodes' if kind is nengo.Node else 'Probes'} or their "
        f"names (got {key!r})",
        attr=attr,
    )


def _by_object(sim, value, objects, kind, attr, single=None):
    """``value`` (dict, list, one item or None) as ``{object: item}``."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {_resolve(sim, k, kind, attr): v for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) != len(objects):
            raise ValidationError(
                f"{attr} has {len(value)} entries but the network has {len(objects)} "
                f"{'input Nodes' if kind is nengo.Node else 'Probes'}; use a dict",
                attr=attr,
            )
        return dict(zip(objects, value))
    candidates = objects if single is None else single
    if len(candidates) != 1:
        raise ValidationError(
            f"{attr} is one array, but there are {len(candidates)} "
            f"{'input Nodes' if kind is nengo.Node else 'Probes'} it could be for; use a dict "
            f"keyed by {'Node' if kind is nengo.Node else 'Probe'} or name",
            attr=attr,
        )
    return {candidates[0]: value}


def _inputs(sim, x):
    return _by_object(sim, x, list(sim.program.inputs), nengo.Node, "x")


# -- compile ---------------------------------------------------------------------------------


class KerasSetup:
    """What ``sim.compile`` resolved: the optimizer, and the losses and metrics per probe.

    ``losses`` is ``{probe: loss}`` or ``{None: loss}`` (one loss for every probe with
    targets); ``metrics`` likewise ``{probe or None: [(name, fn)]}``.
    """

    def __init__(self, optimizer, losses, metrics):
        self.optimizer = optimizer
        self.losses = losses
        self.metrics = metrics
        self._objectives = {}

    def loss_for(self, probe):
        return self.losses.get(probe, self.losses.get(None))

    def metrics_for(self, probe):
        return self.metrics.get(probe, self.metrics.get(None, []))

    def objective_for(self, loss):
        """The `nengo_onnx.objectives` objective that trains ``loss`` (made once per
        loss, so that the training graphs are reused from call to call)."""
        if id(loss) not in self._objectives:
            direct = getattr(loss, "objective", None)
            self._objectives[id(loss)] = direct if direct is not None else _KerasObjective(loss)
        return self._objectives[id(loss)]


class _KerasObjective:
    """``mean(fn(targets, outputs))``: a Keras-order loss as an objective (traced)."""

    takes_targets = True

    def __init__(self, fn):
        self.fn = fn
        self.__qualname__ = getattr(fn, "__qualname__", None) or repr(fn)

    def __call__(self, outputs, targets):
        xp = array_namespace(outputs, targets)
        return xp.mean(self.fn(targets, outputs))


def compile(sim, optimizer="rmsprop", loss=None, metrics=None):
    """`Simulator.compile` (see there)."""
    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS:
            raise ValidationError(
                f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}, or a "
                "nengo_onnx.optimizers optimizer",
                attr="optimizer",
            )
        optimizer = OPTIMIZERS[optimizer.lower()]()
    elif optimizer is not None:
        training.check_optimizer(optimizer)
    probes = list(sim.model.probes)
    if loss is None:
        loss_map = {}
    elif isinstance(loss, Mapping):
        loss_map = {
            _resolve(sim, k, nengo.Probe, "loss"): losses_module.get(v) for k, v in loss.items()
        }
    elif isinstance(loss, (list, tuple)):
        loss_map = {
            p: losses_module.get(v)
            for p, v in _by_object(sim, loss, probes, nengo.Probe, "loss").items()
        }
    else:
        loss_map = {None: losses_module.get(loss)}
    if metrics is None:
        metric_map = {}
    elif isinstance(metrics, Mapping):
        metric_map = {
            _resolve(sim, k, nengo.Probe, "metrics"): _metric_list(v) for k, v in metrics.items()
        }
    elif isinstance(metrics, (list, tuple)):
        metric_map = {None: _metric_list(metrics)}
    else:
        metric_map = {None: _metric_list([metrics])}
    sim.keras_setup = KerasSetup(optimizer, loss_map, metric_map)


def _metric_list(value):
    items = value if isinstance(value, (list, tuple)) else [value]
    return [metrics_module.get(item) for item in items]


def _setup(sim, what):
    setup = getattr(sim, "keras_setup", None)
    if setup is None:
        raise ValidationError(
            f"call sim.compile(optimizer, loss=..., metrics=...) before sim.{what}",
            attr="compile",
        )
    return setup


# -- data --------------------------------------------------------------------------------------


def _targets(sim, setup, y):
    """``y`` as ``{probe: array}`` (one array: the only probe with a loss, or the only
    probe)."""
    probes = list(sim.model.probes)
    with_loss = [p for p in setup.losses if p is not None]
    single = with_loss if with_loss else probes
    return {
        p: np.asarray(v)
        for p, v in _by_object(sim, y, probes, nengo.Probe, "y", single=single).items()
    }


def _n_inputs(inputs, y, default):
    for value in list(inputs.values()) + list(y.values()):
        return np.shape(value)[0]
    return default


def _check_n_steps(inputs, n_steps):
    for node, value in inputs.items():
        if np.ndim(value) == 3 and n_steps is not None and np.shape(value)[1] != n_steps:
            raise ValidationError(
                f"x for {node} has {np.shape(value)[1]} steps but n_steps={n_steps}",
                attr="n_steps",
            )


def _input_arrays(sim, x, n_steps, n_inputs=None, exact_batch=False):
    """``(inputs by input name, n_inputs, n_steps)`` of ``x`` (checked)."""
    inputs = _inputs(sim, x)
    _check_n_steps(inputs, n_steps)
    batch = sim.program.minibatch_size
    if not inputs:
        if n_steps is None:
            raise ValidationError(
                "give input data x or n_steps (the number of timesteps to run)", attr="n_steps"
            )
        n = batch if n_inputs is None else n_inputs
        if n % batch:
            raise ValidationError(
                f"n_inputs ({n}) must be divisible by minibatch_size ({batch})", attr="y"
            )
        return {}, n, int(n_steps)
    data = training.validate_data(sim, inputs, terms=False)
    if exact_batch and data.n_inputs != batch:
        raise ValidationError(
            f"predict_on_batch takes exactly minibatch_size ({batch}) inputs (got "
            f"{data.n_inputs})",
            attr="x",
        )
    return data.inputs, data.n_inputs, data.n_steps


# -- evaluate and predict ----------------------------------------------------------------------


def _outputs(sim, inputs, n_inputs, n_steps, probes):
    parts = {p: [] for p in probes}
    for _, values in training.forward(sim, inputs, n_inputs, n_steps, probes):
        for p in probes:
            parts[p].append(values[p])
    return {p: np.concatenate(v, axis=0) for p, v in parts.items()}


def predict(sim, x=None, n_steps=None, on_batch=False):
    """`Simulator.predict` and `Simulator.predict_on_batch`."""
    inputs, n, steps = _input_arrays(sim, x, n_steps, exact_batch=on_batch)
    return _outputs(sim, inputs, n, steps, list(sim.model.probes))


def _mean(value):
    return float(np.mean(np.asarray(value, dtype=np.float64)))


def _scores(setup, names, outputs, y, rows=None):
    """``{name: value}`` of the losses (numpy) and metrics on ``outputs`` vs ``y``."""
    logs = {}
    loss_probes = [p for p in y if setup.loss_for(p) is not None]
    if loss_probes:
        per_probe = {}
        for p in loss_probes:
            target = y[p] if rows is None else y[p][rows]
            per_probe[p] = _mean(setup.loss_for(p)(target, outputs[p]))
        logs["loss"] = float(sum(per_probe.values()))
        if len(per_probe) > 1:
            logs.update({f"{names[p]}_loss": v for p, v in per_probe.items()})
    logs.update(_metric_scores(setup, names, outputs, y, rows))
    return logs


def _metric_scores(setup, names, outputs, y, rows=None):
    logs = {}
    for p in y:
        for name, fn in setup.metrics_for(p):
            target = y[p] if rows is None else y[p][rows]
            logs[f"{names[p]}_{name}"] = _mean(fn(target, outputs[p]))
    return logs


def evaluate(sim, x=None, y=None, n_steps=None):
    """`Simulator.evaluate`: ``{"loss": ..., "<probe>_<metric>": ...}``."""
    setup = _setup(sim, "evaluate")
    targets = _targets(sim, setup, y)
    if not targets:
        raise ValidationError("evaluate needs targets y for the probes", attr="y")
    inputs, n, steps = _input_arrays(
        sim, x, n_steps, n_inputs=_n_inputs(_inputs(sim, x), targets, None)
    )
    outputs = _outputs(sim, inputs, n, steps, list(targets))
    return _scores(setup, io_names(sim), outputs, targets)


# -- fit ---------------------------------------------------------------------------------------


class FitModel:
    """What the callbacks of ``fit`` see as ``self.model``.

    ``sim``: the simulator; ``stop_training``: set to True to stop after this epoch;
    ``get_weights()``/``set_weights(list)``: the trainable parameters (numpy arrays, in
    a fixed order).
    """

    def __init__(self, sim):
        self.sim = sim
        self.stop_training = False
        self._groups = param_groups(sim.program, trainable.trainable_params(sim.program))

    def get_weights(self):
        return [np.array(self.sim.program.params.value(g.base)) for g in self._groups]

    def set_weights(self, weights):
        weights = list(weights)
        if len(weights) != len(self._groups):
            raise ValidationError(
                f"set_weights got {len(weights)} arrays; the model has {len(self._groups)}",
                attr="weights",
            )
        for grp, value in zip(self._groups, weights):
            self.sim.program.params.set(grp.base, value)


class FitHooks(training.TrainHooks):
    """`train`'s hooks for ``fit``: metrics per minibatch, validation, callbacks."""

    def __init__(self, sim, setup, y, callbacks, model, validation):
        self.sim = sim
        self.setup = setup
        self.y = y
        self.callbacks = callbacks
        self.model = model
        self.validation = validation
        self.names = io_names(sim)
        self.probes = tuple(p for p in y if setup.metrics_for(p))
        self.sums = defaultdict(float)
        self.count = 0

    def epoch_begin(self, epoch):
        self.sums.clear()
        self.count = 0
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, {})

    def batch_end(self, epoch, batch, loss, idx, outputs):
        logs = {"loss": float(loss)}
        logs.update(_metric_scores(self.setup, self.names, outputs, self.y, rows=idx))
        for key, value in logs.items():
            self.sums[key] += value
        self.count += 1
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, dict(logs))

    def epoch_end(self, epoch, loss):
        logs = {key: value / self.count for key, value in self.sums.items()}
        logs["loss"] = float(loss)
        if self.validation is not None:
            val = evaluate(self.sim, *self.validation)
            logs.update({f"val_{key}": value for key, value in val.items()})
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)
        return bool(self.model.stop_training)


def fit(
    sim,
    x=None,
    y=None,
    n_steps=None,
    epochs=1,
    validation_data=None,
    callbacks=None,
    shuffle=True,
):
    """`Simulator.fit`: returns a `nengo_onnx.callbacks.History`."""
    setup = _setup(sim, "fit")
    if setup.optimizer is None:
        raise ValidationError("sim.compile was given no optimizer", attr="optimizer")
    if not setup.losses:
        raise ValidationError("sim.compile was given no loss to train with", attr="loss")
    targets = _targets(sim, setup, y)
    inputs = _inputs(sim, x)
    _check_n_steps(inputs, n_steps)
    trained = [p for p in targets if setup.loss_for(p) is not None]
    if not trained:
        raise ValidationError(
            "y has no targets for a probe with a loss (compile's loss is for "
            f"{[io_names(sim)[p] for p in setup.losses if p is not None] or 'every probe'})",
            attr="y",
        )
    data = dict(inputs)
    objective = {}
    for p in trained:
        loss = setup.loss_for(p)
        prepare = getattr(loss, "prepare_targets", None)
        data[p] = targets[p] if prepare is None else prepare(targets[p], p.size_in)
        objective[p] = setup.objective_for(loss)
    if validation_data is not None:
        if not isinstance(validation_data, (list, tuple)) or len(validation_data) != 2:
            raise ValidationError(
                "validation_data must be a tuple (x_val, y_val)", attr="validation_data"
            )
        validation = (validation_data[0], validation_data[1], n_steps)
    else:
        validation = None
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            warnings.warn(
                f"{cb!r} is not a nengo_onnx.callbacks.Callback; calling its hooks anyway",
                stacklevel=3,
            )
    history = History()
    callbacks.append(history)
    model = FitModel(sim)
    n_inputs = _n_inputs(inputs, targets, 0)
    params = {"epochs": epochs, "steps": n_inputs // sim.program.minibatch_size}
    for cb in callbacks:
        cb.set_model(model)
        cb.set_params(params)
    hooks = FitHooks(sim, setup, targets, callbacks, model, validation)
    for cb in callbacks:
        cb.on_train_begin({})
    training.train(
        sim,
        data,
        setup.optimizer,
        n_epochs=epochs,
        objective=objective,
        shuffle=shuffle,
        hooks=hooks,
    )
    logs = {key: values[-1] for key, values in history.history.items()}
    for cb in callbacks:
        cb.on_train_end(logs)
    return history
