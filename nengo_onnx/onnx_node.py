"""`OnnxNode`: an ONNX model inside a Nengo network.

An `OnnxNode` is a `nengo.Node` whose output is an ONNX model applied to its
input every timestep: what NengoDL's ``TensorNode`` is for TensorFlow code, for
any framework that exports ONNX. It is built (`build_onnx_node`) into the
node's usual ``in``/``out`` signals, one read-only signal per float initializer
of the model (its parameters), and a `SimOnnx` operator:

* in ``nengo.Simulator``, `SimOnnx.make_step` runs the model with onnxruntime
  once per step (batch 1; not trainable);
* in ``nengo_onnx.Simulator``, the emitter (`nengo_onnx.compiler.emit.onnx_node`) inlines
  the model's nodes into the step graph, batched over the minibatch, reading
  its parameters as initializers of the graph: training changes them, they are
  saved and loaded with the other parameters, and ``nengo-onnx compile``
  exports them, with the model's nodes, in the exported file.
"""

import os
from collections import namedtuple

import nengo
import numpy as np
import onnx
from nengo.builder import Builder, Operator, Signal
from nengo.builder.operator import Reset
from nengo.exceptions import ValidationError
from onnx import TensorProto, helper, numpy_helper

from nengo_onnx import ort_setup
from nengo_onnx.compiler.names import sanitize
from nengo_onnx.compiler.onnx_graph import DEFAULT_OPSET, all_nodes

#: ONNX element types an OnnxNode's input and output may have, as numpy dtypes.
FLOAT_TYPES = {TensorProto.FLOAT: np.dtype(np.float32), TensorProto.DOUBLE: np.dtype(np.float64)}
#: Operator domains that can be inlined: standard ONNX operators (``ai.onnx.ml``'s
#: have no gradients and few runtimes outside onnxruntime run them).
STANDARD_DOMAINS = ("", "ai.onnx")

#: Inputs (by position) that are settings or statistics, not weights: float
#: initializers that only feed these stay constants (as Keras keeps batch-norm
#: statistics untrained; onnxruntime-training has no gradient for most of them).
SETTING_INPUTS = {
    "BatchNormalization": (3, 4),  # running mean and variance
    "Clip": (1, 2),
    "Dropout": (1,),
    "Pad": (2,),
    "Range": (0, 1, 2),
    "Resize": (1, 2),  # roi, scales
    "Upsample": (1,),
}

#: ``sim.data[onnx_node]``: the model's parameters, ``{initializer name: array}``.
BuiltOnnxNode = namedtuple("BuiltOnnxNode", ["params"])


def _type_name(elem_type):
    return helper.tensor_dtype_to_string(elem_type).replace("TensorProto.", "").lower()


class OnnxSpec:
    """A validated ONNX model prepared for an `OnnxNode`.

    Parameters
    ----------
    model : onnx.ModelProto
        The model (functions inlined, default opset raised to nengo-onnx's).
    input_name, output_name : str
        The model input fed with the node's input, the output that is its output.
    in_shape, out_shape : tuple
        Their shapes without the batch axis.
    in_dtype, out_dtype : numpy.dtype
        Their dtypes (float32 or float64).
    batched : bool
        Whether the model takes a dynamic batch axis (else a batch of exactly 1:
        minibatches then run through one copy of the model per item).
    param_names : list of str
        The float initializers: the model's parameters.
    """

    def __init__(
        self,
        model,
        input_name,
        output_name,
        in_shape,
        out_shape,
        in_dtype,
        out_dtype,
        batched,
        param_names,
    ):
        self.model = model
        self.input_name, self.output_name = input_name, output_name
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.in_dtype, self.out_dtype = np.dtype(in_dtype), np.dtype(out_dtype)
        self.batched = batched
        self.param_names = list(param_names)
        inits = {t.name: t for t in model.graph.initializer}
        self.param_dtypes = {n: FLOAT_TYPES[inits[n].data_type] for n in self.param_names}
        self.constants = [t for t in model.graph.initializer if t.name not in self.param_dtypes]

    @property
    def size_in(self):
        return int(np.prod(self.in_shape))

    @property
    def size_out(self):
        return int(np.prod(self.out_shape))

    def param_values(self):
        """``{name: float64 array}`` of the parameters' current values."""
        inits = {t.name: t for t in self.model.graph.initializer}
        return {n: numpy_helper.to_array(inits[n]).astype(np.float64) for n in self.param_names}

    def set_param_values(self, values):
        """Replace parameter initializers by ``values`` (``{name: array}``)."""
        _set_initializers(self.model, values, self.param_dtypes)

    def session(self, values=None):
        """An onnxruntime session of the model (with parameter ``values`` if given)."""
        model = self.model
        if values:
            model = onnx.ModelProto()
            model.CopyFrom(self.model)
            _set_initializers(model, values, self.param_dtypes)
        return ort_setup.inference_session(model.SerializeToString(), threads=1)

    def run(self, session, x):
        """The model on ``x`` (``[n, size_in]``), as ``[n, size_out]`` float64."""
        x = np.asarray(x, dtype=self.in_dtype).reshape((-1, *self.in_shape))
        if self.batched:
            out = session.run([self.output_name], {self.input_name: x})[0]
        else:
            out = np.concatenate(
                [session.run([self.output_name], {self.input_name: xi[None]})[0] for xi in x]
            )
        return np.asarray(out, dtype=np.float64).reshape(len(x), self.size_out)


def _set_initializers(model, values, dtypes):
    for tensor in model.graph.initializer:
        if tensor.name in values:
            value = np.asarray(values[tensor.name], dtype=dtypes[tensor.name])
            tensor.CopyFrom(numpy_helper.from_array(value.reshape(tensor.dims), tensor.name))


# -- validation --------------------------------------------------------------------------------


def _fail(msg, attr="model"):
    raise ValidationError(msg, attr=attr)


def load_model(model):
    """A copy of ``model`` (a ModelProto, serialized bytes, or a file path)."""
    if isinstance(model, onnx.ModelProto):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out
    if isinstance(model, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(model))
        except Exception as err:  # noqa: BLE001  (protobuf's errors vary)
            _fail(f"cannot read the ONNX model from bytes: {err}")
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            _fail(f"no ONNX model file at {path!r}")
        try:
            return onnx.load(path)
        except Exception as err:  # noqa: BLE001
            _fail(f"cannot read the ONNX model {path!r}: {err}")
    _fail(f"must be an onnx.ModelProto or the path of an .onnx file (got {type(model).__name__})")
    return None  # pragma: no cover


def _default_opset(model):
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


def _needs_conversion(model, opset):
    """Whether any operator's definition differs between the model's opset and ``opset``."""
    version = _default_opset(model)
    for node in all_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            old = onnx.defs.get_schema(node.op_type, version, "").since_version
            new = onnx.defs.get_schema(node.op_type, opset, "").since_version
        except onnx.defs.SchemaError:
            _fail(
                f"the model uses {node.op_type!r}, which is not an ONNX operator at opset "
                f"{version}"
            )
        if old != new:
            return True
    return False


def prepare_model(model, opset=DEFAULT_OPSET):
    """Inline local functions and bring the default-domain opset up to ``opset``."""
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # noqa: BLE001  (checker and shape inference errors)
        _fail(f"not a valid ONNX model: {str(err).strip().splitlines()[0]}")
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    if model.graph.sparse_initializer:
        _fail(
            "the model has sparse initializers, which OnnxNode does not support; "
            "store them as dense initializers"
        )
    domains = sorted({n.domain for n in all_nodes(model.graph)} - set(STANDARD_DOMAINS))
    if domains:
        ops = sorted({n.op_type for n in all_nodes(model.graph) if n.domain in domains})
        _fail(
            f"the model uses operators of the domain(s) {domains} ({ops}); an OnnxNode "
            "can only hold standard ONNX operators (domain ai.onnx)"
        )
    version = _default_opset(model)
    if version is None:
        model.opset_import.append(helper.make_opsetid("", opset))
    elif version > opset:
        _fail(
            f"the model's opset is {version}; nengo-onnx runs opsets up to {opset} "
            "(onnxruntime 1.19)"
        )
    elif version < opset and _needs_conversion(model, opset):
        try:
            model = onnx.version_converter.convert_version(model, opset)
        except Exception as err:  # noqa: BLE001
            _fail(
                f"cannot convert the model from opset {version} to {opset}: {err}; "
                f"export it at opset {opset}"
            )
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    return model


def _value_shape(value):
    """``(elem_type, [dims])`` of a graph value; dims are int, str or None (unknown)."""
    ttype = value.type.tensor_type if value.type.HasField("tensor_type") else None
    if ttype is None:
        return None, None
    if not ttype.HasField("shape"):
        return ttype.elem_type, None
    dims = []
    for d in ttype.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return ttype.elem_type, dims


def _choose(names, given, what, attr):
    """The one name of ``names`` that ``given`` selects (``None``: the only one)."""
    if isinstance(given, (list, tuple)):
        if len(given) != 1:
            _fail(
                f"an OnnxNode connects one model {what}; got {len(given)} names {list(given)}",
                attr,
            )
        given = given[0]
    if given is None:
        if len(names) == 1:
            return names[0]
        if not names:
            _fail(f"the model has no {what}s (other than initializers)", attr)
        _fail(
            f"the model has several {what}s {names}; give {attr}=<name> to say which one "
            f"the node's {'input feeds' if what == 'input' else 'output is'}",
            attr,
        )
    if not isinstance(given, str):
        _fail(f"must be the name of a model {what} (got {given!r})", attr)
    if given not in names:
        _fail(f"the model has no {what} {given!r}; its {what}s are {names}", attr)
    return given


def _check_port(name, elem_type, dims, what, attr):
    """Validate a model input or output; returns ``(shape without batch, dtype, batched)``."""
    if elem_type not in FLOAT_TYPES:
        got = "an unknown type" if not elem_type else _type_name(elem_type)
        _fail(f"model {what} {name!r} has dtype {got}; expected a float32 or float64 tensor", attr)
    if dims is None:
        return None, FLOAT_TYPES[elem_type], None
    if len(dims) < 2:
        _fail(
            f"model {what} {name!r} has rank {len(dims)} (shape {dims}); expected rank >= 2: "
            "[batch, d1, ...], the batch axis first (dynamic or 1)",
            attr,
        )
    batch, rest = dims[0], dims[1:]
    if isinstance(batch, int) and batch != 1:
        _fail(
            f"model {what} {name!r} has shape {dims}; its first axis is the batch, which "
            f"must be dynamic or 1 (got {batch})",
            attr,
        )
    if what == "input" and not all(isinstance(d, int) and d > 0 for d in rest):
        _fail(
            f"model input {name!r} has shape {dims}; all axes but the first (the batch) "
            "must have fixed positive sizes",
            attr,
        )
    return rest, FLOAT_TYPES[elem_type], not isinstance(batch, int)


def _output_type(model, output_name, input_name, in_shape, in_dtype, in_batched):
    """``(elem_type, dims)`` of the output: declared, else inferred, else measured.

    Measured by running the model on zeros of batch 2 (1 for a batch-1 model); a
    dynamic batch axis shows as ``None``.
    """
    value = next(o for o in model.graph.output if o.name == output_name)
    elem, dims = _value_shape(value)

    def known(dims):
        return dims is not None and len(dims) >= 1 and all(isinstance(d, int) for d in dims[1:])

    if not known(dims):
        inferred = _output_dims(model, output_name)
        dims = inferred if known(inferred) else dims
    if not known(dims):
        batch = 2 if in_batched else 1
        dims = _probe_output(model, input_name, in_shape, in_dtype, output_name, batch)
        if in_batched and dims[0] == batch:
            dims[0] = None
    return elem, dims


def _output_dims(model, output_name):
    """The output's dims from shape inference (``None`` where unknown)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001  (inference is best effort)
        return None
    for value in list(inferred.graph.output) + list(inferred.graph.value_info):
        if value.name == output_name:
            return _value_shape(value)[1]
    return None


def _probe_output(model, input_name, in_shape, in_dtype, output_name, batch):
    """The output's shape when the model runs on zeros of batch ``batch``."""
    try:
        session = ort_setup.inference_session(model.SerializeToString(), threads=1)
        x = np.zeros((batch, *in_shape), dtype=in_dtype)
        return list(session.run([output_name], {input_name: x})[0].shape)
    except Exception as err:  # noqa: BLE001
        _fail(f"cannot run the model with onnxruntime to find its output shape: {err}")
    return None  # pragma: no cover


def make_spec(model, inputs=None, outputs=None):
    """Load, check and prepare ``model`` for an OnnxNode; returns an `OnnxSpec`.

    Every way the model does not fit is a ``ValidationError`` saying what was
    expected.
    """
    model = prepare_model(load_model(model))
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    real_inputs = [i.name for i in graph.input if i.name not in init_names]
    input_name = _choose(real_inputs, inputs, "input", "inputs")
    unmapped = [n for n in real_inputs if n != input_name]
    if unmapped:
        _fail(
            f"the model has inputs {unmapped} besides {input_name!r}; an OnnxNode feeds "
            "exactly one model input, so the model must have no other inputs (make them "
            "initializers or constants)",
            "inputs",
        )
    output_name = _choose([o.name for o in graph.output], outputs, "output", "outputs")

    in_value = next(i for i in graph.input if i.name == input_name)
    elem, dims = _value_shape(in_value)
    if dims is None:
        _fail(f"model input {input_name!r} has no shape; expected [batch, d1, ...]", "inputs")
    in_shape, in_dtype, in_batched = _check_port(input_name, elem, dims, "input", "inputs")

    elem, dims = _output_type(model, output_name, input_name, in_shape, in_dtype, in_batched)
    out_shape, out_dtype, out_batched = _check_port(output_name, elem, dims, "output", "outputs")
    if not all(d > 0 for d in out_shape):
        _fail(f"model output {output_name!r} has shape {dims}; expected positive sizes", "outputs")
    return OnnxSpec(
        model,
        input_name,
        output_name,
        in_shape,
        out_shape,
        in_dtype,
        out_dtype,
        bool(in_batched and out_batched),
        _parameters(graph),
    )


def _parameters(graph):
    """The float initializers that are weights (not only `SETTING_INPUTS`)."""
    weights = {o.name for o in graph.output}
    for node in all_nodes(graph):
        settings = SETTING_INPUTS.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ()
        weights.update(name for i, name in enumerate(node.input) if i not in settings)
    return [t.name for t in graph.initializer if t.data_type in FLOAT_TYPES and t.name in weights]


# -- the Nengo object -------------------------------------------------------------------------


class _OnnxFunction:
    """``output(t, x)`` of an OnnxNode: the model on one step's input (batch 1)."""

    def __init__(self, spec):
        self.spec = spec
        self._session = None

    def __call__(self, t, x):
        if self._session is None:
            self._session = self.spec.session()
        return self.spec.run(self._session, np.asarray(x)[None])[0]

    def __getstate__(self):
        return {"spec": self.spec, "_session": None}

    def __setstate__(self, state):
        self.__dict__.update(state)


class OnnxNode(nengo.Node):
    """A Node that runs an ONNX model on its input every timestep.

    The model's input named by ``inputs`` receives the node's input and its
    output named by ``outputs`` is the node's output. Their first axis is the
    batch (dynamic, or 1); the other axes are flattened, so ``size_in`` and
    ``size_out`` are their sizes. In ``nengo_onnx.Simulator`` the model's nodes
    are inlined into the simulation graph, batched over the minibatch, and its
    float initializers are parameters: trained by ``sim.train`` (if
    ``trainable``), saved and loaded by ``save_params``/``load_params``, read with
    ``sim.data[node].params`` and exported by ``nengo-onnx compile``. In
    ``nengo.Simulator`` it calls onnxruntime every step (not trainable).

    Parameters
    ----------
    model : onnx.ModelProto or str
        The model, or the path of an ``.onnx`` file. Only standard ONNX
        operators (opset <= 21); local functions are inlined.
    inputs : str, optional
        The model input that receives the node's input (default: the model's
        only input). The model may have no other inputs.
    outputs : str, optional
        The model output that becomes the node's output (default: the model's
        only output).
    trainable : bool
        Whether ``sim.train`` changes the model's float initializers.
    label : str, optional
        A name for the node.

    Attributes
    ----------
    model : onnx.ModelProto
        The model that the node runs (a copy; `freeze_params` writes trained
        parameters into it).
    inputs, outputs : str
        The names of the model input and output that the node uses.
    trainable : bool
        Whether training changes the model's parameters.
    """

    def __init__(self, model, inputs=None, outputs=None, trainable=True, label=None):
        spec = make_spec(model, inputs, outputs)
        if not isinstance(trainable, (bool, np.bool_)):
            raise ValidationError(f"must be True or False (got {trainable!r})", attr="trainable")
        self.spec = spec
        self.inputs = spec.input_name
        self.outputs = spec.output_name
        self.trainable = bool(trainable)
        super().__init__(
            output=_OnnxFunction(spec), size_in=spec.size_in, size_out=spec.size_out, label=label
        )

    @property
    def model(self):
        return self.spec.model

    @property
    def param_names(self):
        """The names of the model's parameters (its float initializers)."""
        return list(self.spec.param_names)

    def get_params(self):
        """``{initializer name: array}``: the parameters the model holds now."""
        return self.spec.param_values()

    def set_params(self, values):
        """Write ``{initializer name: array}`` into the model's initializers."""
        unknown = sorted(set(values) - set(self.spec.param_names))
        if unknown:
            raise ValidationError(
                f"the model has no parameters {unknown}; its parameters "
                f"are {self.spec.param_names}",
                attr="params",
                obj=self,
            )
        current = self.spec.param_values()
        for name, value in values.items():
            if np.shape(value) != current[name].shape:
                raise ValidationError(
                    f"parameter {name!r} has shape {current[name].shape}, got {np.shape(value)}",
                    attr="params",
                    obj=self,
                )
        self.spec.set_param_values(values)


def param_key(name):
    """The ``model.sig[node]`` key of parameter ``name`` (``in``/``out`` are taken)."""
    return f"param.{name}" if name in ("in", "out") else name


# -- building ---------------------------------------------------------------------------------


class SimOnnx(Operator):
    """Run an OnnxNode's model: ``y = model(x; params)``.

    Parameters
    ----------
    spec : OnnxSpec
        The prepared model.
    x, y : Signal
        The node's input (``size_in``) and output (``size_out``).
    params : list of Signal
        The model's float initializers, in ``spec.param_names`` order.
    name : str
        A name for the values of the model in the simulation graph.

    Notes
    -----
    1. sets ``[y]``
    2. incs ``[]``
    3. reads ``[x] + params``
    4. updates ``[]``
    """

    def __init__(self, spec, x, y, params, name="onnx_node", tag=None):
        super().__init__(tag=tag)
        self.spec = spec
        self.name = name  # names the inlined values (stable: no memory addresses)
        self.sets = [y]
        self.incs = []
        self.reads = [x] + list(params)
        self.updates = []

    @property
    def x(self):
        return self.reads[0]

    @property
    def y(self):
        return self.sets[0]

    @property
    def params(self):
        return self.reads[1:]

    @property
    def _descstr(self):
        return f"{self.x} -> {self.y}"

    def make_step(self, signals, dt, rng):
        spec = self.spec
        values = {n: signals[sig] for n, sig in zip(spec.param_names, self.params)}
        session = spec.session(values)
        x, y = signals[self.x], signals[self.y]

        def step_simonnx():
            y[...] = spec.run(session, x[None])[0]

        return step_simonnx


@Builder.register(OnnxNode)
def build_onnx_node(model, node):
    """Build an `OnnxNode`: its input and output signals, parameters and `SimOnnx`.

    1. The input signal (reset every step, as a Node's) and the output signal.
    2. One read-only signal per float initializer of the model, filed under
       ``model.sig[node][name]`` (so they are parameters of the graph).
    3. A `SimOnnx` operator computing the output.

    Notes
    -----
    Sets ``model.params[node]`` to a `BuiltOnnxNode` holding the parameters.
    """
    spec = node.spec
    sig_in = Signal(shape=node.size_in, name=f"{node}.in")
    model.add_op(Reset(sig_in))
    sig_out = Signal(shape=node.size_out, name=f"{node}.out")
    values = spec.param_values()
    params = [
        Signal(values[name], name=f"{node}.{name}", readonly=True) for name in spec.param_names
    ]
    name = sanitize(node.label) if node.label else "onnx_node"
    model.add_op(SimOnnx(spec, sig_in, sig_out, params, name=name, tag=f"{node}"))
    model.sig[node]["in"] = sig_in
    model.sig[node]["out"] = sig_out
    for name, sig in zip(spec.param_names, params):
        model.sig[node][param_key(name)] = sig
    model.params[node] = BuiltOnnxNode(params=values)
