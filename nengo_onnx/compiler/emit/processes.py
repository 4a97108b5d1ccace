"""Emitters for ``SimProcess``: synapses (linear filters and ``Triangle``) in ONNX.

Processes that depend only on time (noise, ``WhiteSignal``, ``PresentInput``...)
never reach these emitters: the runtime computes them in Python with Nengo's own
step functions and feeds them in (see `.FeedInput`). Other processes with an
input (user ``Process`` subclasses) have no ONNX form and run in Python.
"""

import numpy as np
from nengo.builder.processes import SimProcess
from nengo.synapses import LinearFilter, Triangle

from nengo_onnx.compiler.emit.registry import emitter


def _supports(op):
    if op.input is not None:
        for base in (LinearFilter, Triangle):
            # subclasses (Lowpass, Alpha, user ones) count if they keep the base's step
            if isinstance(op.process, base) and type(op.process).make_step is base.make_step:
                return None
    return f"no ONNX form for process {type(op.process).__name__}"


def _write(ctx, op, value):
    """Write the process output with the operator's mode (``update`` sets, after readers)."""
    mode = {"update": "set", "set": "set", "inc": "inc"}[op.mode]
    ctx.write(op.output, value, mode)


@emitter(SimProcess, supports=_supports)
def emit_sim_process(op, ctx):
    """Dispatch on the process type: linear filters and ``Triangle`` have ONNX forms."""
    if isinstance(op.process, Triangle):
        emit_triangle(op, ctx)
    else:
        emit_linear_filter(op, ctx)


def emit_linear_filter(op, ctx):
    """Implements Nengo's ``LinearFilter`` step on state ``X`` (``[n, *shape]``).

    The same branches as ``LinearFilter.make_step``, with ``u`` the input and ``y``
    the output:

    * ``NoX`` (no state): ``y = D u``;
    * ``OneX`` (one state, ``D == 0``): ``X = a X + (C B) u; y = X``;
    * ``NoD`` (``D == 0``): ``X = A X + B u; y = C X``;
    * ``General``: ``y = C X + D u; X = A X + B u``.

    Signals of any shape are filtered elementwise: ``X`` is ``[B, n, size]`` here.
    """
    A, B, C, D = op.process._get_ss(ctx.dt)  # noqa: SLF001  (nengo's own discretization)
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
        # OneX: Nengo keeps the state scaled by C, so that the output is the state
        X_new = ctx.node(
            "Add",
            [
                ctx.node("Mul", [X, ctx.scalar(A.item())]),
                ctx.node("Mul", [u, ctx.scalar(C.item() * B.item())]),
            ],
        )
        y = X_new
    else:
        AX = ctx.node("MatMul", [ctx.const(A), X])
        X_new = ctx.node("Add", [AX, ctx.node("Mul", [ctx.const(B.reshape(n, 1)), u])])
        Crow = ctx.const(C.reshape(1, n))
        if no_d:
            # NoD: the input reaches the output in the same step
            y = ctx.node("MatMul", [Crow, X_new])
        else:
            y = ctx.node(
                "Add",
                [
                    ctx.node("MatMul", [Crow, X]),
                    ctx.node("Mul", [u, ctx.scalar(D.item())]),
                ],
            )
    ctx.update(X_sig, ctx.reshape(X_new, [ctx.B, *X_sig.shape]))
    _write(ctx, op, ctx.reshape(y, [ctx.B, *shape]))


def emit_triangle(op, ctx):
    """Implements Nengo's ``Triangle`` FIR step on states ``Y``, ``X`` (taps), ``Xi``.

    As ``Triangle.make_step``: ``Y += n0 u; Y -= X.sum(axis=0); Xi = (Xi + 1) % n;
    X[Xi] = ndiff u; y = Y``. The modulo is a compare-and-subtract (``Xi`` counts
    in floats, exactly), and the tap write a ``Where`` over a one-hot mask.
    """
    Y_sig, X_sig, Xi_sig = op.state["Y"], op.state["X"], op.state["Xi"]
    # nengo's own taps, so that the results are exactly nengo's
    n_taps, n0, ndiff = op.process._get_coefficients(ctx.dt)  # noqa: SLF001
    shape = tuple(op.output.shape)
    size = int(np.prod(shape))
    u = ctx.reshape(ctx.read_batched(op.input), [ctx.B, 1, size])
    Y = ctx.reshape(ctx.read_batched(Y_sig), [ctx.B, 1, size])
    X = ctx.reshape(ctx.read_batched(X_sig), [ctx.B, n_taps, size])
    Xi = ctx.reshape(ctx.read_batched(Xi_sig), [ctx.B, 1, 1])

    Y = ctx.node("Add", [Y, ctx.node("Mul", [u, ctx.scalar(n0)])])
    Y = ctx.node("Sub", [Y, ctx.node("ReduceSum", [X, ctx.const([1])], keepdims=1)])

    Xi = ctx.node("Add", [Xi, ctx.scalar(1.0)])
    wrapped = ctx.node("GreaterOrEqual", [Xi, ctx.scalar(n_taps)])
    Xi = ctx.node("Where", [wrapped, ctx.node("Sub", [Xi, ctx.scalar(n_taps)]), Xi])
    taps = ctx.const(np.arange(n_taps, dtype=np.float64).reshape(n_taps, 1))
    mask = ctx.node("Equal", [taps, Xi])  # [B, n_taps, 1]
    X = ctx.node("Where", [mask, ctx.node("Mul", [u, ctx.scalar(ndiff)]), X])

    ctx.update(Y_sig, ctx.reshape(Y, [ctx.B, *Y_sig.shape]))
    ctx.update(X_sig, ctx.reshape(X, [ctx.B, *X_sig.shape]))
    ctx.update(Xi_sig, ctx.reshape(Xi, [ctx.B, *Xi_sig.shape]))
    _write(ctx, op, ctx.reshape(Y, [ctx.B, *shape]))
