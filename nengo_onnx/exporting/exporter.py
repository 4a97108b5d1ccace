"""Export a network as a portable ONNX inference model (``nengo-onnx compile``).

Two forms, both plain ONNX (standard domain only, no Python callbacks):

* **streaming** (``steps=K``): one block of ``K`` steps. Inputs: one per input
  Node, ``[B, K, d]`` (named after the Node), and the state ``state.<name>``;
  outputs: one per probe, ``[B, K, *shape]`` (named after the probe), and the new
  state ``state_out.<name>``. A device runs it forever, feeding each call's
  ``state_out.*`` back as the next call's ``state.*``. **All-zero state inputs
  mean "the network's initial state"**: the step counter ``state.step`` is 0
  only then, and the model substitutes the initial values it stores for the
  states whose initial value is not zero (e.g. neuron voltages).
* **fixed-length** (``fixed=N``): ``N`` steps from the initial state, inputs
  ``[B, N, d]`` -> probes ``[B, N, *shape]``, no state inputs. When ``N`` is
  longer than the block, the block runs in an ONNX ``Scan``.

Inputs also include, where the network has them, ``feed.*`` (time-only processes,
e.g. neuron noise, whose values Nengo computes in Python) and ``rand.*`` (uniform
``[0, 1)`` random numbers for stochastic neurons). The model's metadata
(``metadata_props``) records the form, ``dt``, the steps per call, the Nengo
labels, shapes and dtypes of every input, output and state, the versions and the
opset; `nengo_onnx.exporting.runner` reads it.
"""

import json
import math
import os
from dataclasses import dataclass, field

import nengo
import numpy as np
import onnx
from nengo.base import NengoObject
from nengo.builder import Model
from nengo.builder.operator import SimPyFunc
from nengo.builder.processes import SimProcess
from nengo.cache import get_default_decoder_cache
from nengo.ensemble import Neurons
from nengo.exceptions import BuildError, ValidationError
from nengo.utils.numpy import is_array_like
from onnx import helper, numpy_helper

from nengo_onnx import __version__
from nengo_onnx.compiler import params as params_io
from nengo_onnx.compiler.emit import find_emitter
from nengo_onnx.compiler.names import port_kind, port_object, strip_addresses
from nengo_onnx.compiler.onnx_graph import (
    DEFAULT_OPSET,
    all_nodes,
    onnx_dtype,
    serialize,
    subgraphs,
)
from nengo_onnx.compiler.program import compile_model
from nengo_onnx.config import settings_of
from nengo_onnx.exporting.lean import (
    BATCH_DIM,
    BatchError,
    batch_size_value,
    broadcast_initial,
    dedupe_initializers,
    fold_constants,
    fresh_name,
    names_in,
    symbolic_batch,
    toposort,
)
from nengo_onnx.files import write_atomically
from nengo_onnx.runtime.feeds import InputFeeder

#: Steps per call of a streaming export when none are given.
DEFAULT_STEPS = 10

#: The oldest opset an export can target (13: ``axes``/``split`` as inputs).
MIN_OPSET = 13
#: The newest opset onnxruntime 1.19 runs (the compiler emits at this one). By default
#: an export is written at the oldest opset from MIN_OPSET that its operators have
#: forms at: older opsets run in more engines and converters (onnx2torch, tract).
MAX_OPSET = DEFAULT_OPSET

STATE_IN = "state."
STATE_OUT = "state_out."
FEED_PREFIX = "feed."


class ExportError(BuildError):
    """The network cannot be written as an ONNX inference model."""


@dataclass
class ExportInfo:
    """What `export_simulator` wrote (``summary()`` is what ``nengo-onnx compile`` prints)."""

    path: str
    form: str  # "streaming" or "fixed"
    steps: int  # steps per model call
    block_steps: int  # steps unrolled in the graph (== steps, unless a fixed model scans)
    minibatch_size: int
    dt: float
    opset: int
    inputs: list  # dicts: name, shape (per call), dtype, kind, label, ...
    outputs: list
    states: list
    operators_built: object  # int, or None where unknown
    operators: int  # after the passes
    onnx_nodes: int
    parameters: int  # values in initializers
    initializers: int
    file_size: int = 0
    metadata: dict = field(default_factory=dict)

    def summary(self):
        """A human-readable summary, one fact per line."""
        built = "?" if self.operators_built is None else self.operators_built
        lines = [
            f"wrote {self.path} ({_size(self.file_size)})",
            f"  form: {self.form}, {self.steps} steps per call"
            + (
                f" (scanning blocks of {self.block_steps})"
                if self.block_steps != self.steps
                else ""
            )
            + f", minibatch {self.minibatch_size}, dt {self.dt:g}, opset {self.opset}",
            f"  nengo operators: {built} built, {self.operators} after the passes; "
            f"{self.onnx_nodes} ONNX nodes",
            f"  parameters: {self.parameters:,} values in {self.initializers} initializers",
            "  inputs:",
        ]
        rows = [(p["name"], p["call_shape"], p["dtype"], _port_note(p)) for p in self.inputs]
        if self.form == "streaming":
            # (per batch item where the batch is dynamic)
            n = sum(
                int(np.prod([d for d in s["shape"] if not isinstance(d, str)]))
                for s in self.states
            )
            rows.append(
                (
                    f"{STATE_IN}* ({len(self.states)} states)",
                    None,
                    "",
                    f"{n:,} values; zeros = initial state",
                )
            )
        lines += _table(rows) or ["    (none)"]
        lines.append("  outputs:")
        rows = [(p["name"], p["call_shape"], p["dtype"], _port_note(p)) for p in self.outputs]
        if self.form == "streaming":
            rows.append(
                (
                    f"{STATE_OUT}* ({len(self.states)} states)",
                    None,
                    "",
                    "feed back as state.* next call",
                )
            )
        lines += _table(rows) or ["    (none)"]
        return "\n".join(lines)


def _size(n):
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return None  # pragma: no cover


def _port_note(port):
    note = port.get("object") or ""
    if port.get("kind") == "feed":
        note = f"time-only process of {note}"
    elif port.get("kind") == "random":
        note = "uniform [0, 1) random numbers"
    elif port.get("source") == "function":
        note += " (function of time: feed its values)"
    elif port.get("sample_every"):
        note += f" (sampled every {port['sample_every']:g} steps)"
    return note


def _table(rows):
    width = max((len(r[0]) for r in rows), default=0)
    out = []
    for name, shape, dtype, note in rows:
        shape = "" if shape is None else str(list(shape))
        out.append(f"    {name:<{width}}  {shape:<16} {dtype:<8} {note}".rstrip())
    return out


# -- public API -------------------------------------------------------------------------------


def export(
    network,
    path,
    params=None,
    steps=None,
    fixed=None,
    minibatch_size=1,
    opset=None,
    dt=0.001,
    batch=None,
):
    """Write an ONNX inference model of ``network`` to ``path``.

    Parameters
    ----------
    network : nengo.Network
        The network (its ``seed`` fixes the built parameters).
    path : str or os.PathLike
        Where to write the ``.onnx`` file (atomically).
    params : str or os.PathLike, optional
        Parameters saved by ``Simulator.save_params`` (e.g. after training).
    steps : int, optional
        Streaming model of ``steps`` steps per call (default: 10).
    fixed : int, optional
        Fixed-length model of ``fixed`` steps instead.
    minibatch_size : int
        Batch size ``B`` of the model's inputs and outputs.
    opset : int, optional
        ONNX opset, ``MIN_OPSET`` to ``MAX_OPSET`` (default: the oldest the
        network's operators can be written at, usually ``MIN_OPSET``, 13).
    dt : float
        Simulation timestep.
    batch : "dynamic", optional
        ``"dynamic"``: one file for any batch size (a symbolic batch axis
        ``"batch"``) instead of ``minibatch_size``.

    Returns
    -------
    ExportInfo
    """
    return export_network(
        network,
        path,
        params=params,
        steps=steps,
        fixed=fixed,
        minibatch_size=minibatch_size,
        opset=opset,
        dt=dt,
        batch=batch,
    )


def export_program(program, path, steps=None, fixed=None, opset=None, seed=None, batch=None):
    """Write an ONNX inference model of a compiled program, with its current parameters.

    The model starts from the network's initial state. See the module docstring
    for the two forms; ``steps`` defaults to the program's ``unroll``;
    ``batch="dynamic"`` gives the model a symbolic batch axis.

    Returns
    -------
    ExportInfo
    """
    steps, fixed = check_form(steps, fixed)
    opset = check_opset(opset)
    batch = check_batch(batch)
    path = _check_path(path)
    check_exportable(program)
    model, info = build_model(program, steps=steps, fixed=fixed, opset=opset, batch=batch)
    data = serialize(model)
    atomic_write(path, data)
    info.path, info.file_size = path, len(data)
    return info


def export_network(
    network,
    path,
    params=None,
    steps=None,
    fixed=None,
    minibatch_size=1,
    opset=None,
    dt=0.001,
    inputs_path=None,
    input_steps=None,
    batch=None,
):
    """`export`, optionally also writing the network's own input values (``inputs_path``).

    ``inputs_path`` gets an ``.npz`` of ``input_steps`` steps (default: the fixed
    length, or 1000) of every fed input, as ``nengo-onnx run --inputs`` takes it.
    """
    if not isinstance(network, nengo.Network):
        raise ValidationError(
            f"must be a nengo.Network (got {type(network).__name__})", attr="network"
        )
    steps, fixed = check_form(steps, fixed)
    opset = check_opset(opset)
    batch = check_batch(batch)
    path = _check_path(path)
    if inputs_path is not None:
        inputs_path = _check_path(inputs_path)
    if (
        isinstance(minibatch_size, bool)
        or not isinstance(minibatch_size, (int, np.integer))
        or minibatch_size < 1
    ):
        raise ValidationError(
            f"must be a positive integer (got {minibatch_size!r})", attr="minibatch_size"
        )
    model = Model(
        dt=float(dt), label=f"{network}, dt={dt:f}", decoder_cache=get_default_decoder_cache()
    )
    model.build(network)
    program = compile_model(
        model,
        network,
        settings_of(network),
        minibatch_size=minibatch_size,
        unroll=steps or DEFAULT_STEPS,
    )
    if params is not None:
        load_params_file(program, params)
    seed = network.seed + 1 if network.seed is not None else None
    info = export_program(
        program, path, steps=steps, fixed=fixed, opset=opset, seed=seed, batch=batch
    )
    if inputs_path is not None:
        n = input_steps or fixed or 1000
        write_inputs(program, inputs_path, n, seed=seed)
    return info


def load_params_file(program, params):
    """Load a ``save_params`` file into ``program``, with one clear error for any bad file."""
    if not isinstance(params, (str, os.PathLike)):
        raise ValidationError(
            f"must be the path of a file written by save_params (got {type(params).__name__})",
            attr="params",
        )
    try:
        # the export starts from the initial state: a saved state is irrelevant
        params_io.load(program, params)
    except params_io.ParamsMismatchError as err:
        raise ExportError(f"cannot use params file {os.fspath(params)}: {err}") from err
    except ValidationError as err:
        raise ExportError(f"cannot read params file {os.fspath(params)}: {err}") from err


def check_form(steps, fixed):
    """Validate ``steps`` / ``fixed`` (positive ints, not both); returns them as ints."""
    if steps is not None and fixed is not None:
        raise ValidationError(
            "give steps (a streaming model) or fixed (a fixed-length model), not both",
            attr="fixed",
        )
    for name, value in (("steps", steps), ("fixed", fixed)):
        if value is not None and (
            isinstance(value, (bool, np.bool_))
            or not isinstance(value, (int, np.integer))
            or value < 1
        ):
            raise ValidationError(f"must be a positive integer (got {value!r})", attr=name)
    return (None if steps is None else int(steps)), (None if fixed is None else int(fixed))


def check_batch(batch):
    """Validate ``batch``: None (the minibatch size) or ``"dynamic"``."""
    if batch is None or batch == "dynamic":
        return batch
    raise ValidationError(
        f"must be None (the minibatch size) or 'dynamic' (got {batch!r})", attr="batch"
    )


def check_opset(opset):
    """Validate ``opset``: None (the oldest that works) or ``MIN_OPSET`` to ``MAX_OPSET``."""
    if opset is None:
        return None
    if (
        isinstance(opset, (bool, np.bool_))
        or not isinstance(opset, (int, np.integer))
        or not MIN_OPSET <= opset <= MAX_OPSET
    ):
        raise ValidationError(
            f"must be an integer from {MIN_OPSET} to {MAX_OPSET} (the opsets onnxruntime "
            f"1.19 runs that nengo-onnx can write; got {opset!r})",
            attr="opset",
        )
    return int(opset)


def _check_path(path):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ExportError(f"cannot write {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise ExportError(f"cannot write {path}: it is a directory")
    return path


def atomic_write(path, data):
    """Write ``data`` (bytes) to ``path`` atomically (`nengo_onnx.files.write_atomically`)."""
    write_atomically(path, lambda f: f.write(data))


# -- what cannot be exported ------------------------------------------------------------------


def unexportable(program):
    """``[(object description, reason)]`` for every operator that would run in Python."""
    problems = []
    for op in program.python_operators():
        reason = _host_reason(op)
        for desc in _describe_op(program.model, op):
            if (desc, reason) not in problems:
                problems.append((desc, reason))
    return problems


def check_exportable(program):
    """Raise `ExportError` naming every object that needs Python at run time."""
    problems = unexportable(program)
    if problems:
        listed = "; ".join(f"{desc} ({reason})" for desc, reason in problems)
        raise ExportError(
            f"cannot export: {len(problems)} object(s) need Python at run time, which an "
            f"ONNX file cannot call: {listed}. Give them an ONNX form (e.g. nengo neuron "
            "types, synapses, transforms) or make them inputs (Nodes with size_in=0)."
        )


def _host_reason(op):
    if isinstance(op, SimPyFunc):
        return "a Python function of its input" if op.x is not None else "a Python function"
    if isinstance(op, SimProcess):
        return f"process {type(op.process).__name__} has no ONNX form"
    _, reason = find_emitter(op)
    return reason or f"{type(op).__name__} runs in Python"


def describe(obj, stable=False):
    """``Node 'label'`` for labelled objects, nengo's ``str`` otherwise.

    ``stable`` leaves out memory addresses (for the model's metadata).
    """
    if isinstance(obj, Neurons):
        return f"Neurons of {describe(obj.ensemble, stable)}"
    label = getattr(obj, "label", None)
    text = f"{type(obj).__name__} {label!r}" if label else str(obj)
    return strip_addresses(text) if stable else text


def _describe_op(model, op, stable=False):
    """The Nengo objects an operator belongs to (by signal names, then by ``model.sig``)."""
    sigs = (op.sets + op.incs + op.updates) or op.reads
    objs = [obj for obj in model.sig if isinstance(obj, (NengoObject, Neurons))]
    found = []
    for sig in sigs:
        name = sig.name
        for obj in objs:
            if name.startswith(f"{obj}.") and obj not in found:
                found.append(obj)
    if not found:
        for obj in objs:
            out = model.sig[obj].get("out")
            if out is not None and any(
                s.base is out.base and s.may_share_memory(out) for s in sigs
            ):
                found.append(obj)
    if found:
        return [describe(obj, stable) for obj in found]
    text = op.tag or str(op)
    return [strip_addresses(text) if stable else text]


# -- building the model ------------------------------------------------------------------------


def build_model(program, steps=None, fixed=None, opset=None, batch=None):
    """The export ``(onnx.ModelProto, ExportInfo)`` of ``program`` (nothing is written).

    ``opset`` None: the oldest opset from `MIN_OPSET` the model can be written
    at. ``batch`` None: the program's minibatch size; ``"dynamic"``: a symbolic
    batch axis (any batch size).
    """
    steps, fixed = check_form(steps, fixed)
    batch = check_batch(batch)
    dynamic = batch == "dynamic"
    B = BATCH_DIM if dynamic else (batch or program.minibatch_size)
    if fixed is not None:
        # all N steps unrolled where that is no bigger than the simulator's block,
        # else blocks of K steps (K divides N) scanned N / K times
        K = fixed if fixed <= program.unroll else math.gcd(fixed, program.unroll)
    else:
        K = steps or program.unroll
    if dynamic:
        block = program.emit(K, minibatch_size=2)
        other = program.emit(K, minibatch_size=3)
    elif B != program.minibatch_size:
        block, other = program.emit(K, minibatch_size=B), None
    else:
        block, other = program.block(K)[0], None
    names = _Names(program, block, B)
    sources = list(names.inputs) if fixed is not None and K == fixed else None
    graph_model, batch_value = block.model, None
    if dynamic:
        try:
            graph_model, batch_value = symbolic_batch(block.model, other.model, 2, 3, sources)
        except BatchError as err:
            raise ExportError(f"cannot export with a dynamic batch: {err}") from err
    graph_model = fold_constants(_copy(graph_model))
    if fixed is None:
        model = _streaming(program, graph_model, names)
    elif K == fixed:
        model = _fixed_unrolled(program, graph_model, names, batch_value)
    else:
        model = _fixed_scan(program, block, graph_model, names, fixed)
    n_steps = fixed or K
    info = ExportInfo(
        path="",
        form="fixed" if fixed else "streaming",
        steps=n_steps,
        block_steps=K,
        minibatch_size=B,
        dt=float(program.dt),
        opset=opset or MIN_OPSET,
        inputs=names.input_specs(n_steps),
        outputs=names.output_specs(n_steps),
        states=names.state_specs() if fixed is None else [],
        operators_built=program.n_built_operators,
        operators=program.graph.number_of_nodes(),
        onnx_nodes=0,
        parameters=0,
        initializers=0,
    )
    info.metadata = _metadata(program, info)
    model.graph.name = _graph_name(program)
    model.doc_string = (
        f"Nengo network {info.metadata['network']} exported by nengo-onnx "
        f"({info.form}, {n_steps} steps per call, dt={program.dt:g})"
    )
    del model.metadata_props[:]
    for key, value in info.metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model = _at_opset(model, opset, info)
    info.onnx_nodes = sum(1 for _ in all_nodes(model.graph))
    inits = list(_all_initializers(model.graph))
    info.initializers = len(inits)
    info.parameters = int(sum(np.prod(t.dims, dtype=np.int64) for t in inits))
    return model, info


def _dedupe_all(graph):
    """Store identical initializers once, in ``graph`` and in each subgraph."""
    dedupe_initializers(graph)
    for node in graph.node:
        for sub in subgraphs(node):
            _dedupe_all(sub)


def _at_opset(model, opset, info):
    """``model`` written at ``opset`` (None: the oldest that works), checked by onnx.checker."""
    candidates = [opset] if opset is not None else list(range(MIN_OPSET, MAX_OPSET + 1))
    for i, version in enumerate(candidates):
        converted = _copy(model) if i < len(candidates) - 1 else model
        try:
            convert_opset(converted, version)
            _dedupe_all(converted.graph)
            for entry in converted.metadata_props:
                if entry.key == "opset":
                    entry.value = json.dumps(version)
            onnx.checker.check_model(converted, full_check=True)
        except (
            ExportError,
            onnx.checker.ValidationError,
            onnx.shape_inference.InferenceError,
        ) as err:
            if i < len(candidates) - 1:
                continue
            if isinstance(err, ExportError):
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise ExportError(
                f"the exported model fails onnx.checker at opset {version}: {first}"
                + (" (try a newer opset)" if version < MAX_OPSET else "")
            ) from err
        info.opset = info.metadata["opset"] = version
        info.metadata["opset"] = json.dumps(version)
        return converted
    raise AssertionError("unreachable")  # pragma: no cover


def _graph_name(program):
    label = getattr(program.network, "label", None)
    return label or "nengo_network"


class _Names:
    """The exported model's names for the block's inputs, outputs and states."""

    def __init__(self, program, block, B=None):
        self.program, self.block = program, block
        self.B = program.minibatch_size if B is None else B  # an int, or BATCH_DIM
        feeds = program.feeds
        node_keys = list(program.inputs.values())
        keys = list(block.step_inputs)
        keys.sort(
            key=lambda k: (
                (0, node_keys.index(k)) if k in node_keys else (1, 0) if k in feeds else (2, 0)
            )
        )
        state_names = {base: program.names.signal(base) for base, _ in block.state_inputs}
        self.inputs = _unique({key: _export_name(key) for key in keys})
        self.states = sorted(
            ((base, in_name, state_names[base]) for base, in_name in block.state_inputs),
            key=lambda s: s[2],
        )
        self.state_out = {base: out for base, _, out in block.state}
        taken = set(self.inputs.values())
        taken.update(STATE_IN + n for n in state_names.values())
        taken.update(STATE_OUT + n for n in state_names.values())
        self.outputs = {}
        for out_name, _ in block.probes:
            base_name = _export_name(out_name)
            name, i = base_name, 0
            while name in taken:
                i += 1
                name = f"{base_name}_{i}"
            taken.add(name)
            self.outputs[out_name] = name
        self.probe_by_key = {key: probe for probe, key in program.probes.items()}

    def mapping(self, with_states=True):
        """``{block name: exported name}`` for the block's interface."""
        mapping = dict(self.inputs)
        mapping.update(self.outputs)
        if with_states:
            for base, in_name, name in self.states:
                mapping[in_name] = STATE_IN + name
                if base in self.state_out:
                    mapping[self.state_out[base]] = STATE_OUT + name
        return {k: v for k, v in mapping.items() if k != v}

    def input_specs(self, n_steps):
        B, program = self.B, self.program
        feeds = program.feeds
        specs = []
        for key, name in self.inputs.items():
            shape, dtype = self.block.step_inputs[key]
            spec = {
                "name": name,
                "shape": list(shape),
                "dtype": np.dtype(dtype).name,
                "call_shape": [B, n_steps, *shape],
            }
            if key in feeds:
                _, source, node = feeds[key]
                if node is not None:
                    spec.update(
                        kind="node",
                        label=node.label,
                        object=describe(node, True),
                        source=_node_source(node),
                    )
                    if is_array_like(node.output):
                        spec["default"] = np.asarray(node.output, float).ravel().tolist()
                else:
                    desc = _describe_op(program.model, source, stable=True)
                    spec.update(kind="feed", label=None, object=", ".join(desc))
            elif port_kind(key) == "rand":
                spec.update(kind="random", label=None, object=port_object(key))
            else:
                spec.update(kind="other", label=None, object=key)
            specs.append(spec)
        return specs

    def output_specs(self, n_steps):
        B, program = self.B, self.program
        dtypes = {o.name: o for o in self.block.model.graph.output}
        specs = []
        for out_name, shape in self.block.probes:
            probe = self.probe_by_key[out_name]
            elem = dtypes[out_name].type.tensor_type.elem_type
            period = None if probe.sample_every is None else probe.sample_every / program.dt
            specs.append(
                {
                    "name": self.outputs.get(out_name, out_name),
                    "shape": list(shape),
                    "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name,
                    "call_shape": [B, n_steps, *shape],
                    "kind": "probe",
                    "label": probe.label,
                    "object": describe(probe, True),
                    "target": describe(probe.target, True),
                    "attr": probe.attr,
                    "sample_every": period,
                }
            )
        return specs

    def state_specs(self):
        signals, dtype = self.program.signals, self.program.dtype
        specs = []
        for base, _, name in self.states:
            shape = ((self.B,) if signals.batched(base) else ()) + base.shape
            specs.append(
                {
                    "name": STATE_IN + name,
                    "output": STATE_OUT + name,
                    "signal": name,
                    "shape": list(shape),
                    "dtype": signals.dtype_of(base, dtype).name,
                    "batched": bool(signals.batched(base)),
                    "initial": "zero" if not np.any(self.initial(base)) else "stored",
                }
            )
        return specs

    def initial(self, base):
        """The initial value of one item (batched states are broadcast to the batch)."""
        value = self.program.signals.initial_value(base, self.program.dtype)
        return np.array(value)  # (not ascontiguousarray: that makes 0-d arrays 1-d)

    def batched(self, base):
        return bool(self.program.signals.batched(base))


def _node_source(node):
    if isinstance(node.output, nengo.Process):
        return "process"
    return "function" if callable(node.output) else "constant"


def _export_name(port):
    """The exported name of a port: input Nodes and probes by their object's name,
    time-only inputs and random numbers by their full port name."""
    return port_object(port) if port_kind(port) in ("input", "probe") else port


def _unique(names):
    """``{key: name}`` with repeated names made unique (``name, name_1, ...``)."""
    seen, out = set(), {}
    for key, name in names.items():
        candidate, i = name, 0
        while candidate in seen:
            i += 1
            candidate = f"{name}_{i}"
        seen.add(candidate)
        out[key] = candidate
    return out


def _metadata(program, info):
    doc = {
        "format": info.form,
        "dt": info.dt,
        "steps": info.steps,
        "K": info.block_steps,
        "minibatch_size": info.minibatch_size,
        "dtype": np.dtype(program.dtype).name,
        "opset": info.opset,
        "nengo_version": nengo.__version__,
        "nengo_onnx_version": __version__,
        "network": strip_addresses(str(program.network)),
        "initial_state": "zeros" if info.form == "streaming" else "built in",
    }
    meta = {k: (json.dumps(v) if not isinstance(v, str) else v) for k, v in doc.items()}
    meta["inputs"] = json.dumps(info.inputs)
    meta["outputs"] = json.dumps(info.outputs)
    meta["states"] = json.dumps(info.states)
    meta["producer"] = "nengo-onnx"
    return meta


def _copy(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _streaming(program, block_model, names):
    """The block with renamed interface, zero-means-initial states, ordered ports."""
    model = _copy(block_model)
    graph = model.graph
    rename_values(graph, names.mapping())
    step_base = program.model.step.base
    nonzero = [
        (base, STATE_IN + name) for base, _, name in names.states if np.any(names.initial(base))
    ]
    if nonzero:
        step_in = next((STATE_IN + n for b, _, n in names.states if b is step_base), None)
        if step_in is None:  # pragma: no cover  (every nengo model has a step counter)
            raise ExportError("cannot export: the model has no step counter state")
        _start_from_initial(
            graph, step_in, [(name, names.initial(base)) for base, name in nonzero]
        )
    _order_ports(
        graph,
        [n for n in names.inputs.values()],
        [STATE_IN + n for _, _, n in names.states],
        list(names.outputs.values()),
        [STATE_OUT + n for b, _, n in names.states if b in names.state_out],
    )
    return model


def _start_from_initial(graph, step_in, states):
    """Where ``step == 0``, read each state's stored initial value instead of its input."""
    used = names_in(graph)
    fresh = fresh_name("start/fresh", used)
    zero = fresh_name("start/zero", used)
    step_type = next(i.type.tensor_type.elem_type for i in graph.input if i.name == step_in)
    step_dtype = helper.tensor_dtype_to_np_dtype(step_type)
    graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=step_dtype), zero))
    nodes = [helper.make_node("Equal", [step_in, zero], [fresh], name=fresh)]
    replace = {}
    for name, value in states:
        init = fresh_name(f"start/{name}.initial", used)
        out = fresh_name(f"start/{name}", used)
        graph.initializer.append(numpy_helper.from_array(value, init))
        nodes.append(helper.make_node("Where", [fresh, init, name], [out], name=out))
        replace[name] = out
    for node in graph.node:
        for i, value in enumerate(node.input):
            if value in replace:
                node.input[i] = replace[value]
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)


def _order_ports(graph, *groups):
    """Put the inputs, then the outputs, in the order of ``groups`` (input groups first)."""
    by_name = {v.name: v for v in graph.input}
    order = [n for group in groups[:2] for n in group]
    inputs = [by_name[n] for n in order if n in by_name]
    inputs += [v for v in graph.input if v.name not in order]
    by_name = {v.name: v for v in graph.output}
    order = [n for group in groups[2:] for n in group]
    outputs = [by_name[n] for n in order if n in by_name]
    outputs += [v for v in graph.output if v.name not in order]
    copies = [[_copy_value(v) for v in inputs], [_copy_value(v) for v in outputs]]
    del graph.input[:]
    graph.input.extend(copies[0])
    del graph.output[:]
    graph.output.extend(copies[1])


def _copy_value(v):
    out = onnx.ValueInfoProto()
    out.CopyFrom(v)
    return out


def _fixed_unrolled(program, block_model, names, batch_value=None):
    """All ``N`` steps unrolled; the state inputs become the initial values, stored once
    (one item) and broadcast to the batch."""
    model = _copy(block_model)
    graph = model.graph
    rename_values(graph, names.mapping())
    states = {STATE_IN + name: base for base, _, name in names.states}
    keep = [v for v in graph.input if v.name not in states]
    _set_list(graph.input, keep)
    used = names_in(graph)
    for name, base in states.items():
        value = names.initial(base)
        if names.batched(base):
            broadcast_initial(graph, name, value, batch_value or names.B, used)
        else:
            graph.initializer.append(numpy_helper.from_array(value, name))
    toposort(graph)
    _set_list(graph.output, [v for v in graph.output if v.name in names.outputs.values()])
    prune(graph)
    _order_ports(graph, list(names.inputs.values()), [], list(names.outputs.values()), [])
    return model


def _set_list(field_, values):
    values = [_copy_value(v) for v in values]
    del field_[:]
    field_.extend(values)


def _fixed_scan(program, block, block_model, names, n_steps):
    """An ONNX ``Scan`` of the ``K``-step block over ``N / K`` iterations.

    The loop carries only the states that the probes depend on; their initial
    values are stored once (one item) and broadcast to the batch.
    """
    K, B = block.n_steps, names.B
    if not block.probes:
        raise ExportError(
            "cannot export a fixed-length model of a network without probes: "
            "it would have no outputs"
        )
    if any(base not in names.state_out for base, _, _ in names.states):
        raise ExportError("cannot export: a state input of the block has no output")
    body = onnx.GraphProto()
    body.CopyFrom(block_model.graph)
    body.name = "block"
    rename_values(body, {n: f"block/{n}" for n in names_in(body)})
    for node in body.node:
        node.name = f"block/{node.name}" if node.name else ""
    probes_out = [f"block/{out_name}" for out_name, _ in block.probes]
    states = _carried_states(body, names, probes_out)
    inputs = list(names.inputs)  # block keys, in export order
    body_in = [f"block/{in_name}" for _, in_name, _ in states]
    body_in += [f"block/{key}" for key in inputs]
    body_out = [f"block/{names.state_out[base]}" for base, _, _ in states]
    body_out += probes_out
    _set_list(body.input, [v for v in body.input if v.name in body_in])
    _set_list(body.output, [v for v in body.output if v.name in body_out])
    prune(body)

    outer_inputs, nodes, inits = [], [], []
    scan_in, axes = [], []
    for key in inputs:
        shape, dtype = block.step_inputs[key]
        name = names.inputs[key]
        outer_inputs.append(
            helper.make_tensor_value_info(name, onnx_dtype(dtype), [B, n_steps, *shape])
        )
        # [B, N, *shape] -> [N / K, B, K, *shape]: the reference evaluator scans axis 0 only
        target = np.array([-1, n_steps // K, K, *shape], dtype=np.int64)
        inits.append(numpy_helper.from_array(target, f"scan/{name}.shape"))
        nodes.append(
            helper.make_node("Reshape", [name, f"scan/{name}.shape"], [f"scan/{name}.blocks"])
        )
        nodes.append(
            helper.make_node(
                "Transpose",
                [f"scan/{name}.blocks"],
                [f"scan/{name}"],
                perm=[1, 0, *range(2, len(shape) + 3)],
            )
        )
        scan_in.append(f"scan/{name}")
        axes.append(0)
    initial, outer = [], onnx.GraphProto()
    batch = B
    if isinstance(B, str) and any(names.batched(base) for base, _, _ in states):
        if not outer_inputs:
            raise ExportError(
                "cannot export with a dynamic batch: the fixed-length model has no "
                "inputs to take the batch size from"
            )
        batch = batch_size_value(outer, outer_inputs[0].name, set())
    used = {"scan/tick", "initial/pad"} | {t.name for t in outer.initializer}
    for base, _, name in states:
        value = names.initial(base)
        if names.batched(base):
            broadcast_initial(outer, f"initial/{name}", value, batch, used)
        else:
            inits.append(numpy_helper.from_array(value, f"initial/{name}"))
        initial.append(f"initial/{name}")
    final = [f"final/{name}" for _, _, name in states]
    scanned = [f"scan_out/{names.outputs[out_name]}" for out_name, _ in block.probes]
    # Scan needs a scanned input to know how many times to run, and onnx.reference's
    # Scan (1.17) takes the first num_scan_inputs body inputs as the state, so it runs
    # only with as many scanned inputs as states: ticks (zeros) make up the number,
    # each passed through to an extra scan output (so no body input is unused).
    for i in range(max(1, len(initial)) - len(scan_in)):
        inits.append(numpy_helper.from_array(np.zeros(n_steps // K, np.float32), f"scan/tick_{i}"))
        body.input.append(
            helper.make_tensor_value_info(f"block/tick_{i}", onnx.TensorProto.FLOAT, [])
        )
        body.node.append(
            helper.make_node("Identity", [f"block/tick_{i}"], [f"block/tick_{i}.out"])
        )
        body.output.append(
            helper.make_tensor_value_info(f"block/tick_{i}.out", onnx.TensorProto.FLOAT, [])
        )
        body_in.append(f"block/tick_{i}")
        body_out.append(f"block/tick_{i}.out")
        scan_in.append(f"scan/tick_{i}")
        scanned.append(f"scan_out/tick_{i}")
        axes.append(0)
    for i in range(len(scan_in) - len(initial)):
        inits.append(numpy_helper.from_array(np.zeros((), np.float32), f"initial/pad_{i}"))
        body.input.append(
            helper.make_tensor_value_info(f"block/pad_{i}", onnx.TensorProto.FLOAT, [])
        )
        body.node.append(helper.make_node("Identity", [f"block/pad_{i}"], [f"block/pad_{i}.out"]))
        body.output.append(
            helper.make_tensor_value_info(f"block/pad_{i}.out", onnx.TensorProto.FLOAT, [])
        )
        body_in.insert(len(initial), f"block/pad_{i}")
        body_out.insert(len(initial), f"block/pad_{i}.out")
        initial.append(f"initial/pad_{i}")
        final.append(f"final/pad_{i}")
    _order_ports(body, body_in, [], body_out, [])
    nodes.append(
        helper.make_node(
            "Scan",
            initial + scan_in,
            final + scanned,
            name="scan",
            body=body,
            num_scan_inputs=len(scan_in),
            scan_input_axes=axes,
            scan_output_axes=[0] * len(scanned),
        )
    )
    outputs = []
    for (out_name, shape), src in zip(block.probes, scanned):
        name = names.outputs[out_name]
        inits.append(
            numpy_helper.from_array(
                np.array([-1, n_steps, *shape], np.int64), f"scan/{name}.out_shape"
            )
        )
        nodes.append(
            helper.make_node(
                "Transpose", [src], [f"{src}.blocks"], perm=[1, 0, *range(2, len(shape) + 3)]
            )
        )
        nodes.append(
            helper.make_node("Reshape", [f"{src}.blocks", f"scan/{name}.out_shape"], [name])
        )
        elem = next(o for o in block.model.graph.output if o.name == out_name)
        outputs.append(
            helper.make_tensor_value_info(
                name, elem.type.tensor_type.elem_type, [B, n_steps, *shape]
            )
        )
    graph = helper.make_graph(
        list(outer.node) + nodes,
        "nengo_network",
        outer_inputs,
        outputs,
        initializer=inits + list(outer.initializer),
    )
    toposort(graph)
    model = _copy(block_model)
    model.graph.CopyFrom(graph)
    return model


def _carried_states(body, names, probes_out):
    """The states (of ``names.states``) that the probes depend on, through the loop."""
    carried = []
    while True:
        targets = set(probes_out)
        targets.update(f"block/{names.state_out[base]}" for base, _, _ in carried)
        needed = _needed(body, targets)
        now = [s for s in names.states if f"block/{s[1]}" in needed]
        if len(now) == len(carried):
            return now
        carried = now


def _needed(graph, outputs):
    """The values that ``outputs`` of ``graph`` depend on (them included)."""
    needed = set(outputs)
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            needed.update(n for n in node.input if n)
            for sub in subgraphs(node):
                needed |= names_in(sub)
    return needed


# -- ONNX graph editing -----------------------------------------------------------------------


def _all_initializers(graph):
    yield from graph.initializer
    for node in graph.node:
        for sub in subgraphs(node):
            yield from _all_initializers(sub)


def rename_values(graph, wanted):
    """Rename values by ``wanted``, first moving internal values out of the targets' way."""
    used = names_in(graph)
    targets = set(wanted.values())
    mapping = dict(wanted)
    taken = used | targets
    for name in used:
        if name in targets and name not in wanted:
            mapping[name] = fresh_name(f"{name}/internal", taken)
    _rename(graph, mapping)


def _rename(graph, mapping):
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = mapping.get(value.name, value.name)
    for tensor in graph.initializer:
        tensor.name = mapping.get(tensor.name, tensor.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for sub in subgraphs(node):
            _rename(sub, mapping)


def prune(graph):
    """Drop the nodes and initializers that no graph output depends on."""
    needed = {v.name for v in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(n for n in node.input if n)
            for sub in subgraphs(node):
                needed |= names_in(sub)
    keep.reverse()
    keep = [_copy_node(n) for n in keep]
    del graph.node[:]
    graph.node.extend(keep)
    inits = [t for t in graph.initializer if t.name in needed]
    inits = [_copy_tensor(t) for t in inits]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _copy_node(node):
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


def _copy_tensor(tensor):
    out = onnx.TensorProto()
    out.CopyFrom(tensor)
    return out


# -- opsets ------------------------------------------------------------------------------------


def convert_opset(model, opset):
    """Rewrite ``model`` (emitted at opset 21) for an older ``opset``, in place.

    The emitted operators' older versions take the same inputs and attributes,
    except ``Split`` (``num_outputs`` since 18: becomes a ``split`` input) and
    the ``Reduce*`` operators other than ``ReduceSum`` (``axes`` an input since
    18: becomes an attribute). Anything else is caught by ``onnx.checker``.
    """
    current = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset == current:
        return
    if opset > current:
        raise ExportError(f"cannot convert a model at opset {current} up to {opset}")
    shapes = {}
    if opset < 18 and any(n.op_type == "Split" for n in all_nodes(model.graph)):
        inferred = onnx.shape_inference.infer_shapes(model)
        shapes = _shapes(inferred.graph)
    _downgrade(model.graph, opset, shapes, {})
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    model.ir_version = min(ir for _, ir, op, *_ in helper.VERSION_TABLE if op == opset)


def _shapes(graph, out=None):
    out = {} if out is None else out
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        dims = v.type.tensor_type.shape.dim
        out[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for node in graph.node:
        for sub in subgraphs(node):
            _shapes(sub, out)
    return out


def _downgrade(graph, opset, shapes, outer_inits):
    inits = dict(outer_inits)
    inits.update({t.name: t for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Split" and opset < 18:
            _split_sizes(graph, node, shapes)
        elif (
            node.op_type.startswith("Reduce")
            and node.op_type != "ReduceSum"
            and opset < 18
            and len(node.input) > 1
            and node.input[1]
        ):
            axes = inits.get(node.input[1])
            if axes is None:
                raise ExportError(f"cannot write {node.op_type} with computed axes below opset 18")
            del node.input[1:]
            node.attribute.append(
                helper.make_attribute(
                    "axes", numpy_helper.to_array(axes).astype(int).ravel().tolist()
                )
            )
        for sub in subgraphs(node):
            _downgrade(sub, opset, shapes, inits)


def _split_sizes(graph, node, shapes):
    attrs = {a.name: a for a in node.attribute}
    if "num_outputs" not in attrs:
        return
    n = attrs["num_outputs"].i
    axis = attrs["axis"].i if "axis" in attrs else 0
    shape = shapes.get(node.input[0])
    dim = None if shape is None else shape[axis]
    if dim is None:
        raise ExportError("cannot write Split of an unknown size below opset 18")
    chunk = -(-dim // n)
    sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    name = fresh_name(f"{node.output[0]}/split", names_in(graph))
    graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), name))
    keep = [a for a in node.attribute if a.name != "num_outputs"]
    del node.attribute[:]
    node.attribute.extend(keep)
    del node.input[1:]
    node.input.append(name)


# -- the network's own input values -----------------------------------------------------------


def input_values(program, n_steps, seed=None):
    """``{input name: [B, n_steps, *shape]}``: what ``program`` feeds its inputs (from reset).

    Input Nodes and time-only processes are computed with Nengo's own step
    functions (as the simulator does); ``rand.*`` inputs get uniform random numbers.
    ``seed`` is the simulation seed (a Simulator's ``seed``).
    """
    block = program.block(program.unroll)[0] if program.unrolled else None
    if block is None:
        raise ExportError("cannot compute inputs of a network that runs Python operators")
    names = _Names(program, block)
    feeder = InputFeeder(program, seed)
    feeds = feeder(block.step_inputs, 0, n_steps)
    return {name: feeds[key] for key, name in names.inputs.items()}


def write_inputs(program, path, n_steps, seed=None):
    """Write `input_values` to ``path`` (``.npz``, keyed by input name), atomically."""
    import io  # noqa: PLC0415

    values = input_values(program, n_steps, seed)
    buffer = io.BytesIO()
    np.savez(buffer, **values)
    atomic_write(os.fspath(path), buffer.getvalue())
    return values
