"""`Converter`: an ONNX model (from any framework) as a native Nengo network.

What NengoDL's ``Converter`` does for Keras models, for ONNX graphs: each ONNX
operator becomes native Nengo objects, so the network runs in any Nengo
simulator, can be made spiking (``swap_activations``), trained further and
exported.

* Affine operators (``Gemm``, ``MatMul``, ``Conv``, ``AveragePool``,
  ``GlobalAveragePool``, ``BatchNormalization``, ``Add``/``Sub``/``Mul``/``Div``
  with constants, ``Concat``, ``Transpose``, ``Pad``) and shape-only operators
  (``Flatten``, ``Reshape``, ``Identity``, ``Dropout``, ``Squeeze``, ``Unsqueeze``,
  float ``Cast``) make no objects of their own: they are kept as pending *terms*
  (a Nengo object, a transform, where the result lands) plus a constant bias, and
  composed while the composition keeps the transform's form (dense after dense,
  per-channel scales into dense or convolution kernels, slices and permutations
  into the connection's ``post`` indices). When a value is needed by neurons, by
  a fallback ``OnnxNode`` or as a graph output, its terms become Connections
  (``nengo.Convolution`` for convolutions, dense matrices, ``nengo.Sparse``
  diagonals) and its bias a Connection from a constant Node (trainable, as in
  NengoDL). Where two linear maps cannot be composed in one transform (a dense
  layer after a convolution, a convolution after a sum), the value is first
  collected in a passthrough Node (``nengo.Node(size_in=n)``).
* ``Relu``, ``Sigmoid``, ``Tanh`` become Ensembles of ``RectifiedLinear``,
  ``Sigmoid(tau_ref=1)``, ``Tanh(tau_ref=1)`` neurons (one neuron per element, gain
  1, bias 0), connected to ``ens.neurons``.
* Anything else becomes an `OnnxNode` holding that ONNX node (when
  ``allow_fallback``), otherwise a ``ValidationError`` naming the node.

ONNX tensors are ``[batch, ...]`` in ONNX's layout (NCHW); a Nengo value is one
example's tensor flattened in C order, so convolutions use
``nengo.Convolution(..., channels_last=False)``.
"""

import copy
import warnings

import nengo
import numpy as np
import onnx
from nengo.exceptions import ValidationError
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from nengo_onnx import ort_setup
from nengo_onnx.compiler.names import sanitize
from nengo_onnx.config import configure_settings
from nengo_onnx.onnx_node import OnnxNode, load_model
from nengo_onnx.simulator import Simulator

#: ONNX float element types -> numpy dtypes
_FLOATS = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64}

#: the default neuron type of each activation operator (NengoDL's choices)
ACTIVATIONS = {
    "Relu": lambda: nengo.RectifiedLinear(),
    "Sigmoid": lambda: nengo.Sigmoid(tau_ref=1),
    "Tanh": lambda: nengo.Tanh(tau_ref=1),
}

#: operators that only change a value's shape (the flattened value is unchanged)
_SHAPE_OPS = ("Flatten", "Reshape", "Identity", "Dropout", "Squeeze", "Unsqueeze", "Cast")


# -- values: pending linear terms --------------------------------------------------------------


class _Conv:
    """A convolution in ONNX's layout, kept as numbers until it becomes a `nengo.Convolution`."""

    def __init__(self, kernel, input_shape, strides, padding, groups):
        self.kernel = np.asarray(kernel, dtype=np.float64)  # ONNX: (M, C/groups, *k)
        self.input_shape = tuple(int(d) for d in input_shape)  # (C, *spatial)
        self.strides = tuple(int(s) for s in strides)
        self.padding = padding  # "valid" or "same" (nengo's meaning)
        self.groups = int(groups)

    @property
    def n_filters(self):
        return self.kernel.shape[0]

    def transform(self):
        nd = self.kernel.ndim - 2
        init = np.transpose(self.kernel, (*range(2, 2 + nd), 1, 0))
        return nengo.Convolution(
            self.n_filters,
            self.input_shape,
            kernel_size=self.kernel.shape[2:],
            strides=self.strides,
            padding=self.padding,
            channels_last=False,
            init=init,
            groups=self.groups,
        )


class _Term:
    """``value[post] += transform(src)``.

    ``kind`` is ``"diag"`` (``data`` None: identity, else a vector of scales),
    ``"dense"`` (``data`` a matrix) or ``"conv"`` (``data`` a `_Conv`). ``post`` is
    None (the whole value) or the value's indices the result lands on. ``via``
    names the ONNX nodes folded into this term.
    """

    def __init__(self, src, kind="diag", data=None, post=None, via=()):
        self.src, self.kind, self.data, self.post, self.via = src, kind, data, post, tuple(via)

    def replace(self, **kwargs):
        out = copy.copy(self)
        for key, value in kwargs.items():
            setattr(out, key, value)
        return out


class _Value:
    """An intermediate ONNX tensor: ``sum(terms) + bias`` of shape ``shape`` (no batch)."""

    def __init__(self, shape, terms, bias=None):
        self.shape = tuple(int(d) for d in shape)
        self.terms = list(terms)
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float64).ravel()

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def bias_or_zeros(self):
        return np.zeros(self.size) if self.bias is None else self.bias

    def single_object(self):
        """The object whose output is this value, if it is exactly one (else None)."""
        if self.bias is not None or len(self.terms) != 1:
            return None
        term = self.terms[0]
        if term.kind == "diag" and term.data is None and term.post is None:
            return term.src
        return None


def _is_uniform(vector):
    return vector.size == 0 or np.all(vector == vector[0])


def _rate_form(neuron_type):
    """The non-spiking form of ``neuron_type`` (for `Converter.verify`)."""
    if isinstance(neuron_type, nengo.SpikingRectifiedLinear):
        return nengo.RectifiedLinear(amplitude=neuron_type.amplitude)
    if isinstance(neuron_type, nengo.LIF):
        return nengo.LIFRate(
            tau_rc=neuron_type.tau_rc,
            tau_ref=neuron_type.tau_ref,
            amplitude=neuron_type.amplitude,
        )
    base = getattr(neuron_type, "base_type", None)  # RegularSpiking, PoissonSpiking, ...
    return base if base is not None else neuron_type


# -- the converter -----------------------------------------------------------------------------


class Converter:
    """Convert an ONNX model into a native Nengo network.

    Parameters
    ----------
    model : onnx.ModelProto or str
        The model, or the path of an ``.onnx`` file. Its inputs and outputs are
        float tensors whose first axis is the batch.
    swap_activations : dict, optional
        Neuron types to use instead of the defaults (``RectifiedLinear`` for
        ``Relu``, ``Sigmoid(tau_ref=1)``, ``Tanh(tau_ref=1)``), keyed by ONNX op type
        (``"Relu"``), ONNX node name, or a Nengo neuron type (NengoDL's form:
        ``{nengo.RectifiedLinear(): nengo.SpikingRectifiedLinear()}``). A node name
        wins over an op type, which wins over a neuron type.
    scale_firing_rates : float or dict, optional
        Multiplies the neurons' gains by this factor and divides their output by
        it (their ``amplitude``, or for neuron types without one the weights of
        their outgoing connections): the rate network computes the same for
        ``RectifiedLinear``, and spiking neurons fire faster, so more accurately.
        A dict gives a factor per ONNX node name (or op type).
    synapse : float or nengo.synapses.Synapse, optional
        The synapse of every connection out of neurons (and of the probes of
        outputs that are neurons). ``None``: no filtering.
    allow_fallback : bool
        Whether ONNX nodes without a native Nengo form become `OnnxNode` objects
        holding them (else a ``ValidationError``).

    Attributes
    ----------
    model : onnx.ModelProto
        The ONNX model (a copy).
    net : nengo.Network
        The converted network.
    inputs : dict
        ONNX graph input name -> its input ``nengo.Node`` (``output`` zeros; feed
        it with ``sim.run(..., data={node: ...})`` or set its ``output``).
    outputs : dict
        ONNX graph output name -> its ``nengo.Probe``.
    layers : dict
        ONNX node name -> the Nengo object whose output is that node's output
        (``Neurons`` of the Ensemble of an activation, the `OnnxNode` of a
        fallback, a passthrough Node), or, for linear nodes folded into
        connections, the tuple of those Connections.
    """

    def __init__(
        self,
        model,
        *,
        swap_activations=None,
        scale_firing_rates=None,
        synapse=None,
        allow_fallback=True,
    ):
        self.model = self._load(model)
        self.swap_activations = dict(swap_activations or {})
        self.scale_firing_rates = scale_firing_rates
        self.synapse = synapse
        self.allow_fallback = bool(allow_fallback)
        if scale_firing_rates is not None and not isinstance(scale_firing_rates, dict):
            if not (np.isscalar(scale_firing_rates) and float(scale_firing_rates) > 0):
                raise ValidationError(
                    f"must be a positive number or a dict (got {scale_firing_rates!r})",
                    attr="scale_firing_rates",
                )
        self._used_keys = set()
        self.inputs, self.outputs, self.layers = {}, {}, {}
        self._conns_of = {}
        self._shapes = self._infer_shapes()
        self._consts = {t.name: numpy_helper.to_array(t) for t in self.model.graph.initializer}
        self._values = {}
        graph_label = self.model.graph.name or "onnx_model"
        # seeded: the same model converts to the same network (initial neuron states too)
        self.net = nengo.Network(label=f"Converter({graph_label})", seed=0)
        with self.net:
            configure_settings(trainable=None)  # adds the ``trainable`` config option
            self._bias_node = None
            self._convert()
        self._report_unused_keys()

    # -- loading and shapes ---------------------------------------------------------------------

    @staticmethod
    def _load(model):
        model = load_model(model)
        try:
            onnx.checker.check_model(model)
        except Exception as err:  # noqa: BLE001  (checker errors vary)
            raise ValidationError(
                f"not a valid ONNX model: {str(err).strip().splitlines()[0]}", attr="model"
            ) from err
        if model.functions:
            model = onnx.inliner.inline_local_functions(model)
        taken = {node.name for node in model.graph.node}
        for i, node in enumerate(model.graph.node):
            if not node.name:  # name unnamed nodes (for `layers` and error messages)
                name = f"{node.op_type}_{i}"
                while name in taken:
                    name += "_"
                node.name = name
                taken.add(name)
        return model

    def _infer_shapes(self):
        """``{value name: (elem_type, dims)}`` with the graph inputs' batch axis set to 1."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        for value in model.graph.input:
            dims = value.type.tensor_type.shape.dim
            if len(dims) >= 1:
                dims[0].Clear()
                dims[0].dim_value = 1
        del model.graph.value_info[:]
        try:
            model = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception as err:  # noqa: BLE001
            raise ValidationError(
                f"ONNX shape inference fails on the model: {err}", attr="model"
            ) from err
        shapes = {}
        for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
            ttype = value.type.tensor_type
            dims = None
            if ttype.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
            shapes[value.name] = (ttype.elem_type, dims)
        return shapes

    def _sample_shape(self, name, node=None):
        """The shape of value ``name`` without its batch axis."""
        elem, dims = self._shapes.get(name, (None, None))
        if dims is None or len(dims) < 1 or any(d is None for d in dims) or dims[0] != 1:
            where = f" (output of node {node.name!r}, {node.op_type})" if node is not None else ""
            raise ValidationError(
                f"cannot tell the shape of ONNX value {name!r}{where}: the converter needs "
                "static shapes [batch, ...] with the batch first",
                attr="model",
            )
        return tuple(dims[1:])

    # -- the walk -------------------------------------------------------------------------------

    def _convert(self):
        graph = self.model.graph
        for inp in graph.input:
            if inp.name in self._consts:
                continue
            elem = inp.type.tensor_type.elem_type
            if elem not in _FLOATS:
                raise ValidationError(
                    f"model input {inp.name!r} is not a float tensor; the converter "
                    "handles float inputs only",
                    attr="model",
                )
            shape = self._sample_shape(inp.name)
            node = nengo.Node(np.zeros(int(np.prod(shape))), label=inp.name)
            self.inputs[inp.name] = node
            self._values[inp.name] = _Value(shape, [_Term(node)])

        for node in graph.node:
            self._convert_node(node)

        for out in graph.output:
            if out.name in self._consts:
                raise ValidationError(
                    f"model output {out.name!r} is a constant; nothing to convert", attr="model"
                )
            value = self._values[out.name]
            obj = value.single_object()
            if obj is None:
                obj = nengo.Node(size_in=value.size, label=out.name)
                self._connect(value, obj)
            self.outputs[out.name] = nengo.Probe(
                obj,
                synapse=self.synapse if isinstance(obj, nengo.ensemble.Neurons) else None,
                label=out.name,
            )

        for name, conns in self._conns_of.items():
            self.layers.setdefault(name, tuple(conns))

    def _convert_node(self, node):
        if node.domain not in ("", "ai.onnx"):
            self._unsupported(
                node, f"its domain {node.domain!r} is not standard ONNX", fallback=False
            )
        inputs = [name for name in node.input if name]
        if all(name in self._consts for name in inputs):
            outs = self._evaluate(node, {name: self._consts[name] for name in inputs})
            self._consts.update(zip(node.output, outs))
            return
        if node.op_type == "Shape":
            value = self._values.get(node.input[0])
            shape = (1, *value.shape) if value is not None else self._consts[node.input[0]].shape
            self._consts[node.output[0]] = np.array(shape, dtype=np.int64)[
                slice(_attr(node, "start", 0), _attr(node, "end", None))
            ]
            return
        for name in node.output[1:]:
            if name and self._is_used(name):
                return self._fallback(node, f"its output {name!r} is used")
        handler = getattr(self, f"_op_{node.op_type}", None)
        if handler is None:
            return self._fallback(node, "it has no native Nengo form")
        reason = handler(node)
        if reason is not None:
            self._fallback(node, reason)

    def _is_used(self, name):
        graph = self.model.graph
        used = any(name in n.input for n in graph.node)
        return used or any(o.name == name for o in graph.output)

    def _unsupported(self, node, reason, fallback=True):
        msg = (
            f"ONNX node {node.name!r} ({node.op_type}) cannot be converted to native Nengo "
            f"objects: {reason}"
        )
        if fallback and not self.allow_fallback:
            msg += " (allow_fallback=True would hold it in an OnnxNode)"
        raise ValidationError(msg, attr="model")

    def _evaluate(self, node, feeds):
        """Run one ONNX node on numpy values (onnx's reference implementation)."""
        opsets = list(self.model.opset_import)
        inputs = [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for name, v in feeds.items()
        ]
        outputs = [helper.make_value_info(name, onnx.TypeProto()) for name in node.output if name]
        graph = helper.make_graph([node], "eval", inputs, outputs)
        model = helper.make_model(graph, opset_imports=opsets)
        return ReferenceEvaluator(model).run(None, feeds)

    def _new_bias(self, node, value, data_index=0, feeds=None):
        """The node applied to the incoming value's bias (its own bias included)."""
        feeds = dict(feeds or {})
        name = node.input[data_index]
        dtype = _FLOATS.get(self._shapes.get(name, (TensorProto.FLOAT,))[0], np.float32)
        feeds[name] = value.bias_or_zeros().reshape((1, *value.shape)).astype(dtype)
        for other in node.input:
            if other and other not in feeds:
                feeds[other] = self._consts[other]
        out = self._evaluate(node, feeds)[0]
        bias = np.asarray(out, dtype=np.float64).ravel()
        return None if not np.any(bias) else bias

    # -- making connections ---------------------------------------------------------------------

    def _one(self):
        if self._bias_node is None:
            self._bias_node = nengo.Node([1.0], label="bias")
        return self._bias_node

    def _connect(self, value, target, offset=0, via=()):
        """Connections that add ``value`` into ``target[offset:offset + value.size]``."""
        whole = offset == 0 and target.size_in == value.size
        for term in value.terms:
            post = term.post
            if post is None:
                post = None if whole else np.arange(offset, offset + value.size)
            else:
                post = post + offset
            post_obj = target if post is None else target[post.tolist()]
            if term.kind == "diag":
                n = term.src.size_out
                if term.data is None:
                    transform = 1.0
                elif _is_uniform(term.data):
                    transform = float(term.data[0])
                else:
                    transform = nengo.Sparse(
                        (n, n), indices=np.stack([np.arange(n)] * 2, axis=1), init=term.data
                    )
            elif term.kind == "dense":
                transform = term.data
            else:
                transform = term.data.transform()
            conn = nengo.Connection(
                term.src,
                post_obj,
                transform=transform,
                synapse=self.synapse if isinstance(term.src, nengo.ensemble.Neurons) else None,
            )
            for name in (*term.via, *via):
                self._conns_of.setdefault(name, []).append(conn)
        if value.bias is not None:
            post_obj = target if whole else target[offset : offset + value.size]
            conn = nengo.Connection(
                self._one(), post_obj, transform=value.bias[:, None], synapse=None
            )
            names = dict.fromkeys([name for term in value.terms for name in term.via])
            for name in (*names, *via):
                self._conns_of.setdefault(name, []).append(conn)

    def _collect(self, value, label):
        """``value`` held by a passthrough Node: one identity term."""
        obj = value.single_object()
        if obj is not None:
            return value
        node = nengo.Node(size_in=value.size, label=label)
        self._connect(value, node)
        return _Value(value.shape, [_Term(node)])

    def _set(self, node, value):
        self._values[node.output[0]] = value
        obj = value.single_object()
        if obj is not None and not any(obj is v for v in self.inputs.values()):
            self.layers[node.name] = obj

    def _value(self, name):
        if name in self._values:
            return self._values[name]
        raise KeyError(name)  # a constant: callers check

    def _is_value(self, name):
        return name in self._values

    # -- composing linear maps ------------------------------------------------------------------

    def _apply_dense(self, value, matrix, out_shape, bias, via):
        """``matrix @ value + bias``."""
        if any(t.kind == "conv" for t in value.terms):
            value = self._collect(value, f"{via[0]}.in")
        terms = []
        for term in value.terms:
            m = matrix if term.post is None else matrix[:, term.post]
            if term.kind == "diag":
                m = m if term.data is None else m * term.data[None, :]
            else:
                m = m @ term.data
            terms.append(_Term(term.src, "dense", m, None, (*term.via, *via)))
        return _Value(out_shape, terms, bias)

    def _apply_scale(self, value, scale, bias, via):
        """``scale * value + bias`` (``scale`` a vector of the value's size)."""
        terms = []
        for term in value.terms:
            s = scale if term.post is None else scale[term.post]
            if term.kind == "diag":
                data = s if term.data is None else s * term.data
                terms.append(term.replace(data=data, via=(*term.via, *via)))
            elif term.kind == "dense":
                terms.append(term.replace(data=s[:, None] * term.data, via=(*term.via, *via)))
            else:
                conv = term.data
                per_filter = s.reshape(conv.n_filters, -1)
                if all(_is_uniform(row) for row in per_filter):
                    new = copy.copy(conv)
                    new.kernel = conv.kernel * per_filter[:, :1].reshape(
                        (-1,) + (1,) * (conv.kernel.ndim - 1)
                    )
                    terms.append(term.replace(data=new, via=(*term.via, *via)))
                else:
                    label = f"{via[0]}.in" if via else None
                    alone = _Value((term_size(term),), [term.replace(post=None)])
                    held = self._collect(alone, label)
                    terms.append(_Term(held.terms[0].src, "diag", s, term.post, via))
        return _Value(value.shape, terms, bias)

    def _apply_conv(self, value, conv, out_shape, bias, via):
        """``conv(value) + bias``: the value must be one identity (or per-channel) term."""
        term = value.terms[0] if len(value.terms) == 1 and value.bias is None else None
        ok = term is not None and term.kind == "diag" and term.post is None
        if ok and term.data is not None:
            per_channel = term.data.reshape(conv.input_shape[0], -1)
            ok = all(_is_uniform(row) for row in per_channel)
            if ok:
                cg = conv.kernel.shape[1]
                scales = per_channel[:, 0].reshape(conv.groups, cg)  # (group, channel in group)
                fpg = conv.n_filters // conv.groups
                factor = np.repeat(scales, fpg, axis=0)  # (M, C/groups)
                conv = copy.copy(conv)
                extra = (1,) * (conv.kernel.ndim - 2)
                conv.kernel = conv.kernel * factor.reshape(factor.shape + extra)
        if not ok:
            value = self._collect(value, f"{via[0]}.in")
            term = value.terms[0]
        return _Value(out_shape, [_Term(term.src, "conv", conv, None, (*term.via, *via))], bias)

    def _place(self, value, mapping, out_shape, bias, via=()):
        """Move element ``i`` of ``value`` to ``mapping[i]`` of a new value (zeros elsewhere)."""
        terms = []
        for term in value.terms:
            post = mapping if term.post is None else mapping[term.post]
            terms.append(term.replace(post=post, via=(*term.via, *via)))
        return _Value(out_shape, terms, bias)

    # -- operators ------------------------------------------------------------------------------

    def _op_Gemm(self, node):
        a, b = node.input[0], node.input[1]
        if not self._is_value(a) or self._is_value(b) or _attr(node, "transA", 0):
            return "only Gemm(value, constant weights) without transA is native"
        if len(node.input) > 2 and node.input[2] and self._is_value(node.input[2]):
            return "its bias C is not a constant"
        value = self._value(a)
        weights = self._consts[b]
        weights = weights.T if _attr(node, "transB", 0) else weights
        matrix = _attr(node, "alpha", 1.0) * np.asarray(weights, dtype=np.float64).T
        out_shape = self._sample_shape(node.output[0], node)
        bias = self._new_bias(node, value)
        self._set(node, self._apply_dense(value, matrix, out_shape, bias, (node.name,)))
        return None

    def _op_MatMul(self, node):
        a, b = node.input
        if not self._is_value(a) or self._is_value(b) or self._consts[b].ndim != 2:
            return "only MatMul(value, constant 2-D matrix) is native"
        value = self._value(a)
        matrix = np.asarray(self._consts[b], dtype=np.float64).T
        if len(value.shape) > 1:
            matrix = np.kron(np.eye(int(np.prod(value.shape[:-1]))), matrix)
        out_shape = self._sample_shape(node.output[0], node)
        bias = self._new_bias(node, value)
        self._set(node, self._apply_dense(value, matrix, out_shape, bias, (node.name,)))
        return None

    def _conv_padding(self, node, in_spatial, kernel, strides):
        """nengo's padding for the node's pads, or ``("pad", begins, ends)`` to pad first."""
        nd = len(in_spatial)
        auto = _attr(node, "auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        same_total = [
            max((-(-n // s) - 1) * s + k - n, 0) for n, k, s in zip(in_spatial, kernel, strides)
        ]
        same = ([t // 2 for t in same_total], [t - t // 2 for t in same_total])
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if auto == "SAME_LOWER":
                same = (same[1], same[0])
            begins, ends = same
        elif auto == "VALID":
            begins, ends = [0] * nd, [0] * nd
        else:
            pads = list(_attr(node, "pads", [0] * (2 * nd)))
            begins, ends = pads[:nd], pads[nd:]
        if not any(begins) and not any(ends):
            return "valid"
        if (list(begins), list(ends)) == (same[0], same[1]) and auto != "SAME_LOWER":
            return "same"
        return ("pad", begins, ends)

    def _pad_value(self, value, begins, ends, via):
        """``value`` zero-padded on its spatial axes (a placement, folded into connections)."""
        channels, spatial = value.shape[0], value.shape[1:]
        padded = (channels, *(n + b + e for n, b, e in zip(spatial, begins, ends)))
        index = np.arange(int(np.prod(padded))).reshape(padded)
        window = (slice(None), *(slice(b, b + n) for b, n in zip(begins, spatial)))
        mapping = index[window].ravel()
        bias = None
        if value.bias is not None:
            bias = np.zeros(index.size)
            bias[mapping] = value.bias
        return self._place(value, mapping, padded, bias, via)

    def _op_Conv(self, node):
        x, w = node.input[0], node.input[1]
        if not self._is_value(x) or self._is_value(w):
            return "only Conv(value, constant kernel) is native"
        if len(node.input) > 2 and node.input[2] and self._is_value(node.input[2]):
            return "its bias is not a constant"
        value = self._value(x)
        kernel = np.asarray(self._consts[w], dtype=np.float64)
        nd = kernel.ndim - 2
        if nd not in (1, 2):
            return f"nengo.Convolution is 1-D or 2-D (this is {nd}-D)"
        if any(d != 1 for d in _attr(node, "dilations", [1] * nd)):
            return "nengo.Convolution has no dilations"
        strides = list(_attr(node, "strides", [1] * nd))
        padding = self._conv_padding(node, value.shape[1:], kernel.shape[2:], strides)
        bias = self._new_bias(node, value)
        if isinstance(padding, tuple):
            value = self._pad_value(value, padding[1], padding[2], (node.name,))
            padding = "valid"
        conv = _Conv(kernel, value.shape, strides, padding, _attr(node, "group", 1))
        out_shape = self._sample_shape(node.output[0], node)
        self._set(node, self._apply_conv(value, conv, out_shape, bias, (node.name,)))
        return None

    def _op_AveragePool(self, node):
        if not self._is_value(node.input[0]):
            return "its input is not a value"
        value = self._value(node.input[0])
        k = list(_attr(node, "kernel_shape"))
        nd = len(k)
        if nd not in (1, 2):
            return f"nengo.Convolution is 1-D or 2-D (this is {nd}-D)"
        if _attr(node, "ceil_mode", 0) or any(d != 1 for d in _attr(node, "dilations", [1] * nd)):
            return "ceil_mode and dilations have no nengo.Convolution form"
        strides = list(_attr(node, "strides", [1] * nd))
        padding = self._conv_padding(node, value.shape[1:], k, strides)
        if padding != "valid" and not _attr(node, "count_include_pad", 0):
            return "padding without count_include_pad averages over fewer elements at edges"
        return self._pool(node, value, k, strides, padding)

    def _op_GlobalAveragePool(self, node):
        if not self._is_value(node.input[0]):
            return "its input is not a value"
        value = self._value(node.input[0])
        k = list(value.shape[1:])
        if len(k) not in (1, 2):
            return f"nengo.Convolution is 1-D or 2-D (this is {len(k)}-D)"
        return self._pool(node, value, k, [1] * len(k), "valid")

    def _pool(self, node, value, k, strides, padding):
        channels = value.shape[0]
        kernel = np.full((channels, 1, *k), 1.0 / np.prod(k))
        bias = self._new_bias(node, value)
        if isinstance(padding, tuple):
            value = self._pad_value(value, padding[1], padding[2], (node.name,))
            padding = "valid"
        conv = _Conv(kernel, value.shape, strides, padding, channels)
        out_shape = self._sample_shape(node.output[0], node)
        self._set(node, self._apply_conv(value, conv, out_shape, bias, (node.name,)))
        return None

    def _op_BatchNormalization(self, node):
        if _attr(node, "training_mode", 0):
            return "training_mode=1 (batch statistics) is not inference"
        x = node.input[0]
        if not self._is_value(x) or any(self._is_value(n) for n in node.input[1:5]):
            return "only BatchNormalization with constant statistics is native"
        value = self._value(x)
        gamma, var = self._consts[node.input[1]], self._consts[node.input[4]]
        scale = np.asarray(gamma, dtype=np.float64) / np.sqrt(
            np.asarray(var, dtype=np.float64) + _attr(node, "epsilon", 1e-5)
        )
        full = np.broadcast_to(scale.reshape((-1,) + (1,) * (len(value.shape) - 1)), value.shape)
        bias = self._new_bias(node, value)
        self._set(node, self._apply_scale(value, full.ravel().copy(), bias, (node.name,)))
        return None

    def _activation(self, node):
        if not self._is_value(node.input[0]):
            return "its input is not a value"
        value = self._value(node.input[0])
        neuron_type = ACTIVATIONS[node.op_type]()
        neuron_type = self._swap(node, neuron_type)
        scale = self._scale(node)
        out_scale = None
        if scale is not None and scale != 1:
            if hasattr(neuron_type, "amplitude"):
                neuron_type = copy.copy(neuron_type)
                type(neuron_type).amplitude.data[neuron_type] = neuron_type.amplitude / scale
            else:
                warnings.warn(
                    f"scale_firing_rates on ONNX node {node.name!r}: "
                    f"{type(neuron_type).__name__} has no amplitude, so its outgoing weights "
                    "are divided instead; this changes the output of a nonlinear neuron type",
                    stacklevel=4,
                )
                out_scale = 1.0 / scale
        ens = nengo.Ensemble(
            value.size,
            1,
            neuron_type=neuron_type,
            gain=nengo.dists.Choice([1.0 if scale is None else float(scale)]),
            bias=nengo.dists.Choice([0.0]),
            encoders=nengo.dists.Choice([[1.0]]),
            label=node.name,
        )
        # inputs arrive on ens.neurons (and biases through connections): the ensemble's
        # encoders and its zero bias are not parameters of the model (NengoDL's choice)
        self.net.config[ens].trainable = False
        self.net.config[ens.neurons].trainable = False
        self._connect(value, ens.neurons, via=(node.name,))
        out = _Value(value.shape, [_Term(ens.neurons)])
        if out_scale is not None:
            out = self._apply_scale(out, np.full(value.size, out_scale), None, ())
        self._values[node.output[0]] = out
        self.layers[node.name] = ens.neurons
        return None

    _op_Relu = _op_Sigmoid = _op_Tanh = _activation

    def _swap(self, node, neuron_type):
        for key in (node.name, node.op_type):
            if key in self.swap_activations:
                self._used_keys.add(key)
                return self.swap_activations[key]
        for key, new in self.swap_activations.items():
            if isinstance(key, nengo.neurons.NeuronType) and key == neuron_type:
                self._used_keys.add(key)
                return new
        return neuron_type

    def _scale(self, node):
        rates = self.scale_firing_rates
        if rates is None:
            return None
        if isinstance(rates, dict):
            for key in (node.name, node.op_type):
                if key in rates:
                    self._used_keys.add(("scale", key))
                    return float(rates[key])
            return None
        return float(rates)

    def _report_unused_keys(self):
        unused = [k for k in self.swap_activations if k not in self._used_keys]
        if isinstance(self.scale_firing_rates, dict):
            unused += [k for k in self.scale_firing_rates if ("scale", k) not in self._used_keys]
        if unused:
            warnings.warn(
                f"swap_activations / scale_firing_rates keys {unused} match no activation "
                "node of the model (keys are ONNX op types, node names or neuron types)",
                stacklevel=3,
            )

    def _op_shape_only(self, node):
        x = node.input[0]
        if not self._is_value(x):
            return "its input is not a value"
        if node.op_type == "Cast" and helper.tensor_dtype_to_np_dtype(_attr(node, "to")) not in (
            np.float32,
            np.float64,
        ):
            return "it casts to a non-float type"
        value = self._value(x)
        shape = self._sample_shape(node.output[0], node)
        if int(np.prod(shape)) != value.size:
            return f"it changes the batch axis (shape {value.shape} -> {shape})"
        self._set(node, _Value(shape, value.terms, value.bias))
        return None

    _op_Flatten = _op_Reshape = _op_Identity = _op_Dropout = _op_shape_only
    _op_Squeeze = _op_Unsqueeze = _op_Cast = _op_shape_only

    def _broadcast_const(self, name, shape):
        const = np.asarray(self._consts[name], dtype=np.float64)
        try:
            return np.broadcast_to(const, (1, *shape))[0].ravel().copy()
        except ValueError:
            return None

    def _op_Add(self, node, sign=1.0):
        a, b = node.input
        shape = self._sample_shape(node.output[0], node)
        parts = []
        for i, name in enumerate((a, b)):
            factor = sign if i == 1 else 1.0
            if self._is_value(name):
                value = self._value(name)
                if value.shape != shape:
                    return "it broadcasts one value against another"
                if factor != 1.0:
                    bias = None if value.bias is None else factor * value.bias
                    value = self._apply_scale(value, np.full(value.size, factor), bias, ())
                parts.append(value)
            else:
                const = self._broadcast_const(name, shape)
                if const is None:
                    return "its constant does not broadcast to the value's shape"
                parts.append(_Value(shape, [], factor * const))
        terms = [t for p in parts for t in p.terms]
        bias = sum(p.bias_or_zeros() for p in parts)
        out = _Value(shape, [t.replace(via=(*t.via, node.name)) for t in terms], bias)
        out.bias = None if not np.any(bias) else out.bias
        self._set(node, out)
        return None

    def _op_Sub(self, node):
        return self._op_Add(node, sign=-1.0)

    def _op_Mul(self, node, divide=False):
        a, b = node.input
        if self._is_value(a) and self._is_value(b):
            return "it multiplies two values"
        if divide and self._is_value(b):
            return "it divides by a value"
        x, c = (a, b) if self._is_value(a) else (b, a)
        value = self._value(x)
        shape = self._sample_shape(node.output[0], node)
        if shape != value.shape:
            return "it broadcasts the value"
        scale = self._broadcast_const(c, shape)
        if scale is None:
            return "its constant does not broadcast to the value's shape"
        scale = 1.0 / scale if divide else scale
        bias = None if value.bias is None else scale * value.bias
        self._set(node, self._apply_scale(value, scale, bias, (node.name,)))
        return None

    def _op_Div(self, node):
        return self._op_Mul(node, divide=True)

    def _op_Concat(self, node):
        shape = self._sample_shape(node.output[0], node)
        axis = _attr(node, "axis")
        axis = axis + len(shape) + 1 if axis < 0 else axis
        if axis == 0:
            return "it concatenates along the batch axis"
        index = np.arange(int(np.prod(shape))).reshape(shape)
        terms, bias, start = [], np.zeros(index.size), 0
        for name in node.input:
            if self._is_value(name):
                value = self._value(name)
            else:
                const = np.asarray(self._consts[name], dtype=np.float64)
                value = _Value(const.shape[1:], [], const.ravel())
            width = value.shape[axis - 1]
            window = [slice(None)] * len(shape)
            window[axis - 1] = slice(start, start + width)
            mapping = index[tuple(window)].ravel()
            start += width
            terms += self._place(value, mapping, shape, None, (node.name,)).terms
            bias[mapping] += value.bias_or_zeros()
        self._set(node, _Value(shape, terms, bias if np.any(bias) else None))
        return None

    def _op_Transpose(self, node):
        if not self._is_value(node.input[0]):
            return "its input is not a value"
        value = self._value(node.input[0])
        perm = list(_attr(node, "perm", range(len(value.shape), -1, -1)))
        if perm[0] != 0:
            return "it moves the batch axis"
        sample_perm = [p - 1 for p in perm[1:]]
        index = np.arange(value.size).reshape(value.shape)
        mapping = np.empty(value.size, dtype=np.int64)
        mapping[np.transpose(index, sample_perm).ravel()] = np.arange(value.size)
        shape = tuple(value.shape[p] for p in sample_perm)
        bias = None
        if value.bias is not None:
            bias = np.zeros(value.size)
            bias[mapping] = value.bias
        self._set(node, self._place(value, mapping, shape, bias, (node.name,)))
        return None

    def _op_Pad(self, node):
        x = node.input[0]
        mode = _attr(node, "mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if not self._is_value(x) or mode != "constant":
            return "only zero constant padding of a value is native"
        if any(self._is_value(n) for n in node.input[1:] if n):
            return "its pads are not constants"
        value_const = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if value_const is not None and np.any(self._consts[value_const]):
            return "it pads with a non-zero value"
        if len(node.input) > 3 and node.input[3]:
            return "it pads only some axes"
        value = self._value(x)
        pads = np.asarray(self._consts[node.input[1]]).tolist()
        rank = len(value.shape) + 1
        begins, ends = pads[:rank], pads[rank:]
        if begins[0] or ends[0] or min(pads) < 0:
            return "it pads the batch axis or crops"
        shape = tuple(n + b + e for n, b, e in zip(value.shape, begins[1:], ends[1:]))
        index = np.arange(int(np.prod(shape))).reshape(shape)
        window = tuple(slice(b, b + n) for b, n in zip(begins[1:], value.shape))
        mapping = index[window].ravel()
        bias = None
        if value.bias is not None:
            bias = np.zeros(index.size)
            bias[mapping] = value.bias
        self._set(node, self._place(value, mapping, shape, bias, (node.name,)))
        return None

    # -- the fallback ---------------------------------------------------------------------------

    def _fallback(self, node, reason):
        if not self.allow_fallback:
            self._unsupported(node, reason)
        dynamic = [n for n in dict.fromkeys(node.input) if n and self._is_value(n)]
        out_name = node.output[0]
        elem, _ = self._shapes.get(out_name, (None, None))
        if elem not in _FLOATS:
            self._unsupported(
                node,
                "its output is not a float tensor (an OnnxNode outputs floats); keep only "
                "the model's float outputs, e.g. with onnx.utils.extract_model",
                fallback=False,
            )
        out_shape = self._sample_shape(out_name, node)
        total = sum(self._values[n].size for n in dynamic)
        nodes, offset, inits = [], 0, []
        for name in dynamic:
            value = self._values[name]
            in_elem = self._shapes.get(name, (TensorProto.FLOAT,))[0]
            sliced = f"{name}__flat"
            starts, ends = f"{name}__starts", f"{name}__ends"
            axes, shape = f"{name}__axes", f"{name}__shape"
            inits += [
                numpy_helper.from_array(np.array([offset], dtype=np.int64), starts),
                numpy_helper.from_array(np.array([offset + value.size], dtype=np.int64), ends),
                numpy_helper.from_array(np.array([1], dtype=np.int64), axes),
                numpy_helper.from_array(np.array([-1, *value.shape], dtype=np.int64), shape),
            ]
            nodes.append(helper.make_node("Slice", ["x", starts, ends, axes], [sliced]))
            if in_elem != TensorProto.FLOAT:
                nodes.append(helper.make_node("Cast", [sliced], [f"{sliced}__cast"], to=in_elem))
                sliced = f"{sliced}__cast"
            nodes.append(helper.make_node("Reshape", [sliced, shape], [name]))
            offset += value.size
        consts = [n for n in dict.fromkeys(node.input) if n and n in self._consts]
        inits += [numpy_helper.from_array(np.asarray(self._consts[n]), n) for n in consts]
        nodes.append(node)
        graph = helper.make_graph(
            nodes,
            sanitize(node.name or node.op_type),
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", total])],
            [helper.make_tensor_value_info(out_name, elem, ["batch", *out_shape])],
            initializer=inits,
        )
        sub = helper.make_model(
            graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version
        )
        onnx_node = OnnxNode(sub, label=node.name or node.op_type)
        offset = 0
        for name in dynamic:
            value = self._values[name]
            self._connect(value, onnx_node, offset=offset)
            offset += value.size
        self._values[out_name] = _Value(out_shape, [_Term(onnx_node)])
        self.layers[node.name] = onnx_node
        return None

    # -- verification ---------------------------------------------------------------------------

    def verify(self, inputs=None, *, atol=1e-5, rtol=1e-4, simulator=None, seed=0):
        """Check that the converted network in rate mode computes what the ONNX model does.

        Runs the ONNX model with onnxruntime, and a rate-mode copy of ``net``
        (spiking neuron types replaced by their rate forms, no synapses) for one
        timestep per example (each example is presented for one step; with no
        synapses a feedforward network computes its output within that step),
        on the same inputs, and compares every output.

        Parameters
        ----------
        inputs : dict or numpy.ndarray, optional
            ``{ONNX input name: array [batch, ...]}``, or one array for a model with
            one input. Default: 4 examples drawn from a standard normal distribution.
        atol, rtol : float
            The tolerance of ``numpy.isclose(nengo, onnx, atol, rtol)``.
        simulator : type, optional
            The simulator class (default ``nengo_onnx.Simulator``).
        seed : int
            Seed of the random inputs.

        Returns
        -------
        True, if every output agrees.

        Raises
        ------
        ValueError
            Naming the output, the example and the element of the largest deviation.
        """
        feeds = self._verify_inputs(inputs, seed)
        batch = len(next(iter(feeds.values())))
        session = ort_setup.inference_session(self.model.SerializeToString(), threads=1)
        names = list(self.outputs)
        expected = dict(zip(names, session.run(names, feeds)))

        with warnings.catch_warnings():  # nengo's copy of passthrough Nodes warns
            warnings.filterwarnings("ignore", message="'Node.size_out' is being overwritten")
            rate_net = self.net.copy()
        originals, copies = self.net.all_objects, rate_net.all_objects
        twin = {id(a): b for a, b in zip(originals, copies)}
        for ens in rate_net.all_ensembles:
            ens.neuron_type = _rate_form(ens.neuron_type)
        for conn in rate_net.all_connections:
            conn.synapse = None
        for probe in rate_net.all_probes:
            probe.synapse = None
        dt = 0.001
        for name, node in self.inputs.items():
            values = feeds[name].reshape(batch, -1).astype(np.float64)
            twin[id(node)].output = nengo.processes.PresentInput(values, presentation_time=dt)
        if simulator is None:
            simulator = Simulator
        with simulator(rate_net, dt=dt, progress_bar=False) as sim:
            sim.run_steps(batch)
            got = {name: sim.data[twin[id(probe)]] for name, probe in self.outputs.items()}

        worst = None
        for name in names:
            want = np.asarray(expected[name], dtype=np.float64).reshape(batch, -1)
            have = np.asarray(got[name], dtype=np.float64).reshape(batch, -1)
            bad = ~np.isclose(have, want, atol=atol, rtol=rtol)
            if np.any(bad):
                diff = np.abs(have - want)
                i, j = np.unravel_index(np.argmax(np.where(bad, diff, -1)), diff.shape)
                if worst is None or diff[i, j] > worst[0]:
                    worst = (diff[i, j], name, i, j, have[i, j], want[i, j], int(bad.sum()))
        if worst is not None:
            diff, name, i, j, have, want, n_bad = worst
            raise ValueError(
                f"the converted network does not match the ONNX model: largest deviation "
                f"{diff:.3g} at output {name!r}, example {i}, element {j} (Nengo {have:.6g}, "
                f"onnxruntime {want:.6g}); {n_bad} elements differ beyond atol={atol}, "
                f"rtol={rtol}"
            )
        return True

    def _verify_inputs(self, inputs, seed):
        specs = {}
        for inp in self.model.graph.input:
            if inp.name in self.inputs:
                dtype = _FLOATS[inp.type.tensor_type.elem_type]
                specs[inp.name] = (self._sample_shape(inp.name), dtype)
        if inputs is None:
            rng = np.random.default_rng(seed)
            return {n: rng.standard_normal((4, *s)).astype(d) for n, (s, d) in specs.items()}
        if not isinstance(inputs, dict):
            if len(specs) != 1:
                raise ValidationError(
                    f"the model has inputs {list(specs)}; give a dict of arrays", attr="inputs"
                )
            inputs = {next(iter(specs)): inputs}
        unknown = sorted(set(inputs) - set(specs))
        missing = sorted(set(specs) - set(inputs))
        if unknown or missing:
            raise ValidationError(
                f"inputs must be given for exactly the model inputs {list(specs)} "
                f"(unknown: {unknown}, missing: {missing})",
                attr="inputs",
            )
        feeds = {}
        for name, (shape, dtype) in specs.items():
            value = np.asarray(inputs[name], dtype=dtype)
            feeds[name] = value.reshape((-1, *shape))
        sizes = {len(v) for v in feeds.values()}
        if len(sizes) != 1:
            raise ValidationError("all inputs need the same number of examples", attr="inputs")
        return feeds


def term_size(term):
    """The number of values a term produces."""
    if term.post is not None:
        return len(term.post)
    if term.kind == "diag":
        return term.src.size_out
    if term.kind == "dense":
        return term.data.shape[0]
    return int(np.prod(term.data.transform().output_shape.shape))


def _attr(node, name, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default
