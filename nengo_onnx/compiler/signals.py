"""Compile-time facts about a built model's signals: batching, dtypes, initial values."""

import numpy as np
from nengo.transforms import SparseMatrix


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


def dense(value):
    """A signal's initial value as a dense numpy array."""
    if isinstance(value, SparseMatrix):
        value = value.allocate()  # as nengo's SignalDict.init does (warns without scipy)
    return value.toarray() if hasattr(value, "toarray") else np.asarray(value)


class SignalPlan:
    """Which bases are written, minibatched and static, their dtypes and values.

    Names come from the program's `Names`; values of parameters that changed
    after the build (training, loading) from its `ParameterStore`.
    """

    def __init__(self, model, operators, names, params):
        self.model = model
        self.names = names
        self.params = params
        self.written = set()
        self.bases = {}  # every base the operators use, in schedule order (an ordered set)
        for op in operators:
            for sig in op.all_signals:
                self.bases.setdefault(sig.base, None)
            for sig in op.sets + op.incs + op.updates:
                self.written.add(sig.base)
        self.unbatched_state = {model.step.base, model.time.base}

    def name(self, base):
        return self.names.signal(base)

    def is_static(self, base):
        return base not in self.written

    def batched(self, base):
        return base in self.written and base not in self.unbatched_state

    def state_bases(self):
        """Bases carried from step to step, in a stable order (by name)."""
        return sorted(self.written, key=self.name)

    def static_bases(self):
        """Bases no operator writes (constants and parameters), in schedule order."""
        return [base for base in self.bases if base not in self.written]

    def dtype_of(self, sig, float_dtype):
        kind = np.dtype(sig.dtype).kind
        if kind == "f":
            return np.dtype(float_dtype)
        if kind == "b":
            return np.dtype(np.bool_)
        # integers (the step counter) as wide as the floats, as nengo's rc precision does
        return np.dtype(np.int32 if np.dtype(float_dtype).itemsize <= 4 else np.int64)

    def initial_value(self, base, float_dtype):
        """The base's value at the start of a run (parameters: their current value)."""
        if base in self.params:
            value = self.params.value(base)
        else:
            value = dense(base.initial_value)
        return np.asarray(value).astype(self.dtype_of(base, float_dtype))

    def initializer(self, graph, base, float_dtype):
        return graph.initializer(
            self.name(base), self.initial_value(base, float_dtype), unique=False
        )
