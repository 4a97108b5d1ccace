"""Callbacks for ``sim.fit`` (NengoDL 3's Keras-style API): a small Keras-like protocol.

``sim.fit(..., callbacks=[...])`` calls, in this order::

    set_model(model); set_params(params)
    on_train_begin(logs)
    for each epoch:
        on_epoch_begin(epoch, logs)
        for each minibatch: on_train_batch_end(batch, logs)   # logs: {"loss": ...}
        on_epoch_end(epoch, logs)    # logs: the epoch's loss, metrics, val_ values
    on_train_end(logs)

``epoch`` and ``batch`` count from 0 (``batch`` within its epoch), as in Keras.
``model`` is what the callbacks act on (`nengo_onnx.training.keras.FitModel`):
``model.sim`` (the Simulator), ``model.stop_training`` (set it to True to stop after
the current epoch), ``model.get_weights()`` and ``model.set_weights(weights)`` (the
trainable parameters as a list of numpy arrays). ``params`` is ``{"epochs": ...,
"steps": minibatches per epoch}``.

This module imports nothing that runs or trains a network (a leaf module).
"""

import os
import warnings

import numpy as np
from nengo.exceptions import ValidationError

from nengo_onnx.events import EventWriter, next_run_dir


class Callback:
    """Base class: every hook does nothing. Subclass it and override the hooks you need."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = dict(params)

    def on_train_begin(self, logs=None):
        """Before the first epoch."""

    def on_train_end(self, logs=None):
        """After the last epoch (also after an early stop)."""

    def on_epoch_begin(self, epoch, logs=None):
        """Before the first minibatch of ``epoch``."""

    def on_epoch_end(self, epoch, logs=None):
        """After ``epoch``, with its ``loss``, metrics and ``val_`` values."""

    def on_train_batch_begin(self, batch, logs=None):
        """Before minibatch ``batch`` (not called: the minibatch runs in one ONNX call)."""

    def on_train_batch_end(self, batch, logs=None):
        """After minibatch ``batch``, with ``logs = {"loss": its loss, ...metrics}``."""


class History(Callback):
    """Records the logs of every epoch: what ``sim.fit`` returns.

    ``history.history`` is ``{name: [value of each epoch]}`` (``"loss"``,
    ``"val_loss"``, ``"<probe>_<metric>"``, ...); ``history.epoch`` the epoch numbers.
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has stopped improving (Keras's semantics).

    Parameters
    ----------
    monitor : str
        The log to watch, e.g. ``"val_loss"`` (needs ``validation_data``) or ``"loss"``.
    min_delta : float
        A change smaller than this is no improvement.
    patience : int
        Epochs without improvement after which training stops (``0``: at the first).
    mode : ``"auto"``, ``"min"`` or ``"max"``
        Whether smaller or larger is better; ``"auto"``: larger for names containing
        ``"acc"``, smaller otherwise.
    baseline : float or None
        Training stops if the monitored value does not improve on this.
    restore_best_weights : bool
        At the end of training, put back the parameters of the best epoch.
    start_from_epoch : int
        Epochs to wait before counting epochs without improvement.
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0,
        patience=0,
        mode="auto",
        baseline=None,
        restore_best_weights=False,
        start_from_epoch=0,
    ):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValidationError(
                f"must be 'auto', 'min' or 'max' (got {mode!r})", attr="mode", obj=self
            )
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValidationError(
                f"must be a non-negative integer (got {patience!r})", attr="patience", obj=self
            )
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.mode = mode
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = np.inf if self.mode == "min" else -np.inf
        self.best_weights = None
        self.best_epoch = 0

    def _improves(self, value, reference):
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(
                f"EarlyStopping: the logs have no {self.monitor!r} (they have "
                f"{sorted(logs or {})}); not stopping",
                stacklevel=2,
            )
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._improves(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improves(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class TensorBoard(Callback):
    """Write the logs of ``sim.fit`` as TensorBoard event files.

    The files are the same as ``Simulator(..., tensorboard=log_dir)`` with
    ``sim.train(summaries=...)`` writes (`nengo_onnx.events`): each ``fit`` call
    gets the next free ``log_dir/run_<n>``. Every log of ``on_epoch_end`` (``loss``,
    ``val_loss``, metrics) is a scalar with the tag ``epoch_<name>`` at step
    ``epoch``; with ``update_freq="batch"`` (or an integer ``k``: every ``k``-th
    minibatch), the minibatch logs are also written, tagged ``batch_<name>`` at the
    global minibatch count. View them with ``tensorboard --logdir log_dir``.
    """

    def __init__(self, log_dir="logs", update_freq="epoch"):
        super().__init__()
        if update_freq not in ("epoch", "batch") and not (
            isinstance(update_freq, int) and not isinstance(update_freq, bool) and update_freq > 0
        ):
            raise ValidationError(
                f"must be 'epoch', 'batch' or a positive integer (got {update_freq!r})",
                attr="update_freq",
                obj=self,
            )
        self.log_dir = os.fspath(log_dir)
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self.run_dir = None
        self._writer = None
        self._batches = 0

    def on_train_begin(self, logs=None):
        self.run_dir = next_run_dir(self.log_dir)
        self._writer = EventWriter(self.run_dir)
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        step = self._batches
        self._batches += 1
        if self.update_freq == "epoch" or self._writer is None or step % self.update_freq:
            return
        for key, value in (logs or {}).items():
            self._writer.scalar(f"batch_{key}", value, step)
        self._writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            return
        for key, value in (logs or {}).items():
            self._writer.scalar(f"epoch_{key}", value, epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


__all__ = ["Callback", "History", "EarlyStopping", "TensorBoard"]
