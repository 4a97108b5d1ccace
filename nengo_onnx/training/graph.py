"""The training graph: the forward block of ``n`` steps, loss nodes, gradients.

`compile_window` emits the forward graph with ``training=True`` (rate forms for
spiking neurons), adds the objectives' loss nodes (`add_loss`; output 0 is the
float32 scalar that is differentiated, output 1 the reported loss, then the
final state for truncated BPTT), works around onnxruntime-training's builder
bugs (`nengo_onnx.training.ort_fixes`) and builds a ``Module`` on its own
``CheckpointState`` whose parameters are the trainable initializers.
"""

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np
from nengo.exceptions import SimulationError, ValidationError
from onnx import TensorProto, helper, numpy_helper

from nengo_onnx import ort_setup
from nengo_onnx.compiler import trainable
from nengo_onnx.compiler.onnx_graph import DEFAULT_OPSET, GraphBuilder
from nengo_onnx.compiler.signals import view_indices
from nengo_onnx.training.cleanup import simplify
from nengo_onnx.training.ort_fixes import (
    check_differentiable,
    gradient_reach,
    prepare_for_gradients,
    reachable_initializers,
    training_session_options,
)

#: The training graph's input that scales the objectives (a window's share of the steps).
LOSS_SCALE = "loss.scale"
#: Training graphs kept per simulator (each holds an onnxruntime Module).
MAX_CACHED = 8


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
        parts = [
            g.node("ReduceSum", [g.node("Mul", [y, t])], keepdims=0)
            for y, t in zip(outputs, targets)
        ]
        return _chain_add(g, parts)
    direct = getattr(term.fn, "onnx_form", None)
    if direct is not None and not term.tuple_key:
        try:
            return direct(g, outputs[0], targets[0] if term.takes_targets else None)
        except ValidationError:
            raise
    from nengo_onnx.training.tracing import as_list, inline, trace  # noqa: PLC0415

    out_shapes = as_list(shapes) if term.tuple_key else shapes
    model = trace(term.fn, out_shapes, shapes if term.takes_targets else None, g.opset)
    mapping = {f"y{i}": y for i, y in enumerate(outputs)}
    if term.takes_targets:
        mapping.update({f"t{i}": t for i, t in enumerate(targets)})
    return inline(g, model, mapping, prefix=f"objective{index}.")


def add_loss(model, block, terms, names, batch, param_names=(), keep_probes=()):
    """Add the objectives' loss nodes to ``model``.

    New inputs: ``target.<probe>`` ``[B, K, size]`` per probe with targets and
    ``loss.scale`` (a scalar multiplying the non-``None`` objectives). New
    outputs, first: ``train_loss`` (what is differentiated) and ``loss`` (the
    reported loss, without the ``None`` objectives); then the state outputs, then
    the outputs of the probes in ``keep_probes`` (the other probe outputs are
    dropped). Every name in ``param_names`` that the loss does
    not reach gets a zero term (``0 * sum(P)``), so that onnxruntime-training
    accepts it as a parameter: every window length then trains the same set.
    Returns ``{probe: target input name}``.
    """
    graph = model.graph
    g = GraphBuilder(name="loss", opset=DEFAULT_OPSET)
    g.reserve(_names_in(model))
    B, K = batch, block.n_steps
    probe_shapes = dict(block.probes)  # {probe output name: shape}
    shapes = {}
    for term in terms:
        for probe in term.probes:
            shapes[probe] = probe_shapes[names.probe(probe)]
    target_inputs = {}
    for term in terms:
        if not term.takes_targets:
            continue
        for probe in term.probes:
            if probe not in target_inputs:
                name = g.input(names.target(probe), np.float32, [B, K, *shapes[probe]])
                target_inputs[probe] = name
    scale = g.input(LOSS_SCALE, np.float32, [])
    train_parts, report_parts = [], []
    for i, term in enumerate(terms):
        outputs = [names.probe(p) for p in term.probes]
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
    g.nodes.append(
        helper.make_node("Identity", [train_loss], [train_name], name=g.unique("n_train_loss"))
    )
    g.nodes.append(helper.make_node("Identity", [report], [report_name], name=g.unique("n_loss")))

    graph.node.extend(g.nodes)
    graph.initializer.extend(g.initializers.values())
    graph.input.extend(g.inputs)
    model.functions.extend(g.functions)
    for domain, version in g.extra_opsets.items():
        model.opset_import.append(helper.make_opsetid(domain, version))
    states = [o for o in graph.output if o.name.startswith("state_out.")]
    kept = {names.probe(p) for p in keep_probes}
    probes = [o for o in graph.output if o.name in kept]
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(train_name, TensorProto.FLOAT, []),
            helper.make_tensor_value_info(report_name, TensorProto.FLOAT, []),
        ]
        + states
        + probes
    )
    return target_inputs


def _reach_params(model, param_names, unreached):
    """Add ``0 * sum(P)`` to the loss for each parameter ``P`` named in ``unreached``
    (no gradient reaches it, e.g. `simplify` showed the loss does not depend on it,
    or only through spikes: onnxruntime-training refuses such parameters)."""
    graph = model.graph
    inits = {init.name for init in graph.initializer}
    unreached = [name for name in param_names if name in inits and name in unreached]
    if not unreached:
        return
    g = GraphBuilder(name="reach", opset=DEFAULT_OPSET)
    g.reserve(_names_in(model))
    last = next(node for node in graph.node if graph.output[0].name in node.output)
    sums = [g.node("ReduceSum", [name], keepdims=0) for name in unreached]
    zero = g.node("Mul", [_chain_add(g, sums), g.const(np.float32(0.0))])
    last.input[0] = g.node("Add", [last.input[0], zero])
    nodes = list(graph.node)
    at = nodes.index(last)
    del graph.node[:]
    graph.node.extend(nodes[:at] + g.nodes + nodes[at:])
    graph.initializer.extend(g.initializers.values())


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
    unreached: frozenset = frozenset()  # the `Param` objects no gradient reaches
    probe_outputs: dict = field(default_factory=dict)  # kept probe -> output index

    def __call__(self, feeds):
        if self.module is not None:
            self.module.lazy_reset_grad()
            return self.module(*[feeds[name] for name in self.input_names])
        return self.session.run(None, feeds)


def _objective_key(terms):
    return tuple((term.probes, term.fn, term.tuple_key) for term in terms)


def compile_window(
    program,
    n_steps,
    terms,
    param_names,
    session_options=None,
    cache=True,
    keep_state=True,
    keep_probes=(),
):
    """The `Compiled` graph of ``n_steps`` for ``terms`` (cached in ``program``).

    ``keep_state=False`` leaves out the final-state outputs (a single window needs
    none; copying them out costs more than the training step of a small network).
    ``keep_probes``: probes whose outputs (in the training form) the graph also
    returns (for metrics; see `Compiled.probe_outputs`).
    """
    cached = program.training_graphs
    # values of the parameters not trained here are constants in the graph
    names = set(param_names)
    store = program.params
    baked = tuple(
        sorted(
            (program.names.signal(base), id(store.value(base)))
            for base in store.changed_bases()
            if program.names.signal(base) not in names
        )
    )
    keep_probes = tuple(keep_probes)
    key = (n_steps, _objective_key(terms), tuple(param_names), baked, keep_state, keep_probes)
    if cache and key in cached:
        return cached[key]
    probes = []
    for term in terms:
        probes.extend(p for p in term.probes if p not in probes)
    probes.extend(p for p in keep_probes if p not in probes)
    block = program.emit(n_steps, probes, training=True)
    model = block.model
    _add_missing_params(program, model, param_names)
    targets = add_loss(
        model,
        block,
        terms,
        program.names,
        program.minibatch_size,
        param_names,
        keep_probes=keep_probes,
    )
    if not keep_state:
        outputs = [o for o in model.graph.output if not o.name.startswith("state_out.")]
        del model.graph.output[:]
        model.graph.output.extend(outputs)
    out_index = {o.name: i for i, o in enumerate(model.graph.output)}
    probe_outputs = {p: out_index[program.names.probe(p)] for p in keep_probes}
    simplify(model, param_names)
    atoms = _atoms(program, param_names)
    reached = gradient_reach(model, atoms)
    unreached = {param for param in atoms if param not in reached}
    _reach_params(
        model,
        param_names,
        [name for name in param_names if not any(atoms[param][0] == name for param in reached)],
    )
    prepare_for_gradients(model, param_names)
    check_differentiable(model, param_names, terms)
    input_names = [i.name for i in model.graph.input]
    scale_name = LOSS_SCALE
    compiled = Compiled(n_steps, block.state, block.step_inputs, targets, scale_name, input_names)
    compiled.probe_outputs = probe_outputs
    if not param_names:
        compiled.session = ort_setup.inference_session(
            model.SerializeToString(), threads=program.threads
        )
    else:
        forced = set()
        while True:
            try:
                compiled.module, compiled.checkpoint = _build_module(
                    program, model, tuple(param_names), session_options, terms
                )
                break
            except _Unreachable as err:  # a path that `gradient_reach` saw, onnxruntime not
                if err.name not in param_names or err.name in forced:
                    raise
                forced.add(err.name)
                unreached.update(p for p, (name, _) in atoms.items() if name == err.name)
                _reach_params(model, param_names, [err.name])
        compiled.params = tuple(param_names)
        compiled.unreached = frozenset(unreached)
        compiled.input_names = list(compiled.module.input_names())
    if cache:
        while len(cached) >= MAX_CACHED:  # e.g. a new lambda objective per call
            cached.pop(next(iter(cached)))
        cached[key] = compiled
    return compiled


def _add_missing_params(program, model, param_names):
    """Give ``model`` an initializer for every parameter it does not use (a pass may
    have removed its reader), so that all graphs share one set of parameters."""
    present = {init.name for init in model.graph.initializer}
    bases = [p.signal(program.model).base for p in trainable.all_params(program)]
    by_name = {program.names.signal(base): base for base in bases}
    for name in param_names:
        if name not in present:
            value = program.signals.initial_value(by_name[name], np.float32)
            model.graph.initializer.append(numpy_helper.from_array(value, name))


def _atoms(program, param_names):
    """``{Param: (base name, flat indices of its elements)}`` of the trained bases."""
    names = set(param_names)
    atoms = {}
    for param in trainable.trainable_params(program):
        sig = param.signal(program.model)
        name = program.names.signal(sig.base)
        if name in names:
            atoms[param] = (name, view_indices(sig).ravel())
    return atoms


class _Unreachable(SimulationError):
    """onnxruntime-training refuses a parameter that no gradient reaches."""

    def __init__(self, msg, name):
        super().__init__(msg)
        self.name = name


def _build_module(program, model, names, session_options, terms):
    ort_training = ort_setup.import_training()
    tmp = tempfile.mkdtemp(prefix="nengo_onnx_train_")
    try:
        try:
            ort_training.artifacts.generate_artifacts(
                model,
                requires_grad=list(names),
                frozen_params=[],
                loss=None,
                optimizer=None,
                artifact_directory=tmp,
            )
        except Exception as err:  # noqa: BLE001
            objectives = ", ".join(t.name for t in terms)
            match = re.search(r"partial derivative for '(.+?)' as it's unreachable", str(err))
            if match:
                raise _Unreachable(str(err), match.group(1)) from err
            raise SimulationError(
                f"onnxruntime-training could not build the gradient graph of the "
                f"objectives ({objectives}): {err}"
            ) from err
        # every Module gets its own CheckpointState: a Module built on a shared state
        # re-allocates the gradient buffers, and the Modules built before it then
        # accumulate into buffers that ``state.parameters[...].grad`` no longer shows
        state = ort_training.api.CheckpointState.load_checkpoint(os.path.join(tmp, "checkpoint"))
        so = training_session_options(
            session_options or ort_setup.session_options(threads=program.threads)
        )
        try:
            module = ort_training.api.Module(
                os.path.join(tmp, "training_model.onnx"), state, session_options=so
            )
        except RuntimeError as err:  # e.g. a gradient op without a CPU kernel
            raise SimulationError(
                f"onnxruntime-training could not run the training graph: {err}"
            ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return module, state
