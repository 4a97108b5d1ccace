"""Remove the data movement of merged signals from a (training) graph.

With ``optimize=True`` signals are merged into larger bases, so the emitted graph
writes a signal by concatenating slices of its base around the new value, and
reads it by slicing that concatenation again. In a training graph every one of
these nodes also gets a gradient node (a ``Slice`` is turned into a ``Gather``
by `nengo_onnx.training.ort_fixes`, whose gradient is a slow scatter), and for a small
network they cost several times the arithmetic. `simplify` follows where each
slice of a concatenation really comes from and reads that directly:

* ``Slice(Concat(a, b, c)) -> b`` (or a slice of ``b``) when the slice falls in
  one part, through chains of slices, concatenations and identity reshapes;
* ``Reshape(x)`` to the shape ``x`` has -> ``x``;
* ``Add(x, 0)`` (a zero constant, also expanded or sliced) -> ``x`` when the
  result has ``x``'s shape (nengo's reset-then-increment);
* an ``Expand`` feeding a broadcasting elementwise op (``Add(Expand(b), x)``)
  is left to the op's own broadcasting when the result's shape stays the same;
* nodes whose outputs nothing reads are removed.

Every rewrite gives exactly the same values.
"""

import numpy as np
from onnx import helper, numpy_helper, shape_inference

from nengo_onnx.training.ort_fixes import value_shapes


def simplify(model, param_names=()):
    """Simplify ``model`` in place (see the module docstring).

    Initializers named in ``param_names`` are parameters: never taken for constants.
    """
    graph = model.graph
    shapes = value_shapes(shape_inference.infer_shapes(model).graph)
    inits = {init.name: init for init in graph.initializer}
    outputs = {out.name for out in graph.output}
    rename, segments = {}, {}
    params = set(param_names)
    zeros = {
        name
        for name, init in inits.items()
        if name not in params
        and np.prod(init.dims) <= 1 << 16
        and init.data_type in (1, 11)
        and not np.any(numpy_helper.to_array(init))
    }

    def const(name):
        init = inits.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def resolve(name):
        while name in rename:
            name = rename[name]
        return name

    nodes, expands = [], {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name:
                node.input[i] = resolve(name)
        if node.op_type == "Expand":
            expands[node.output[0]] = node.input[0]
        elif node.op_type in BROADCASTING:
            _unexpand(node, expands, shapes)
        alias = _alias(node, shapes, zeros, const, segments)
        if alias is not None:
            out = node.output[0]
            if out in outputs:  # graph outputs keep their names
                nodes.append(helper.make_node("Identity", [alias], [out], name=node.name))
            else:
                rename[out] = alias
            continue
        if node.op_type == "Slice":
            _redirect_slice(node, graph, inits, segments)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(_live(nodes, outputs))


#: Elementwise ops with multidirectional broadcasting.
BROADCASTING = frozenset("Add Sub Mul Div Where Max Min Greater Less Equal".split())


def _unexpand(node, expands, shapes):
    """Read the inputs of Expands directly where broadcasting gives the same result."""
    out_shape = shapes.get(node.output[0])
    if out_shape is None or None in out_shape:
        return
    for i, name in enumerate(node.input):
        src = expands.get(name)
        if src is None or shapes.get(src) is None:
            continue
        others = [shapes.get(n) for j, n in enumerate(node.input) if j != i]
        if any(shape is None or None in shape for shape in others) or None in shapes[src]:
            continue
        try:
            shape = np.broadcast_shapes(tuple(shapes[src]), *map(tuple, others))
        except ValueError:
            continue
        if list(shape) == list(out_shape):
            node.input[i] = src


def _alias(node, shapes, zeros, const, segments):
    """A value equal to ``node``'s output, or None; records what the output holds."""
    op, out = node.op_type, node.output[0]
    if op in ("Reshape", "Expand", "Identity") and node.input[0] in zeros:
        zeros.add(out)
    if op == "Identity":
        return node.input[0]
    if op == "Reshape" and _same_shape(shapes, node.input[0], out):
        return node.input[0]
    if op == "Add":
        a, b = node.input
        for x, other in ((a, b), (b, a)):
            if other in zeros and _same_shape(shapes, x, out):
                return x
        return None
    if op == "Concat":
        axis, shape = _attr(node, "axis"), shapes.get(out)
        if axis is None or shape is None:
            return None
        axis %= len(shape)
        parts = [_segments(name, axis, shapes, segments) for name in node.input]
        if any(p is None for p in parts):
            return None
        segs = _merge([seg for part in parts for seg in part])
        if all(name in zeros for name in node.input):
            zeros.add(out)
    elif op == "Slice":
        found = _slice_range(node, shapes, const)
        if found is None:
            return None
        axis, start, stop = found
        segs = _segments(node.input[0], axis, shapes, segments)
        if segs is None:
            return None
        segs = _pick(segs, start, stop)
        if node.input[0] in zeros:
            zeros.add(out)
    else:
        return None
    segments[out] = (axis, segs)
    if len(segs) == 1:
        src, start, stop = segs[0]
        if start == 0 and stop == _dim(shapes, src, axis) and _same_shape(shapes, src, out):
            return src
    return None


def _redirect_slice(node, graph, inits, segments):
    """Make a Slice whose range lies in one part read that part directly."""
    out = node.output[0]
    if out not in segments:
        return
    axis, segs = segments[out]
    if len(segs) != 1 or segs[0][0] == node.input[0]:
        return
    src, start, stop = segs[0]
    names = []
    for key, value in (("starts", start), ("ends", stop), ("axes", axis)):
        name = f"{out}.{key}"
        init = numpy_helper.from_array(np.array([value], dtype=np.int64), name)
        graph.initializer.append(init)
        inits[name] = init
        names.append(name)
    del node.input[:]
    node.input.extend([src, *names])


def _segments(name, axis, shapes, segments):
    """``[(source, start, stop)]`` along ``axis`` that make up ``name``, or None."""
    if name in segments and segments[name][0] == axis:
        return segments[name][1]
    dim = _dim(shapes, name, axis)
    return None if dim is None else [(name, 0, dim)]


def _pick(segs, start, stop):
    """The segments covering ``[start, stop)`` of the concatenation of ``segs``."""
    picked, offset = [], 0
    for src, a, b in segs:
        lo, hi = max(start, offset), min(stop, offset + b - a)
        if lo < hi:
            picked.append((src, a + lo - offset, a + hi - offset))
        offset += b - a
    return picked


def _merge(segs):
    merged = []
    for seg in segs:
        if merged and merged[-1][0] == seg[0] and merged[-1][2] == seg[1]:
            merged[-1] = (seg[0], merged[-1][1], seg[2])
        else:
            merged.append(seg)
    return merged


def _slice_range(node, shapes, const):
    """``(axis, start, stop)`` of a constant, unit-step Slice on one axis, or None."""
    shape = shapes.get(node.input[0])
    args = [const(name) if name else None for name in node.input[1:]]
    if shape is None or len(args) < 2 or args[0] is None or args[1] is None:
        return None
    if len(node.input) > 3 and node.input[3] and args[2] is None:
        return None
    if len(node.input) > 4 and node.input[4] and (args[3] is None or np.any(args[3] != 1)):
        return None
    axes = args[2] if len(args) > 2 and args[2] is not None else np.arange(len(args[0]))
    if len(axes) != 1:
        return None
    axis = int(axes[0]) % len(shape)
    if shape[axis] is None:
        return None
    start, stop, _ = slice(int(args[0][0]), int(args[1][0])).indices(shape[axis])
    return axis, start, max(start, stop)


def _attr(node, name):
    for attr in node.attribute:
        if attr.name == name:
            return attr.i
    return None


def _dim(shapes, name, axis):
    shape = shapes.get(name)
    if shape is None or axis >= len(shape) or shape[axis] is None:
        return None
    return shape[axis]


def _same_shape(shapes, a, b):
    sa, sb = shapes.get(a), shapes.get(b)
    return sa is not None and sa == sb and None not in sa


def _live(nodes, outputs):
    """``nodes`` without those whose outputs nothing reads."""
    needed = set(outputs)
    live = []
    for node in reversed(nodes):
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(node.input)
            for attr in node.attribute:  # values that subgraphs read from outside
                for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                    for inner in sub.node:
                        needed.update(inner.input)
    return live[::-1]
