"""``Simulator.train`` and ``Simulator.loss``, and saving, loading and freezing parameters.

How training works (NengoDL's semantics, on onnxruntime-training):

1. The forward graph of ``m`` unrolled steps (``m = truncation`` or ``n_steps``)
   is emitted with ``training=True`` (spiking neurons take their rate form, see
   `nengo_onnx.configure_settings`), loss nodes for the objectives are added
   (graph output 0 is the float32 scalar loss), and onnxruntime-training builds
   the gradient graph (``generate_artifacts``) with the trainable parameters'
   initializers as ``requires_grad``.
2. Each minibatch starts from the simulator's initial state; each window of
   ``m`` steps (the last one may be shorter) gets the final state of the one
   before it, and the gradients of all windows are summed before one
   optimizer step (truncated BPTT; with ``truncation=None`` or ``>= n_steps``
   it is full BPTT). A window's objective is weighted by its share of the steps,
   so that for the mean-type objectives the sum over windows is the objective of
   the whole sequence.
3. The optimizer (`nengo_onnx.optimizers`) updates the parameters in place, in
   onnxruntime's own buffers. At the end, the trained values are written back
   into the simulator (``sim.signals.values``), so that ``sim.data``, ``run``,
   probes, `save_params` and `freeze_params` see them.

``sim.loss`` runs the network exactly as ``run`` does (spiking neurons spike),
from the initial state, on each minibatch, and evaluates the objectives with
numpy (the same array-API functions that were traced for training).
"""

import gc
import glob
import json
import numbers
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import nengo
from nengo.ensemble import Neurons
from nengo.exceptions import SimulationError, SimulatorClosed, ValidationError
from nengo.utils.progress import Progress, ProgressTracker
from onnx import TensorProto, helper

from . import _ort, trainable
from .compiler import emit_block
from .config import get_setting
from .objectives import mse, objective_name, takes_targets
from .onnx_graph import DEFAULT_OPSET, GraphBuilder
from .optimizers import Optimizer
from .passes.unroll import unroll, unrolled_order
from .runtime import RANDOM_PREFIX, Runtime
from .signals import sanitize

#: File name written by ``train(..., profile=True)`` (in the working directory).
PROFILE_FILE = "nengo_onnx_profile.json"


class ParamsMismatchError(SimulationError, ValidationError):
    """Saved parameters that do not fit the simulator's network."""

    def __init__(self, msg):
        ValidationError.__init__(self, msg, attr="path")


# -- data and objectives ---------------------------------------------------------------------


@dataclass
class Term:
    """One objective: ``fn`` applied to the outputs (and targets) of ``probes``."""

    probes: tuple
    fn: object  # callable, or None: the targets are dL/dy
    tuple_key: bool

    @property
    def takes_targets(self):
        return self.fn is None or takes_targets(self.fn)

    @property
    def name(self):
        return objective_name(self.fn)


@dataclass
class Data:
    n_inputs: int
    n_steps: int
    inputs: dict  # input name -> float array [n_inputs, n_steps, size]
    targets: dict  # probe -> float array [n_inputs, n_steps, size]
    terms: list = field(default_factory=list)

    def probes(self):
        seen = []
        for term in self.terms:
            seen.extend(p for p in term.probes if p not in seen)
        return seen


def _check_open(sim):
    if sim.closed:
        raise SimulatorClosed("Cannot use a closed Simulator.")


def _describe(obj):
    return f"{type(obj).__name__} {obj}"


def validate_data(sim, data, objective=None):
    """Check ``data`` and ``objective`` against the network; returns a `Data`.

    Every problem is a ``ValidationError`` that says what was expected.
    """
    if not isinstance(data, Mapping) or len(data) == 0:
        raise ValidationError(
            "data must be a non-empty dict {input Node: (n_inputs, n_steps, node.size_out) "
            "array, Probe: (n_inputs, n_steps, probe.size_in) array}", attr="data", obj=sim)
    probes = set(sim.model.probes)
    inputs, targets, sizes = {}, {}, {}
    for obj, value in data.items():
        if isinstance(obj, nengo.Probe):
            if obj not in probes:
                raise ValidationError(
                    f"{obj} is not a probe of this simulator's network", attr="data", obj=sim)
            expected, what = obj.size_in, "probe.size_in"
        elif isinstance(obj, nengo.Node):
            if obj not in sim._input_names:
                if sim.network is not None and obj in sim.network.all_nodes:
                    raise ValidationError(
                        f"{obj} is not an input Node (it has size_in={obj.size_in}); data "
                        "can only be given for Nodes with size_in == 0", attr="data", obj=sim)
                raise ValidationError(f"{obj} is not a Node of this simulator's network",
                                      attr="data", obj=sim)
            expected, what = obj.size_out, "node.size_out"
        else:
            raise ValidationError(
                f"data keys must be input Nodes or Probes (got {_describe(obj)})",
                attr="data", obj=sim)
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiub":
            raise ValidationError(f"data for {obj} has dtype {arr.dtype}; expected numbers",
                                  attr="data", obj=sim)
        if arr.ndim != 3 or arr.shape[2] != expected or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValidationError(
                f"data for {obj} has shape {arr.shape}; expected (n_inputs, n_steps, "
                f"{what}) = (n_inputs, n_steps, {expected})", attr="data", obj=sim)
        if not np.all(np.isfinite(arr)):
            raise ValidationError(f"data for {obj} contains NaN or inf", attr="data", obj=sim)
        sizes[obj] = arr.shape[:2]
        arr = np.ascontiguousarray(arr, dtype=np.float64 if arr.dtype == np.float64
                                   else np.float32)
        if isinstance(obj, nengo.Probe):
            targets[obj] = arr
        else:
            inputs[sim._input_names[obj]] = arr

    (first, (n_inputs, n_steps)), *rest = sizes.items()
    for obj, (n, k) in rest:
        if k != n_steps:
            raise ValidationError(
                f"data for {obj} has {k} steps but data for {first} has {n_steps}; every "
                "entry must have the same n_steps (axis 1)", attr="data", obj=sim)
        if n != n_inputs:
            raise ValidationError(
                f"data for {obj} has {n} inputs but data for {first} has {n_inputs}; every "
                "entry must have the same n_inputs (axis 0)", attr="data", obj=sim)
    batch = sim.minibatch_size or 1
    if n_inputs % batch != 0:
        raise ValidationError(
            f"n_inputs ({n_inputs}) must be divisible by minibatch_size ({batch})",
            attr="data", obj=sim)
    result = Data(n_inputs, n_steps, inputs, targets)
    result.terms = _terms(sim, objective, targets)
    return result


def _terms(sim, objective, targets):
    if objective is None or callable(objective) and not isinstance(objective, Mapping):
        fn = mse if objective is None else objective
        if not targets:
            raise ValidationError(
                "data has no targets (Probe entries), so there is nothing to optimize; give "
                "targets for some probe, or an objective dict for probes that need none",
                attr="data", obj=sim)
        return [Term((p,), fn, False) for p in targets]
    if not isinstance(objective, Mapping):
        raise ValidationError(
            f"objective must be a dict {{probe or tuple of probes: function or None}}, a "
            f"function, or None (got {type(objective).__name__})", attr="objective", obj=sim)
    if len(objective) == 0:
        raise ValidationError("objective is an empty dict", attr="objective", obj=sim)
    probes = set(sim.model.probes)
    terms = []
    for key, fn in objective.items():
        tuple_key = isinstance(key, (tuple, list))
        keys = tuple(key) if tuple_key else (key,)
        if not keys:
            raise ValidationError("objective has an empty tuple of probes", attr="objective",
                                  obj=sim)
        for probe in keys:
            if not isinstance(probe, nengo.Probe) or probe not in probes:
                raise ValidationError(
                    f"objective keys must be probes of this simulator's network (or tuples "
                    f"of them); got {_describe(probe)}", attr="objective", obj=sim)
        if fn is not None and not callable(fn):
            raise ValidationError(
                f"the objective for {key} must be a function or None (got {fn!r})",
                attr="objective", obj=sim)
        term = Term(keys, fn, tuple_key)
        if term.takes_targets:
            for probe in keys:
                if probe not in targets:
                    raise ValidationError(
                        f"{probe} has the objective {term.name}, which needs targets, but "
                        f"data has no targets for it (expected data[{probe}] of shape "
                        f"(n_inputs, n_steps, {probe.size_in}))", attr="data", obj=sim)
        terms.append(term)
    return terms


def numpy_loss(terms, outputs, targets):
    """The summed objectives on numpy ``outputs`` and ``targets`` ({probe: array}).

    ``None`` objectives (targets are dL/dy) define no loss and add nothing.
    """
    total = 0.0
    for term in terms:
        if term.fn is None:
            continue
        ys = [outputs[p] for p in term.probes]
        args = [ys if term.tuple_key else ys[0]]
        if term.takes_targets:
            ts = [np.asarray(targets[p], dtype=ys[0].dtype) for p in term.probes]
            args.append(ts if term.tuple_key else ts[0])
        try:
            value = term.fn(*args)
        except Exception as err:
            raise ValidationError(f"objective {term.name} failed on numpy arrays: "
                                  f"{type(err).__name__}: {err}", attr="objective") from err
        value = np.asarray(value)
        if value.ndim != 0:
            raise ValidationError(
                f"objective {term.name} must return a scalar; it returned shape "
                f"{value.shape}", attr="objective")
        total += float(value)
    return total


# -- the training graph ------------------------------------------------------------------------


def _settings(sim):
    return {key: get_setting(sim.network, key)
            for key in ("lif_smoothing", "spiking_gradient")}


def _forward_block(sim, n_steps, probes):
    runtime = sim.runtime
    ops = runtime.segments[0][1] if runtime.segments else []
    sub = runtime.graph.subgraph(ops)
    steps = list(unrolled_order(unroll(sub, n_steps)))
    return emit_block(
        steps, sim.signals, n_steps=n_steps, minibatch_size=runtime.B, dtype=np.float32,
        dt=sim.dt, probes=[(sim._probe_keys[p], sim.model.sig[p]["in"]) for p in probes],
        training=True, settings=_settings(sim),
    )


def _names_in(model):
    graph = model.graph
    names = {v.name for v in list(graph.input) + list(graph.output)}
    names.update(init.name for init in graph.initializer)
    for node in graph.node:
        names.update(node.output)
        names.add(node.name)
    return names


def _chain_add(g, values):
    total = values[0]
    for value in values[1:]:
        total = g.node("Add", [total, value])
    return total


def _emit_term(g, term, index, outputs, targets, shapes):
    """Loss nodes of one objective; returns the scalar value's name."""
    if term.fn is None:  # targets are dL/dy: sum(y * g) has exactly that gradient
        parts = [g.node("ReduceSum", [g.node("Mul", [y, t])], keepdims=0)
                 for y, t in zip(outputs, targets)]
        return _chain_add(g, parts)
    direct = getattr(term.fn, "_onnx", None)
    if direct is not None and not term.tuple_key:
        try:
            return direct(g, outputs[0], targets[0] if term.takes_targets else None)
        except ValidationError:
            raise
    from .tracing import as_list, inline, trace  # noqa: PLC0415

    out_shapes = as_list(shapes) if term.tuple_key else shapes
    model = trace(term.fn, out_shapes, shapes if term.takes_targets else None, g.opset)
    mapping = {f"y{i}": y for i, y in enumerate(outputs)}
    if term.takes_targets:
        mapping.update({f"t{i}": t for i, t in enumerate(targets)})
    return inline(g, model, mapping, prefix=f"objective{index}.")


def add_loss(model, block, terms, probe_keys, batch, param_names=()):
    """Add the objectives' loss nodes to ``model``.

    New inputs: ``target.<probe>`` ``[B, K, size]`` per probe with targets and
    ``loss_scale`` (a scalar multiplying the non-``None`` objectives). New
    outputs, first: ``train_loss`` (what is differentiated) and ``loss`` (the
    reported loss, without the ``None`` objectives); then the state outputs
    (probe outputs are dropped). Every name in ``param_names`` that the loss does
    not reach gets a zero term (``0 * sum(P)``), so that onnxruntime-training
    accepts it as a parameter: every window length then trains the same set.
    Returns ``{probe: target input name}``.
    """
    graph = model.graph
    g = GraphBuilder(name="loss", opset=DEFAULT_OPSET)
    g._used = _names_in(model)
    probe_out = {key: out for key, out, _ in block.probes}
    B, K = batch, block.n_steps
    shapes = {}
    for probe, key in probe_keys.items():
        shapes[probe] = next(shape for k, _, shape in block.probes if k == key)
    target_inputs = {}
    for term in terms:
        if not term.takes_targets:
            continue
        for probe in term.probes:
            if probe not in target_inputs:
                name = g.unique(f"target.{sanitize(probe_keys[probe])}")
                g.input(name, np.float32, [B, K, *shapes[probe]])
                target_inputs[probe] = name
    scale = g.input(g.unique("loss_scale"), np.float32, [])
    train_parts, report_parts = [], []
    for i, term in enumerate(terms):
        outputs = [probe_out[probe_keys[p]] for p in term.probes]
        targets = [target_inputs[p] for p in term.probes] if term.takes_targets else None
        term_shapes = [[B, K, *shapes[p]] for p in term.probes]
        value = _emit_term(g, term, i, outputs, targets, term_shapes)
        if term.fn is None:
            train_parts.append(value)
        else:
            value = g.node("Mul", [value, scale])
            train_parts.append(value)
            report_parts.append(value)
    train_loss = _chain_add(g, train_parts)
    inits = {init.name for init in graph.initializer}
    reach = reachable_initializers(model, None, extra_nodes=g.nodes, start=train_loss)
    unreached = [name for name in param_names if name in inits and name not in reach]
    if unreached:
        sums = [g.node("ReduceSum", [name], keepdims=0) for name in unreached]
        zero = g.node("Mul", [_chain_add(g, sums), g.const(np.float32(0.0))])
        train_loss = g.node("Add", [train_loss, zero])
    report = _chain_add(g, report_parts) if report_parts else g.const(np.float32(0.0))
    train_name = g.unique("train_loss")
    report_name = g.unique("loss")
    g.nodes.append(helper.make_node("Identity", [train_loss], [train_name],
                                    name=g.unique("n_train_loss")))
    g.nodes.append(helper.make_node("Identity", [report], [report_name],
                                    name=g.unique("n_loss")))

    graph.node.extend(g.nodes)
    graph.initializer.extend(g.initializers.values())
    graph.input.extend(g.inputs)
    model.functions.extend(g.functions)
    for domain, version in g.extra_opsets.items():
        model.opset_import.append(helper.make_opsetid(domain, version))
    states = [o for o in graph.output if o.name.startswith("state_out.")]
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(train_name, TensorProto.FLOAT, []),
        helper.make_tensor_value_info(report_name, TensorProto.FLOAT, []),
    ] + states)
    return target_inputs


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


@dataclass
class Compiled:
    """A training (or, without parameters, evaluation) graph for one window length."""

    n_steps: int
    state: list  # (base, input name, output name)
    step_inputs: dict
    targets: dict  # probe -> input name
    scale_name: str
    input_names: list
    module: object = None
    session: object = None  # no trainable parameters: forward and loss only
    checkpoint: object = None  # the CheckpointState holding the parameters
    params: tuple = ()

    def __call__(self, feeds):
        if self.module is not None:
            self.module.lazy_reset_grad()
            return self.module(*[feeds[name] for name in self.input_names])
        return self.session.run(None, feeds)


class TrainingState:
    """What a simulator keeps between `train` calls (compiled graphs, parameters)."""

    def __init__(self):
        self.compiled = {}  # key -> Compiled
        self.rng = None
        self.summary_calls = 0
        self.summary_step = 0
        self.run_dir = None


def _training_state(sim):
    state = getattr(sim, "_nengo_onnx_training", None)
    if state is None:
        state = TrainingState()
        sim._nengo_onnx_training = state
    return state


def _objective_key(terms):
    return tuple((term.probes, term.fn, term.tuple_key) for term in terms)


def compile_window(sim, n_steps, terms, param_names, session_options=None, cache=True):
    """The `Compiled` graph of ``n_steps`` for ``terms`` (cached on ``sim``)."""
    tstate = _training_state(sim)
    key = (n_steps, _objective_key(terms), tuple(param_names))
    if cache and key in tstate.compiled:
        return tstate.compiled[key]
    probes = []
    for term in terms:
        probes.extend(p for p in term.probes if p not in probes)
    probe_keys = {p: sim._probe_keys[p] for p in probes}
    block = _forward_block(sim, n_steps, probes)
    model = block.model
    _add_missing_params(sim, model, param_names)
    prepare_for_gradients(model, param_names)
    targets = add_loss(model, block, terms, probe_keys, sim.runtime.B, param_names)
    check_differentiable(model, param_names, terms)
    input_names = [i.name for i in model.graph.input]
    scale_name = next(n for n in input_names if n.startswith("loss_scale"))
    compiled = Compiled(n_steps, block.state, block.step_inputs, targets, scale_name,
                        input_names)
    if not param_names:
        compiled.session = _ort.inference_session(model.SerializeToString(),
                                                  threads=sim.runtime.threads)
    else:
        compiled.module, compiled.checkpoint = _build_module(
            sim, model, tuple(param_names), session_options, terms)
        compiled.params = tuple(param_names)
        compiled.input_names = list(compiled.module.input_names())
    if cache:
        tstate.compiled[key] = compiled
    return compiled


#: ONNX ops without a gradient builder in onnxruntime-training 1.19 (shared notes,
#: 2.1); ``If``/``Loop``/``Scan`` on the gradient path can even abort the process.
NO_GRADIENT = {
    "Sum", "Mean", "Einsum", "CumSum", "Floor", "Ceil", "Round", "Sign", "Mod", "Softplus",
    "Elu", "Selu", "Softsign", "HardSigmoid", "ReduceMax", "ReduceMin", "ReduceProd",
    "ArgMax", "ArgMin", "Scan", "Loop", "If",
}


def check_differentiable(model, param_names, terms):
    """Raise before onnxruntime does (or crashes) on ops without gradients.

    Looks at the nodes between the parameters and the loss (output 0); a node of
    an objective (named ``objective<i>.``) is reported with the objective's name.
    """
    registered = set(getattr(_ort, "REGISTERED_GRADIENTS", ()))
    graph = model.graph
    dependent = set(param_names)
    for node in graph.node:
        if any(name in dependent for name in _all_inputs(node)):
            dependent.update(node.output)
    needed = reachable_nodes(model, graph.output[0].name)
    for node in graph.node:
        if (node.domain in ("", "ai.onnx") and node.op_type in NO_GRADIENT
                and node.op_type not in registered and id(node) in needed
                and any(name in dependent for name in _all_inputs(node))):
            match = re.match(r"objective(\d+)\.", node.name or node.output[0])
            if match:
                raise ValidationError(
                    f"objective {terms[int(match.group(1))].name} uses {node.op_type}, which "
                    "has no gradient in onnxruntime-training, so it cannot be trained with",
                    attr="objective")
            raise SimulationError(
                f"the training graph needs the gradient of {node.op_type} (from "
                f"{node.doc_string or node.name}), which onnxruntime-training does not have")


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
    """``id()`` of the nodes that graph value ``output`` depends on."""
    producers = {out: node for node in model.graph.node for out in node.output}
    seen, found, stack = set(), set(), [output]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producers.get(name)
        if node is not None and id(node) not in found:
            found.add(id(node))
            stack.extend(_all_inputs(node))
    return found


def _add_missing_params(sim, model, param_names):
    """Give ``model`` an initializer for every parameter it does not use (a pass may
    have removed its reader), so that all graphs share one set of parameters."""
    from onnx import numpy_helper  # noqa: PLC0415

    present = {init.name for init in model.graph.initializer}
    by_name = {sim.signals.name(base): base for base in _static_bases(sim)}
    for name in param_names:
        if name not in present:
            value = sim.signals.initial_value(by_name[name], np.float32)
            model.graph.initializer.append(numpy_helper.from_array(value, name))


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
    4. Two ``Concat`` nodes with the same constant input (after onnxruntime folds
       and merges constants) fail with ``Duplicate definition of name (C_grad)``:
       a Concat of constant and computed parts becomes ``Add(Concat(constant
       parts, zeros), Pad(computed part), ...)``.
    """
    from onnx import shape_inference  # noqa: PLC0415

    graph = model.graph
    shapes = _shapes(shape_inference.infer_shapes(model).graph)
    for node in graph.node:
        if node.op_type == "Transpose" and not any(a.name == "perm" for a in node.attribute):
            shape = shapes.get(node.input[0])
            if shape is not None:
                node.attribute.append(
                    helper.make_attribute("perm", list(range(len(shape)))[::-1]))
    _unfuse_slices(model, shapes)
    _split_constant_concats(model, shapes, param_names)
    nodes, counter = [], 0
    for node in graph.node:
        seen = set()
        for i, name in enumerate(node.input):
            if name and name in seen:
                counter += 1
                copy = f"{name}.copy{counter}"
                nodes.append(helper.make_node("Identity", [name], [copy],
                                              name=f"n_{name}.copy{counter}"))
                node.input[i] = copy
            seen.add(name)
        nodes.append(node)
    if counter:
        del graph.node[:]
        graph.node.extend(nodes)


def _shapes(graph):
    """Static shapes (lists, None for unknown dims) of the values of a graph."""
    shapes = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None
                                  for d in tensor.shape.dim]
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
        return axis, list(range(*slice(int(starts[0]), int(ends[0]),
                                       int(steps[0])).indices(shape[axis])))
    index = const(node.input[1])
    if index is None or index.size != 1:
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0) % rank
    if shape[axis] is None:
        return None
    return axis, [int(index.ravel()[0]) % shape[axis]]


def _unfuse_slices(model, shapes):
    from onnx import numpy_helper  # noqa: PLC0415

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
        graph.initializer.append(numpy_helper.from_array(
            np.full(full_shape, index[0], dtype=np.int64), name))
        squeeze = len(out_shape) < len(shape)
        node.op_type = "GatherElements"
        del node.input[:]
        node.input.extend([data, name])
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("axis", axis))
        if squeeze:
            kept = f"{out}.kept"
            node.output[0] = kept
            nodes.append(helper.make_node("Reshape", [kept, _shape_const(graph, out_shape)],
                                          [out], name=f"n_{out}.reshape"))
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


def _split_constant_concats(model, shapes, param_names):
    from onnx import numpy_helper  # noqa: PLC0415

    graph = model.graph
    const = _constant_values(graph, param_names)
    nodes = []
    for node in graph.node:
        parts = list(node.input)
        if (node.op_type != "Concat" or not any(p in const for p in parts)
                or all(p in const for p in parts)):
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
                graph.initializer.append(numpy_helper.from_array(
                    np.zeros(shape, dtype=np.float32), zeros))
                filled.append(zeros)
                pads = [0] * (2 * rank)
                pads[axis], pads[rank + axis] = offset, total - offset - shape[axis]
                pads_name = f"{out}.pads{i}"
                graph.initializer.append(numpy_helper.from_array(np.asarray(pads, np.int64),
                                                                 pads_name))
                padded.append(f"{out}.padded{i}")
                nodes.append(helper.make_node("Pad", [part, pads_name], [padded[-1]],
                                              name=f"n_{out}.pad{i}", mode="constant"))
            offset += shape[axis]
        total_name = f"{out}.constant_parts"
        nodes.append(helper.make_node("Concat", filled, [total_name], axis=axis,
                                      name=f"n_{out}.constant_parts"))
        value = total_name
        for i, part in enumerate(padded):
            name = out if i == len(padded) - 1 else f"{out}.sum{i}"
            nodes.append(helper.make_node("Add", [value, part], [name], name=f"n_{name}.add"))
            value = name
    del graph.node[:]
    graph.node.extend(nodes)


def _shape_const(graph, shape):
    from onnx import numpy_helper  # noqa: PLC0415

    name = "shape." + "x".join(str(d) for d in shape)
    if not any(init.name == name for init in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(np.asarray(shape, np.int64), name))
    return name


def _static_bases(sim):
    return [p.signal(sim.model).base for p in trainable.all_params(sim.model, sim.network)]


def _build_module(sim, model, names, session_options, terms):
    ort_training = _ort.import_training()
    tmp = tempfile.mkdtemp(prefix="nengo_onnx_train_")
    try:
        try:
            ort_training.artifacts.generate_artifacts(
                model, requires_grad=list(names), frozen_params=[], loss=None,
                optimizer=None, artifact_directory=tmp)
        except Exception as err:  # noqa: BLE001
            objectives = ", ".join(t.name for t in terms)
            raise SimulationError(
                f"onnxruntime-training could not build the gradient graph of the "
                f"objectives ({objectives}): {err}") from err
        # every Module gets its own CheckpointState: a Module built on a shared state
        # re-allocates the gradient buffers, and the Modules built before it then
        # accumulate into buffers that ``state.parameters[...].grad`` no longer shows
        state = ort_training.api.CheckpointState.load_checkpoint(
            os.path.join(tmp, "checkpoint"))
        so = session_options or _ort.session_options(threads=sim.runtime.threads)
        module = ort_training.api.Module(os.path.join(tmp, "training_model.onnx"), state,
                                         session_options=so)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return module, state


# -- parameters in the simulator ---------------------------------------------------------------


@dataclass
class ParamGroup:
    """A trainable base signal: its ONNX name and which of its elements train."""

    base: object
    name: str
    mask: object = None  # bool array (shaped like base) or None: all elements train


def param_groups(sim, params=None):
    params = trainable.trainable_params(sim) if params is None else params
    by_base = {}
    for param in params:
        sig = param.signal(sim.model)
        by_base.setdefault(sig.base, []).append(sig)
    groups = []
    for base, sigs in by_base.items():
        mask = trainable.element_mask(base, sigs)
        groups.append(ParamGroup(base, sim.signals.name(base), None if mask.all() else mask))
    return sorted(groups, key=lambda grp: grp.name)


def refresh(sim):
    """Make ``sim.data`` and the inference graphs use the values in ``sim.signals``."""
    update_built_params(sim)
    runtime = sim.runtime
    invalidate = getattr(runtime, "invalidate", None)
    if invalidate is not None:
        invalidate()
    else:
        runtime._blocks.clear()
        if not runtime.unrolled and runtime._compiled_segments is not None:
            old = getattr(runtime, "_host_segments", None)
            runtime._compiled_segments = None
            rng, runtime.rng = getattr(runtime, "rng", None), np.random.RandomState(0)
            try:
                new = runtime._segments(runtime.rng)
            finally:
                runtime.rng = rng
            if old is not None:
                runtime._host_segments = [o if kind == "host" else n for (kind, o), (_, n)
                                          in zip(old, new)]
    _training_state(sim).compiled.clear()  # their frozen constants may have changed


def update_built_params(sim):
    """Replace ``sim.model.params`` entries with the current (trained) values."""
    model, signals = sim.model, sim.signals
    for param in trainable.all_params(model, sim.network):
        sig = param.signal(model)
        if sig.base not in signals.values:
            continue
        value = trainable.read(signals, sig)
        if param.key == "encoders":
            ens = param.obj
            built = model.params[ens]
            gain = np.asarray(built.gain, dtype=np.float64)
            safe = np.where(gain == 0, 1.0, gain)
            unchanged = (gain[:, None] == 0) | (value == built.scaled_encoders)
            encoders = np.where(unchanged, built.encoders, value * ens.radius / safe[:, None])
            model.params[ens] = built._replace(scaled_encoders=value, encoders=encoders)
        elif param.key == "bias":
            ens = param.obj.ensemble
            model.params[ens] = model.params[ens]._replace(bias=value)
        elif param.key == "weights":
            model.params[param.obj] = model.params[param.obj]._replace(weights=value)


# -- train -------------------------------------------------------------------------------------


def _check_count(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValidationError(f"must be a positive integer (got {value!r})", attr=name)
    return int(value)


def _initial_state(sim, compiled):
    batch = sim.runtime.B
    state = {}
    for base, in_name, _ in compiled.state:
        value = sim.signals.initial_value(base, np.float32)
        if sim.signals.batched(base):
            value = np.broadcast_to(value, (batch, *value.shape))
        state[in_name] = np.array(value)
    return state


class _Feeder:
    """The per-step inputs of a training window: data, time-only values, noise."""

    def __init__(self, sim, data, rng):
        from .host import TimeFeeder  # noqa: PLC0415

        self.sim, self.data, self.rng = sim, data, rng
        feeds = sim.graph.graph.get("feeds", {})
        feeder = TimeFeeder(feeds, sim.model, sim.dt)
        feeder.reset(np.random.RandomState(sim.seed))
        keys = [k for k in feeds if k not in data.inputs]
        self.computed = {k: v.astype(np.float32) for k, v in
                         feeder.all_values(keys, 0, data.n_steps).items()}

    def __call__(self, compiled, idx, start, n):
        batch = len(idx)
        feeds = {}
        for key, (shape, dtype) in compiled.step_inputs.items():
            if key in self.data.inputs:
                value = self.data.inputs[key][idx, start:start + n]
            elif key in self.computed:
                value = np.broadcast_to(self.computed[key][start:start + n][None],
                                        (batch, n, *shape))
            elif key.startswith(RANDOM_PREFIX):
                value = self.rng.random_sample((batch, n, *shape))
            else:
                raise SimulationError(f"no value for the training graph's input {key!r}")
            feeds[key] = np.ascontiguousarray(value, dtype=dtype)
        for probe, name in compiled.targets.items():
            feeds[name] = np.ascontiguousarray(self.data.targets[probe][idx, start:start + n],
                                               dtype=np.float32)
        feeds[compiled.scale_name] = np.array(n / self.data.n_steps, dtype=np.float32)
        return feeds


def _windows(n_steps, truncation):
    m = n_steps if truncation is None else min(truncation, n_steps)
    return [(start, min(m, n_steps - start)) for start in range(0, n_steps, m)]


def _check_trainable_network(sim):
    if not sim.runtime.unrolled:
        host = [type(op).__name__ for kind, item in sim.runtime.segments if kind == "host"
                for op in (item if isinstance(item, (list, tuple)) else [item])]
        raise SimulationError(
            "cannot train this network: some operators have no ONNX form and run in "
            f"Python ({', '.join(sorted(set(host))) or 'host operators'}), so the "
            "training graph cannot be differentiated")


def _check_optimizer(optimizer):
    if not isinstance(optimizer, Optimizer) and not callable(getattr(optimizer, "apply", None)):
        raise ValidationError(
            "optimizer must be a nengo_onnx.optimizers optimizer, e.g. "
            f"nengo_onnx.optimizers.Adam() (got {optimizer!r})", attr="optimizer")


def train(sim, data, optimizer, n_epochs=1, objective=None, truncation=None, summaries=None,
          shuffle=True, profile=False):
    """Optimize the network's parameters to minimize ``objective`` on ``data``.

    Parameters
    ----------
    data : dict
        ``{input Node: (n_inputs, n_steps, node.size_out), Probe: (n_inputs,
        n_steps, probe.size_in)}``: inputs override Nodes (those without data keep
        their output); probe entries are targets.
    optimizer : `nengo_onnx.optimizers.Optimizer`
        E.g. ``Adam(1e-3)`` or ``SGD(1e-2, momentum=0.9, nesterov=True)``.
    n_epochs : int
        Passes through the data.
    objective : dict, function or None
        ``{probe or tuple of probes: f}``; ``f(outputs, targets)`` or
        ``f(outputs)``, or ``None`` (targets are dL/dy). Default: mean squared
        error on every probe with targets.
    truncation : int or None
        Truncated BPTT over windows of this many steps (None: full BPTT).
    summaries : list
        ``"loss"``, Connections, Ensembles and Neurons to log to TensorBoard
        (needs ``Simulator(..., tensorboard=dir)``).
    shuffle : bool
        Shuffle the inputs into new minibatches each epoch (seeded by ``sim.seed``).
    profile : bool or str
        Write onnxruntime's profile (Chrome trace JSON) to ``nengo_onnx_profile.json``
        or to the given file name.

    Returns
    -------
    dict
        ``{"loss": [mean loss of each epoch]}``.
    """
    _check_open(sim)
    _check_optimizer(optimizer)
    n_epochs = _check_count("n_epochs", n_epochs)
    truncation = _check_count("truncation", truncation, allow_none=True)
    if profile is not None and not isinstance(profile, (bool, str, os.PathLike)):
        raise ValidationError(f"must be a bool or a file name (got {profile!r})",
                              attr="profile")
    data = validate_data(sim, data, objective)
    _check_trainable_network(sim)
    writer, tags = _summary_writer(sim, summaries)
    groups = param_groups(sim)
    names = tuple(grp.name for grp in groups)
    windows = _windows(data.n_steps, truncation)
    profile_dir = tempfile.mkdtemp(prefix="nengo_onnx_profile_") if profile else None
    so = (_ort.session_options(threads=sim.runtime.threads,
                               profile_prefix=os.path.join(profile_dir, "train"))
          if profile else None)
    try:
        compiled = {n: compile_window(sim, n, data.terms, names, session_options=so,
                                      cache=not profile)
                    for n in sorted({n for _, n in windows})}
        history = _train_loop(sim, data, optimizer, n_epochs, shuffle, windows, compiled,
                              groups, writer, tags)
    finally:
        if writer is not None:
            writer.close()
    if profile:
        del compiled
        gc.collect()
        _write_profile(profile_dir, PROFILE_FILE if profile is True else os.fspath(profile))
    refresh(sim)
    return history


class Parameters:
    """The trainable parameters during training, in onnxruntime's buffers.

    The optimizer updates the buffers of the first window's graph (the primary);
    a graph of another window length (the last, shorter window of truncated
    BPTT) has its own buffers, brought up to date just before it runs.
    """

    def __init__(self, compiled, primary, groups):
        self.primary = primary
        state = primary.checkpoint
        self.views = [] if state is None else [(g, state.parameters[g.name]) for g in groups]
        self.version = 0
        self._synced = {}

    def load(self, sim):
        """Copy the simulator's current values in."""
        for grp, param in self.views:
            param.data[...] = sim.signals.initial_value(grp.base, np.float32)
        self.changed()

    def changed(self):
        self.version += 1

    def prepare(self, comp):
        if comp is self.primary or comp.checkpoint is None:
            return
        if self._synced.get(id(comp)) != self.version:
            for grp, param in self.views:
                comp.checkpoint.parameters[grp.name].data[...] = param.data
            self._synced[id(comp)] = self.version

    def store(self, sim):
        """Write the trained values back into the simulator (float64)."""
        for grp, param in self.views:
            value = np.array(param.data, dtype=np.float64)
            if grp.mask is not None:  # untrained elements keep their exact values
                value = np.where(grp.mask, value, trainable.base_value(sim.signals, grp.base))
            sim.signals.values[grp.base] = value


def _train_loop(sim, data, optimizer, n_epochs, shuffle, windows, compiled, groups, writer,
                tags):
    tstate = _training_state(sim)
    if tstate.rng is None:
        tstate.rng = np.random.RandomState(sim.seed)
    rng = tstate.rng
    feeder = _Feeder(sim, data, rng)
    first = compiled[windows[0][1]]
    parameters = Parameters(compiled, first, groups)
    parameters.load(sim)  # the simulator's values are the truth between calls
    params = parameters.views
    frozen = {grp.name: param.data[~grp.mask].copy() for grp, param in params
              if grp.mask is not None}
    grads = {grp.name: np.zeros(param.data.shape, dtype=np.float32) for grp, param in params}
    batch = sim.runtime.B
    n_batches = data.n_inputs // batch
    initial = _initial_state(sim, first)
    history = {"loss": []}
    for epoch in range(n_epochs):
        order = rng.permutation(data.n_inputs) if shuffle else np.arange(data.n_inputs)
        progress = Progress(f"Training epoch {epoch + 1}/{n_epochs}",
                            f"Training epoch {epoch + 1}/{n_epochs}", n_batches)
        losses = []
        with ProgressTracker(sim.progress_bar, progress) as tracker:
            for b in range(n_batches):
                idx = order[b * batch:(b + 1) * batch]
                loss = _train_minibatch(feeder, compiled, windows, idx, initial, parameters,
                                        grads)
                if not np.isfinite(loss):
                    raise SimulationError(
                        f"the loss became {loss} in epoch {epoch + 1}, minibatch {b + 1}; "
                        "try a smaller learning rate")
                if params:
                    for grp, param in params:
                        if grp.mask is not None:
                            grads[grp.name][~grp.mask] = 0
                    optimizer.apply([grads[grp.name] for grp, _ in params],
                                    [param.data for _, param in params],
                                    keys=[grp.name for grp, _ in params])
                    for grp, param in params:
                        if grp.mask is not None:
                            param.data[~grp.mask] = frozen[grp.name]
                    parameters.changed()
                losses.append(loss)
                _write_summaries(sim, writer, tags, loss, params)
                mean = float(np.mean(losses))
                tracker.total_progress.name_during = (
                    f"Training epoch {epoch + 1}/{n_epochs} (loss: {mean:.4g})")
                tracker.total_progress.step()
            progress.name_after = f"Training epoch {epoch + 1}/{n_epochs}: loss {mean:.4g}"
        history["loss"].append(mean)
    parameters.store(sim)
    return history


def _train_minibatch(feeder, compiled, windows, idx, initial, parameters, grads):
    """Forward and backward over the windows of one minibatch; sums the gradients."""
    state = dict(initial)
    loss = 0.0
    for w, (start, n) in enumerate(windows):
        comp = compiled[n]
        parameters.prepare(comp)
        feeds = feeder(comp, idx, start, n)
        feeds.update(state)
        outputs = comp(feeds)
        loss += float(outputs[1])
        for (_, in_name, _), value in zip(comp.state, outputs[2:]):
            state[in_name] = value
        for grp, _ in parameters.views:
            grad = comp.checkpoint.parameters[grp.name].grad
            if w == 0:
                grads[grp.name][...] = grad
            else:
                grads[grp.name] += grad
    return loss


def gradients(sim, data, objective=None, truncation=None):
    """The gradients of the objective w.r.t. the trainable parameters, for checks.

    Runs the training graph on all of ``data`` as one minibatch per
    ``minibatch_size`` items, summing (not averaging) over minibatches, without
    changing any parameter. Returns ``{Param: gradient array}`` shaped like each
    parameter (``sim.data`` values), zero where a parameter does not reach the loss.
    """
    _check_open(sim)
    truncation = _check_count("truncation", truncation, allow_none=True)
    data = validate_data(sim, data, objective)
    _check_trainable_network(sim)
    params_list = trainable.trainable_params(sim)
    groups = param_groups(sim, params_list)
    names = tuple(grp.name for grp in groups)
    windows = _windows(data.n_steps, truncation)
    compiled = {n: compile_window(sim, n, data.terms, names)
                for n in sorted({n for _, n in windows})}
    first = compiled[windows[0][1]]
    parameters = Parameters(compiled, first, groups)
    parameters.load(sim)
    feeder = _Feeder(sim, data, np.random.RandomState(sim.seed))
    grads = {grp.name: np.zeros(param.data.shape, dtype=np.float32)
             for grp, param in parameters.views}
    total = {grp.name: np.zeros(grp.base.shape) for grp in groups}
    batch = sim.runtime.B
    initial = _initial_state(sim, first)
    for b in range(data.n_inputs // batch):
        idx = np.arange(b * batch, (b + 1) * batch)
        _train_minibatch(feeder, compiled, windows, idx, initial, parameters, grads)
        for name, grad in grads.items():
            total[name] += grad
    by_base = {grp.base: total[grp.name] for grp in groups}
    return {p: trainable.read(sim.signals, p.signal(sim.model),
                              by_base[p.signal(sim.model).base]) for p in params_list}


def _write_profile(profile_dir, target):
    events = []
    for path in sorted(glob.glob(os.path.join(profile_dir, "*.json"))):
        try:
            with open(path) as f:
                events.extend(json.load(f))
        except (OSError, ValueError):
            continue
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    _atomic_write(target, lambda f: f.write(json.dumps(events).encode("utf-8")))
    shutil.rmtree(profile_dir, ignore_errors=True)


# -- summaries ---------------------------------------------------------------------------------


def _summary_writer(sim, summaries):
    if summaries is None:
        return None, None
    if isinstance(summaries, (str, nengo.base.NengoObject, Neurons)):
        summaries = [summaries]
    tags = []
    params = trainable.all_params(sim.model, sim.network)
    for item in summaries:
        if isinstance(item, str):
            if item != "loss":
                raise ValidationError(
                    f"unknown summary {item!r}: the only string summary is 'loss'",
                    attr="summaries")
            tags.append(("loss", None))
            continue
        key = {nengo.Connection: "weights", nengo.Ensemble: "encoders", Neurons: "bias"}.get(
            type(item))
        if key is None:
            raise ValidationError(
                f"summaries can be 'loss', Connections, Ensembles or Neurons (got "
                f"{_describe(item)})", attr="summaries")
        match = [p for p in params if p.obj == item and p.key == key]
        if not match:
            raise ValidationError(f"{item} has no {key} in this simulator (not in its network, "
                                  "or nothing to summarize)", attr="summaries")
        tags.append((match[0].name, match[0]))
    logdir = getattr(sim, "tensorboard", None)
    if not logdir:
        warnings.warn("summaries were requested but the Simulator was created without "
                      "tensorboard=<directory>; ignoring them")
        return None, None
    tstate = _training_state(sim)
    if tstate.run_dir is None:
        tstate.run_dir = _next_run_dir(os.fspath(logdir))
    k = tstate.summary_calls
    tstate.summary_calls += 1
    from .summaries import EventWriter  # noqa: PLC0415

    suffixed = [(tag if k == 0 else f"{tag}_{k}", param) for tag, param in tags]
    return EventWriter(tstate.run_dir, suffix=f".{k}"), suffixed


def _next_run_dir(logdir):
    from .summaries import next_run_dir  # noqa: PLC0415

    return next_run_dir(logdir)


def _write_summaries(sim, writer, tags, loss, params):
    if writer is None:
        return
    tstate = _training_state(sim)
    step = tstate.summary_step
    tstate.summary_step += 1
    live = {grp.base: param.data for grp, param in params}
    for tag, param in tags:
        if param is None:
            writer.scalar(tag, loss, step)
            continue
        sig = param.signal(sim.model)
        base = live.get(sig.base)
        writer.histogram(tag, trainable.read(sim.signals, sig, base), step)
    writer.flush()


# -- loss -------------------------------------------------------------------------------------


def _private_runtime(sim):
    """A Runtime sharing ``sim``'s compiled graphs but with its own state."""
    rt = sim.runtime
    private = Runtime(rt.graph, rt.signals, rt.probes, minibatch_size=rt.B, dtype=rt.dtype,
                      dt=rt.dt, unroll_steps=rt.K, threads=rt.threads)
    private._blocks = rt._blocks
    private._compiled_segments = rt._compiled_segments
    return private


def loss(sim, data, objective=None):
    """The objective on all of ``data`` (mean over minibatches), without training.

    The network runs as ``sim.run`` runs it (spiking neurons spike), from the
    initial state, one minibatch at a time; the objectives are evaluated with
    numpy. ``None`` objectives (targets are dL/dy) add nothing.
    """
    _check_open(sim)
    data = validate_data(sim, data, objective)
    batch = sim.runtime.B
    runtime = _private_runtime(sim)
    keys = {p: sim._probe_keys[p] for p in data.probes()}
    losses = []
    for b in range(data.n_inputs // batch):
        idx = slice(b * batch, (b + 1) * batch)
        runtime.reset(sim.seed)
        outputs = runtime.run(data.n_steps, {k: v[idx] for k, v in data.inputs.items()})
        values = {p: outputs[key] for p, key in keys.items()}
        targets = {p: t[idx] for p, t in data.targets.items()}
        losses.append(numpy_loss(data.terms, values, targets))
    return float(np.mean(losses))


# -- save, load, freeze ----------------------------------------------------------------------


def _params_path(path, for_reading=False):
    path = os.fspath(path)
    if path.endswith(".npz"):
        return path
    if for_reading and os.path.exists(path) and not os.path.exists(path + ".npz"):
        return path
    return path + ".npz"


def _atomic_write(path, write):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_params(sim, path, include_state=True):
    """Save every trainable parameter (and the simulation state) to ``path`` (``.npz``).

    The file is written atomically (a temporary file renamed into place).
    Parameters are stored per Nengo object (``"ensemble.encoders"``, ...), so they
    load into any simulator of a network with the same structure, e.g. the
    spiking version of a rate network. ``include_state`` also stores the current
    simulation state (synapse and neuron states), which is restored where it fits.
    """
    _check_open(sim)
    arrays = {}
    for param in trainable.all_params(sim.model, sim.network):
        arrays[f"param/{param.name}"] = trainable.read(sim.signals, param.signal(sim.model))
    if include_state:
        skip = {sim.model.step.base, sim.model.time.base}
        for base, value in getattr(sim.runtime, "store", {}).items():
            if base not in skip:
                arrays[f"state/{sim.signals.name(base)}"] = np.array(value)
    arrays["meta/format"] = np.array("nengo_onnx.params.v1")
    target = _params_path(path)
    _atomic_write(target, lambda f: np.savez(f, **arrays))
    return target


def load_params(sim, path):
    """Load parameters saved by `save_params` into ``sim``.

    Fails, naming the mismatch, when the saved network's parameters differ from
    this one's (names or shapes). Saved state is restored where a state signal of
    the same name and shape exists (rate and spiking neurons have different state).
    """
    _check_open(sim)
    source = _params_path(path, for_reading=True)
    if not os.path.exists(source):
        raise ValidationError(f"no saved parameters at {source}", attr="path", obj=sim)
    with np.load(source, allow_pickle=False) as f:
        saved = {k: f[k] for k in f.files}
    params = {p.name: p for p in trainable.all_params(sim.model, sim.network)}
    stored = {k[len("param/"):]: v for k, v in saved.items() if k.startswith("param/")}
    missing = sorted(set(params) - set(stored))
    extra = sorted(set(stored) - set(params))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"this network has parameters that {source} lacks: {missing}")
        if extra:
            parts.append(f"{source} has parameters that this network lacks: {extra}")
        raise ParamsMismatchError(
            "saved parameters do not match this network's structure; " + "; ".join(parts))
    for name, param in params.items():
        shape = tuple(param.signal(sim.model).shape)
        if stored[name].shape != shape:
            raise ParamsMismatchError(
                f"parameter {name} has shape {stored[name].shape} in {source} but {shape} in "
                "this network; the networks' structures differ")
    bases = {}
    for name, param in params.items():
        sig = param.signal(sim.model)
        if sig.base not in bases:
            bases[sig.base] = trainable.base_value(sim.signals, sig.base)
        trainable.write(bases[sig.base], sig, stored[name])
    for base, value in bases.items():
        sim.signals.values[base] = value
    store = getattr(sim.runtime, "store", None)
    if store is not None:
        names = {sim.signals.name(base): base for base in store}
        for key, value in saved.items():
            if key.startswith("state/") and key[len("state/"):] in names:
                base = names[key[len("state/"):]]
                if np.shape(store[base]) == value.shape:
                    store[base] = np.array(value, dtype=store[base].dtype)
    refresh(sim)


def freeze_params(sim, objs):
    """Write the simulator's (trained) parameters back into the Nengo objects.

    ``objs`` is a Network (all its Ensembles and Connections) or a list of
    Ensembles, Connections and Networks. Ensembles get ``encoders``, ``gain``
    and ``bias`` (``normalize_encoders=False``); connections get their weights:
    decoded connections a ``NoSolver`` with the trained decoders, others the
    trained transform. ``nengo.Simulator(net)`` then reproduces nengo_onnx.
    """
    _check_open(sim)
    if sim.network is None:
        raise ValidationError("the simulator has no network to freeze parameters into",
                              attr="objs", obj=sim)
    items = objs if isinstance(objs, (list, tuple)) else [objs]
    targets = []
    for obj in items:
        if isinstance(obj, nengo.Network):
            targets.extend(obj.all_ensembles + obj.all_connections)
        elif isinstance(obj, (nengo.Ensemble, nengo.Connection)):
            targets.append(obj)
        else:
            raise ValidationError(
                f"objects to freeze must be Networks, Ensembles or Connections (got "
                f"{_describe(obj)})", attr="objs", obj=sim)
    members = set(sim.network.all_ensembles + sim.network.all_connections)
    for obj in targets:
        if obj not in members:
            raise ValidationError(f"{obj} is not in this simulator's network", attr="objs",
                                  obj=sim)
    update_built_params(sim)
    for obj in targets:
        if isinstance(obj, nengo.Ensemble):
            _freeze_ensemble(sim, obj)
        else:
            _freeze_connection(sim, obj)


def _freeze_ensemble(sim, ens):
    if isinstance(ens.neuron_type, nengo.Direct):
        return
    built = sim.model.params[ens]
    ens.gain = np.array(built.gain)
    ens.bias = np.array(built.bias)
    ens.encoders = np.array(built.encoders)
    ens.normalize_encoders = False
    # nengo warns when max_rates/intercepts are set next to gain and bias
    ens.max_rates = nengo.Ensemble.max_rates.default
    ens.intercepts = nengo.Ensemble.intercepts.default


def _freeze_connection(sim, conn):
    if sim.model.sig[conn].get("weights") is None:
        return
    weights = np.array(sim.model.params[conn].weights)
    pre = conn.pre_obj
    if isinstance(pre, nengo.Ensemble) and not isinstance(pre.neuron_type, nengo.Direct):
        if conn.solver.weights:
            conn.solver = nengo.solvers.NoSolver(weights.T, weights=True)
            return
        size = weights.shape[0]
        conn.solver = nengo.solvers.NoSolver(weights.T, weights=False)
        conn.function = _ZeroFunction(size)
        conn.transform = None
        return
    transform = conn.transform
    if isinstance(transform, nengo.transforms.Sparse):
        conn.transform = nengo.transforms.Sparse(transform.shape, indices=transform.indices,
                                                 init=weights)
    elif isinstance(transform, (nengo.transforms.Dense, nengo.transforms.NoTransform)) or \
            np.ndim(weights) <= 2:
        conn.transform = weights if np.ndim(weights) == 2 else nengo.transforms.Dense(
            transform.shape if hasattr(transform, "shape") else np.shape(weights),
            init=weights)
    else:
        raise ValidationError(
            f"cannot freeze the weights of {conn}: its {type(transform).__name__} transform "
            "is not supported", attr="objs")


class _ZeroFunction:
    """The function of a frozen decoded connection (the decoders hold everything)."""

    def __init__(self, size):
        self.size = size

    def __call__(self, x):
        return np.zeros(self.size)
