"""Emitters for ``SimProcess``: synapses (linear filters) in ONNX.

Processes that depend only on time (noise, ``WhiteSignal``, ``PresentInput``...)
never reach these emitters: the runtime computes them in Python with Nengo's own
step functions and feeds them in (see `.FeedInput`).
"""

import numpy as np
from nengo.builder.processes import SimProcess
from nengo.synapses import LinearFilter

from . import emitter


def _supports(op):
    if isinstance(op.process, LinearFilter) and op.input is not None:
        return None
    return f"no ONNX form for process {type(op.process).__name__}"


def _write(ctx, op, value):
    mode = {"update": "set", "set": "set", "inc": "inc"}[op.mode]
    ctx.write(op.output, value, mode)


@emitter(SimProcess, supports=_supports)
def emit_sim_process(op, ctx):
    """Dispatch on the process type (only linear filters have an ONNX form here)."""
    emit_linear_filter(op, ctx)


def emit_linear_filter(op, ctx):
    """Implements Nengo's ``LinearFilter`` steps on state ``X`` ``[n, *shape]``.

    Same branches as ``LinearFilter.make_step``: no state (``y = D u``); one state
    and no passthrough (``X = a X + (C B) u; y = X``); no passthrough
    (``X = A X + B u; y = C X``); general (``y = C X + D u; X = A X + B u``).
    """
    A, B, C, D = op.process._get_ss(ctx.dt)
    shape = tuple(op.output.shape)
    size = int(np.prod(shape))
    u = ctx.reshape(ctx.read_batched(op.input), [ctx.B, 1, size])
    if A.size == 0:
        y = ctx.node("Mul", [u, ctx.scalar(D.item())])
        _write(ctx, op, ctx.reshape(y, [ctx.B, *shape]))
        return
    n = A.shape[0]
    X_sig = op.state["X"]
    X = ctx.reshape(ctx.read_batched(X_sig), [ctx.B, n, size])
    no_d = (D == 0).all()
    if n == 1 and no_d:
        X_new = ctx.node("Add", [
            ctx.node("Mul", [X, ctx.scalar(A.item())]),
            ctx.node("Mul", [u, ctx.scalar(C.item() * B.item())]),
        ])
        y = X_new
    else:
        Bcol = ctx.const(B.reshape(n, 1))
        X_new = ctx.node("Add", [ctx.node("MatMul", [ctx.const(A), X]), ctx.node("Mul", [Bcol, u])])
        if no_d:
            y = ctx.node("MatMul", [ctx.const(C.reshape(1, n)), X_new])
        else:
            y = ctx.node("Add", [ctx.node("MatMul", [ctx.const(C.reshape(1, n)), X]),
                                 ctx.node("Mul", [u, ctx.scalar(D.item())])])
    ctx.set(X_sig, ctx.reshape(X_new, [ctx.B, *X_sig.shape]))
    _write(ctx, op, ctx.reshape(y, [ctx.B, *shape]))
