"""Keras-style losses for ``sim.compile(loss=...)`` (NengoDL 3's API).

Keras's convention, not `nengo_onnx.objectives`': a loss is ``fn(y_true, y_pred)`` (targets
first) returning the loss of each element, reduced over the last axis; ``sim.fit`` and
``sim.evaluate`` take the mean of that over minibatch and timesteps. ``y_pred`` is the
probe's output ``(n, n_steps, probe.size_in)``; ``y_true`` is ``y``'s entry for the
probe (for the sparse losses, integer class labels ``(n, n_steps, 1)``).

To train, a loss is turned into an objective of `nengo_onnx.objectives` (which runs in
the ONNX training graph): the classes here name one (``objective``) and convert their
``y_true`` to targets of the probe's size first (``prepare_targets``: one-hot vectors
for the sparse losses); a plain function ``fn(y_true, y_pred)`` is traced into ONNX
as ``mean(fn(targets, outputs))`` (it must use array-API operations, as custom
objectives do, and its ``y_true`` must have the probe's size). ``sim.evaluate`` calls
the loss itself, with numpy, on ``y_true`` as given.

Names accepted by ``sim.compile``: ``"mse"``/``"mean_squared_error"``,
``"mae"``/``"mean_absolute_error"``, ``"categorical_crossentropy"``,
``"sparse_categorical_crossentropy"`` (probabilities, as in Keras; use the classes with
``from_logits=True`` for logits).
"""

import numpy as np
from nengo.exceptions import ValidationError

from nengo_onnx import objectives
from nengo_onnx.objectives import array_namespace


def one_hot(labels, size):
    """``(..., 1)`` or ``(...)`` integer class labels as ``(..., size)`` one-hot float32."""
    labels = np.asarray(labels)
    if labels.ndim >= 1 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    as_int = np.rint(labels)
    if not np.all(as_int == labels) or np.any(as_int < 0) or np.any(as_int >= size):
        raise ValidationError(
            f"sparse targets must be integer class labels in [0, {size}) (got values from "
            f"{np.min(labels)} to {np.max(labels)})",
            attr="y",
        )
    return np.eye(size, dtype=np.float32)[as_int.astype(np.int64)]


def _log_probabilities(y_pred, from_logits, xp):
    if from_logits:
        shifted = y_pred - xp.max(y_pred, axis=-1, keepdims=True)
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
    eps = 1e-7
    p = y_pred / xp.sum(y_pred, axis=-1, keepdims=True)
    return xp.log(xp.clip(p, eps, 1 - eps))


class Loss:
    """Base class of the Keras-style losses.

    Subclasses implement ``__call__(y_true, y_pred)`` (array-API; the loss per element,
    reduced over the last axis) and may set ``objective`` (a `nengo_onnx.objectives`
    function of ``(outputs, targets)`` that training uses; default: the traced
    ``mean(self(targets, outputs))``) and override ``prepare_targets``.
    """

    name = "loss"
    objective = None

    def prepare_targets(self, y_true, size):
        """``y_true`` as training targets ``(n, n_steps, size)`` (default: unchanged)."""
        return y_true

    def __call__(self, y_true, y_pred):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class MeanSquaredError(Loss):
    """``mean((y_pred - y_true)**2, axis=-1)``; trains with `objectives.mse`."""

    name = "mean_squared_error"
    objective = staticmethod(objectives.mse)

    def __call__(self, y_true, y_pred):
        xp = array_namespace(y_pred)
        diff = y_pred - y_true
        return xp.mean(diff * diff, axis=-1)


def _mae_objective(outputs, targets):
    xp = array_namespace(outputs, targets)
    return xp.mean(xp.abs(outputs - targets))


_mae_objective.takes_targets = True


def _mae_onnx(g, outputs, targets):
    diff = g.node("Abs", [g.node("Sub", [outputs, targets])])
    return g.node("ReduceMean", [diff], keepdims=0)


_mae_objective.onnx_form = _mae_onnx


class MeanAbsoluteError(Loss):
    """``mean(abs(y_pred - y_true), axis=-1)``."""

    name = "mean_absolute_error"
    objective = staticmethod(_mae_objective)

    def __call__(self, y_true, y_pred):
        xp = array_namespace(y_pred)
        return xp.mean(xp.abs(y_pred - y_true), axis=-1)


class CategoricalCrossentropy(Loss):
    """``-sum(y_true * log(p), axis=-1)`` with ``p = softmax(y_pred)`` (``from_logits``)
    or ``y_pred`` normalized to sum to 1 and clipped to ``[1e-7, 1 - 1e-7]``."""

    name = "categorical_crossentropy"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)
        if self.from_logits:
            self.objective = objectives.softmax_cross_entropy

    def __call__(self, y_true, y_pred):
        xp = array_namespace(y_pred)
        return -xp.sum(y_true * _log_probabilities(y_pred, self.from_logits, xp), axis=-1)

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """`CategoricalCrossentropy` with integer class labels ``(n, n_steps, 1)`` as
    ``y_true`` (made one-hot for training)."""

    name = "sparse_categorical_crossentropy"

    def prepare_targets(self, y_true, size):
        return one_hot(y_true, size)

    def __call__(self, y_true, y_pred):
        y_pred = np.asarray(y_pred)
        return super().__call__(one_hot(y_true, y_pred.shape[-1]), y_pred)


def mean_squared_error(y_true, y_pred):
    """Keras's ``mse``: the mean squared error over the last axis."""
    return MeanSquaredError()(y_true, y_pred)


def mean_absolute_error(y_true, y_pred):
    """Keras's ``mae``: the mean absolute error over the last axis."""
    return MeanAbsoluteError()(y_true, y_pred)


def categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Keras's ``categorical_crossentropy`` (see `CategoricalCrossentropy`)."""
    return CategoricalCrossentropy(from_logits)(y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Keras's ``sparse_categorical_crossentropy`` (see `SparseCategoricalCrossentropy`)."""
    return SparseCategoricalCrossentropy(from_logits)(y_true, y_pred)


mse = mean_squared_error
mae = mean_absolute_error

#: ``sim.compile``'s loss names -> the loss they make.
NAMES = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}


def get(identifier):
    """The loss named by ``identifier`` (a name of `NAMES`, a `Loss` or a function)."""
    if isinstance(identifier, str):
        if identifier not in NAMES:
            raise ValidationError(
                f"unknown loss {identifier!r}; known: {', '.join(sorted(NAMES))}, or a "
                "function fn(y_true, y_pred)",
                attr="loss",
            )
        return NAMES[identifier]()
    if callable(identifier):
        return identifier
    raise ValidationError(
        f"a loss must be a name, a nengo_onnx.losses.Loss or a function fn(y_true, y_pred) "
        f"(got {identifier!r})",
        attr="loss",
    )


__all__ = [
    "Loss",
    "MeanSquaredError",
    "MeanAbsoluteError",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "mean_squared_error",
    "mean_absolute_error",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "mse",
    "mae",
    "one_hot",
    "get",
]
