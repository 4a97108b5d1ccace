"""Compile-time facts about a built model's signals: names, batching, initial values."""

import re
from collections.abc import Mapping

import numpy as np
from nengo.base import NengoObject
from nengo.ensemble import Neurons
from nengo.transforms import SparseMatrix


def sanitize(text):
    """A name made of ``[A-Za-z0-9_.]`` only, never empty, never starting with a digit."""
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", str(text)).strip("_") or "x"
    return f"_{name}" if name[0].isdigit() else name


def object_name(obj, counter=None):
    """A readable name for a Nengo object: its label, or its type and a number."""
    if isinstance(obj, Neurons):
        return f"{object_name(obj.ensemble, counter)}.neurons"
    label = getattr(obj, "label", None)
    if label:
        return sanitize(label)
    kind = type(obj).__name__.lower()
    if counter is None:
        return kind
    counter[kind] = counter.get(kind, -1) + 1
    return f"{kind}_{counter[kind]}"


def unique_names(objs, name_fn=object_name):
    """Names for ``objs`` deduplicated as ``name, name_1, name_2`` (NengoDL's scheme)."""
    counter, seen, names = {}, {}, {}
    for obj in objs:
        name = name_fn(obj, counter)
        n = seen.get(name, 0)
        seen[name] = n + 1
        names[obj] = name if n == 0 else f"{name}_{n}"
    return names


def view_indices(sig):
    """Flat indices into ``sig.base`` of each element of ``sig``, shaped like ``sig``."""
    if not sig.is_view:
        # (a sparse signal's ``size`` counts its nonzeros, not its elements)
        return np.arange(int(np.prod(sig.shape))).reshape(sig.shape)
    idx = np.full(sig.shape, sig.elemoffset, dtype=np.int64)
    for axis, stride in enumerate(sig.elemstrides):
        shape = [1] * len(sig.shape)
        shape[axis] = sig.shape[axis]
        idx = idx + stride * np.arange(sig.shape[axis]).reshape(shape)
    return idx


def _dense(value):
    if isinstance(value, SparseMatrix):
        value = value.allocate()  # as nengo's SignalDict.init does (warns without scipy)
    return value.toarray() if hasattr(value, "toarray") else np.asarray(value)


class SignalPlan(Mapping):
    """Which bases are written, minibatched and static, and what they are called.

    Names come from ``model.sig`` (the owner and key, e.g. ``ens_a.encoders``),
    not from the signal's own name: a connection's weights signal is named after
    its transform, but filed under the connection.

    As a mapping it answers ``sim.signals[sig]`` with the signal's current value,
    like nengo's ``SignalDict`` (nengo's own tests read it): the runtime points
    `store` at its state arrays.
    """

    #: the runtime's state arrays (base -> array), the minibatch size, and whether
    #: values are shown without the batch axis (no ``minibatch_size`` given)
    store = None
    minibatch_size = 1
    squeeze_batch = True

    def __init__(self, model, operators):
        self.model = model
        self.written = set()
        for op in operators:
            for sig in op.sets + op.incs + op.updates:
                self.written.add(sig.base)
        self.unbatched_state = {model.step.base, model.time.base}
        self.names = self._names(model, operators)
        # values that replace a static base's initial value (e.g. trained parameters)
        self.values = {}

    def _names(self, model, operators):
        objs = [obj for obj in model.sig if isinstance(obj, (NengoObject, Neurons))]
        obj_names = unique_names(objs)
        names, used = {}, set()

        def claim(base, name):
            if base in names:
                return
            n, candidate = 0, name
            while candidate in used:
                n += 1
                candidate = f"{name}_{n}"
            used.add(candidate)
            names[base] = candidate

        for obj in objs:
            for key, sig in model.sig[obj].items():
                if sig is not None and hasattr(sig, "base"):
                    claim(sig.base, f"{obj_names[obj]}.{sanitize(key)}")
        for op in operators:
            for sig in op.all_signals:
                claim(sig.base, sanitize(sig.base.name))
        return names

    def name(self, base):
        if base not in self.names:
            self.names[base] = sanitize(base.name)
        return self.names[base]

    def is_static(self, base):
        return base not in self.written

    def batched(self, base):
        return base in self.written and base not in self.unbatched_state

    def state_bases(self):
        """Bases carried from step to step, in a stable order (by name)."""
        return sorted(self.written, key=self.name)

    def dtype_of(self, sig, float_dtype):
        kind = np.dtype(sig.dtype).kind
        if kind == "f":
            return np.dtype(float_dtype)
        if kind == "b":
            return np.dtype(np.bool_)
        # integers (the step counter) as wide as the floats, as nengo's rc precision does
        return np.dtype(np.int32 if np.dtype(float_dtype).itemsize <= 4 else np.int64)

    def initial_value(self, base, float_dtype):
        """The base's initial value (or its value in `values`), in the simulation dtype."""
        value = self.values[base] if base in self.values else _dense(base.initial_value)
        return np.asarray(value).astype(self.dtype_of(base, float_dtype))

    def initializer(self, graph, base, float_dtype):
        return graph.initializer(self.name(base), self.initial_value(base, float_dtype))

    # -- nengo's SignalDict reading API -----------------------------------------------

    def __getitem__(self, sig):
        from nengo_onnx.runtime.host import read_signal  # noqa: PLC0415

        if not hasattr(sig, "base"):
            raise KeyError(sig)
        dtype = self.dtype_of(sig, self._float_dtype())
        value = read_signal(self.store or {}, self, sig, self.minibatch_size,
                            initial=lambda base: self.initial_value(base, dtype))
        return value[0] if self.squeeze_batch else value

    def _float_dtype(self):
        for value in (self.store or {}).values():
            if value.dtype.kind == "f":
                return value.dtype
        return np.dtype(np.float32)

    def __iter__(self):
        return iter(self.names)

    def __len__(self):
        return len(self.names)
