"""Trained parameters in the simulator: ``sim.data``, save, load and freeze.

Training writes the trained values of each trainable base signal into
``sim.signals.values``; `refresh` then replaces the ``sim.model.params``
entries (``BuiltEnsemble``/``BuiltConnection``), so ``sim.data[ens].encoders``
etc. return them, and drops the compiled inference graphs so that ``run`` uses
them. Saved files hold one array per Nengo object and key, so they do not depend
on how the merge pass packed signals.
"""

import os
import re
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import nengo
from nengo.exceptions import SimulationError, SimulatorClosed, ValidationError

from nengo_onnx.compiler import trainable
from nengo_onnx.onnx_node import OnnxNode, param_key
from nengo_onnx.compiler.signals import sanitize, unique_names
from nengo_onnx.training.graph import _training_state


def _check_open(sim):
    if sim.closed:
        raise SimulatorClosed("Cannot use a closed Simulator.")


def _describe(obj):
    return f"{type(obj).__name__} {obj}"



class ParamsMismatchError(SimulationError, ValidationError):
    """Saved parameters that do not fit the simulator's network."""

    def __init__(self, msg):
        ValidationError.__init__(self, msg, attr="path")


@dataclass
class ParamGroup:
    """A trainable base signal: its ONNX name and which of its elements train."""

    base: object
    name: str
    mask: object = None  # bool array (shaped like base) or None: all elements train


def param_groups(sim, params=None):
    params = trainable.trainable_params(sim) if params is None else params
    by_base = {}
    for param in params:
        sig = param.signal(sim.model)
        by_base.setdefault(sig.base, []).append(sig)
    groups = []
    for base, sigs in by_base.items():
        mask = trainable.element_mask(base, sigs)
        groups.append(ParamGroup(base, sim.signals.name(base), None if mask.all() else mask))
    return sorted(groups, key=lambda grp: grp.name)


def refresh(sim, keep_training_graphs=False):
    """Make ``sim.data`` and the inference graphs use the values in ``sim.signals``.

    Training graphs bake the values of the parameters they do not train in as
    constants, so they are dropped too, unless only trained values changed
    (``keep_training_graphs``: their parameters are loaded at every `train`).
    """
    update_built_params(sim)
    sim.runtime.invalidate()
    if not keep_training_graphs:
        _training_state(sim).compiled.clear()


def update_built_params(sim):
    """Replace ``sim.model.params`` entries with the current (trained) values."""
    model, signals = sim.model, sim.signals
    for param in trainable.all_params(model, sim.network):
        sig = param.signal(model)
        if sig.base not in signals.values:
            continue
        value = trainable.read(signals, sig)
        if isinstance(param.obj, OnnxNode):
            _update_onnx_node(model, param, value)
        elif param.key == "encoders":
            ens = param.obj
            built = model.params[ens]
            gain = np.asarray(built.gain, dtype=np.float64)
            safe = np.where(gain == 0, 1.0, gain)
            unchanged = (gain[:, None] == 0) | (value == built.scaled_encoders)
            encoders = np.where(unchanged, built.encoders, value * ens.radius / safe[:, None])
            model.params[ens] = built._replace(scaled_encoders=value, encoders=encoders)
        elif param.key == "bias":
            ens = param.obj.ensemble
            model.params[ens] = model.params[ens]._replace(bias=value)
        elif param.key == "weights":
            model.params[param.obj] = model.params[param.obj]._replace(weights=value)


def _update_onnx_node(model, param, value):
    node = param.obj
    keys = [param_key(name) for name in node.spec.param_names]
    params = dict(model.params[node].params)
    params[node.spec.param_names[keys.index(param.key)]] = value
    model.params[node] = model.params[node]._replace(params=params)


def _params_path(path, for_reading=False):
    path = os.fspath(path)
    if path.endswith(".npz"):
        return path
    if for_reading and os.path.exists(path) and not os.path.exists(path + ".npz"):
        return path
    return path + ".npz"


def write_atomically(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    A reader never sees a half-written file, and a failed write leaves any old
    file as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_params(sim, path, include_state=False):
    """Save every trainable parameter (and optionally the simulation state) to ``path``.

    Written atomically (a temporary file renamed into place) as ``path + ".npz"``.
    Parameters are stored per Nengo object (``"ens.encoders"``, ``"conn.weights"``,
    ...), so they load into any simulator of a network with the same structure,
    whatever its ``optimize`` setting, e.g. the spiking version of a rate network.
    ``include_state=True`` (NengoDL's option) also stores the current simulation
    state (synapse and neuron states, not the optimizer's); it loads into a
    simulator whose state has the same layout (same network, neuron types,
    minibatch size; with ``optimize=True`` the merged layout can differ between
    processes for unlabeled objects, and the state is then not loaded).
    """
    _check_open(sim)
    arrays = {}
    for param in trainable.all_params(sim.model, sim.network):
        arrays[f"param/{param.name}"] = trainable.read(sim.signals, param.signal(sim.model))
    if include_state:
        for key, base in _state_keys(sim).items():
            arrays[f"state/{key}"] = np.array(sim.runtime.store[base])
    arrays["meta/format"] = np.array("nengo_onnx.compiler.params.v1")
    target = _params_path(path)
    write_atomically(target, lambda f: np.savez(f, **arrays))
    return target


def load_params(sim, path):
    """Load parameters saved by `save_params` into ``sim``.

    Fails, naming the mismatch, when the saved network's parameters differ from
    this one's (names or shapes). Saved simulation state (``include_state=True``)
    is restored when this simulator's state has the same layout, with a warning
    otherwise (rate and spiking neurons, for example, have different state).
    """
    _check_open(sim)
    source = _params_path(path, for_reading=True)
    if not os.path.exists(source):
        raise ValidationError(f"no saved parameters at {source}", attr="path", obj=sim)
    with np.load(source, allow_pickle=False) as f:
        saved = {k: f[k] for k in f.files}
    params = {p.name: p for p in trainable.all_params(sim.model, sim.network)}
    stored = {k[len("param/"):]: v for k, v in saved.items() if k.startswith("param/")}
    missing = sorted(set(params) - set(stored))
    extra = sorted(set(stored) - set(params))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"this network has parameters that {source} lacks: {missing}")
        if extra:
            parts.append(f"{source} has parameters that this network lacks: {extra}")
        raise ParamsMismatchError(
            "saved parameters do not match this network's structure; " + "; ".join(parts))
    for name, param in params.items():
        shape = tuple(param.signal(sim.model).shape)
        if stored[name].shape != shape:
            raise ParamsMismatchError(
                f"parameter {name} has shape {stored[name].shape} in {source} but {shape} in "
                "this network; the networks' structures differ")
    bases = {}
    for name, param in params.items():
        sig = param.signal(sim.model)
        if sig.base not in bases:
            bases[sig.base] = trainable.base_value(sim.signals, sig.base)
        trainable.write(bases[sig.base], sig, stored[name])
    for base, value in bases.items():
        sim.signals.values[base] = value
    state = {k[len("state/"):]: v for k, v in saved.items() if k.startswith("state/")}
    if state:
        _load_state(sim, state, source)
    refresh(sim)


def _state_keys(sim):
    """``{stable name: base}`` of the simulation state (time and step excluded).

    Signal names hold object reprs with memory addresses; those are replaced by
    the objects' stable names, so that another simulator of the same network
    (same settings) finds the same keys.
    """
    store = getattr(sim.runtime, "store", {})
    skip = {sim.model.step.base, sim.model.time.base}
    objs = [o for o in sim.model.sig if isinstance(o, nengo.base.NengoObject)]
    objs += [p for p in sim.model.probes if p not in objs]
    names = unique_names(objs)
    reprs = sorted(((str(o), n) for o, n in names.items()), key=lambda r: -len(r[0]))
    order = []
    for op in sim.graph.nodes:  # first appearance in the schedule: a stable order
        for sig in op.all_signals:
            if sig.base in store and sig.base not in skip and sig.base not in order:
                order.append(sig.base)
    keys, counts = {}, {}
    for base in order:
        key = str(base.name)
        for text, name in reprs:
            key = key.replace(text, name)
        key = sanitize(re.sub(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]+", "", key))
        counts[key] = counts.get(key, 0) + 1
        keys[key if counts[key] == 1 else f"{key}#{counts[key] - 1}"] = base
    return keys


def _load_state(sim, state, source):
    keys = _state_keys(sim)
    store = sim.runtime.store
    layout = sorted((k, tuple(np.shape(store[b]))) for k, b in keys.items())
    saved = sorted((k, tuple(v.shape)) for k, v in state.items())
    if layout != saved:
        warnings.warn(f"the simulation state saved in {source} does not fit this simulator "
                      "(another network structure, neuron types, minibatch size or "
                      "optimize setting); only the parameters were loaded")
        return
    for key, base in keys.items():
        store[base] = np.array(state[key], dtype=store[base].dtype)


def freeze_params(sim, objs):
    """Write the simulator's (trained) parameters back into the Nengo objects.

    ``objs`` is a Network (all its Ensembles, Connections and OnnxNodes) or a
    list of Ensembles, Connections, OnnxNodes and Networks. Ensembles get
    ``encoders``, ``gain`` and ``bias`` (``normalize_encoders=False``);
    connections get their weights: decoded connections a ``NoSolver`` with the
    trained decoders, others the trained transform; OnnxNodes get the trained
    initializers in their model. ``nengo.Simulator(net)`` then reproduces
    nengo_onnx.
    """
    _check_open(sim)
    if sim.network is None:
        raise ValidationError("the simulator has no network to freeze parameters into",
                              attr="objs", obj=sim)
    items = objs if isinstance(objs, (list, tuple)) else [objs]
    targets = []
    for obj in items:
        if isinstance(obj, nengo.Network):
            targets.extend(obj.all_ensembles + obj.all_connections)
            targets.extend(n for n in obj.all_nodes if isinstance(n, OnnxNode))
        elif isinstance(obj, (nengo.Ensemble, nengo.Connection, OnnxNode)):
            targets.append(obj)
        else:
            raise ValidationError(
                "objects to freeze must be Networks, Ensembles or Connections (or "
                f"OnnxNodes; got {_describe(obj)})", attr="objs", obj=sim)
    members = set(sim.network.all_ensembles + sim.network.all_connections
                  + sim.network.all_nodes)
    for obj in targets:
        if obj not in members:
            raise ValidationError(f"{obj} is not in this simulator's network", attr="objs",
                                  obj=sim)
    update_built_params(sim)
    for obj in targets:
        if isinstance(obj, nengo.Ensemble):
            _freeze_ensemble(sim, obj)
        elif isinstance(obj, OnnxNode):
            obj.set_params(sim.model.params[obj].params)
        else:
            _freeze_connection(sim, obj)


def _freeze_ensemble(sim, ens):
    if isinstance(ens.neuron_type, nengo.Direct):
        return
    built = sim.model.params[ens]
    ens.gain = np.array(built.gain)
    ens.bias = np.array(built.bias)
    ens.encoders = np.array(built.encoders)
    ens.normalize_encoders = False
    # nengo warns when max_rates/intercepts are set next to gain and bias
    ens.max_rates = nengo.Ensemble.max_rates.default
    ens.intercepts = nengo.Ensemble.intercepts.default


def _freeze_connection(sim, conn):
    if sim.model.sig[conn].get("weights") is None:
        return
    weights = np.array(sim.model.params[conn].weights)
    pre = conn.pre_obj
    if isinstance(pre, nengo.Ensemble) and not isinstance(pre.neuron_type, nengo.Direct):
        if conn.solver.weights:
            conn.solver = nengo.solvers.NoSolver(weights.T, weights=True)
            return
        size = weights.shape[0]
        conn.solver = nengo.solvers.NoSolver(weights.T, weights=False)
        conn.function = _ZeroFunction(size)
        conn.transform = None
        return
    transform = conn.transform
    if isinstance(transform, nengo.transforms.Sparse):
        conn.transform = nengo.transforms.Sparse(transform.shape, indices=transform.indices,
                                                 init=weights)
    elif isinstance(transform, (nengo.transforms.Dense, nengo.transforms.NoTransform)) or \
            np.ndim(weights) <= 2:
        conn.transform = weights if np.ndim(weights) == 2 else nengo.transforms.Dense(
            transform.shape if hasattr(transform, "shape") else np.shape(weights),
            init=weights)
    else:
        raise ValidationError(
            f"cannot freeze the weights of {conn}: its {type(transform).__name__} transform "
            "is not supported", attr="objs")


class _ZeroFunction:
    """The function of a frozen decoded connection (the decoders hold everything)."""

    def __init__(self, size):
        self.size = size

    def __call__(self, x):
        return np.zeros(self.size)
