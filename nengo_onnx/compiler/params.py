"""Parameter values: the one store (`ParameterStore`), and saving, loading, freezing.

A parameter is a static base signal whose value can change after the build:
training, `load` and pickling write trained values into the program's
`ParameterStore`; everything that needs a value reads it there (the ONNX
graphs through the signal plan, ``sim.data`` through `ParameterStore.built`,
the Python operators, saving, pickling and export). ``model.params`` keeps
nengo's built values as they were built.

Saved files hold one array per Nengo object and key (``"ens.encoders"``), so
they do not depend on how the merge pass packed signals.
"""

import os
import zipfile

import nengo
import numpy as np
from nengo.ensemble import Neurons
from nengo.exceptions import SimulationError, ValidationError

from nengo_onnx.compiler import trainable
from nengo_onnx.compiler.signals import dense
from nengo_onnx.files import write_atomically
from nengo_onnx.onnx_node import OnnxNode, param_key

#: The ``meta/format`` entry of files written by `save`.
FORMAT = "nengo_onnx.params.v1"


class ParamsMismatchError(SimulationError, ValidationError):
    """Saved parameters that do not fit the simulator's network."""

    def __init__(self, msg):
        ValidationError.__init__(self, msg, attr="path")


def describe(obj):
    """``Type label`` of an object, for error messages."""
    return f"{type(obj).__name__} {obj}"


class ParameterStore:
    """The current values of the parameters whose values changed since the build.

    Values are float64 arrays shaped like their base signal; a base that is not
    in the store has its built (initial) value.
    """

    def __init__(self, model, names):
        self.model = model
        self.names = names
        self._values = {}
        #: incremented at every change (compiled graphs record the version they saw)
        self.version = 0

    def __contains__(self, base):
        return base in self._values

    def changed_bases(self):
        return list(self._values)

    def value(self, base):
        """The current value of ``base`` (float64; a read-only view)."""
        if base in self._values:
            return self._values[base]
        value = np.asarray(dense(base.initial_value), dtype=np.float64)
        value = value.view()
        value.setflags(write=False)
        return value

    def set(self, base, value):
        """Replace the value of ``base`` (a copy is stored)."""
        value = np.array(value, dtype=np.float64)
        if value.shape != tuple(base.shape):
            raise ValidationError(
                f"value for {self.names.signal(base)} has shape {value.shape}; "
                f"expected {tuple(base.shape)}",
                attr="value",
            )
        value.setflags(write=False)
        self._values[base] = value
        self.version += 1

    def read(self, sig):
        """The current value of ``sig`` (a view of a parameter base) as a new array."""
        return trainable.read(self.value(sig.base), sig)

    # -- pickling: values by signal name ------------------------------------------------

    def named(self):
        """``{signal name: value}`` of every changed parameter."""
        return {self.names.signal(base): np.array(value) for base, value in self._values.items()}

    def load_named(self, values):
        """Set values given by signal name (from `named`); unknown names are an error."""
        # every named base: a parameter that no operator uses (an unconnected
        # Ensemble's encoders) is still a parameter with a value
        by_name = {name: base for base, name in self.names.signals.items()}
        for name, value in values.items():
            if name not in by_name:
                raise ValidationError(
                    f"no parameter signal named {name!r} in this model", attr="params"
                )
            self.set(by_name[name], value)

    # -- nengo's built parameters, with the current values ------------------------------

    def built(self, obj):
        """``model.params[obj]``, with the current values of changed parameters.

        ``BuiltEnsemble`` (scaled encoders, encoders, bias), ``BuiltConnection``
        (weights) and an OnnxNode's parameters; other objects as built.
        """
        built = self.model.params[obj]
        sig = self.model.sig.get(obj, {})
        if isinstance(obj, OnnxNode):
            params = dict(built.params)
            for name in obj.spec.param_names:
                s = sig.get(param_key(name))
                if s is not None and s.base in self:
                    params[name] = self.read(s)
            return built._replace(params=params)
        if isinstance(obj, nengo.Ensemble):
            enc = sig.get("encoders")
            if enc is not None and enc.base in self:
                built = self._with_encoders(obj, built, self.read(enc))
            bias = self.model.sig.get(obj.neurons, {}).get("bias")
            if bias is not None and bias.base in self:
                built = built._replace(bias=self.read(bias))
            return built
        if isinstance(obj, nengo.Connection):
            weights = sig.get("weights")
            if weights is not None and weights.base in self:
                built = built._replace(weights=self.read(weights))
        return built

    @staticmethod
    def _with_encoders(ens, built, scaled):
        # the simulation uses the scaled encoders; the unit encoders follow from the gain
        gain = np.asarray(built.gain, dtype=np.float64)
        safe = np.where(gain == 0, 1.0, gain)
        unchanged = (gain[:, None] == 0) | (scaled == built.scaled_encoders)
        encoders = np.where(unchanged, built.encoders, scaled * ens.radius / safe[:, None])
        return built._replace(scaled_encoders=scaled, encoders=encoders)


# -- trainable parameters as groups of base signals ----------------------------------------


class ParamGroup:
    """A parameter base signal: its ONNX name and which of its elements train."""

    def __init__(self, base, name, mask=None):
        self.base = base
        self.name = name
        self.mask = mask  # bool array (shaped like base) or None: all elements

    def __repr__(self):
        return f"ParamGroup({self.name})"


def param_groups(program, params):
    """`ParamGroup` of each base signal that ``params`` (`trainable.Param`) view."""
    by_base = {}
    for param in params:
        sig = param.signal(program.model)
        by_base.setdefault(sig.base, []).append(sig)
    groups = []
    for base, sigs in by_base.items():
        mask = trainable.element_mask(base, sigs)
        groups.append(ParamGroup(base, program.names.signal(base), None if mask.all() else mask))
    return sorted(groups, key=lambda grp: grp.name)


# -- files -------------------------------------------------------------------------------


def params_path(path, for_reading=False):
    """The file name `save` writes for ``path`` (``.npz`` added unless given)."""
    path = os.fspath(path)
    if path.endswith(".npz"):
        return path
    if for_reading and os.path.exists(path) and not os.path.exists(path + ".npz"):
        return path
    return path + ".npz"


def save(program, path, state=None):
    """Write every parameter's value (and ``state``: ``{name: array}``) to ``path``.

    Written atomically as ``path + ".npz"``; returns the file name.
    """
    arrays = {}
    for param in trainable.all_params(program):
        arrays[f"param/{param.name}"] = program.params.read(param.signal(program.model))
    for key, value in (state or {}).items():
        arrays[f"state/{key}"] = np.array(value)
    arrays["meta/format"] = np.array(FORMAT)
    target = params_path(path)
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise ValidationError(
            f"cannot save parameters to {target}: directory {directory} does not exist",
            attr="path",
        )
    write_atomically(target, lambda f: np.savez(f, **arrays))
    return target


def _read_file(source):
    """The arrays of a params file; any unreadable file is a ValidationError naming it."""
    if not os.path.exists(source):
        raise ValidationError(f"no saved parameters at {source}", attr="path")
    try:
        with np.load(source, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ValueError(
                    "it holds a single array (.npy), not a saved-parameters .npz file"
                )
            saved = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, TypeError) as err:
        raise ValidationError(
            f"cannot read saved parameters from {source}: it is not a file written by "
            f"save_params ({type(err).__name__}: {err})",
            attr="path",
        ) from err
    if "meta/format" in saved and str(saved["meta/format"]) != FORMAT:
        raise ValidationError(
            f"{source} has format {saved['meta/format']}, expected {FORMAT}", attr="path"
        )
    return saved


def _check_values(name, value, source, dtype):
    if value.dtype.kind not in "fiu":
        raise ValidationError(
            f"parameter {name} in {source} has dtype {value.dtype}; expected numbers", attr="path"
        )
    value = value.astype(np.float64)
    if not np.all(np.isfinite(value)):
        raise ValidationError(f"parameter {name} in {source} contains NaN or inf", attr="path")
    limit = np.finfo(dtype).max
    if np.any(np.abs(value) > limit):
        raise ValidationError(
            f"parameter {name} in {source} has values beyond the "
            f"{np.dtype(dtype).name} range (|x| > {limit:g})",
            attr="path",
        )
    return value


def load(program, path):
    """Load `save`'s parameters into ``program``; returns the saved state ``{name: array}``.

    Fails, naming the mismatch, when the saved network's parameters differ from
    this one's (names or shapes).
    """
    source = params_path(path, for_reading=True)
    saved = _read_file(source)
    params = {p.name: p for p in trainable.all_params(program)}
    stored = {k[len("param/") :]: v for k, v in saved.items() if k.startswith("param/")}
    missing = sorted(set(params) - set(stored))
    extra = sorted(set(stored) - set(params))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"this network has parameters that {source} lacks: {missing}")
        if extra:
            parts.append(f"{source} has parameters that this network lacks: {extra}")
        raise ParamsMismatchError(
            "saved parameters do not match this network's structure; " + "; ".join(parts)
        )
    for name, param in params.items():
        shape = tuple(param.signal(program.model).shape)
        if stored[name].shape != shape:
            raise ParamsMismatchError(
                f"parameter {name} has shape {stored[name].shape} in {source} but {shape} in "
                "this network; the networks' structures differ"
            )
        stored[name] = _check_values(name, stored[name], source, program.dtype)
    bases = {}
    for name, param in params.items():
        sig = param.signal(program.model)
        if sig.base not in bases:
            bases[sig.base] = np.array(program.params.value(sig.base))
        trainable.write(bases[sig.base], sig, stored[name])
    for base, value in bases.items():
        program.params.set(base, value)
    return {k[len("state/") :]: v for k, v in saved.items() if k.startswith("state/")}


# -- freezing into the Nengo objects ---------------------------------------------------------


def freeze(program, objs):
    """Write ``program``'s current parameters into the Nengo objects ``objs``.

    ``objs`` is a Network (all its Ensembles, Connections and OnnxNodes) or a
    list of Ensembles, Connections, OnnxNodes and Networks. Ensembles get
    ``encoders``, ``gain`` and ``bias`` (``normalize_encoders=False``);
    connections get their weights: decoded connections a ``NoSolver`` with the
    trained decoders, others the trained transform; OnnxNodes get the trained
    initializers in their model. ``nengo.Simulator(net)`` then reproduces the
    program.
    """
    network = program.network
    if network is None:
        raise ValidationError(
            "the simulator has no network to freeze parameters into", attr="objs"
        )
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
                f"OnnxNodes; got {describe(obj)})",
                attr="objs",
            )
    members = set(network.all_ensembles + network.all_connections + network.all_nodes)
    for obj in targets:
        if obj not in members:
            raise ValidationError(f"{obj} is not in this simulator's network", attr="objs")
    for obj in targets:
        if isinstance(obj, nengo.Ensemble):
            _freeze_ensemble(obj, program.params.built(obj))
            _freeze_decoded_probes(program, obj)
        elif isinstance(obj, OnnxNode):
            obj.set_params(program.params.built(obj).params)
        else:
            _freeze_connection(program, obj)


def _freeze_decoded_probes(program, ens):
    """Give the decoded probes of ``ens`` the decoders they were built with.

    nengo solves a decoded probe's decoders when it builds; on the frozen
    (possibly trained) ensemble it would solve different ones than those the
    simulation used.
    """
    for conn in program.model.params:
        probe = getattr(conn, "post_obj", None)
        if (
            isinstance(conn, nengo.Connection)
            and isinstance(probe, nengo.Probe)
            and conn.pre_obj is ens
            and not isinstance(ens.neuron_type, nengo.Direct)
            and program.model.sig[conn].get("weights") is not None
        ):
            decoders = np.asarray(program.params.built(conn).weights)
            probe.solver = nengo.solvers.NoSolver(decoders.T, weights=False)


def _freeze_ensemble(ens, built):
    if isinstance(ens.neuron_type, nengo.Direct):
        return
    ens.gain = np.array(built.gain)
    ens.bias = np.array(built.bias)
    ens.encoders = np.array(built.encoders)
    ens.normalize_encoders = False
    # nengo warns when max_rates/intercepts are set next to gain and bias
    ens.max_rates = nengo.Ensemble.max_rates.default
    ens.intercepts = nengo.Ensemble.intercepts.default


def _freeze_connection(program, conn):
    if program.model.sig[conn].get("weights") is None:
        return
    weights = program.params.built(conn).weights
    pre = conn.pre_obj
    if isinstance(pre, nengo.Ensemble) and not isinstance(pre.neuron_type, nengo.Direct):
        weights = np.asarray(weights)
        if conn.solver.weights:
            conn.solver = nengo.solvers.NoSolver(weights.T, weights=True)
            return
        size = weights.shape[0]
        conn.solver = nengo.solvers.NoSolver(weights.T, weights=False)
        conn.function = ZeroFunction(size)
        conn.transform = None
        return
    conn.transform = transform_with(conn, conn.transform, weights)


def transform_with(conn, transform, weights):
    """A transform like ``transform`` whose weights are ``weights`` (as nengo builds them)."""
    tr = nengo.transforms
    if isinstance(transform, tr.Sparse):
        init = transform.init
        if isinstance(init, tr.SparseMatrix):
            indices = np.asarray(init.indices)
        else:  # a scipy sparse matrix
            coo = init.tocoo()
            indices = np.stack([coo.row, coo.col], axis=1)
        if isinstance(weights, tr.SparseMatrix):
            data = np.asarray(weights.data)
        else:
            data = np.asarray(weights)[indices[:, 0], indices[:, 1]]
        return tr.Sparse(transform.shape, indices=indices, init=data)
    if isinstance(transform, tr.ConvolutionTranspose):
        return tr.ConvolutionTranspose(
            transform.n_filters,
            transform.input_shape.shape,
            output_shape=transform.output_shape.shape,
            kernel_size=transform.kernel_size,
            strides=transform.strides,
            padding=transform.padding,
            channels_last=transform.channels_last,
            init=np.array(weights),
        )
    if isinstance(transform, tr.Convolution):
        return tr.Convolution(
            transform.n_filters,
            transform.input_shape.shape,
            kernel_size=transform.kernel_size,
            strides=transform.strides,
            padding=transform.padding,
            channels_last=transform.channels_last,
            init=np.array(weights),
            groups=transform.groups,
        )
    if isinstance(transform, (tr.Dense, tr.NoTransform)) or np.ndim(weights) <= 2:
        if np.ndim(weights) == 2:
            return np.array(weights)
        shape = transform.shape if hasattr(transform, "shape") else np.shape(weights)
        return tr.Dense(shape, init=np.array(weights))
    raise ValidationError(
        f"cannot freeze the weights of {conn}: its {type(transform).__name__} transform "
        "is not supported",
        attr="objs",
    )


class ZeroFunction:
    """The function of a frozen decoded connection (the decoders hold everything)."""

    def __init__(self, size):
        self.size = size

    def __call__(self, x):
        return np.zeros(self.size)


# -- parameters as constructor arguments (NengoDL's get_nengo_params) ------------------------


def nengo_params(program, objs, as_dict=False):
    """Constructor arguments that rebuild ``objs`` with ``program``'s current parameters.

    ``objs`` is an Ensemble, Neurons (its Ensemble) or Connection, or a list of them.
    As NengoDL's ``get_nengo_params``: an Ensemble gets ``encoders`` (scaled back by
    ``radius / gain``), ``normalize_encoders=False``, ``gain``, ``bias`` and Nengo's
    default ``max_rates``/``intercepts``; a decoded Connection ``solver=NoSolver(decoders,
    weights=False)``, a ``function`` returning zeros and ``transform=None``; other
    Connections their trained ``transform`` (an array, or a ``Convolution`` or
    ``Sparse`` of the same form); a Connection without weights ``{"transform": None}``.
    The other arguments (neuron type, synapse, ...) are the caller's. Returns one dict
    for one object, a list for a list, or ``{label: dict}`` with ``as_dict=True``.
    """
    single = not isinstance(objs, (list, tuple))
    items = [objs] if single else list(objs)
    items = [obj.ensemble if isinstance(obj, Neurons) else obj for obj in items]
    result = []
    for obj in items:
        if isinstance(obj, nengo.Ensemble):
            result.append(_ensemble_params(program, obj))
        elif isinstance(obj, nengo.Connection):
            result.append(_connection_params(program, obj))
        else:
            raise ValidationError(
                f"get_nengo_params takes Ensembles and Connections (got {describe(obj)})",
                attr="objs",
            )
    if single:
        return result[0]
    if as_dict:
        by_label = {}
        for obj, params in zip(items, result):
            if obj.label in by_label:
                raise ValidationError(
                    f"two objects have the label {obj.label!r}; as_dict=True needs unique labels",
                    attr="as_dict",
                )
            by_label[obj.label] = params
        return by_label
    return result


def _ensemble_params(program, ens):
    if isinstance(ens.neuron_type, nengo.Direct):
        raise ValidationError(
            f"{ens} has Direct neurons, whose encoders nengo's builder ignores; read its "
            "parameters from sim.data instead",
            attr="objs",
        )
    if ens not in program.model.params:
        raise ValidationError(f"{ens} is not in this simulator's network", attr="objs")
    built = program.params.built(ens)
    gain = np.array(built.gain)
    return {
        "encoders": np.array(built.scaled_encoders) * ens.radius / gain[:, None],
        "normalize_encoders": False,
        "gain": gain,
        "bias": np.array(built.bias),
        "max_rates": nengo.Ensemble.max_rates.default,
        "intercepts": nengo.Ensemble.intercepts.default,
    }


def _connection_params(program, conn):
    if conn not in program.model.params:
        raise ValidationError(f"{conn} is not in this simulator's network", attr="objs")
    if program.model.sig[conn].get("weights") is None:
        return {"transform": None}
    weights = np.array(program.params.built(conn).weights)
    pre = conn.pre_obj
    transform = conn.transform
    if isinstance(transform, nengo.Convolution):
        return {
            "transform": nengo.Convolution(
                transform.n_filters,
                transform.input_shape,
                kernel_size=transform.kernel_size,
                strides=transform.strides,
                padding=transform.padding,
                channels_last=transform.channels_last,
                init=weights,
                groups=transform.groups,
            )
        }
    if isinstance(transform, nengo.transforms.Sparse):
        return {
            "transform": nengo.transforms.Sparse(
                transform.shape, indices=transform.indices, init=weights
            )
        }
    if isinstance(transform, (nengo.transforms.Dense, nengo.transforms.NoTransform)):
        if isinstance(pre, nengo.Ensemble) and not isinstance(pre.neuron_type, nengo.Direct):
            if conn.solver.weights:
                return {"solver": nengo.solvers.NoSolver(weights.T, weights=True)}
            return {
                "solver": nengo.solvers.NoSolver(weights.T, weights=False),
                "function": ZeroFunction(weights.shape[0]),
                "transform": None,
            }
        if all(n == 1 for n in weights.shape):
            weights = np.squeeze(weights)
        return {"transform": weights}
    raise ValidationError(
        f"cannot get the parameters of {conn}: its {type(transform).__name__} transform is "
        "not supported",
        attr="objs",
    )
