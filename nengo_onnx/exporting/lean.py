"""Rewrites that make an exported graph lean and batch-independent.

* `fold_constants`: every node whose inputs are all initializers is computed once,
  at export, and its result stored as an initializer (e.g. a weight matrix that
  each unrolled step transposes is stored transposed, once); identical
  initializers are then stored once (`dedupe_initializers`). MatMuls then read
  their weights straight from initializers, in the layout they want, which is
  what ``onnxruntime.quantization`` needs to quantize them.
* `symbolic_batch`: given the same block emitted at two batch sizes, a graph
  whose batch axis is symbolic: the constants that depend on the batch size
  (``Reshape`` and ``Expand`` shapes) are computed from the batch size of an
  input at run time.
"""

import hashlib

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from nengo_onnx.compiler.onnx_graph import subgraphs

#: The name of the symbolic batch axis of a model exported with ``batch="dynamic"``.
BATCH_DIM = "batch"

# Operators whose results are not computed at export: random numbers, and operators
# whose result is usually much bigger than their inputs (onnxruntime computes them
# once when it loads the model).
_NO_FOLD = {
    "RandomUniform",
    "RandomNormal",
    "RandomUniformLike",
    "RandomNormalLike",
    "Multinomial",
    "Bernoulli",
    "Expand",
    "Tile",
    "ConstantOfShape",
    "Range",
}


class BatchError(ValueError):
    """The block cannot be written with a symbolic batch axis."""


def names_in(graph):
    """Every value name defined or used in ``graph`` and its subgraphs."""
    names = {v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    names.update(t.name for t in graph.initializer)
    for node in graph.node:
        names.update(n for n in list(node.input) + list(node.output) if n)
        for sub in subgraphs(node):
            names |= names_in(sub)
    return names


def fresh_name(hint, used):
    """``hint``, or ``hint_1``, ``hint_2``, ... whichever is not in ``used`` (then added)."""
    name, i = hint, 0
    while name in used:
        i += 1
        name = f"{hint}_{i}"
    used.add(name)
    return name


def _used_in_subgraphs(graph):
    used = set()
    for node in graph.node:
        for sub in subgraphs(node):
            used |= names_in(sub)
    return used


# -- constant folding ----------------------------------------------------------------------------


def fold_constants(model):
    """Compute every node whose inputs are all initializers, in the graph and its subgraphs.

    Then store identical initializers once, and clear the nodes' doc strings
    (`strip_doc_strings`). In place; returns ``model``.
    """
    opsets = list(model.opset_import)
    _fold(model.graph, opsets)
    strip_doc_strings(model.graph)
    return model


def _fold(graph, opsets):
    for node in graph.node:
        for sub in subgraphs(node):
            _fold(sub, opsets)
    consts = {t.name for t in graph.initializer}
    folded, constant_values = [], set(consts)
    for node in graph.node:
        if (
            node.domain in ("", "ai.onnx")
            and node.op_type not in _NO_FOLD
            and not list(subgraphs(node))
            and node.input
            and all(not n or n in constant_values for n in node.input)
        ):
            folded.append(node)
            constant_values.update(n for n in node.output if n)
    if folded:
        folded_ids = {id(n) for n in folded}
        rest = [n for n in graph.node if id(n) not in folded_ids]
        needed = {n for node in rest for n in node.input if n}
        needed |= {v.name for v in graph.output} | _used_in_subgraphs(graph)
        produced = [n for node in folded for n in node.output if n]
        frontier = [n for n in produced if n in needed]
        values = _evaluate(graph, folded, frontier, opsets) if frontier else []
        keep = [_copy(n, onnx.NodeProto) for n in rest]
        del graph.node[:]
        graph.node.extend(keep)
        for name, value in zip(frontier, values):
            graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    dedupe_initializers(graph)
    _drop_unused_initializers(graph)


def _evaluate(graph, nodes, outputs, opsets):
    inits = {t.name: t for t in graph.initializer}
    inputs = {n for node in nodes for n in node.input if n in inits}
    sub = helper.make_graph(
        list(nodes),
        "fold",
        [],
        [helper.make_empty_tensor_value_info(n) for n in outputs],
        initializer=[inits[n] for n in sorted(inputs)],
    )
    model = helper.make_model(sub, opset_imports=opsets)
    return ReferenceEvaluator(model).run(None, {})


def strip_doc_strings(graph):
    """Clear the nodes' ``doc_string`` (the Nengo operator each came from), in subgraphs too.

    They help to read onnxruntime's errors while simulating, but they are most
    of an exported file's size.
    """
    for node in graph.node:
        node.ClearField("doc_string")
        for sub in subgraphs(node):
            strip_doc_strings(sub)


def dedupe_initializers(graph):
    """Store identical initializers (dtype, shape and bytes) once; renames their uses."""
    first, rename = {}, {}
    graph_outputs = {v.name for v in graph.output}
    for tensor in graph.initializer:
        if tensor.name in graph_outputs:
            continue
        value = numpy_helper.to_array(tensor)
        key = (
            tensor.data_type,
            tuple(tensor.dims),
            hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest(),
        )
        if key in first:
            rename[tensor.name] = first[key]
        else:
            first[key] = tensor.name
    if not rename:
        return
    keep = [_copy(t, onnx.TensorProto) for t in graph.initializer if t.name not in rename]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    _rename_uses(graph, rename)


def _rename_uses(graph, mapping):
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for sub in subgraphs(node):
            _rename_uses(sub, mapping)


def _drop_unused_initializers(graph):
    used = {n for node in graph.node for n in node.input}
    used |= {v.name for v in graph.output} | _used_in_subgraphs(graph)
    keep = [_copy(t, onnx.TensorProto) for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _copy(proto, cls):
    out = cls()
    out.CopyFrom(proto)
    return out


# -- a symbolic batch axis -----------------------------------------------------------------------


def symbolic_batch(model_a, model_b, batch_a, batch_b, sources=None):
    """``model_a`` (emitted at batch ``batch_a``) with a symbolic batch axis.

    ``model_b`` is the same block emitted at ``batch_b``: where their constants
    differ, the constant depends on the batch size. Integer constants linear in
    it (``Reshape``/``Expand`` shapes) become ``a * batch + b``, computed from
    the batch size of an input at run time; constants tiled along the batch axis
    are stored once and broadcast. Ports whose first axis is the batch get the
    symbolic axis `BATCH_DIM`. The batch size is read from the first of
    ``sources`` (input names, default: all) that has a batch axis. Raises
    `BatchError` where the two emissions differ otherwise.
    """
    out = _copy(model_a, onnx.ModelProto)
    graph, other = out.graph, model_b.graph
    if len(graph.node) != len(other.node) or any(
        x.SerializeToString() != y.SerializeToString() for x, y in zip(graph.node, other.node)
    ):
        raise BatchError("the network's ONNX form depends on the batch size")
    source = _batch_ports(graph.input, other.input, batch_a, batch_b)
    _batch_ports(graph.output, other.output, batch_a, batch_b)
    if sources is not None:
        source = [n for n in sources if n in source]
    if not source:
        raise BatchError("the model has no input with a batch axis to take the batch size from")
    used = names_in(graph)
    batch = fresh_name("batch/size", used)
    shape = fresh_name("batch/shape", used)
    zero = fresh_name("batch/zero", used)
    nodes = [
        helper.make_node("Shape", [source[0]], [shape], name=shape),
        helper.make_node("Gather", [shape, zero], [batch], name=batch, axis=0),
    ]
    added = [numpy_helper.from_array(np.array([0], np.int64), zero)]
    others = {t.name: t for t in other.initializer}
    keep = []
    for tensor in graph.initializer:
        b_tensor = others.get(tensor.name)
        if b_tensor is None:
            raise BatchError(f"constant {tensor.name} is not in both emissions")
        va, vb = numpy_helper.to_array(tensor), numpy_helper.to_array(b_tensor)
        if va.shape == vb.shape and np.array_equal(va, vb):
            keep.append(_copy(tensor, onnx.TensorProto))
            continue
        if va.shape == vb.shape and va.dtype.kind in "iu" and va.ndim <= 1:
            slope = (vb.astype(np.int64) - va) // (batch_b - batch_a)
            offset = va - slope * batch_a
            if not np.array_equal(slope * batch_b + offset, vb):
                raise BatchError(f"constant {tensor.name} depends on the batch size")
            nodes += _linear(tensor.name, batch, slope, offset, va.dtype, used, added)
            continue
        if (
            va.ndim == vb.ndim >= 1
            and va.shape[0] == batch_a
            and vb.shape[0] == batch_b
            and va.shape[1:] == vb.shape[1:]
            and np.array_equal(np.broadcast_to(va[:1], vb.shape), vb)
            and np.array_equal(np.broadcast_to(va[:1], va.shape), va)
        ):
            row = fresh_name(f"{tensor.name}/row", used)
            dims = fresh_name(f"{tensor.name}/shape", used)
            rest = fresh_name(f"{tensor.name}/rest", used)
            added.append(numpy_helper.from_array(va[:1], row))
            added.append(numpy_helper.from_array(np.array(va.shape[1:], np.int64), rest))
            nodes.append(helper.make_node("Concat", [batch, rest], [dims], name=dims, axis=0))
            nodes.append(helper.make_node("Expand", [row, dims], [tensor.name], name=tensor.name))
            continue
        raise BatchError(f"constant {tensor.name} depends on the batch size")
    del graph.initializer[:]
    graph.initializer.extend(keep + added)
    rest = [_copy(n, onnx.NodeProto) for n in graph.node]
    del graph.node[:]
    graph.node.extend(nodes + rest)
    del graph.value_info[:]
    return out, batch


def batch_size_value(graph, source, used):
    """Add nodes computing the batch size (``[1]`` int64) of input ``source``; returns it."""
    shape = fresh_name("batch/shape", used)
    zero = fresh_name("batch/zero", used)
    batch = fresh_name("batch/size", used)
    graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), zero))
    nodes = [
        helper.make_node("Shape", [source], [shape], name=shape),
        helper.make_node("Gather", [shape, zero], [batch], name=batch, axis=0),
    ]
    rest = [_copy(n, onnx.NodeProto) for n in graph.node]
    del graph.node[:]
    graph.node.extend(nodes + rest)
    return batch


def broadcast_initial(graph, name, value, batch, used):
    """Make ``name`` the initial ``value`` (one item) broadcast to ``[batch, *value.shape]``.

    ``batch`` is an int (a fixed batch) or the name of a ``[1]`` int64 value. The
    value is stored once and broadcast by ``Expand`` at run time; the new nodes
    go first (`toposort` puts them after the nodes that compute ``batch``).
    """
    stored = fresh_name(f"{name}/initial", used)
    graph.initializer.append(numpy_helper.from_array(np.asarray(value), stored))
    if isinstance(batch, str):
        rest = fresh_name(f"{name}/item_shape", used)
        dims = fresh_name(f"{name}/shape", used)
        graph.initializer.append(numpy_helper.from_array(np.array(value.shape, np.int64), rest))
        nodes = [helper.make_node("Concat", [batch, rest], [dims], name=dims, axis=0)]
    else:
        dims = fresh_name(f"{name}/shape", used)
        graph.initializer.append(
            numpy_helper.from_array(np.array([batch, *value.shape], np.int64), dims)
        )
        nodes = []
    nodes.append(helper.make_node("Expand", [stored, dims], [name], name=f"{name}/broadcast"))
    rest = [_copy(n, onnx.NodeProto) for n in graph.node]
    del graph.node[:]
    graph.node.extend(nodes + rest)


def toposort(graph):
    """Order ``graph.node`` so that every node comes after the nodes it reads from.

    (Subgraphs here read only their own inputs, so their outer reads are not checked.)
    """
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(not i or i in available for i in n.input)]
        if not ready:
            raise ValueError("the graph has a cycle or reads an undefined value")
        ids = {id(n) for n in ready}
        for n in ready:
            available.update(o for o in n.output if o)
        ordered += ready
        pending = [n for n in pending if id(n) not in ids]
    ordered = [_copy(n, onnx.NodeProto) for n in ordered]
    del graph.node[:]
    graph.node.extend(ordered)


def _linear(name, batch, slope, offset, dtype, used, added):
    """Nodes computing ``slope * batch + offset`` as ``name`` (int64, cast to ``dtype``)."""
    s = fresh_name(f"{name}/slope", used)
    o = fresh_name(f"{name}/offset", used)
    scaled = fresh_name(f"{name}/scaled", used)
    added.append(numpy_helper.from_array(slope.astype(np.int64), s))
    added.append(numpy_helper.from_array(offset.astype(np.int64), o))
    value = name if dtype == np.int64 else fresh_name(f"{name}/int64", used)
    nodes = [
        helper.make_node("Mul", [batch, s], [scaled], name=scaled),
        helper.make_node("Add", [scaled, o], [value], name=value),
    ]
    if value != name:
        to = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        nodes.append(helper.make_node("Cast", [value], [name], name=name, to=to))
    return nodes


def _batch_ports(ports_a, ports_b, batch_a, batch_b):
    """Give the ports whose first axis is the batch the symbolic axis; returns their names."""
    by_name = {v.name: v for v in ports_b}
    batched = []
    for port in ports_a:
        dims_a = port.type.tensor_type.shape.dim
        dims_b = by_name[port.name].type.tensor_type.shape.dim
        values_a = [d.dim_value for d in dims_a]
        values_b = [d.dim_value for d in dims_b]
        if values_a == values_b:
            continue
        if (
            len(values_a) == len(values_b)
            and values_a[0] == batch_a
            and values_b[0] == batch_b
            and values_a[1:] == values_b[1:]
        ):
            dims_a[0].Clear()
            dims_a[0].dim_param = BATCH_DIM
            batched.append(port.name)
            continue
        raise BatchError(f"the shape of {port.name} depends on the batch size")
    return batched
