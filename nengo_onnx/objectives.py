"""Objectives (loss functions) for `.Simulator.train` and `.Simulator.loss`.

An objective is a function ``f(outputs, targets)`` (or ``f(outputs)`` when it
needs no targets) of arrays shaped ``(minibatch_size, n_steps, probe.size_in)``
(lists of them for a tuple of probes) that returns a scalar. Written with
array-API operations (``xp = array_api_compat.array_namespace(outputs)``), the
same function runs on numpy arrays (which is how `.Simulator.loss` and a user's
own checks call it) and is traced into the ONNX loss nodes of the training
graph (through ndonnx; see `nengo_onnx.training.tracing`). The objectives here also emit
their ONNX nodes directly (``onnx_form``), so the default path needs no tracing.
"""

import numbers

import numpy as np
from nengo.exceptions import ValidationError


def array_namespace(*arrays):
    """The array-API namespace of ``arrays`` (numpy's compat namespace for numpy)."""
    try:
        from array_api_compat import array_namespace as namespace  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return np
    return namespace(*arrays)


def takes_targets(fn):
    """Whether objective ``fn`` takes ``(outputs, targets)`` rather than ``(outputs)``."""
    explicit = getattr(fn, "takes_targets", None)
    if explicit is not None:
        return bool(explicit)
    import inspect  # noqa: PLC0415

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    positional = 0
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 2


def objective_name(fn):
    """A readable name of an objective for error messages."""
    if fn is None:
        return "None (targets are dL/dy)"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None or isinstance(fn, Regularize):
        return repr(fn)
    return name


def mse(outputs, targets):
    """Mean squared error, over minibatch, time and dimensions (the default)."""
    xp = array_namespace(outputs, targets)
    diff = outputs - targets
    return xp.mean(diff * diff)


mse.takes_targets = True


def _mse_onnx(g, outputs, targets):
    diff = g.node("Sub", [outputs, targets])
    return g.node("ReduceMean", [g.node("Mul", [diff, diff])], keepdims=0)


mse.onnx_form = _mse_onnx


def softmax_cross_entropy(outputs, targets):
    """Softmax cross-entropy of ``outputs`` (logits) over the last axis.

    ``targets`` are one-hot vectors or class probabilities; the result is the
    mean over minibatch and time of ``-sum(targets * log_softmax(outputs))``.
    """
    xp = array_namespace(outputs, targets)
    shifted = outputs - xp.max(outputs, axis=-1, keepdims=True)
    log_softmax = shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
    return -xp.mean(xp.sum(targets * log_softmax, axis=-1))


softmax_cross_entropy.takes_targets = True


def _softmax_cross_entropy_onnx(g, outputs, targets):
    log_softmax = g.node("LogSoftmax", [outputs], axis=-1)
    per_item = g.node(
        "ReduceSum",
        [g.node("Mul", [targets, log_softmax]), g.const(np.array([-1], dtype=np.int64))],
        keepdims=0,
    )
    return g.node("Neg", [g.node("ReduceMean", [per_item], keepdims=0)])


softmax_cross_entropy.onnx_form = _softmax_cross_entropy_onnx


class Regularize:
    """A penalty on a probe's output (e.g. firing rates): ``weight * mean(norm)``.

    Parameters
    ----------
    order : int, float, ``"fro"`` or ``np.inf``
        Order of the norm (``1`` for L1, ``2`` for L2; ``"fro"`` is the same as 2).
    axis : int or None
        Axis of the probed output along which to compute the norm; ``None``
        (default) flattens it, so the norm is over everything.
    weight : float
        Scale of the penalty.

    Notes
    -----
    The norm is taken along ``axis`` (or over the flattened output), then
    averaged over the remaining axes (including minibatch and time), as NengoDL's
    ``Regularize`` does. Needs no targets: use it as ``objective={p:
    Regularize()}`` without data for ``p``.
    """

    takes_targets = False

    def __init__(self, order=2, axis=None, weight=1.0):
        if order == "fro":
            order = 2
        if not (
            order == np.inf
            or (isinstance(order, numbers.Real) and not isinstance(order, bool) and order > 0)
        ):
            raise ValidationError(
                f"must be a positive number, 'fro' or np.inf (got {order!r})",
                attr="order",
                obj=self,
            )
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, numbers.Integral)):
            raise ValidationError(
                f"must be an integer or None (got {axis!r})", attr="axis", obj=self
            )
        if weight is None:
            weight = 1.0
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise ValidationError(f"must be a number (got {weight!r})", attr="weight", obj=self)
        self.order = order
        self.axis = None if axis is None else int(axis)
        self.weight = float(weight)

    def __repr__(self):
        return f"Regularize(order={self.order!r}, axis={self.axis!r}, weight={self.weight!r})"

    def __call__(self, outputs):
        xp = array_namespace(outputs)
        x = xp.reshape(outputs, (-1,)) if self.axis is None else outputs
        axis = 0 if self.axis is None else self.axis
        if self.order == np.inf:
            norm = xp.max(xp.abs(x), axis=axis)
        elif self.order == 1:
            norm = xp.sum(xp.abs(x), axis=axis)
        elif self.order == 2:
            norm = xp.sqrt(xp.sum(x * x, axis=axis))
        else:
            norm = xp.sum(xp.abs(x) ** self.order, axis=axis) ** (1.0 / self.order)
        return xp.mean(norm) * self.weight

    def onnx_form(self, g, outputs, targets=None):
        if self.order == np.inf:
            raise ValidationError(
                "Regularize(order=np.inf) has no gradient in "
                "onnxruntime-training (ReduceMax); use a finite order",
                attr="order",
                obj=self,
            )
        axes = [] if self.axis is None else [g.const(np.array([self.axis], dtype=np.int64))]
        if self.order == 1:
            norm = g.node("ReduceSum", [g.node("Abs", [outputs])] + axes, keepdims=0)
        elif self.order == 2:
            norm = g.node(
                "Sqrt",
                [g.node("ReduceSum", [g.node("Mul", [outputs, outputs])] + axes, keepdims=0)],
            )
        else:
            powered = g.node(
                "Pow", [g.node("Abs", [outputs]), g.const(np.array(self.order, dtype=np.float32))]
            )
            norm = g.node(
                "Pow",
                [
                    g.node("ReduceSum", [powered] + axes, keepdims=0),
                    g.const(np.array(1.0 / self.order, dtype=np.float32)),
                ],
            )
        mean = g.node("ReduceMean", [norm], keepdims=0)
        return g.node("Mul", [mean, g.const(np.array(self.weight, dtype=np.float32))])


__all__ = ["mse", "softmax_cross_entropy", "Regularize", "array_namespace"]
