"""`compile_model`: a built Nengo model in, a `Program` (everything compiled) out.

The `Program` is the one owner of the compiled state: the operator graph after
the passes, the signal plan, the names, the input Nodes and probes, the
settings, the parameter values and the compiled ONNX blocks with their
onnxruntime sessions. The Simulator, training and export use its public
methods and attributes only; the simulation state (where a run has got to)
belongs to the runtime, not here.
"""

import numpy as np
from nengo import Node

from nengo_onnx import ort_setup
from nengo_onnx.compiler.block import emit_block
from nengo_onnx.compiler.emit import find_emitter
from nengo_onnx.compiler.graph import operator_graph, step_order
from nengo_onnx.compiler.names import Names
from nengo_onnx.compiler.params import ParameterStore
from nengo_onnx.compiler.pipeline import run_passes
from nengo_onnx.compiler.signals import SignalPlan
from nengo_onnx.config import settings_of
from nengo_onnx.passes.unroll import unroll, unrolled_order


def input_nodes(network):
    """Nodes whose output the user can override with ``data``, in network order."""
    if network is None:
        return []
    return [
        n for n in network.all_nodes if n.size_in == 0 and n.output is not None and n.size_out > 0
    ]


def built_graph(model, network):
    """The operator graph of a built model, as the first pass takes it.

    It carries the model, the model's `Names` and the input Nodes' port names.
    """
    names = Names(model)
    graph = operator_graph(model)
    graph.graph["names"] = names
    graph.graph["input_nodes"] = {node: names.input(node) for node in input_nodes(network)}
    return graph


def compile_model(
    model,
    network=None,
    settings=None,
    *,
    minibatch_size=1,
    unroll=10,
    optimize=True,
    threads=None,
    params=None,
    compiled_graph=None,
):
    """Run the passes over a built ``model`` and return its `Program`.

    Parameters
    ----------
    model : nengo.builder.Model
        The model, built by nengo's own Builder.
    network : nengo.Network or None
        The network it was built from (None: a model built elsewhere).
    settings : `nengo_onnx.config.Settings`, optional
        The network's validated nengo-onnx settings (default: ``settings_of(network)``).
    minibatch_size, unroll, threads
        Batch size, steps per ONNX call, onnxruntime's intra-op threads.
    optimize : bool
        Run the merge and simplification passes.
    params : dict, optional
        ``{signal name: value}`` of parameter values to start from (e.g. trained
        values of a pickled simulator).
    compiled_graph : networkx.DiGraph, optional
        The operator graph after the passes of an earlier compile of ``model`` (its
        `Program.graph`): the passes do not run again, so the program is the same.
    """
    settings = settings_of(network) if settings is None else settings
    if compiled_graph is None:
        n_built = len(model.operators)  # before the passes, which replace operators
        graph = built_graph(model, network)
        names = graph.graph["names"]
        graph = run_passes(graph, optimize=optimize)
        names.name_signals(step_order(graph))
    else:  # the operator graph of an earlier compile (a pickled simulator's)
        graph = compiled_graph
        names = graph.graph["names"]
        n_built = graph.graph.get("n_built_operators", len(model.operators))
    graph.graph["n_built_operators"] = n_built
    store = ParameterStore(model, names)
    signals = SignalPlan(model, list(graph.nodes), names, store)
    if params:
        store.load_named(params)
    program = Program(
        model,
        network,
        settings,
        graph,
        signals,
        names,
        store,
        minibatch_size=minibatch_size,
        unroll=unroll,
        threads=threads,
        n_built_operators=n_built,
    )
    return program


class Program:
    """A compiled network: see the module docstring.

    Attributes
    ----------
    model, network : the built model and the network (None if not known)
    settings : `nengo_onnx.config.Settings`
    dtype : numpy dtype of the simulation; dt : timestep
    minibatch_size : int (1 if the Simulator was given none); unroll : steps per call
    graph : the operator graph after the passes (``graph.graph["segments"]`` etc.)
    signals : `SignalPlan`; names : `Names`; params : `ParameterStore`
    inputs : ``{input Node: port name}``; probes : ``{Probe: port name}``
    feeds : ``{port name: (FeedInput, source operator or None, Node or None)}``
    segments : ``[("onnx", operators) | ("host", operator)]`` of one step
    unrolled : whether the whole step is ONNX (then `block` gives K-step models)
    """

    def __init__(
        self,
        model,
        network,
        settings,
        graph,
        signals,
        names,
        params,
        *,
        minibatch_size,
        unroll,
        threads,
        n_built_operators,
    ):
        self.model = model
        self.network = network
        self.settings = settings
        self.dtype = np.dtype(settings.dtype)
        self.dt = model.dt
        self.minibatch_size = int(minibatch_size)
        self.unroll = int(unroll)
        self.threads = threads
        self.graph = graph
        self.signals = signals
        self.names = names
        self.params = params
        self.n_built_operators = n_built_operators
        self.inputs = dict(graph.graph["input_nodes"])
        self.probes = {probe: names.probe(probe) for probe in model.probes}
        self.feeds = graph.graph["feeds"]
        self.segments = graph.graph["segments"]
        self.unrolled = len(self.segments) <= 1 and all(k == "onnx" for k, _ in self.segments)
        self.probe_signals = [(self.probes[p], model.sig[p]["in"]) for p in model.probes]
        self._blocks = {}
        self._segment_blocks = None
        self._compiled_version = params.version  # of the parameter values compiled in
        #: compiled training graphs, filled and used by `nengo_onnx.training`
        self.training_graphs = {}

    def initial_state(self, dtype=None):
        """``{base: array}`` of the state at step 0 (``[B, ...]`` where minibatched),
        with the current parameter values, in ``dtype`` (default: the program's)."""
        dtype = self.dtype if dtype is None else dtype
        state = {}
        for base in self.signals.state_bases():
            value = self.signals.initial_value(base, dtype)
            if self.signals.batched(base):
                value = np.broadcast_to(value, (self.minibatch_size, *value.shape))
            state[base] = np.array(value)
        return state

    def not_an_input(self, obj):
        """Why ``obj`` cannot be a key of ``data`` (it is not one of `inputs`)."""
        if isinstance(obj, Node):
            if self.network is not None and obj not in self.network.all_nodes:
                return (
                    f"{obj} belongs to another network; data keys must be input Nodes "
                    "of this simulator's network"
                )
            return (
                f"{obj} is not an input Node (it has size_in={obj.size_in}); data "
                "can only be given for Nodes with size_in == 0 and an output"
            )
        return f"data keys must be input Nodes of this network (got {type(obj).__name__} {obj})"

    # -- inference models -------------------------------------------------------------

    def session(self, block):
        """An onnxruntime session running ``block``."""
        return ort_setup.inference_session(block.model.SerializeToString(), threads=self.threads)

    def step_operators(self):
        """The ONNX operators of one step, as a graph (unrolled programs only)."""
        ops = self.segments[0][1] if self.segments else []
        return self.graph.subgraph(ops)

    def emit(self, n_steps, probes=None, *, dtype=None, training=False, minibatch_size=None):
        """The `Block` of ``n_steps`` unrolled steps recording ``probes`` (default: all).

        ``training`` emits the training forms of operators, in float32;
        ``minibatch_size`` overrides the program's (the export of a dynamic batch
        compares two emissions).
        """
        probe_signals = (
            self.probe_signals
            if probes is None
            else [(self.probes[p], self.model.sig[p]["in"]) for p in probes]
        )
        steps = list(unrolled_order(unroll(self.step_operators(), n_steps)))
        return emit_block(
            steps,
            self.signals,
            n_steps=n_steps,
            minibatch_size=minibatch_size or self.minibatch_size,
            dtype=np.float32 if training else (dtype or self.dtype),
            dt=self.dt,
            probes=probe_signals,
            training=training,
            settings=self.settings,
        )

    def _check_version(self):
        # inference models hold parameters as constants: changed values need new ones
        if self._compiled_version != self.params.version:
            self._blocks.clear()
            self._segment_blocks = None
            self._compiled_version = self.params.version

    def block(self, n_steps):
        """``(Block, session)`` of the whole step unrolled ``n_steps`` times (cached)."""
        self._check_version()
        if n_steps not in self._blocks:
            block = self.emit(n_steps)
            self._blocks[n_steps] = (block, self.session(block))
        return self._blocks[n_steps]

    def segment_blocks(self):
        """The step's segments compiled: ``("onnx", (block, session))`` or ``("host", op)``."""
        self._check_version()
        if self._segment_blocks is None:
            compiled = []
            for kind, item in self.segments:
                if kind == "host":
                    compiled.append(("host", item))
                    continue
                touched, written = [], []
                for op in item:
                    for sig in op.all_signals:
                        if not self.signals.is_static(sig.base) and sig.base not in touched:
                            touched.append(sig.base)
                    for sig in op.sets + op.incs + op.updates:
                        if sig.base not in written:
                            written.append(sig.base)
                if not written:  # e.g. only SimProbe markers: nothing to compute
                    continue
                block = emit_block(
                    [(0, op) for op in item],
                    self.signals,
                    n_steps=1,
                    minibatch_size=self.minibatch_size,
                    dtype=self.dtype,
                    dt=self.dt,
                    state_in=touched,
                    state_out=written,
                    settings=self.settings,
                )
                compiled.append(("onnx", (block, self.session(block))))
            self._segment_blocks = compiled
        return self._segment_blocks

    def host_operators(self):
        """The operators that run in Python, in schedule order: those without an ONNX
        form and those that carry values to them (`nengo_onnx.passes.split_host`)."""
        return [item for kind, item in self.segments if kind == "host"]

    def python_operators(self):
        """The operators without an ONNX form (what stops training and export)."""
        return [op for op in self.host_operators() if find_emitter(op)[0] is None]

    def invalidate(self):
        """Forget every compiled model (they are compiled again when needed).

        Changed parameter values need no call: the inference models follow the
        parameter store's version, and training graphs record the values they
        hold as constants.
        """
        self._blocks.clear()
        self._segment_blocks = None
        self.training_graphs.clear()

    # -- pickling ------------------------------------------------------------------------

    def __getstate__(self):
        raise TypeError(
            "a Program holds onnxruntime sessions and cannot be pickled; "
            "pickle the Simulator, which compiles again when loaded"
        )
