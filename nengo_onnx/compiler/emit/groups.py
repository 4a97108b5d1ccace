"""Emitters for operator groups made by the merge passes."""

import numpy as np

from nengo_onnx.compiler.emit.context import view_indices
from nengo_onnx.compiler.emit.registry import EMITTERS, emitter
from nengo_onnx.compiler.operators import LinearFilterGroup, SetMixin


def _parent_emitter(op):
    """The emitter of the increment that a set form (`.SetMixin`) comes from."""
    mro = type(op).__mro__
    for cls in mro[mro.index(SetMixin) + 1 :]:
        if cls in EMITTERS:
            return EMITTERS[cls]
    return None, None


def _supports_set(op):
    fn, supports = _parent_emitter(op)
    if fn is None:
        return f"no ONNX emitter for {type(op).__name__}'s increment form"
    return supports(op) if supports is not None else None


class _SetContext:
    """An `.EmitContext` whose first increment of ``Y`` becomes a set.

    The increment emitters write ``Y`` with one ``ctx.inc`` (or
    ``ctx.write(..., "inc")``); making that write a set gives ``Y[...] = f(...)``
    without a zero Reset and an ``Add``. Should an emitter write ``Y`` in parts,
    ``Y`` is zeroed before the first part and the parts are increments, as before.
    """

    def __init__(self, ctx, Y):
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_Y", Y)
        object.__setattr__(self, "started", False)

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def __setattr__(self, name, value):
        setattr(self._ctx, name, value)

    def inc(self, sig, value, batched=True):
        self.write(sig, value, "inc", batched)

    def write(self, sig, value, mode, batched=True, index=None):
        if mode == "inc" and not self.started and sig.base is self._Y.base:
            object.__setattr__(self, "started", True)
            if sig is self._Y and index is None:
                mode = "set"
            else:
                dtype = self._ctx.dtype_of(self._Y)
                zeros = self._ctx.const(np.zeros(self._Y.shape, dtype=dtype), dtype=dtype)
                self._ctx.set(self._Y, zeros, batched=False)
        self._ctx.write(sig, value, mode, batched, index)


@emitter(SetMixin, supports=_supports_set)
def emit_set_form(op, ctx):
    """Implements ``Y[...] = f(...)`` for an increment ``Y[...] += f(...)`` (e.g. `.DotSet`).

    Runs the increment's own emitter with its write to ``Y`` made a set.
    """
    fn, _ = _parent_emitter(op)
    set_ctx = _SetContext(ctx, op.Y)
    fn(op, set_ctx)
    if not set_ctx.started:  # the increment wrote nothing: Y is zero
        set_ctx.inc(op.Y, ctx.const(np.zeros(op.Y.shape)), batched=False)


def _concat(ctx, values, axis):
    return values[0] if len(values) == 1 else ctx.node("Concat", values, axis=axis)


def _split(ctx, value, sizes, axis):
    if len(sizes) == 1:
        return [value]
    return ctx.node(
        "Split",
        [value, ctx.const(np.asarray(sizes, dtype=np.int64))],
        n_outputs=len(sizes),
        axis=axis,
    )


def _filter(ctx, A, B, C, D, u, X):
    """One ``LinearFilter`` step on ``u`` ``[B, 1, N]`` and ``X`` ``[B, n, N]``.

    Returns ``(X_new, y)``, in the branches of ``LinearFilter.make_step``: one
    state and no passthrough (``X = a X + (C B) u; y = X``), no passthrough
    (``X = A X + B u; y = C X``), general (``y = C X + D u; X = A X + B u``).
    """
    n = A.shape[0]
    no_d = (D == 0).all()
    if n == 1 and no_d:
        X_new = ctx.node(
            "Add",
            [
                ctx.node("Mul", [X, ctx.scalar(A.item())]),
                ctx.node("Mul", [u, ctx.scalar(C.item() * B.item())]),
            ],
        )
        return X_new, X_new
    AX = ctx.node("MatMul", [ctx.const(A), X])
    X_new = ctx.node("Add", [AX, ctx.node("Mul", [ctx.const(B.reshape(n, 1)), u])])
    if no_d:
        return X_new, ctx.node("MatMul", [ctx.const(C.reshape(1, n)), X_new])
    y = ctx.node(
        "Add",
        [
            ctx.node("MatMul", [ctx.const(C.reshape(1, n)), X]),
            ctx.node("Mul", [u, ctx.scalar(D.item())]),
        ],
    )
    return X_new, y


def _by_base(sigs):
    """``[(base, [member positions])]``: members on one 1-D base share an entry.

    Nengo's merger packs signals into 1-D bases, so one read (or write) of a base
    often serves many members. Members on other bases get an entry each.
    """
    runs = {}
    for i, sig in enumerate(sigs):
        key = sig.base if sig.base.ndim == 1 else i
        runs.setdefault(key, []).append(i)
    return [(None if isinstance(key, int) else key, pos) for key, pos in runs.items()]


def _take(ctx, value, idx, size):
    """``value[:, idx]`` for ``value`` ``[B, size]``: itself, a ``Slice`` or a ``Gather``."""
    start = int(idx[0])
    if np.array_equal(idx, np.arange(start, start + idx.size)):
        if idx.size == size:
            return value
        return ctx.node(
            "Slice", [value, ctx.const([start]), ctx.const([start + idx.size]), ctx.const([1])]
        )
    return ctx.node("Gather", [value, ctx.const(idx)], axis=1)


def _read_inputs(ctx, sigs):
    """The members' inputs side by side, ``[B, 1, N]`` (members sorted by base)."""
    parts = []
    for base, positions in _by_base(sigs):
        if base is None:
            (i,) = positions
            parts.append(ctx.reshape(ctx.read_batched(sigs[i]), [ctx.B, sigs[i].size]))
            continue
        idx = np.concatenate([view_indices(sigs[i]).ravel() for i in positions])
        parts.append(_take(ctx, ctx.read_batched(base), idx, base.size))
    u = _concat(ctx, parts, axis=1)
    return ctx.reshape(u, [ctx.B, 1, sum(sig.size for sig in sigs)])


def _write_outputs(ctx, sigs, y, mode):
    """Write ``y`` (``[B, 1, N]``, members side by side) into the members' outputs."""
    offsets = np.cumsum([0] + [sig.size for sig in sigs])
    y = ctx.reshape(y, [ctx.B, int(offsets[-1])])
    for base, positions in _by_base(sigs):
        cols = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in positions])
        value = _take(ctx, y, cols, int(offsets[-1]))
        if base is None:
            (i,) = positions
            ctx.write(sigs[i], ctx.reshape(value, [ctx.B, *sigs[i].shape]), mode)
            continue
        idx = np.concatenate([view_indices(sigs[i]).ravel() for i in positions])
        ctx.write(base, value, mode, index=idx)


@emitter(LinearFilterGroup)
def emit_linear_filter_group(op, ctx):
    """Implements Nengo's ``LinearFilter`` step for every member at once.

    Inputs ``u_i`` and states ``X_i`` (``[B, n, size_i]``) are put side by side
    along the last axis, filtered once, and the results written back; inputs and
    outputs on one merged base are read and written with one node each.
    """
    A, B, C, D = op.ss(ctx.dt)
    sizes = [int(sig.size) for sig in op.inputs]
    u = _read_inputs(ctx, op.inputs)
    if A.size == 0:
        y = ctx.node("Mul", [u, ctx.scalar(D.item())])
    else:
        n = A.shape[0]
        X = _concat(
            ctx,
            [
                ctx.reshape(ctx.read_batched(sig), [ctx.B, n, size])
                for sig, size in zip(op.states, sizes)
            ],
            axis=2,
        )
        X_new, y = _filter(ctx, A, B, C, D, u, X)
        for sig, value in zip(op.states, _split(ctx, X_new, sizes, axis=2)):
            ctx.set(sig, ctx.reshape(value, [ctx.B, *sig.shape]))
    _write_outputs(ctx, op.outputs, y, "inc" if op.mode == "inc" else "set")
