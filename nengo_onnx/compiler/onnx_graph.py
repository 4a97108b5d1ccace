"""A small, stateful builder for ONNX graphs.

Emitters add nodes through it and never build tensor names by hand: every value
name is made unique here, constants are deduplicated, and each node can carry the
Nengo operator it came from in its ``doc_string`` so that an onnxruntime error
leads back to the model.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: The newest opset onnxruntime 1.19 runs, and the IR version it accepts.
DEFAULT_OPSET = 21
IR_VERSION = 10

NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
}


#: ops whose output has the broadcast shape of their inputs
ELEMENTWISE = frozenset(
    "Abs Add And Cast Ceil Clip Cos Div Equal Erf Exp Floor Greater GreaterOrEqual Identity "
    "Less LessOrEqual Log Max Min Mod Mul Neg Not Or Pow Reciprocal Relu Round Sigmoid Sign "
    "Sin Softplus Sqrt Sub Tanh Where Xor".split()
)


def onnx_dtype(dtype):
    return NP_TO_ONNX[np.dtype(dtype)]


class GraphBuilder:
    """Accumulates nodes, initializers, inputs and outputs of one ONNX graph."""

    def __init__(self, name="nengo_onnx", opset=DEFAULT_OPSET):
        self.name = name
        self.opset = opset
        self.nodes = []
        self.initializers = {}
        self.inputs = []
        self.outputs = []
        self.functions = []
        self.extra_opsets = {}
        self._used = set()
        self._counters = {}  # next suffix to try per name hint (keeps naming linear)
        self._const_cache = {}
        # static shapes of values where known (lets no-op Reshapes and Expands go)
        self.shapes = {}
        self.doc = None  # doc_string attached to nodes made while set

    def unique(self, hint):
        hint = str(hint) or "v"
        i = self._counters.get(hint, 0)
        name = hint if i == 0 else f"{hint}_{i}"
        while name in self._used:
            i += 1
            name = f"{hint}_{i}"
        self._counters[hint] = i + 1
        self._used.add(name)
        return name

    def node(self, op_type, inputs, n_outputs=1, name=None, domain="", **attrs):
        """Add a node; returns its output name (or a list if ``n_outputs != 1``)."""
        hint = name or op_type.lower()
        outputs = [self.unique(hint) for _ in range(n_outputs)]
        node = helper.make_node(
            op_type, list(inputs), outputs, name=self.unique(f"n_{hint}"), domain=domain, **attrs
        )
        if self.doc:
            node.doc_string = self.doc
        self.nodes.append(node)
        if op_type in ELEMENTWISE and n_outputs == 1:
            shapes = [self.shapes.get(i) for i in inputs if i]
            if shapes and all(s is not None for s in shapes):
                self.shapes[outputs[0]] = tuple(np.broadcast_shapes(*shapes))
        return outputs[0] if n_outputs == 1 else outputs

    def const(self, value, dtype=None, name=None):
        """A constant initializer, shared between identical small constants."""
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float16 or arr.dtype.kind == "u":
            arr = arr.astype(np.int64 if arr.dtype.kind == "u" else np.float32)
        key = None
        if arr.size <= 64:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._const_cache:
                return self._const_cache[key]
        out = self.initializer(name or "const", arr)
        self.shapes[out] = tuple(arr.shape)
        if key is not None:
            self._const_cache[key] = out
        return out

    def initializer(self, name, array, unique=True):
        """Add an initializer: ``unique`` picks a free name from the hint ``name``;
        otherwise ``name`` is taken as it is, and must be free."""
        if unique:
            name = self.unique(name)
        else:
            self.claim(name)
        self.initializers[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def claim(self, name):
        """Reserve ``name`` exactly (a model-derived name); fails loudly if taken."""
        if name in self._used:
            raise ValueError(f"ONNX value name {name!r} is already taken")
        self._used.add(name)
        return name

    def reserve(self, names):
        """Mark ``names`` (e.g. those of a graph being extended) as taken."""
        self._used.update(names)

    def input(self, name, dtype, shape):
        self.claim(name)
        if all(isinstance(d, int) for d in shape):
            self.shapes[name] = tuple(shape)
        self.inputs.append(helper.make_tensor_value_info(name, onnx_dtype(dtype), list(shape)))
        return name

    def output(self, name, value, dtype, shape):
        """Expose ``value`` as a graph output called ``name``."""
        if value != name:
            self.claim(name)
            self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.outputs.append(helper.make_tensor_value_info(name, onnx_dtype(dtype), list(shape)))
        return name

    def model(self, metadata=None):
        graph = helper.make_graph(
            self.nodes,
            self.name,
            self.inputs,
            self.outputs,
            initializer=list(self.initializers.values()),
        )
        opsets = [helper.make_opsetid("", self.opset)]
        opsets += [helper.make_opsetid(d, v) for d, v in self.extra_opsets.items()]
        model = helper.make_model(
            graph,
            opset_imports=opsets,
            ir_version=IR_VERSION,
            producer_name="nengo-onnx",
            functions=self.functions,
        )
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
        return model


def subgraphs(node):
    """The graphs a node holds as attributes (``If`` branches, ``Scan``/``Loop`` bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def all_nodes(graph):
    """Every node of ``graph``, including those of its subgraphs, depth first."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from all_nodes(sub)


def serialize(model):
    """Serialize a model, with a clear error instead of protobuf's for huge graphs."""
    try:
        return model.SerializeToString()
    except ValueError as err:  # protobuf refuses messages over 2 GiB
        raise onnx.onnx_cpp2py_export.checker.ValidationError(str(err)) from err
