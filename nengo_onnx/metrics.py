"""Keras-style metrics for ``sim.compile(metrics=...)`` (NengoDL 3's API).

A metric is ``fn(y_true, y_pred)`` (Keras's order) returning a value per element (or a
scalar), computed with numpy, never differentiated. ``sim.fit`` and ``sim.evaluate``
report the mean of it over minibatch and timesteps: **metrics use every timestep that
``y_pred`` has**, as losses do (NengoDL's semantics, since NengoDL passes Keras the
probes' whole ``(n, n_steps, d)`` outputs). To score only the last timestep, slice:
``lambda y_true, y_pred: sparse_categorical_accuracy(y_true[:, -1], y_pred[:, -1])``.

During ``fit`` the training metrics are computed on the training graph's outputs (the
rate forms of spiking neurons, as the optimizer sees them); ``evaluate`` and the
``val_`` metrics run the network as ``sim.run`` does (spiking).

Names accepted by ``sim.compile``: ``"accuracy"``/``"acc"`` (chosen from the shapes, as
Keras does: `binary_accuracy` for one output column, `sparse_categorical_accuracy` for
one target column, else `categorical_accuracy`), ``"sparse_categorical_accuracy"``,
``"categorical_accuracy"``, ``"binary_accuracy"``, ``"mse"``, ``"mae"`` and the loss
names of `nengo_onnx.losses`.
"""

import numpy as np
from nengo.exceptions import ValidationError

from nengo_onnx import losses


def _labels(y_true, y_pred):
    y_true = np.asarray(y_true)
    if y_true.ndim == np.ndim(y_pred) and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return y_true


def sparse_categorical_accuracy(y_true, y_pred):
    """1.0 where ``argmax(y_pred, -1)`` equals the integer label ``y_true``, else 0.0.

    ``y_true`` is shaped like ``y_pred`` without its last axis, or with it of size 1.
    """
    y_pred = np.asarray(y_pred)
    return (np.argmax(y_pred, axis=-1) == _labels(y_true, y_pred)).astype(np.float32)


def categorical_accuracy(y_true, y_pred):
    """1.0 where ``argmax(y_pred, -1) == argmax(y_true, -1)`` (one-hot ``y_true``)."""
    return (np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)).astype(np.float32)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """The fraction of ``(y_pred > threshold) == y_true`` over the last axis."""
    correct = (np.asarray(y_pred) > threshold) == (np.asarray(y_true) > 0.5)
    return np.mean(correct, axis=-1, dtype=np.float32)


def accuracy(y_true, y_pred):
    """Keras's ``"accuracy"``: binary, sparse or categorical accuracy by the shapes."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_pred.shape[-1] == 1:
        return binary_accuracy(y_true, y_pred)
    if y_true.ndim < y_pred.ndim or y_true.shape[-1] == 1:
        return sparse_categorical_accuracy(y_true, y_pred)
    return categorical_accuracy(y_true, y_pred)


def mean_squared_error(y_true, y_pred):
    """The mean squared error over the last axis."""
    return np.mean((np.asarray(y_pred) - np.asarray(y_true)) ** 2, axis=-1)


def mean_absolute_error(y_true, y_pred):
    """The mean absolute error over the last axis."""
    return np.mean(np.abs(np.asarray(y_pred) - np.asarray(y_true)), axis=-1)


mse = mean_squared_error
mae = mean_absolute_error

#: ``sim.compile``'s metric names -> the metric.
NAMES = {
    "accuracy": accuracy,
    "acc": accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "binary_accuracy": binary_accuracy,
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
    "mae": mean_absolute_error,
    "mean_absolute_error": mean_absolute_error,
}


def get(identifier):
    """``(name, fn)`` of a metric given by name, `nengo_onnx.losses.Loss` or function.

    The name is what the history and ``evaluate`` report (after the probe's name): the
    string as given, a loss's ``name``, or the function's ``__name__``.
    """
    if isinstance(identifier, str):
        if identifier in NAMES:
            return identifier, NAMES[identifier]
        if identifier in losses.NAMES:
            return identifier, losses.NAMES[identifier]()
        raise ValidationError(
            f"unknown metric {identifier!r}; known: "
            f"{', '.join(sorted(set(NAMES) | set(losses.NAMES)))}, or a function "
            "fn(y_true, y_pred)",
            attr="metrics",
        )
    if callable(identifier):
        name = getattr(identifier, "name", None) or getattr(identifier, "__name__", None)
        return (name if isinstance(name, str) else type(identifier).__name__), identifier
    raise ValidationError(
        f"a metric must be a name or a function fn(y_true, y_pred) (got {identifier!r})",
        attr="metrics",
    )


__all__ = [
    "accuracy",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "binary_accuracy",
    "mean_squared_error",
    "mean_absolute_error",
    "mse",
    "mae",
    "get",
]
