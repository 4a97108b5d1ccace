"""Emitters for Nengo's convolution transforms (``nengo.builder.transforms``).

``ConvInc`` is ONNX ``Conv``: Nengo's kernel ``kernel_size + (C / groups, M)`` is
transposed to ONNX's ``(M, C / groups, *kernel_size)`` in the graph (so a trained
kernel stays one parameter), channels-last signals are transposed to and from
ONNX's channels-first layout, and "same" padding is Nengo's explicit padding
(``floor`` of the total before, ``ceil`` after).

``ConvTransposeInc`` follows Nengo's own algorithm (``conv2d_gradx``, including
its padding and cropping) rather than ONNX ``ConvTranspose``, which has no
gradient kernel in onnxruntime-training: the input is dilated by the strides and
zero padded (one constant 0/1 ``MatMul`` per spatial axis, so gradients flow),
then correlated with the spatially flipped kernel by ``Conv``.

onnxruntime's CPU ``Conv`` runs float32 only: float64 simulations gather the
input windows (im2col, with the padding and dilation folded into the gather
indices) and multiply them by the kernel with ``MatMul``.

Both operators work for any number of spatial dimensions (Nengo's reference
simulator stops at 2).
"""

import numpy as np
from nengo.builder.transforms import ConvInc, ConvTransposeInc, calc_gradx_pad, calc_pad
from nengo.exceptions import BuildError

from nengo_onnx.compiler.emit.registry import emitter


def _supports(op):
    if op.W.sparse:
        return "sparse convolution kernels are not supported"
    return None


def _input_channels_first(ctx, sig, shape):
    """Read ``sig`` as ``[B, C, *spatial]`` given its `.ChannelShape` ``shape``."""
    d = shape.dimensions
    x = ctx.reshape(ctx.read_batched(sig), [ctx.B, *shape.shape])
    if shape.channels_last:
        x = ctx.node("Transpose", [x], perm=[0, d + 1, *range(1, d + 1)])
    return x


def _output_from_channels_first(ctx, y, shape):
    """``[B, C, *spatial]`` -> ``[B, size]`` in the layout of `.ChannelShape` ``shape``."""
    d = shape.dimensions
    if shape.channels_last:
        y = ctx.node("Transpose", [y], perm=[0, *range(2, d + 2), 1])
    return ctx.reshape(y, [ctx.B, shape.size])


def _kernel(ctx, op):
    """Nengo's kernel ``(*kernel_size, C_in, C_out)`` as ONNX's ``(C_out, C_in, *kernel_size)``."""
    if ctx.batched(op.W):
        raise BuildError(
            f"{op}: convolution kernels that change during the simulation are not supported"
        )
    d = op.conv.dimensions
    return ctx.node("Transpose", [ctx.read(op.W)], perm=[d + 1, d, *range(d)])


@emitter(ConvInc, supports=_supports)
def emit_conv_inc(op, ctx):
    """Implements ``Y[...] += conv(X, W)`` (Nengo's correlation), by ONNX ``Conv``."""
    conv = op.conv
    x = _input_channels_first(ctx, op.X, conv.input_shape)
    w = _kernel(ctx, op)
    pads = []
    for size, out, stride, k in zip(
        conv.input_shape.spatial_shape,
        conv.output_shape.spatial_shape,
        conv.strides,
        conv.kernel_size,
    ):
        total = calc_pad(conv.padding, size, out, stride, k)
        pads.append((total // 2, total - total // 2))
    if ctx.dtype == np.float32:
        y = ctx.node(
            "Conv",
            [x, w],
            strides=list(conv.strides),
            group=conv.groups,
            pads=[p[0] for p in pads] + [p[1] for p in pads],
        )
    else:
        axis_maps = [
            np.concatenate([np.full(before, -1), np.arange(size), np.full(after, -1)])
            for size, (before, after) in zip(conv.input_shape.spatial_shape, pads)
        ]
        y = correlate_im2col(ctx, x, w, conv, axis_maps, conv.strides, conv.groups)
    ctx.inc(op.Y, _output_from_channels_first(ctx, y, conv.output_shape))


@emitter(ConvTransposeInc, supports=_supports)
def emit_conv_transpose_inc(op, ctx):
    """Implements ``Y[...] += conv_transpose(X, W)`` as Nengo's ``conv2d_gradx`` does.

    Dilates and pads ``X`` (a 0/1 ``MatMul`` per axis), then correlates it with the
    flipped kernel (``Gather`` with reversed indices) by a stride-1 ``Conv``.
    """
    conv = op.conv
    d = conv.dimensions
    x = _input_channels_first(ctx, op.X, conv.input_shape)
    axis_maps = [
        dilate_map(size, out, stride, k, conv.padding)
        for size, out, stride, k in zip(
            conv.input_shape.spatial_shape,
            conv.output_shape.spatial_shape,
            conv.strides,
            conv.kernel_size,
        )
    ]
    w = _kernel(ctx, op)
    for axis, k in enumerate(conv.kernel_size):
        if k > 1:
            w = ctx.node("Gather", [w, ctx.const(np.arange(k)[::-1])], axis=axis + 2)
    if ctx.dtype == np.float32:
        for axis, (size, positions) in enumerate(zip(conv.input_shape.spatial_shape, axis_maps)):
            if not np.array_equal(positions, np.arange(size)):
                x = _dilate(ctx, x, size, positions, axis + 2, d + 2)
        y = ctx.node("Conv", [x, w])
    else:
        y = correlate_im2col(ctx, x, w, conv, axis_maps, (1,) * d, 1)
    ctx.inc(op.Y, _output_from_channels_first(ctx, y, conv.output_shape))


def dilate_map(size, out_size, stride, kernel, padding):
    """Where Nengo's dilation and padding put the elements of one input axis.

    Reproduces ``extract_sliding_windows_gradx``: element ``i`` goes to
    ``i * stride`` (kept if ``< out_size``), then the axis is padded by
    ``ceil(p / 2)`` before and ``floor(p / 2)`` after, for Nengo's ``p``. Returns
    the input element (or -1 for a zero) at each of the ``out_size + kernel - 1``
    positions that a stride-1 correlation with ``kernel`` taps reads.
    """
    p = calc_gradx_pad(padding, size, out_size, stride, kernel)
    before = p - p // 2
    positions = np.full(out_size + kernel - 1, -1)
    for i in range(size):
        j = before + i * stride
        if i * stride < out_size and j < positions.size:
            positions[j] = i
    return positions


def _dilate(ctx, x, size, positions, axis, rank):
    """Spread axis ``axis`` of ``x`` (of ``size``) onto ``positions``, by a 0/1 ``MatMul``."""
    matrix = np.zeros((size, positions.size))
    kept = positions >= 0
    matrix[positions[kept], np.flatnonzero(kept)] = 1
    if axis == rank - 1:
        return ctx.node("MatMul", [x, ctx.const(matrix)])
    if axis == rank - 2:
        return ctx.node("MatMul", [ctx.const(matrix.T), x])
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    x = ctx.node("MatMul", [ctx.node("Transpose", [x], perm=perm), ctx.const(matrix)])
    return ctx.node("Transpose", [x], perm=perm)


def im2col_indices(n_channels, in_shape, kernel_size, strides, axis_maps, groups, out_shape):
    """``[P, g, C / g * K]`` flat indices into ``[C, *in_shape]`` (``C * S``: a zero).

    Output position ``o`` and kernel offset ``i`` read, along each axis, element
    ``axis_map[o * stride + i]`` of the input (-1: padding, a zero). ``P`` counts
    output positions and ``K`` kernel positions; the last axis runs over the
    group's channels, then kernel positions, as ``w.reshape(M, -1)`` does for an
    ONNX kernel ``[M, C / g, *k]``.
    """
    in_shape = tuple(int(n) for n in in_shape)
    size = int(np.prod(in_shape))
    grids = []
    for amap, out, stride, k in zip(axis_maps, out_shape, strides, kernel_size):
        # [out, k]: which input element (or -1) each output position and tap reads
        taps = np.arange(out)[:, None] * stride + np.arange(k)[None, :]
        amap = np.asarray(amap)
        grids.append(np.where(taps < amap.size, amap[np.minimum(taps, amap.size - 1)], -1))
    d = len(in_shape)
    inside = np.ones((), dtype=bool)
    flat = np.zeros((), dtype=np.int64)
    for a, grid in enumerate(grids):
        # axes: out_0..out_{d-1}, k_0..k_{d-1}
        shape = [1] * (2 * d)
        shape[a], shape[d + a] = grid.shape
        grid = grid.reshape(shape)
        inside = inside & (grid >= 0)
        flat = flat * in_shape[a] + np.maximum(grid, 0)
    n_out, n_k = int(np.prod(out_shape)), int(np.prod(kernel_size))
    flat = np.broadcast_to(flat, (*out_shape, *kernel_size)).reshape(n_out, 1, 1, n_k)
    inside = np.broadcast_to(inside, (*out_shape, *kernel_size)).reshape(n_out, 1, 1, n_k)
    channels = np.arange(n_channels).reshape(1, groups, n_channels // groups, 1)
    idx = np.where(inside, channels * size + flat, n_channels * size)
    return idx.reshape(n_out, groups, -1)


def correlate_im2col(ctx, x, w, conv, axis_maps, strides, groups):
    """Grouped correlation of ``x`` ``[B, C, *S]`` with ``w`` ``[M, C / g, *k]``, im2col.

    Returns ``[B, M, *out]`` (``conv.output_shape``'s spatial shape).
    """
    C, M = conv.input_shape.n_channels, conv.output_shape.n_channels
    in_shape = conv.input_shape.spatial_shape
    out_shape = conv.output_shape.spatial_shape
    idx = im2col_indices(C, in_shape, conv.kernel_size, strides, axis_maps, groups, out_shape)
    n_out, _, window = idx.shape
    flat = ctx.reshape(x, [ctx.B, C * int(np.prod(in_shape))])
    flat = ctx.node("Concat", [flat, ctx.expand(ctx.scalar(0.0), [ctx.B, 1])], axis=1)
    cols = ctx.node("Gather", [flat, ctx.const(idx)], axis=1)  # [B, P, g, window]
    kernel = ctx.reshape(w, [groups, M // groups, window])
    kernel = ctx.node("Transpose", [kernel], perm=[0, 2, 1])  # [g, window, M / g]
    cols = ctx.node("Transpose", [cols], perm=[0, 2, 1, 3])  # [B, g, P, window]
    y = ctx.node("MatMul", [cols, kernel])  # [B, g, P, M / g]
    y = ctx.node("Transpose", [y], perm=[0, 1, 3, 2])  # [B, g, M / g, P]
    return ctx.reshape(y, [ctx.B, M, *out_shape])
