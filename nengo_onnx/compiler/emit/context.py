"""The environment that emitters write into: Nengo signals as ONNX values.

Each *base* signal holds one ONNX value at any point of the emission, shaped
``[B, *base.shape]`` when it is minibatched and ``base.shape`` when it is not.
Views are read by slicing or gathering from their base and written by
concatenating or scattering into it, so emitters only ever see signals in the
shapes that Nengo gives them (plus a leading batch axis).

Which bases are minibatched: every base that some operator writes, except the
simulator's ``step`` and ``time`` (the same for every batch item). Bases that no
operator writes are constants or parameters: they are initializers, without a
batch axis.
"""

import numpy as np
from nengo.exceptions import BuildError

from nengo_onnx.compiler.signals import view_indices
from nengo_onnx.config import Settings


def _contiguous(idx):
    """``(start, stop)`` if ``idx`` (flattened) is a contiguous increasing range."""
    flat = idx.ravel()
    if flat.size == 0:
        return None
    start = int(flat[0])
    if np.array_equal(flat, np.arange(start, start + flat.size)):
        return start, start + flat.size
    return None


class EmitContext:
    """Signal environment plus node helpers for the operator emitters.

    Parameters
    ----------
    graph : GraphBuilder
        Where nodes and initializers go.
    signals : SignalPlan
        Compile-time facts about the model's signals (names, batching, values).
    settings : Settings or None
        The network's validated settings (`nengo_onnx.config.settings_of`);
        ``None`` means the defaults.
    """

    def __init__(
        self, graph, signals, dtype, minibatch_size, dt, n_steps=1, training=False, settings=None
    ):
        self.graph = graph
        # training graphs replace spiking neurons by their rate forms (NengoDL's way)
        self.training = training
        # parsed once, by settings_of: emitters read its attributes, never raw values
        if settings is not None and not isinstance(settings, Settings):
            raise TypeError(f"settings must be a nengo_onnx.config.Settings (got {settings!r})")
        self.settings = Settings() if settings is None else settings
        self.signals = signals
        self.dtype = np.dtype(dtype)
        self.B = minibatch_size
        self.dt = dt
        self.n_steps = n_steps
        self.t = 0  # the step being emitted, 0 <= t < n_steps
        self.env = {}  # base signal -> current value name
        self._read_cache = {}  # sig -> value name, cleared when the base changes
        self._step_inputs = {}  # key -> (shape, dtype, [per-step values])
        self.op = None  # the operator being emitted
        self.cache = {}  # values emitters compute once per block (e.g. dense matrices)

    # -- node helpers --------------------------------------------------------------

    def node(self, op_type, inputs, **kwargs):
        return self.graph.node(op_type, inputs, **kwargs)

    def const(self, value, dtype=None):
        """A constant; floating-point values take the simulation dtype."""
        arr = np.asarray(value)
        if dtype is None and arr.dtype.kind == "f":
            dtype = self.dtype
        elif dtype is None and arr.dtype.kind in "iu":
            dtype = np.int64
        elif dtype is None and arr.dtype.kind == "b":
            dtype = np.bool_
        return self.graph.const(arr, dtype=dtype)

    def scalar(self, value):
        return self.const(np.asarray(value, dtype=self.dtype))

    def reshape(self, value, shape):
        """``value`` reshaped to ``shape`` (no node when it has that shape already)."""
        shape = tuple(int(d) for d in shape)
        known = self.graph.shapes.get(value)
        if known is not None and -1 in shape:
            rest = int(np.prod([d for d in shape if d != -1]))
            shape = tuple(int(np.prod(known)) // max(rest, 1) if d == -1 else d for d in shape)
        if known == shape:
            return value
        out = self.node("Reshape", [value, self.const(np.asarray(shape, dtype=np.int64))])
        if -1 not in shape:
            self.graph.shapes[out] = shape
        return out

    def expand(self, value, shape):
        """``value`` broadcast to ``shape`` (no node when it has that shape already)."""
        shape = tuple(int(d) for d in shape)
        if self.graph.shapes.get(value) == shape:
            return value
        out = self.node("Expand", [value, self.const(np.asarray(shape, dtype=np.int64))])
        self.graph.shapes[out] = shape
        return out

    def known_shape(self, value, shape):
        """Record that ``value`` has ``shape`` (emitters may call this; it saves Reshapes)."""
        self.graph.shapes[value] = tuple(int(d) for d in shape)
        return value

    def dtype_of(self, sig):
        return self.signals.dtype_of(sig, self.dtype)

    # -- signal access ---------------------------------------------------------------

    def batched(self, sig):
        return self.signals.batched(sig.base)

    def shape(self, sig, batched=None):
        batched = self.batched(sig) if batched is None else batched
        return ((self.B,) if batched else ()) + tuple(sig.shape)

    def _base_value(self, base):
        if base not in self.env:
            if not self.signals.is_static(base):
                raise BuildError(f"Pass developer: state signal {base} has no value")
            self.env[base] = self.signals.initializer(self.graph, base, self.dtype)
            self.known_shape(self.env[base], self.shape(base))
        return self.env[base]

    def read(self, sig):
        """The value of ``sig`` now: ``[B, *sig.shape]`` if minibatched, else ``sig.shape``."""
        if sig in self._read_cache:
            return self._read_cache[sig]
        base = sig.base
        value = self._base_value(base)
        batched = self.batched(base)
        if sig is not base:
            idx = view_indices(sig)
            if idx.size == base.size and _contiguous(idx) == (0, base.size):
                if sig.shape != base.shape:
                    value = self.reshape(value, self.shape(sig))
            else:
                value = self._gather(self._flat(value, base), idx, batched)
        self._read_cache[sig] = self.known_shape(value, self.shape(sig))
        return value

    def read_batched(self, sig):
        """Like `read`, but always with the batch axis."""
        value = self.read(sig)
        return value if self.batched(sig) else self.expand(value, self.shape(sig, True))

    def _flat(self, value, base):
        return self.reshape(value, [self.B, base.size] if self.batched(base) else [base.size])

    def _gather(self, flat, idx, batched):
        axis = 1 if batched else 0
        lead = [self.B] if batched else []
        span = _contiguous(idx)
        if span is not None:
            out = self._slice(flat, span[0], span[1], axis)
            return self.reshape(out, lead + list(idx.shape))
        return self.node("Gather", [flat, self.const(idx)], axis=axis)

    def set(self, sig, value, batched=True):
        self.write(sig, value, "set", batched)

    def inc(self, sig, value, batched=True):
        self.write(sig, value, "inc", batched)

    def update(self, sig, value, batched=True):
        # Readers of ``sig`` were emitted before its updater (nengo's schedule), so
        # overwriting the environment now gives them the old value, as in nengo.
        self.write(sig, value, "set", batched)

    def write(self, sig, value, mode, batched=True, index=None):
        """Write ``value`` (shaped like ``sig``, or like ``sig[index]``) into ``sig``.

        ``mode`` is ``"set"`` or ``"inc"``; ``index`` optionally selects elements of
        ``sig`` along its first axis (Nengo's ``Copy.dst_slice``); repeated indices
        accumulate when incrementing.
        """
        base = sig.base
        target_batched = self.batched(base)
        if batched and not target_batched:
            raise BuildError(f"Pass developer: minibatched value written to {base}")
        idx = view_indices(sig)
        if index is not None:
            idx = idx[index]
        shape = ((self.B,) if target_batched else ()) + idx.shape
        if target_batched and not batched:
            value = self.expand(value, shape)

        full = idx.size == base.size and _contiguous(idx) == (0, base.size)
        if full:
            value = self.reshape(value, self.shape(base))
            if mode == "inc":
                value = self.node("Add", [self._base_value(base), value])
        else:
            value = self._scatter(base, idx, value, mode)
        self.env[base] = self.known_shape(value, self.shape(base))
        self._invalidate(base)

    def _scatter(self, base, idx, value, mode):
        batched = self.batched(base)
        flat = self._flat(self._base_value(base), base)
        lead = [self.B] if batched else []
        value = self.reshape(value, lead + [idx.size])
        span = _contiguous(idx)
        axis = 1 if batched else 0
        if span is not None:
            start, stop = span
            parts = []
            if start > 0:
                parts.append(self._slice(flat, 0, start, axis))
            middle = value
            if mode == "inc":
                middle = self.node("Add", [self._slice(flat, start, stop, axis), value])
            parts.append(middle)
            if stop < base.size:
                parts.append(self._slice(flat, stop, base.size, axis))
            out = parts[0] if len(parts) == 1 else self.node("Concat", parts, axis=axis)
        else:
            flat_idx = idx.ravel()
            if batched:
                flat_idx = np.broadcast_to(flat_idx, (self.B, flat_idx.size))
            kwargs = {"reduction": "add"} if mode == "inc" else {}
            out = self.node(
                "ScatterElements", [flat, self.const(flat_idx), value], axis=axis, **kwargs
            )
        return self.reshape(out, self.shape(base))

    def _slice(self, value, start, stop, axis):
        out = self.node(
            "Slice", [value, self.const([start]), self.const([stop]), self.const([axis])]
        )
        shape = self.graph.shapes.get(value)
        if shape is not None:
            self.known_shape(out, shape[:axis] + (stop - start,) + shape[axis + 1 :])
        return out

    def _invalidate(self, base):
        for sig in [s for s in self._read_cache if s.base is base]:
            del self._read_cache[sig]

    # -- per-step inputs -------------------------------------------------------------

    def step_input(self, key, shape, dtype=None):
        """This step's slice of a ``[B, n_steps, *shape]`` graph input called ``key``.

        The runtime feeds these: input Nodes, time-only processes computed in
        Python, random numbers for stochastic neurons.
        """
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        if key not in self._step_inputs:
            name = self.graph.input(key, dtype, [self.B, self.n_steps, *shape])
            self._step_inputs[key] = (tuple(shape), dtype, name, {})
        shape, _, name, parts = self._step_inputs[key]
        if self.t not in parts:
            step = self.const(np.array(self.t, dtype=np.int64))
            parts[self.t] = self.known_shape(
                self.node("Gather", [name, step], axis=1), (self.B, *shape)
            )
        return parts[self.t]

    @property
    def step_inputs(self):
        """``{name: (shape per item and step, dtype)}`` of the per-step inputs."""
        return {k: v[:2] for k, v in self._step_inputs.items()}
