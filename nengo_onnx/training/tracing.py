"""Trace array-API objectives into ONNX loss nodes, through ndonnx.

A custom objective is called once on ndonnx arrays standing for the probe
outputs and targets (shaped ``(minibatch_size, n_steps, size)``, float32); what
it computes is an ONNX graph (opset 21, like the forward graph), which is then
copied into the training graph with its names prefixed.

ndonnx (and spox under it) are imported only when a custom objective is traced,
so ``import nengo_onnx`` and training with the built-in objectives never pay for
them.
"""

import numpy as np
from nengo.exceptions import ValidationError
from onnx import compose, helper

from nengo_onnx.objectives import objective_name


def _ndonnx():
    try:
        import ndonnx  # noqa: PLC0415
    except ImportError as err:  # pragma: no cover
        raise ValidationError(
            "custom objectives are traced into ONNX with ndonnx; install it with "
            "'pip install ndonnx'",
            attr="objective",
        ) from err
    return ndonnx


def trace(fn, output_shapes, target_shapes, opset):
    """The ONNX model computing ``fn`` (inputs ``y{i}``, ``t{i}``; output ``loss``).

    ``output_shapes`` is a list of shapes (one per probe); ``target_shapes`` is
    the same, or None for an objective without targets. A single probe is
    passed as an array, a tuple of probes as lists.
    """
    ndx = _ndonnx()
    name = objective_name(fn)
    outputs = [ndx.argument(shape=tuple(s), dtype=ndx.float32) for s in output_shapes]
    args = {f"y{i}": a for i, a in enumerate(outputs)}
    call = [outputs if len(outputs) > 1 or _is_list(output_shapes) else outputs[0]]
    if target_shapes is not None:
        targets = [ndx.argument(shape=tuple(s), dtype=ndx.float32) for s in target_shapes]
        args.update({f"t{i}": a for i, a in enumerate(targets)})
        call.append(targets if len(targets) > 1 or _is_list(output_shapes) else targets[0])
    try:
        result = fn(*call)
    except Exception as err:
        raise ValidationError(
            f"objective {name} could not be traced into ONNX (it must use array-API "
            f"operations of xp = array_api_compat.array_namespace(outputs)): "
            f"{type(err).__name__}: {err}",
            attr="objective",
        ) from err
    if not isinstance(result, ndx.Array):
        try:
            result = ndx.asarray(np.asarray(result, dtype=np.float32))
        except Exception as err:
            raise ValidationError(
                f"objective {name} returned {type(result).__name__}, not an array",
                attr="objective",
            ) from err
    if result.ndim != 0:
        raise ValidationError(
            f"objective {name} must return a scalar; it returned shape {tuple(result.shape)}",
            attr="objective",
        )
    if result.dtype != ndx.float32:
        if not ndx.isdtype(result.dtype, "real floating"):
            raise ValidationError(
                f"objective {name} must return a floating-point scalar (got {result.dtype})",
                attr="objective",
            )
        result = ndx.astype(result, ndx.float32)
    try:
        model = ndx.build(args, {"loss": result})
    except Exception as err:
        raise ValidationError(
            f"objective {name} could not be built into ONNX: {err}", attr="objective"
        ) from err
    versions = {o.domain: o.version for o in model.opset_import}
    if versions.get("", opset) > opset:
        raise ValidationError(
            f"objective {name} traced to ONNX opset {versions['']}, newer than {opset}",
            attr="objective",
        )
    return model


def _is_list(shapes):
    return isinstance(shapes, _ShapeList)


class _ShapeList(list):
    """Marks a tuple-of-probes objective (given lists even for one probe)."""


def as_list(shapes):
    return _ShapeList(shapes)


def inline(g, model, inputs, prefix):
    """Copy ``model``'s graph into GraphBuilder ``g``; returns the loss value name.

    ``inputs`` maps the traced model's input names to values of ``g``.
    """
    model = compose.add_prefix(model, prefix, inplace=False)
    graph = model.graph
    for inp in graph.input:
        original = inp.name[len(prefix) :]
        g.nodes.append(
            helper.make_node(
                "Identity", [inputs[original]], [inp.name], name=g.unique(f"n_{inp.name}")
            )
        )
        g.claim(inp.name)
    for init in graph.initializer:
        g.claim(init.name)
        g.initializers[init.name] = init
    for node in graph.node:
        g.reserve(node.output)
        g.nodes.append(node)
    for fn in model.functions:
        g.functions.append(fn)
    for opset in model.opset_import:
        if opset.domain not in ("", "ai.onnx"):
            g.extra_opsets[opset.domain] = opset.version
    return graph.output[0].name
