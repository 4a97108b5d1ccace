"""nengo-onnx's own Operators (as Nengo keeps its in ``nengo.builder.operator``).

The passes (`nengo_onnx.passes`) put these into the operator graph; the emitters
(`nengo_onnx.compiler.emit`) turn them into ONNX. Both import them from here, so
the emitters never import a pass.

1. `FeedInput`: a value computed in Python and fed to the ONNX graph each step
   (`nengo_onnx.passes.feed_inputs`).
2. `LinearFilterGroup`: several linear filters with the same dynamics, run at
   once (`nengo_onnx.passes.merge_synapses`).
3. The set forms of the increment operators, `DotSet` and friends (`SET_FORMS`,
   `set_form`): ``Y[...] = f(...)`` instead of ``Y[...] += f(...)``
   (`nengo_onnx.passes.reset_incs`).
4. `FoldedConstant`: not an operator but the constant signal that folding a
   ``Reset`` makes (`nengo_onnx.passes.fold_resets`).

``SimOnnx`` stays with the user-facing `nengo_onnx.OnnxNode` that builds it, as
Nengo's processes keep their operators next to them.
"""

import copy

from nengo.builder.operator import BsrDotInc, Copy, DotInc, ElementwiseInc, Operator, SparseDotInc
from nengo.builder.processes import SimProcess
from nengo.builder.signal import Signal
from nengo.builder.transforms import ConvInc, ConvTransposeInc


class FeedInput(Operator):
    """Writes a value computed outside the ONNX graph into ``dst`` each step.

    Stands in for an input Node's output and for operators that depend only on
    time (``Node(np.sin)``, noise processes): the runtime computes their values
    in Python, with Nengo's own step functions, and feeds them as graph inputs.

    Notes
    -----
    1. sets ``[dst]`` if mode is ``"set"``
    2. incs ``[dst]`` if mode is ``"inc"``
    3. reads ``[]``
    4. updates ``[dst]`` if mode is ``"update"``
    """

    def __init__(self, key, dst, mode="set", source=None, node=None, tag=None):
        super().__init__(tag=tag)
        self.key = key
        self.mode = mode
        self.source = source  # the operator computing the value, if any
        self.node = node  # the input Node, if any
        self.sets = [dst] if mode == "set" else []
        self.incs = [dst] if mode == "inc" else []
        self.reads = []
        self.updates = [dst] if mode == "update" else []

    @property
    def dst(self):
        return (self.sets + self.incs + self.updates)[0]

    @property
    def _descstr(self):
        return f"{self.key} -> {self.dst}"


class LinearFilterGroup(Operator):
    """Several ``LinearFilter`` processes with the same ``(A, B, C, D)``, run at once.

    Implements, for each member ``i``, Nengo's ``LinearFilter`` step on input
    ``u_i``, state ``X_i`` and output ``y_i`` (see ``LinearFilter.make_step``).

    Notes
    -----
    1. sets ``outputs`` if mode is ``"set"``
    2. incs ``outputs`` if mode is ``"inc"``
    3. reads ``[t] + inputs``
    4. updates ``outputs`` (if mode is ``"update"``) ``+ states``
    """

    def __init__(self, processes, inputs, outputs, states, t, mode="update", tag=None):
        super().__init__(tag=tag)
        self.processes = list(processes)
        self.mode = mode
        self.n = len(self.processes)
        self.reads = [t] + list(inputs)
        self.sets = list(outputs) if mode == "set" else []
        self.incs = list(outputs) if mode == "inc" else []
        self.updates = (list(outputs) if mode == "update" else []) + list(states)

    @property
    def t(self):
        return self.reads[0]

    @property
    def inputs(self):
        return self.reads[1:]

    @property
    def outputs(self):
        return {"set": self.sets, "inc": self.incs}.get(self.mode, self.updates)[: self.n]

    @property
    def states(self):
        return self.updates[-self.n :]

    def ss(self, dt):
        """The discretized ``(A, B, C, D)`` shared by all members."""
        return self.processes[0]._get_ss(dt)  # noqa: SLF001  (nengo's own discretization)

    def members(self):
        """One ``SimProcess`` per member, on the group's current signals."""
        return [
            SimProcess(process, u, y, self.t, mode=self.mode, state={"X": X})
            for process, u, y, X in zip(self.processes, self.inputs, self.outputs, self.states)
        ]

    @property
    def _descstr(self):
        return f"{self.processes[0]} x{self.n}, {self.inputs} -> {self.outputs}"

    def make_step(self, signals, dt, rng):
        steps = [member.make_step(signals, dt, rng) for member in self.members()]

        def step_linear_filter_group():
            for step in steps:
                step()

        return step_linear_filter_group


class SetMixin:
    """The set form of an increment operator ``Y[...] += f(...)``: ``Y[...] = f(...)``.

    The output is in ``sets`` instead of ``incs``. ``make_step`` zeroes ``Y``
    and runs the increment, so Nengo's semantics carry over unchanged.
    """

    @property
    def Y(self):
        return self.sets[0]

    def make_step(self, signals, dt, rng):
        Y = signals[self.Y]
        inc = super().make_step(signals, dt, rng)

        def step_set():
            Y[...] = 0
            inc()

        return step_set


class DotSet(SetMixin, DotInc):
    """Implements ``Y[...] = np.dot(A, X)``."""


class SparseDotSet(SetMixin, SparseDotInc):
    """Implements ``Y[...] = A.dot(X)`` for a sparse ``A``."""


class BsrDotSet(SetMixin, BsrDotInc):
    """Implements ``Y[...] = bsr_matrix(A).dot(X)``."""


class ElementwiseSet(SetMixin, ElementwiseInc):
    """Implements ``Y[...] = A * X``."""


class ConvSet(SetMixin, ConvInc):
    """Implements ``Y[...] = conv2d(X, W)``."""


class ConvTransposeSet(SetMixin, ConvTransposeInc):
    """Implements ``Y[...] = conv2d_transpose(X, W)``."""


#: The set form of each increment operator type that has one (``Copy`` sets
#: through its own ``inc`` flag instead, see `set_form`).
SET_FORMS = {
    DotInc: DotSet,
    SparseDotInc: SparseDotSet,
    BsrDotInc: BsrDotSet,
    ElementwiseInc: ElementwiseSet,
    ConvInc: ConvSet,
    ConvTransposeInc: ConvTransposeSet,
}


def set_form(op):
    """The operator that sets what ``op`` increments (a new operator)."""
    new = copy.copy(op)
    if type(op) is Copy:
        new.inc = False
        new.sets, new.incs = list(op.incs), []
        return new
    # a class swap keeps every attribute (and Nengo's signal-list properties) as is
    new.__class__ = SET_FORMS[type(op)]
    new.sets, new.incs = list(op.incs), []
    return new


class FoldedConstant(Signal):
    """A constant signal made by folding a ``Reset`` (never a trainable parameter)."""
