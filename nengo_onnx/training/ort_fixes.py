"""Rewrites of training graphs around onnxruntime-training 1.19's gradient-builder bugs.

Measured failures (each one has a test through the simulator's training tests),
and what is done about them before ``generate_artifacts`` sees a graph:

* ``Transpose`` without ``perm``: ``unordered_map::at``. The default perm is
  written out.
* A node that reads the same value twice: ``Duplicate definition of name
  (x_grad)``. The repeats read an ``Identity``.
* Slice/Gather nodes that together cover a tensor are fused into a ``Split``
  (``GatherSliceToSplitFusion``, after identical nodes are merged), whose
  gradient has the wrong shape when some outputs get no gradient. Constant
  Slices become ``Gather``/``GatherElements``.
* Two ``Concat`` nodes sharing a constant input: ``Duplicate definition of name
  (C_grad)``. Such Concats become ``Add(constant parts, Pad(computed parts))``.
* Ops without a gradient builder (and ``If``/``Loop``/``Scan``, which can abort
  the process) on the gradient path are reported before onnxruntime sees them.
* ``GemmSumFusion`` (a graph optimizer of the training session) fails with
  ``gemm_input_edge.src_arg_index < 2 was false`` on gradient graphs: it is
  disabled in training sessions (`training_session_options`).
* The gradient of ``Where`` is not reduced over the dimensions along which a
  value input was broadcast (a wrong shape: a failing ``Reshape`` or a wrong
  gradient). Such inputs are expanded to the output's shape first.
* A parameter that no gradient reaches (only through spikes, e.g. Izhikevich
  neurons): ``Cannot compute the partial derivative ... unreachable``.
  `gradient_reach` finds them (per parameter, also in merged signals); the
  training graph gives them a zero term and training leaves them unchanged.
"""

import re

import numpy as np
from nengo.exceptions import SimulationError, ValidationError
from onnx import helper, numpy_helper, shape_inference

from nengo_onnx import ort_setup

#: ONNX ops without a gradient builder in onnxruntime-training 1.19.2 (none is registered
#: in its binary); ``If``/``Loop``/``Scan`` on the gradient path can even abort the process.
NO_GRADIENT = {
    "Sum",
    "Mean",
    "Einsum",
    "CumSum",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Mod",
    "Softplus",
    "Elu",
    "Selu",
    "Softsign",
    "HardSigmoid",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ArgMax",
    "ArgMin",
    "Scan",
    "Loop",
    "If",
}


def training_session_options(so):
    """``so`` (``SessionOptions``), made fit for a training ``Module``; returns it."""
    # Works around onnxruntime 1.19's GemmSumFusion, which checks the producer's output slot
    # (src_arg_index < 2) where it means the Gemm's input slot and so aborts when a gradient
    # Gemm reads output 2+ of a SplitTraining (the gradient of a probe of n_steps >= 3) and
    # meets a second gradient in a two-input Sum (two objectives): disabling the fusion costs
    # one Add, where avoiding the pattern would mean rewriting what the gradient builder makes.
    so.add_session_config_entry("optimization.disable_specified_optimizers", "GemmSumFusion")
    return so


def check_differentiable(model, param_names, terms):
    """Raise before onnxruntime does (or crashes) on ops without gradients.

    Looks at the nodes between the parameters and the loss (output 0); a node of
    an objective (named ``objective<i>.``) is reported with the objective's name.
    """
    registered = set(getattr(ort_setup, "REGISTERED_GRADIENTS", ()))
    graph = model.graph
    dependent = set(param_names)
    for node in graph.node:
        if any(name in dependent for name in _all_inputs(node)):
            dependent.update(node.output)
    needed = reachable_nodes(model, graph.output[0].name)
    for i, node in enumerate(graph.node):
        if (
            node.domain in ("", "ai.onnx")
            and node.op_type in NO_GRADIENT
            and node.op_type not in registered
            and i in needed
            and any(name in dependent for name in _all_inputs(node))
        ):
            match = re.match(r"objective(\d+)\.", node.name or node.output[0])
            if match:
                raise ValidationError(
                    f"objective {terms[int(match.group(1))].name} uses {node.op_type}, which "
                    "has no gradient in onnxruntime-training, so it cannot be trained with",
                    attr="objective",
                )
            raise SimulationError(
                f"the training graph needs the gradient of {node.op_type} (from "
                f"{node.doc_string or node.name}), which onnxruntime-training does not have"
            )


def _all_inputs(node):
    """A node's inputs, and the outer values its subgraphs (If, Loop, Scan) read."""
    names = list(node.input)
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for sub in graphs:
            for inner in sub.node:
                names.extend(_all_inputs(inner))
    return names


def reachable_nodes(model, output):
    """Indices of the nodes that graph value ``output`` depends on."""
    nodes = list(model.graph.node)
    producers = {out: i for i, node in enumerate(nodes) for out in node.output}
    seen, found, stack = set(), set(), [output]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        i = producers.get(name)
        if i is not None and i not in found:
            found.add(i)
            stack.extend(_all_inputs(nodes[i]))
    return found


def reachable_initializers(model, output, extra_nodes=(), start=None):
    """Initializer names on which graph value ``output`` (or ``start``) depends."""
    producers = {}
    for node in list(model.graph.node) + list(extra_nodes):
        for out in node.output:
            producers[out] = node
    inits = {init.name for init in model.graph.initializer}
    seen, stack, found = set(), [output if start is None else start], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inits:
            found.add(name)
        node = producers.get(name)
        if node is not None:
            stack.extend(_all_inputs(node))
    return found


def prepare_for_gradients(model, param_names):
    """Work around onnxruntime-training 1.19 gradient-builder bugs, in place.

    1. ``Transpose`` without ``perm`` fails (``unordered_map::at``: the builder
       reads the attribute unconditionally), so the default (reversed axes) is
       written out, from the input's rank.
    2. A node that reads the same value twice (``Concat(x, x)``) can fail with
       ``Duplicate definition of name (x_grad)``; the repeats read an ``Identity``.
    3. onnxruntime fuses Slice/Gather nodes that together cover a tensor into a
       ``Split`` (``GatherSliceToSplitFusion``, after merging identical nodes), and
       the gradient of that Split has the wrong shape when some of its outputs get
       no gradient. Constant Slices become ``Gather`` (2+ elements) or
       ``GatherElements`` (1 element), and single-index Gathers ``GatherElements``,
       which the fusion leaves alone.
    4. A ``Concat`` of parts that no parameter reaches (constants, or slices of the
       state inputs) and computed parts can fail with ``Duplicate definition of
       name (C_grad)`` (onnxruntime merges identical constant or sliced parts):
       it becomes ``Add(Concat(those parts, zeros), Pad(computed part), ...)``.
    5. The gradient of ``Where`` is ``Where(cond, dY, 0)`` for each value input,
       not summed over the dimensions along which that input was broadcast, so
       a broadcast input on the gradient path gets a gradient of the wrong shape
       (``Reshape`` fails in the train step, or the gradient is silently wrong).
       Such inputs are expanded to the output's shape (``Expand``'s gradient is
       the reduction).
    """
    graph = model.graph
    inferred = shape_inference.infer_shapes(model).graph
    shapes = value_shapes(inferred)
    floats = _float_values(inferred)
    for node in graph.node:
        if node.op_type == "Transpose" and not any(a.name == "perm" for a in node.attribute):
            shape = shapes.get(node.input[0])
            if shape is not None:
                node.attribute.append(helper.make_attribute("perm", list(range(len(shape)))[::-1]))
    _expand_where_inputs(model, shapes, param_names)
    _unfuse_slices(model, shapes)
    _split_constant_concats(model, shapes, floats, param_names)
    nodes, counter = [], 0
    for node in graph.node:
        seen = set()
        for i, name in enumerate(node.input):
            if name and name in seen:
                counter += 1
                copy = f"{name}.copy{counter}"
                nodes.append(
                    helper.make_node("Identity", [name], [copy], name=f"n_{name}.copy{counter}")
                )
                node.input[i] = copy
            seen.add(name)
        nodes.append(node)
    if counter:
        del graph.node[:]
        graph.node.extend(nodes)


def _expand_where_inputs(model, shapes, param_names):
    graph = model.graph
    dependent = set(param_names)
    nodes = []
    for node in graph.node:
        if any(name in dependent for name in _all_inputs(node)):
            dependent.update(node.output)
        if node.op_type == "Where":
            out_shape = shapes.get(node.output[0])
            for i in (1, 2):
                name = node.input[i]
                if (
                    name in dependent
                    and out_shape is not None
                    and None not in out_shape
                    and shapes.get(name) != out_shape
                ):
                    expanded = f"{node.output[0]}.expand{i}"
                    nodes.append(
                        helper.make_node(
                            "Expand",
                            [name, _shape_const(graph, out_shape)],
                            [expanded],
                            name=f"n_{expanded}",
                        )
                    )
                    node.input[i] = expanded
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _float_values(graph):
    """Names of the float32 values of a (shape-inferred) graph."""
    names = {
        v.name
        for v in list(graph.input) + list(graph.value_info) + list(graph.output)
        if v.type.tensor_type.elem_type == 1
    }
    names.update(init.name for init in graph.initializer if init.data_type == 1)
    return names


def value_shapes(graph):
    """Static shapes (lists, None for unknown dims) of the values of a graph."""
    shapes = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim
            ]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _slice_indices(node, shape, const):
    """``(axis, indices)`` that constant Slice/Gather ``node`` takes, or None."""
    rank = len(shape)
    if node.op_type == "Slice":
        values = [const(n) if n else None for n in node.input[1:]]
        if len(values) < 2 or values[0] is None or values[1] is None:
            return None
        if any(v is None for v, n in zip(values[2:], node.input[3:]) if n):
            return None
        starts, ends = values[0], values[1]
        axes = values[2] if len(values) > 2 and values[2] is not None else [0]
        steps = values[3] if len(values) > 3 and values[3] is not None else [1]
        if len(starts) != 1 or len(axes) != 1:
            return None
        axis = int(axes[0]) % rank
        if shape[axis] is None:
            return None
        return axis, list(
            range(*slice(int(starts[0]), int(ends[0]), int(steps[0])).indices(shape[axis]))
        )
    index = const(node.input[1])
    if index is None or index.size != 1:
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0) % rank
    if shape[axis] is None:
        return None
    return axis, [int(index.ravel()[0]) % shape[axis]]


def _unfuse_slices(model, shapes):
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}

    def const(name):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type not in ("Slice", "Gather"):
            continue
        shape = shapes.get(node.input[0])
        out_shape = shapes.get(node.output[0])
        if not shape or None in shape or out_shape is None:
            continue
        found = _slice_indices(node, shape, const)
        if found is None:
            continue
        axis, index = found
        if node.op_type == "Gather" and len(index) != 1:
            continue
        data, out = node.input[0], node.output[0]
        if len(index) >= 2:  # a Gather of several indices is never fused
            name = f"{out}.indices"
            graph.initializer.append(numpy_helper.from_array(np.asarray(index, np.int64), name))
            node.op_type = "Gather"
            del node.input[:]
            node.input.extend([data, name])
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("axis", axis))
            continue
        if len(index) == 0:
            continue
        full_shape = list(shape)
        full_shape[axis] = 1
        name = f"{out}.elements"
        graph.initializer.append(
            numpy_helper.from_array(np.full(full_shape, index[0], dtype=np.int64), name)
        )
        squeeze = len(out_shape) < len(shape)
        node.op_type = "GatherElements"
        del node.input[:]
        node.input.extend([data, name])
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("axis", axis))
        if squeeze:
            kept = f"{out}.kept"
            node.output[0] = kept
            nodes.append(
                helper.make_node(
                    "Reshape",
                    [kept, _shape_const(graph, out_shape)],
                    [out],
                    name=f"n_{out}.reshape",
                )
            )
    del graph.node[:]
    graph.node.extend(nodes)


def _constant_values(graph, param_names):
    """Names of the values that depend on no graph input and no parameter."""
    params = set(param_names)
    const = {init.name for init in graph.initializer if init.name not in params}
    for node in graph.node:
        inputs = [n for n in node.input if n]
        if node.op_type == "Constant" or (inputs and all(n in const for n in inputs)):
            const.update(node.output)
    return const


def _split_constant_concats(model, shapes, floats, param_names):
    graph = model.graph
    # what no parameter reaches is a constant to the gradient (graph inputs: the state)
    reached = set(param_names)
    for node in graph.node:
        if any(i in reached for i in node.input):
            reached.update(node.output)
    const = {
        name for node in graph.node for name in node.input if name and name not in reached
    } | _constant_values(graph, param_names)
    nodes = []
    for node in graph.node:
        parts = list(node.input)
        if (
            node.op_type != "Concat"
            or node.output[0] not in floats
            or not any(p in const for p in parts)
            or all(p in const for p in parts)
        ):
            nodes.append(node)
            continue
        part_shapes = [shapes.get(p) for p in parts]
        if any(s is None or None in s for s in part_shapes):
            nodes.append(node)
            continue
        rank = len(part_shapes[0])
        axis = next(a.i for a in node.attribute if a.name == "axis") % rank
        out = node.output[0]
        total = sum(s[axis] for s in part_shapes)
        filled, offset, padded = [], 0, []
        for i, (part, shape) in enumerate(zip(parts, part_shapes)):
            if part in const:
                filled.append(part)
            else:
                zeros = f"{out}.zeros{i}"
                graph.initializer.append(
                    numpy_helper.from_array(np.zeros(shape, dtype=np.float32), zeros)
                )
                filled.append(zeros)
                pads = [0] * (2 * rank)
                pads[axis], pads[rank + axis] = offset, total - offset - shape[axis]
                pads_name = f"{out}.pads{i}"
                graph.initializer.append(
                    numpy_helper.from_array(np.asarray(pads, np.int64), pads_name)
                )
                padded.append(f"{out}.padded{i}")
                nodes.append(
                    helper.make_node(
                        "Pad",
                        [part, pads_name],
                        [padded[-1]],
                        name=f"n_{out}.pad{i}",
                        mode="constant",
                    )
                )
            offset += shape[axis]
        total_name = f"{out}.constant_parts"
        nodes.append(
            helper.make_node(
                "Concat", filled, [total_name], axis=axis, name=f"n_{out}.constant_parts"
            )
        )
        value = total_name
        for i, part in enumerate(padded):
            name = out if i == len(padded) - 1 else f"{out}.sum{i}"
            nodes.append(helper.make_node("Add", [value, part], [name], name=f"n_{name}.add"))
            value = name
    del graph.node[:]
    graph.node.extend(nodes)


def _shape_const(graph, shape):
    name = "shape." + "x".join(str(d) for d in shape)
    if not any(init.name == name for init in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(np.asarray(shape, np.int64), name))
    return name


#: Ops through which no gradient flows (onnxruntime's stop-gradient edges on float inputs;
#: non-float values carry no gradient anyway).
_NO_GRADIENT_FLOW = {
    "Range",
    "RandomUniformLike",
    "RandomNormalLike",
    "Bernoulli",
    "Shape",
    "Size",
    "ConstantOfShape",
    "EyeLike",
    "Constant",
}
#: Ops that map an element of each input to the same element of the (broadcast) output.
_ELEMENTWISE = set(
    """Add Sub Mul Div Pow Max Min Neg Abs Exp Log Sqrt Tanh Sigmoid Relu
    Reciprocal Clip Identity Erf Sin Cos Where LeakyRelu Softplus Elu Selu Softsign HardSigmoid
    Sign Floor Ceil Round Mod Cast""".split()
)


def gradient_reach(model, atoms):
    """Which of ``atoms`` the gradient of output 0 can reach (element-exact).

    ``atoms`` maps a key to ``(initializer name, flat element indices)`` (e.g. one
    parameter's view of a merged base). Follows the dependence of every element
    of every value on the atoms forward through the graph, as bit sets: only
    float values carry it, comparisons and casts to other types stop it (as in
    onnxruntime's gradient builder), a product with a value that is always zero
    there stops it (the ``0 * sum(P)`` terms, block-diagonal merged weights), and
    slicing, gathering, reshaping, matrix products and elementwise ops keep track
    of which element comes from where. Ops it does not know mix all elements of
    their inputs (it may then claim too much, never too little). Returns the set
    of keys reached.
    """
    keys = list(atoms)
    reached = set()
    for start in range(0, len(keys), 64):  # one uint64 bit per atom
        chunk = keys[start : start + 64]
        bits = _reach_bits(
            model, {k: atoms[k] for k in chunk}, chunk, {name for name, _ in atoms.values()}
        )
        reached.update(k for i, k in enumerate(chunk) if bits >> i & 1)
    return reached


def _reach_bits(model, atoms, order, params):
    graph = model.graph
    inferred = shape_inference.infer_shapes(model).graph
    shapes = value_shapes(inferred)
    others = {
        v.name
        for v in list(inferred.value_info) + list(inferred.output)
        if v.type.tensor_type.elem_type not in (0, 1, 10, 11, 16)
    }  # known, not float
    inits = {init.name: init for init in graph.initializer}
    taint = {}
    for i, key in enumerate(order):
        name, index = atoms[key]
        shape = list(inits[name].dims)
        value = taint.get(name)
        if value is None:
            value = np.zeros(int(np.prod(shape)), dtype=np.uint64)
        value.reshape(-1)[np.asarray(index, dtype=np.int64).ravel()] |= np.uint64(1 << i)
        taint[name] = value.reshape(shape)

    def const(name):  # parameters are no constants: their zeros change in training
        return numpy_helper.to_array(inits[name]) if name in inits and name not in params else None

    # where values are zero whatever the parameters and inputs (e.g. block-diagonal
    # merged weights); absent: anywhere nonzero
    nonzero = {}
    for name, init in inits.items():
        if (
            name not in params
            and init.data_type in (1, 10, 11, 16)
            and np.prod(init.dims) <= 1 << 20
        ):
            value = numpy_helper.to_array(init) != 0
            if not value.all():
                nonzero[name] = value
    zero = np.zeros((), dtype=np.uint64)
    for node in graph.node:
        nz = [nonzero.get(name) if name else None for name in node.input]
        if any(m is not None for m in nz):
            for name, value in zip(node.output, _nonzero(node, nz, shapes, const)):
                if value is not None and not value.all():
                    nonzero[name] = value
        ins = [taint.get(name, zero) if name else zero for name in node.input]
        if not any(np.any(t) for t in ins):
            continue
        outs = _propagate(node, ins, nz, shapes, const)
        for name, value in zip(node.output, outs):
            if name not in others and value is not None and np.any(value):
                taint[name] = value
    return int(np.bitwise_or.reduce(taint.get(graph.output[0].name, zero), axis=None))


def _mixed(ins, shape):
    """Every element depends on every element of every input."""
    total = np.bitwise_or.reduce([np.bitwise_or.reduce(t, axis=None) for t in ins])
    return np.broadcast_to(total, shape) if shape is not None and None not in shape else total


def _full(value, shapes, name, fill=None):
    """``value`` with the static shape of graph value ``name`` (a 0-d value is uniform;
    None is ``fill``)."""
    if value is None:
        value = fill
    shape = shapes.get(name)
    if np.ndim(value) == 0 and shape is not None and None not in shape:
        return np.broadcast_to(value, shape)
    return value


def _rearrange(node, ins, shapes, const):
    """Outputs of ops that only move elements, applied to ``ins`` (full arrays), or None."""
    op = node.op_type
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    out_shapes = [shapes.get(name) for name in node.output]
    shape = out_shapes[0]
    known = shape is not None and None not in shape
    x = ins[0]
    if op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze") and known:
        return [x.reshape(shape)]
    if op in ("Identity", "Neg", "Cast", "Relu", "Abs"):
        return [x]
    if op == "Expand" and known:
        return [np.broadcast_to(x, shape)]
    if op == "Transpose":
        return [np.transpose(x, attrs.get("perm", list(range(x.ndim))[::-1]))]
    if op == "Concat":
        return [np.concatenate(ins, axis=attrs["axis"])]
    if op == "Split":
        axis = attrs.get("axis", 0) % x.ndim
        return np.split(x, np.cumsum([s[axis] for s in out_shapes])[:-1], axis=axis)
    if op in ("Gather", "GatherElements") and const(node.input[1]) is not None:
        index = const(node.input[1]).astype(np.int64)
        axis = attrs.get("axis", 0) % x.ndim
        index = np.where(index < 0, index + x.shape[axis], index)
        if op == "Gather":
            return [np.take(x, index, axis=axis)]
        return [np.take_along_axis(x, index, axis=axis)]
    if op == "Slice" and all(const(n) is not None for n in node.input[1:] if n):
        starts, ends = const(node.input[1]), const(node.input[2])
        axes = (
            const(node.input[3]) if len(node.input) > 3 and node.input[3] else range(len(starts))
        )
        steps = (
            const(node.input[4]) if len(node.input) > 4 and node.input[4] else [1] * len(starts)
        )
        index = [slice(None)] * x.ndim
        for a, s, e, k in zip(axes, starts, ends, steps):
            index[int(a) % x.ndim] = slice(int(s), int(e), int(k))
        return [x[tuple(index)]]
    return None


def _nonzero(node, nz, shapes, const):
    """Where ``node``'s outputs can be nonzero (bool arrays; None: anywhere), from
    where its inputs can (``nz``)."""
    op = node.op_type
    try:
        full = [_full(m, shapes, name, True) for m, name in zip(nz, node.input)]
        if op == "Mul":
            return [np.logical_and(full[0], full[1])]
        if op in ("Add", "Sub"):
            return [np.logical_or(full[0], full[1])]
        if op == "Where":
            return [np.logical_or(full[1], full[2])]
        if op == "MatMul" and full[0].ndim >= 2 and full[1].ndim >= 2:
            return [np.matmul(full[0].astype(np.float32), full[1].astype(np.float32)) > 0]
        if op not in ("Gather", "GatherElements", "Slice") or nz[0] is not None:
            moved = _rearrange(node, full, shapes, const)
            if moved is not None:
                return moved
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        pass
    return [None] * len(node.output)


def _propagate(node, ins, nz, shapes, const):
    """The dependence bits of ``node``'s outputs from those of its inputs (``nz``: where
    the inputs can be nonzero, see `_nonzero`)."""
    op = node.op_type
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    out_shapes = [shapes.get(name) for name in node.output]
    shape = out_shapes[0]
    known = shape is not None and None not in shape
    none = np.uint64(0)
    try:
        if (
            op in _NO_GRADIENT_FLOW
            or node.domain in ("", "ai.onnx")
            and op
            in (
                "Not",
                "And",
                "Or",
                "Xor",
                "Equal",
                "Less",
                "LessOrEqual",
                "Greater",
                "GreaterOrEqual",
                "IsInf",
                "IsNaN",
                "ArgMax",
                "ArgMin",
            )
        ):
            return [None] * len(node.output)
        if op == "Where":
            ins, nz = ins[1:], nz[1:]
        if op not in ("Where", "Neg", "Relu", "Abs", "Identity", "Cast"):
            full = [_full(t, shapes, name) for t, name in zip(ins, node.input)]
            moved = _rearrange(node, full, shapes, const)
            if moved is not None:
                return moved
        if op == "MatMul":  # A[i, k] reaches out[i, j] unless B[k, j] is always zero
            a, b = (_full(t, shapes, name) for t, name in zip(ins, node.input))
            ma, mb = nz
            if a.ndim >= 2 and b.ndim >= 2:
                if mb is None or a.size * b.shape[-1] > 1 << 24:
                    left = np.bitwise_or.reduce(a, axis=-1, keepdims=True)
                else:
                    left = np.bitwise_or.reduce(
                        np.where(mb[..., None, :, :], a[..., None], none), axis=-2
                    )
                if ma is None or b.size * a.shape[-2] > 1 << 24:
                    right = np.bitwise_or.reduce(b, axis=-2, keepdims=True)
                else:
                    right = np.bitwise_or.reduce(
                        np.where(ma[..., None], b[..., None, :, :], none), axis=-2
                    )
                value = left | right
                return [np.broadcast_to(value, shape) if known else value]
        if op.startswith("Reduce") and ins[0].ndim:
            axes = (
                const(node.input[1])
                if len(node.input) > 1 and node.input[1]
                else attrs.get("axes")
            )
            x = _full(ins[0], shapes, node.input[0])
            if axes is None or len(axes) == 0:
                if attrs.get("noop_with_empty_axes", 0):
                    return [x]
                axes = range(x.ndim)
            value = np.bitwise_or.reduce(
                x, axis=tuple(int(a) % x.ndim for a in axes), keepdims=True
            )
            return [value.reshape(shape) if known else value]
        if op in _ELEMENTWISE or node.domain not in ("", "ai.onnx"):
            if op == "Mul":  # d(ab)/da = b: nothing where b is always zero
                (ta, tb), (ma, mb) = ins, nz
                value = (ta if mb is None else np.where(mb, ta, none)) | (
                    tb if ma is None else np.where(ma, tb, none)
                )
            else:
                value = ins[0]
                for t in ins[1:]:
                    value = value | t
            if known and np.broadcast_shapes(np.shape(value), tuple(shape)) == tuple(shape):
                return [np.broadcast_to(value, shape)] * len(node.output)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        pass
    return [_mixed(ins, s) for s in out_shapes]
