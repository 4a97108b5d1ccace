"""Which built parameters are trainable, and reading and writing their values.

The parameters that training can change are NengoDL's: connection weights
(decoders or full weights), ensemble encoders (the *scaled* encoders that the
simulation uses) and neuron biases, except those that an online learning rule
changes (they are state, not parameters). Each one is a `Param`: a Nengo
object, a key (``"encoders"``, ``"bias"``, ``"weights"``) and the signal the
simulation reads. With ``optimize=True`` the signal may be a view of a larger
base that the merge pass packed together; values are moved through
`.view_indices`, so the layout never matters to the user.

Which setting wins (``configure_settings(trainable=None)`` adds the option):

1. an object's own setting (``net.config[ens].trainable``), set in any config
   of the networks that contain it (the innermost one wins); for biases the
   ``ens.neurons`` setting wins over the ensemble's;
2. the class setting of the innermost network that sets one
   (``net.config[nengo.Ensemble].trainable``, or ``configure_settings(trainable=
   False)`` inside a subnetwork), and the setting of a subnetwork in its parent
   (``net.config[subnet].trainable``), which is more specific than the parent's
   class settings and less specific than the subnetwork's own;
3. otherwise trainable.
"""

from dataclasses import dataclass

import nengo
import numpy as np
from nengo.ensemble import Neurons

from nengo_onnx.compiler.signals import view_indices
from nengo_onnx.onnx_node import OnnxNode, param_key

#: Keys of ``model.sig`` that hold trainable parameters.
PARAM_KEYS = {"encoders", "bias", "weights"}


@dataclass(frozen=True)
class Param:
    """One potentially trainable parameter of a built model."""

    obj: object  # Ensemble (encoders), Neurons (bias) or Connection (weights)
    key: str
    name: str  # stable across simulators of the same structure, e.g. "ens.encoders"

    def signal(self, model):
        return model.sig[self.obj][self.key]


# -- the trainable config option -----------------------------------------------------------


def _instance_setting(config, obj):
    params = config.params.get(obj)
    if params is None:
        return None
    try:
        return params.trainable if "trainable" in params else None
    except (AttributeError, nengo.exceptions.ConfigError):
        return None


def _class_setting(config, cls):
    for klass in cls.__mro__:
        if klass in config.params:
            params = config.params[klass]
            if "trainable" not in params.extra_params:
                return None
            return getattr(params, "trainable", None)
    return None


def _network_paths(network):
    """``{object: [top network, ..., the network that holds it]}``."""
    paths = {}

    def walk(net, path):
        path = path + [net]
        paths[net] = path
        for obj in net.ensembles + net.connections:
            paths[obj] = path
        for sub in net.networks:
            walk(sub, path)

    walk(network, [])
    return paths


def _candidates(path, obj, cls, instance_rank=0.0):
    """``(rank, value)`` of every setting that applies to ``obj`` (higher rank wins)."""
    found = []
    for i, net in enumerate(path):
        if i > 0:
            parent = path[i - 1].config
            value = _instance_setting(parent, net)
            if value is None:
                value = _class_setting(parent, nengo.Network)
            found.append(((i, 0.0), value))
        found.append(((i, 1.0 + instance_rank), _class_setting(net.config, cls)))
        found.append(((len(path) + i, instance_rank), _instance_setting(net.config, obj)))
    return [(rank, value) for rank, value in found if value is not None]


def _resolve(candidates, default=True):
    if not candidates:
        return default
    return bool(max(candidates, key=lambda c: c[0])[1])


def is_trainable(network, obj, paths=None):
    """Whether ``obj`` (an Ensemble, Neurons or Connection) is trainable by config.

    An `.OnnxNode` says it itself (its ``trainable`` argument).
    """
    if isinstance(obj, OnnxNode):
        return obj.trainable
    paths = _network_paths(network) if paths is None else paths
    if isinstance(obj, Neurons):
        path = paths.get(obj.ensemble, [network])
        return _resolve(
            _candidates(path, obj.ensemble, nengo.Ensemble)
            + _candidates(path, obj, Neurons, instance_rank=0.5)
        )
    path = paths.get(obj, [network])
    return _resolve(_candidates(path, obj, type(obj)))


# -- the parameters ----------------------------------------------------------------------


def _keys(model, obj):
    if isinstance(obj, OnnxNode):  # the model's float initializers
        return [param_key(name) for name in obj.spec.param_names]
    return sorted(PARAM_KEYS & set(model.sig[obj]))


def all_params(program):
    """Every parameter that could be trained, in a stable order (build order)."""
    model, network = program.model, program.network
    if network is None:
        return []
    members = set(network.all_ensembles + network.all_connections + network.all_nodes)
    objs = [
        obj
        for obj in model.sig
        if isinstance(obj, (nengo.Ensemble, nengo.Connection, Neurons, OnnxNode))
    ]
    params = []
    for obj in objs:
        owner = obj.ensemble if isinstance(obj, Neurons) else obj
        if owner not in members:
            continue  # e.g. the connection a probe adds
        if isinstance(owner, nengo.Ensemble) and isinstance(owner.neuron_type, nengo.Direct):
            continue
        for key in _keys(model, obj):
            sig = model.sig[obj].get(key)
            if sig is None or np.dtype(sig.dtype).kind != "f":
                continue
            params.append(Param(obj, key, program.names.param(obj, key)))
    return params


def learning_rule_targets(network):
    """The ``(object, key)`` pairs that online learning rules change."""
    targets = set()
    for conn in network.all_connections:
        rules = conn.learning_rule
        if rules is None:
            continue
        rules = (
            list(rules.values())
            if isinstance(rules, dict)
            else (list(rules) if isinstance(rules, (list, tuple)) else [rules])
        )
        for rule in rules:
            if rule.modifies in ("weights", "decoders"):
                targets.add((conn, "weights"))
            elif rule.modifies == "encoders":
                targets.add((conn.post_obj, "encoders"))
    return targets


def trainable_params(program):
    """The `Param` objects that training changes (config and static only)."""
    network = program.network
    if network is None:
        return []
    paths = _network_paths(network)
    excluded = learning_rule_targets(network)
    found = []
    for param in all_params(program):
        if (param.obj, param.key) in excluded:
            continue
        if not program.signals.is_static(param.signal(program.model).base):
            continue  # written by some operator: state, not a parameter
        if is_trainable(network, param.obj, paths):
            found.append(param)
    return found


# -- values ---------------------------------------------------------------------------


def read(base_array, sig):
    """The value of ``sig`` (a view of a base) in ``base_array``, as a new array."""
    return np.asarray(base_array).reshape(-1)[view_indices(sig)].copy()


def write(base_array, sig, value):
    """Write ``value`` into the elements of ``base_array`` that ``sig`` views."""
    flat = base_array.reshape(-1)
    flat[view_indices(sig).ravel()] = np.asarray(value, dtype=base_array.dtype).ravel()


def element_mask(base, sigs):
    """Boolean mask (shaped like ``base``) of the elements that ``sigs`` view."""
    mask = np.zeros(int(np.prod(base.shape)), dtype=bool)
    for sig in sigs:
        mask[view_indices(sig).ravel()] = True
    return mask.reshape(base.shape)
