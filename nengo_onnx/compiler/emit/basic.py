"""Emitters for Nengo's basic operators (``nengo.builder.operator``)."""

import numpy as np
from nengo.builder.operator import (
    BsrDotInc,
    Copy,
    DotInc,
    ElementwiseInc,
    Reset,
    SparseDotInc,
    TimeUpdate,
)
from nengo.builder.probe import SimProbe

from nengo_onnx.compiler.emit.registry import emitter
from nengo_onnx.compiler.operators import FeedInput


@emitter(TimeUpdate)
def emit_time_update(op, ctx):
    """Implements ``step += 1; time = step * dt`` (unbatched integer step)."""
    one = ctx.const(np.array(1), dtype=ctx.dtype_of(op.step))
    step = ctx.node("Add", [ctx.read(op.step), one])
    ctx.set(op.step, step, batched=False)
    time = ctx.node("Cast", [step], to=int(_onnx_type(ctx.dtype_of(op.time))))
    ctx.set(op.time, ctx.node("Mul", [time, ctx.scalar(ctx.dt)]), batched=False)


def _onnx_type(dtype):
    from nengo_onnx.compiler.onnx_graph import onnx_dtype  # noqa: PLC0415

    return onnx_dtype(dtype)


@emitter(Reset)
def emit_reset(op, ctx):
    """Implements ``dst[...] = value`` with a constant."""
    value = np.full(op.dst.shape, op.value, dtype=ctx.dtype_of(op.dst))
    ctx.set(op.dst, ctx.const(value, dtype=value.dtype), batched=False)


@emitter(Copy)
def emit_copy(op, ctx):
    """Implements ``dst[dst_slice] = src[src_slice]`` (``+=`` if ``inc``), by Gather."""
    value = ctx.read(op.src)
    batched = ctx.batched(op.src)
    if op.src_slice is not None:
        idx = np.arange(op.src.shape[0])[op.src_slice]
        value = ctx.node("Gather", [value, ctx.const(idx)], axis=1 if batched else 0)
    index = None
    if op.dst_slice is not None:
        index = np.arange(op.dst.shape[0])[op.dst_slice]
    ctx.write(op.dst, value, "inc" if op.inc else "set", batched=batched, index=index)


def _align(ctx, sig, rank):
    """Read ``sig`` with singleton axes inserted so it broadcasts at ``rank`` (no batch)."""
    value = ctx.read(sig)
    shape = (1,) * (rank - len(sig.shape)) + tuple(sig.shape)
    if ctx.batched(sig):
        return ctx.reshape(value, [ctx.B, *shape]) if len(sig.shape) != rank else value
    return value


@emitter(ElementwiseInc)
def emit_elementwise_inc(op, ctx):
    """Implements ``Y[...] += A * X`` with Nengo's broadcasting, by ``Mul``."""
    rank = max(len(op.Y.shape), len(op.A.shape), len(op.X.shape))
    a, x = _align(ctx, op.A, rank), _align(ctx, op.X, rank)
    batched = ctx.batched(op.A) or ctx.batched(op.X)
    value = ctx.node("Mul", [a, x])
    full = ctx.shape(op.Y, batched)
    if rank != len(op.Y.shape):
        value = ctx.reshape(value, full)
    value = ctx.expand(value, full)
    ctx.inc(op.Y, value, batched=batched)


@emitter(DotInc, SparseDotInc)
def emit_dot_inc(op, ctx):
    """Implements ``Y[...] += np.dot(A, X)`` by ``MatMul`` (sparse ``A`` densified)."""
    a_b, x_b = ctx.batched(op.A), ctx.batched(op.X)
    a, x = ctx.read(op.A), ctx.read(op.X)
    a_shape, x_shape = tuple(op.A.shape), tuple(op.X.shape)
    batched = a_b or x_b
    if not a_shape or not x_shape:
        # np.dot with a 0-d operand is a product
        rank = max(len(a_shape), len(x_shape))
        value = ctx.node("Mul", [_align(ctx, op.A, rank), _align(ctx, op.X, rank)])
    elif len(a_shape) == 1 and len(x_shape) == 1:
        # inner product of two vectors
        product = ctx.node("Mul", [a, x])
        value = ctx.node("ReduceSum", [product, ctx.const([-1])], keepdims=1)
    elif len(x_shape) == 1 and x_b and not a_b:
        # the common case, a matrix times a minibatched vector: [B, n] @ A.T
        value = ctx.node("MatMul", [x, ctx.node("Transpose", [a])])
    elif len(x_shape) == 1 and x_b:
        # per-item matrices (learned weights): [B, m, n] @ [B, n, 1]
        value = ctx.node("MatMul", [a, ctx.reshape(x, [ctx.B, x_shape[0], 1])])
    else:
        # MatMul's numpy semantics cover [.., m, n] @ [n] and [.., m, n] @ [.., n, k]
        value = ctx.node("MatMul", [a, x])
    ctx.inc(op.Y, ctx.reshape(value, ctx.shape(op.Y, batched)), batched=batched)


@emitter(BsrDotInc)
def emit_bsr_dot_inc(op, ctx):
    """Implements ``Y[...] += bsr_matrix((A, indices, indptr)).dot(X)``.

    Gathers the column block of X for every stored block, multiplies all blocks
    at once with one batched ``MatMul``, and sums the products of each block row
    with a constant 0/1 matrix (a block row may hold several blocks).
    """
    k, r, c = op.A.shape
    n_rows = len(op.indptr) - 1
    x_b = ctx.batched(op.X)
    a = ctx.read(op.A)  # [(B,) k, r, c]
    x = ctx.read(op.X)
    n_cols = int(np.prod(op.X.shape)) // c
    if x_b and not ctx.batched(op.A) and n_rows * r * n_cols * c <= max(4 * a_size(op), 2**16):
        value = ctx.node("MatMul", [ctx.reshape(x, [ctx.B, n_cols * c]), _bsr_dense_t(op, ctx, a)])
        ctx.inc(op.Y, ctx.reshape(value, ctx.shape(op.Y, True)))
        return
    x_blocks = ctx.reshape(x, [ctx.B, -1, c] if x_b else [-1, c])
    gathered = ctx.node(
        "Gather", [x_blocks, ctx.const(np.asarray(op.indices))], axis=1 if x_b else 0
    )  # [(B,) k, c]
    gathered = ctx.reshape(gathered, [ctx.B, k, c, 1] if x_b else [k, c, 1])
    products = ctx.node("MatMul", [a, gathered])  # [(B,) k, r, 1]
    batched = x_b or ctx.batched(op.A)
    lead = [ctx.B] if batched else []
    products = ctx.reshape(products, lead + [k, r])
    rows = np.zeros((n_rows, k), dtype=ctx.dtype)
    for row in range(n_rows):
        rows[row, op.indptr[row] : op.indptr[row + 1]] = 1
    if np.array_equal(rows, np.eye(n_rows, k)):
        value = products  # one block per row, in order: no sum needed
    else:
        value = ctx.node("MatMul", [ctx.const(rows), products])
    ctx.inc(op.Y, ctx.reshape(value, ctx.shape(op.Y, batched)), batched=batched)


def a_size(op):
    return int(np.prod(op.A.shape))


def _bsr_dense_t(op, ctx, a):
    """The transposed dense matrix of a block-sparse ``A``, built in the graph.

    Small merged matrices (nengo merges one DotInc per connection into a
    ``BsrDotInc``) multiply faster as one dense ``MatMul`` than block by block.
    The matrix is built from ``A`` by graph ops, so it stays a function of the
    parameter (trainable), and onnxruntime folds it to a constant for inference.
    Built once per emitted block.
    """
    key = ("bsr_dense_t", a)
    if key not in ctx.cache:
        k, r, c = op.A.shape
        n_rows = len(op.indptr) - 1
        n_cols = int(np.prod(op.X.shape)) // c
        rows = np.zeros((n_rows, k))
        cols = np.zeros((k, n_cols))
        for row in range(n_rows):
            rows[row, op.indptr[row] : op.indptr[row + 1]] = 1
        cols[np.arange(k), op.indices] = 1
        # placed[k, a, j, b] = A[k, a, b] * (block k sits in block column j)
        placed = ctx.node(
            "Mul", [ctx.reshape(a, [k, r, 1, c]), ctx.const(cols.reshape(k, 1, n_cols, 1))]
        )
        dense = ctx.node("MatMul", [ctx.const(rows), ctx.reshape(placed, [k, r * n_cols * c])])
        dense = ctx.reshape(dense, [n_rows * r, n_cols * c])
        ctx.cache[key] = ctx.known_shape(ctx.node("Transpose", [dense]), (n_cols * c, n_rows * r))
    return ctx.cache[key]


@emitter(FeedInput)
def emit_feed_input(op, ctx):
    """Writes the value that the runtime feeds for this step."""
    value = ctx.step_input(op.key, op.dst.shape, ctx.dtype_of(op.dst))
    mode = "inc" if op.mode == "inc" else "set"
    ctx.write(op.dst, value, mode)


@emitter(SimProbe)
def emit_sim_probe(op, ctx):
    """Nothing to compute: probes are read at the end of each step."""
