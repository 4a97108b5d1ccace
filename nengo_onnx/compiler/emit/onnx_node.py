"""Emitter for `nengo_onnx.OnnxNode`: the inserted ONNX model, inlined.

Each step gets its own copy of the model's nodes, with every value renamed
under a unique prefix (``<node>.t<step>/<name>``), the model input bound to the
node's input signal (``[B, size_in]`` reshaped to ``[B, *input shape]``) and
the float initializers bound to the node's parameter signals: initializers of
the step graph, named after the node (``<node>.<initializer>``), so training
finds them. Other initializers (shapes, indices) become constants shared by
the copies.
"""

import numpy as np
from onnx import NodeProto, TensorProto

from nengo_onnx.compiler.emit.registry import emitter
from nengo_onnx.compiler.names import sanitize
from nengo_onnx.compiler.onnx_graph import onnx_dtype, subgraphs
from nengo_onnx.onnx_node import SimOnnx


def _rename_graph(graph, rename):
    """Rename every value of a subgraph (its own and the outer ones it reads)."""
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = rename(value.name)
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for node in graph.node:
        _rename_node(node, rename)


def _rename_node(node, rename):
    node.input[:] = [rename(n) for n in node.input]
    node.output[:] = [rename(n) for n in node.output]
    for sub in subgraphs(node):
        _rename_graph(sub, rename)


def _cast(ctx, value, src, dst):
    return (
        value if np.dtype(src) == np.dtype(dst) else ctx.node("Cast", [value], to=onnx_dtype(dst))
    )


def _constants(op, ctx):
    """The model's non-float initializers, added to the graph once per block."""
    key = ("onnx_node.constants", id(op.spec))
    if key not in ctx.cache:
        prefix = op.name
        names = {}
        for tensor in op.spec.constants:
            name = ctx.graph.unique(f"{prefix}.{sanitize(tensor.name)}")
            copy = TensorProto()
            copy.CopyFrom(tensor)
            copy.name = name
            ctx.graph.initializers[name] = copy
            names[tensor.name] = name
        ctx.cache[key] = names
    return ctx.cache[key]


def _params(op, ctx):
    """The parameters' values, cast to the model's dtypes where they differ."""
    spec, values = op.spec, {}
    for name, sig in zip(spec.param_names, op.params):
        value = ctx.read(sig)
        key = ("onnx_node.param", value, spec.param_dtypes[name])
        if key not in ctx.cache:
            ctx.cache[key] = ctx.known_shape(
                _cast(ctx, value, ctx.dtype, spec.param_dtypes[name]), sig.shape
            )
        values[name] = ctx.cache[key]
    return values


def inline(ctx, spec, x, bound, hint):
    """Add a copy of ``spec.model``'s nodes reading ``x``; returns its output's name.

    ``bound`` maps model value names (initializers) to step-graph values.
    """
    prefix = ctx.graph.unique(hint)
    mapping = dict(bound)
    mapping[spec.input_name] = x

    def rename(name):
        if not name:
            return name  # an omitted optional input or output
        return mapping.get(name) or f"{prefix}/{name}"

    for i, node in enumerate(spec.model.graph.node):
        copy = NodeProto()
        copy.CopyFrom(node)
        _rename_node(copy, rename)
        copy.name = f"{prefix}/{node.name or f'{node.op_type}_{i}'}"
        if ctx.graph.doc:
            copy.doc_string = ctx.graph.doc
        ctx.graph.nodes.append(copy)
    return rename(spec.output_name)


@emitter(SimOnnx)
def emit_onnx_node(op, ctx):
    """Implements ``y = model(x)`` by inlining the model's nodes, batched over ``B``.

    A model with a dynamic batch axis gets one copy per step for the whole
    minibatch; a model whose batch axis is 1 gets one copy per minibatch item.
    """
    spec = op.spec
    bound = dict(_constants(op, ctx))
    bound.update(_params(op, ctx))
    x = _cast(ctx, ctx.read_batched(op.x), ctx.dtype, spec.in_dtype)
    hint = f"{op.name}.t{ctx.t}"
    if spec.batched:
        items = [
            (
                ctx.B,
                ctx.reshape(ctx.known_shape(x, (ctx.B, spec.size_in)), (ctx.B, *spec.in_shape)),
            )
        ]
    else:
        items = []
        for i in range(ctx.B):
            xi = (
                x
                if ctx.B == 1
                else ctx.node("Slice", [x, ctx.const([i]), ctx.const([i + 1]), ctx.const([0])])
            )
            xi = ctx.reshape(ctx.known_shape(xi, (1, spec.size_in)), (1, *spec.in_shape))
            items.append((1, xi))
    outputs = []
    for n, xi in items:
        out = inline(ctx, spec, xi, bound, hint)
        out = _cast(ctx, out, spec.out_dtype, ctx.dtype)
        outputs.append(ctx.reshape(out, (n, spec.size_out)))
    y = outputs[0] if len(outputs) == 1 else ctx.node("Concat", outputs, axis=0)
    ctx.set(op.y, ctx.known_shape(y, (ctx.B, spec.size_out)))
