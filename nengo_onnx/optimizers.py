"""Optimizers with Keras's names, defaults and update equations.

Each optimizer updates numpy arrays in place, vectorized: in training these are
the zero-copy views of onnxruntime-training's parameter buffers, so an update
costs a few numpy passes over the parameters (onnxruntime-training's own
optimizers are only plain SGD, without momentum, and Hugging Face-style AdamW,
and its training API refuses any other optimizer graph). The equations are Keras
3's (the same as TensorFlow >= 2.11's, which NengoDL 3 users know); ``t`` counts
the updates, starting at 1:

=========  ==============================================================================
SGD        ``m = momentum * m - lr * g``; ``w += momentum * m - lr * g`` (Nesterov)
           or ``w += m``; plain ``w -= lr * g`` when ``momentum == 0``
Adam       ``m += (g - m) * (1 - beta_1)``; ``v += (g**2 - v) * (1 - beta_2)``;
           ``w -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) + epsilon)``
AdamW      ``w -= lr * weight_decay * w``, then Adam
RMSprop    ``v = rho * v + (1 - rho) * g**2``; ``d = lr * g / sqrt(v + epsilon)``
           (``v - mean_g**2 + epsilon`` if ``centered``); ``m = momentum * m + d``;
           ``w -= m`` (``w -= d`` when ``momentum == 0``)
Adagrad    ``a += g**2`` (``a`` starts at ``initial_accumulator_value``);
           ``w -= lr * g / sqrt(a + epsilon)``
=========  ==============================================================================

``learning_rate`` may also be a callable of the update count (``iterations``,
starting at 0), like a Keras ``LearningRateSchedule``.
"""

import numbers

import numpy as np
from nengo.exceptions import ValidationError


def _check_number(name, value, low=None, high=None, low_open=False, obj=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValidationError(f"must be a finite number (got {value!r})", attr=name, obj=obj)
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValidationError(f"must be {bound} (got {value!r})", attr=name, obj=obj)
    if high is not None and value > high:
        raise ValidationError(f"must be <= {high} (got {value!r})", attr=name, obj=obj)
    return float(value)


class Optimizer:
    """Base class: keeps the update count and per-variable slots.

    Parameters
    ----------
    learning_rate : float or callable
        Step size, or a function of ``iterations`` returning it.
    """

    def __init__(self, learning_rate):
        if not callable(learning_rate):
            _check_number("learning_rate", learning_rate, low=0, obj=self)
        self.learning_rate = learning_rate
        self.iterations = 0
        self._slots = {}

    def current_learning_rate(self):
        lr = self.learning_rate
        return float(lr(self.iterations) if callable(lr) else lr)

    def slot(self, key, name, like, fill=0.0):
        """The optimizer's ``name`` array for variable ``key`` (made on first use)."""
        slots = self._slots.setdefault(key, {})
        if name not in slots or slots[name].shape != like.shape:
            slots[name] = np.full(like.shape, fill, dtype=like.dtype)
        return slots[name]

    def apply(self, grads, variables, keys=None):
        """Update ``variables`` (numpy arrays, in place) with ``grads``: one step.

        ``keys`` name the variables for the optimizer's slots (momenta etc.), so
        that they persist across calls; by default the position in the list.
        """
        grads, variables = list(grads), list(variables)
        if len(grads) != len(variables):
            raise ValidationError(
                f"got {len(grads)} gradients for {len(variables)} variables",
                attr="grads",
                obj=self,
            )
        keys = list(range(len(variables))) if keys is None else list(keys)
        lr = self.current_learning_rate()
        for key, grad, var in zip(keys, grads, variables):
            if grad is None:
                continue
            grad = np.asarray(grad, dtype=var.dtype)
            self.update(key, grad, var, var.dtype.type(lr))
        self.iterations += 1

    def apply_gradients(self, grads_and_vars):
        """Keras's form of `apply`: ``[(grad, variable), ...]``."""
        pairs = list(grads_and_vars)
        return self.apply([g for g, _ in pairs], [v for _, v in pairs])

    def update(self, key, grad, var, lr):
        raise NotImplementedError

    def get_config(self):
        return {name: getattr(self, name) for name in self._config_names}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Gradient descent, with optional (Nesterov) momentum (Keras's ``SGD``)."""

    _config_names = ("learning_rate", "momentum", "nesterov")

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        super().__init__(learning_rate)
        self.momentum = _check_number("momentum", momentum, low=0, high=1, obj=self)
        self.nesterov = bool(nesterov)

    def update(self, key, grad, var, lr):
        if self.momentum == 0:
            var -= lr * grad
            return
        mu = var.dtype.type(self.momentum)
        m = self.slot(key, "momentum", var)
        m *= mu
        m -= lr * grad
        if self.nesterov:
            var += mu * m - lr * grad
        else:
            var += m


class Adam(Optimizer):
    """Adam (Keras's ``Adam``, with its bias correction and epsilon placement)."""

    _config_names = ("learning_rate", "beta_1", "beta_2", "epsilon")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate)
        self.beta_1 = _check_number("beta_1", beta_1, low=0, high=1, obj=self)
        self.beta_2 = _check_number("beta_2", beta_2, low=0, high=1, obj=self)
        self.epsilon = _check_number("epsilon", epsilon, low=0, obj=self)

    def update(self, key, grad, var, lr):
        t = self.iterations + 1
        dtype = var.dtype.type
        alpha = dtype(float(lr) * np.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t))
        m = self.slot(key, "m", var)
        v = self.slot(key, "v", var)
        m += (grad - m) * dtype(1 - self.beta_1)
        v += (grad * grad - v) * dtype(1 - self.beta_2)
        denom = np.sqrt(v)
        denom += dtype(self.epsilon)
        var -= alpha * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras's ``AdamW``: decay first, then Adam)."""

    _config_names = ("learning_rate", "weight_decay", "beta_1", "beta_2", "epsilon")

    def __init__(
        self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7
    ):
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
        self.weight_decay = _check_number("weight_decay", weight_decay, low=0, obj=self)

    def update(self, key, grad, var, lr):
        var -= var * var.dtype.type(float(lr) * self.weight_decay)
        super().update(key, grad, var, lr)


class RMSprop(Optimizer):
    """RMSprop (Keras's ``RMSprop``: epsilon inside the square root)."""

    _config_names = ("learning_rate", "rho", "momentum", "epsilon", "centered")

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
        super().__init__(learning_rate)
        self.rho = _check_number("rho", rho, low=0, high=1, obj=self)
        self.momentum = _check_number("momentum", momentum, low=0, high=1, obj=self)
        self.epsilon = _check_number("epsilon", epsilon, low=0, obj=self)
        self.centered = bool(centered)

    def update(self, key, grad, var, lr):
        dtype = var.dtype.type
        rho = dtype(self.rho)
        v = self.slot(key, "velocity", var)
        v *= rho
        v += dtype(1 - self.rho) * grad * grad
        denom = v + dtype(self.epsilon)
        if self.centered:
            mean_g = self.slot(key, "average_gradient", var)
            mean_g *= rho
            mean_g += dtype(1 - self.rho) * grad
            denom -= mean_g * mean_g
        step = lr * grad / np.sqrt(denom)
        if self.momentum > 0:
            m = self.slot(key, "momentum", var)
            m *= dtype(self.momentum)
            m += step
            var -= m
        else:
            var -= step


class Adagrad(Optimizer):
    """Adagrad (Keras's ``Adagrad``: epsilon inside the square root)."""

    _config_names = ("learning_rate", "initial_accumulator_value", "epsilon")

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7):
        super().__init__(learning_rate)
        self.initial_accumulator_value = _check_number(
            "initial_accumulator_value", initial_accumulator_value, low=0, obj=self
        )
        self.epsilon = _check_number("epsilon", epsilon, low=0, obj=self)

    def update(self, key, grad, var, lr):
        acc = self.slot(key, "accumulator", var, fill=self.initial_accumulator_value)
        acc += grad * grad
        var -= lr * grad / np.sqrt(acc + var.dtype.type(self.epsilon))


__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]
