"""Emitters for Nengo's learning rule operators (``nengo.builder.learning_rules``).

Each operator computes a weight change ``delta`` (shape ``[post, pre]``, or
``[n_neurons, d]`` for encoders) that a ``Copy`` adds to the learned signal on
the next step. Learned signals and ``delta`` are written every step, so they are
minibatched state: every batch item learns on its own, as in NengoDL. All inputs
are therefore read with the batch axis, and outer products are broadcast ``Mul``s
of ``[B, m, 1]`` and ``[B, 1, n]`` (no Einsum: it has no gradient builder).
"""

from nengo.builder.learning_rules import SimBCM, SimOja, SimPES, SimRLS, SimVoja

from nengo_onnx.compiler.emit.registry import emitter


def _column(ctx, value, n):
    """``[B, n]`` -> ``[B, n, 1]``."""
    return ctx.reshape(value, [ctx.B, n, 1])


def _row(ctx, value, n):
    """``[B, n]`` -> ``[B, 1, n]``."""
    return ctx.reshape(value, [ctx.B, 1, n])


def outer(ctx, col, m, row, n):
    """``np.outer(col, row)`` per batch item: ``[B, m] x [B, n] -> [B, m, n]``."""
    return ctx.node("Mul", [_column(ctx, col, m), _row(ctx, row, n)])


@emitter(SimPES)
def emit_sim_pes(op, ctx):
    """Implements ``delta = outer(-kappa * dt / n * error, pre_filtered)``."""
    m, n = op.error.shape[0], op.pre_filtered.shape[0]
    alpha = -op.learning_rate * ctx.dt / n
    error = ctx.node("Mul", [ctx.read_batched(op.error), ctx.scalar(alpha)])
    ctx.update(op.delta, outer(ctx, error, m, ctx.read_batched(op.pre_filtered), n))


@emitter(SimBCM)
def emit_sim_bcm(op, ctx):
    """Implements ``delta = outer(kappa * dt * post * (post - theta), pre)``."""
    m, n = op.post_filtered.shape[0], op.pre_filtered.shape[0]
    post = ctx.read_batched(op.post_filtered)
    alpha_post = ctx.node("Mul", [ctx.scalar(op.learning_rate * ctx.dt), post])
    post = ctx.node("Mul", [alpha_post, ctx.node("Sub", [post, ctx.read_batched(op.theta)])])
    ctx.update(op.delta, outer(ctx, post, m, ctx.read_batched(op.pre_filtered), n))


@emitter(SimOja)
def emit_sim_oja(op, ctx):
    """Implements ``delta = -beta W (a post**2)[:, None] + outer(a post, pre)``, ``a = kappa dt``.

    ``W`` is the connection's (learned) weight matrix.
    """
    m, n = op.post_filtered.shape[0], op.pre_filtered.shape[0]
    post = ctx.node(
        "Mul", [ctx.scalar(op.learning_rate * ctx.dt), ctx.read_batched(op.post_filtered)]
    )
    post_squared = ctx.node("Mul", [post, ctx.read_batched(op.post_filtered)])
    weights = ctx.reshape(ctx.read_batched(op.weights), [ctx.B, m, n])
    forget = ctx.node(
        "Mul", [ctx.node("Mul", [ctx.scalar(-op.beta), weights]), _column(ctx, post_squared, m)]
    )
    update = outer(ctx, post, m, ctx.read_batched(op.pre_filtered), n)
    ctx.update(op.delta, ctx.node("Add", [forget, update]))


@emitter(SimVoja)
def emit_sim_voja(op, ctx):
    """Implements Voja's ``delta = kappa dt l (s[:, None] outer(post, pre) - post[:, None] E)``.

    ``l`` is the learning signal, ``s`` the encoder scale (``gain / radius``) and
    ``E`` the scaled encoders.
    """
    m, d = op.scaled_encoders.shape
    post = ctx.read_batched(op.post_filtered)
    learning = ctx.reshape(ctx.read_batched(op.learning_signal), [ctx.B, 1, 1])
    alpha = ctx.node("Mul", [ctx.scalar(op.learning_rate * ctx.dt), learning])
    scale = ctx.const(op.scale.reshape(m, 1))
    grow = ctx.node("Mul", [scale, outer(ctx, post, m, ctx.read_batched(op.pre_decoded), d)])
    encoders = ctx.reshape(ctx.read_batched(op.scaled_encoders), [ctx.B, m, d])
    shrink = ctx.node("Mul", [_column(ctx, post, m), encoders])
    ctx.update(op.delta, ctx.node("Mul", [alpha, ctx.node("Sub", [grow, shrink])]))


@emitter(SimRLS)
def emit_sim_rls(op, ctx):
    """Implements one recursive least squares step on ``P`` (``inv_gamma``).

    As in Nengo (``P`` symmetric)::

        Pr = P r;  c = 1 / (1 + r . Pr)
        P -= Pr[:, None] * (Pr[None, :] * c)
        delta = error[:, None] * (-c * Pr[None, :])
    """
    n, m = op.pre_filtered.shape[0], op.error.shape[0]
    r = ctx.read_batched(op.pre_filtered)
    P = ctx.reshape(ctx.read_batched(op.inv_gamma), [ctx.B, n, n])
    Pr = ctx.reshape(ctx.node("MatMul", [P, _column(ctx, r, n)]), [ctx.B, n])  # [B, n]
    rPr = ctx.node("MatMul", [_row(ctx, r, n), _column(ctx, Pr, n)])  # [B, 1, 1]
    c = ctx.node("Reciprocal", [ctx.node("Add", [ctx.scalar(1.0), rPr])])
    Pr_row = _row(ctx, Pr, n)  # [B, 1, n]
    P = ctx.node("Sub", [P, ctx.node("Mul", [_column(ctx, Pr, n), ctx.node("Mul", [Pr_row, c])])])
    scaled = ctx.node("Mul", [ctx.node("Neg", [c]), Pr_row])  # [B, 1, n]
    delta = ctx.node("Mul", [_column(ctx, ctx.read_batched(op.error), m), scaled])
    ctx.update(op.inv_gamma, P)
    ctx.update(op.delta, delta)
