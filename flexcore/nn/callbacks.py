"""Callbacks: code that `Network.fit` runs at fixed points of training.

    net.fit(data, 100, 0.01, validation_data=val,
            callbacks=[EarlyStopping('val_loss', patience=5),
                       ModelCheckpoint('ckpt/best', monitor='val_accuracy'),
                       LearningRateScheduler(lambda epoch, lr: lr * 0.95)])

`fit` calls, for each callback in order: `on_train_begin(net, history)` once;
`on_epoch_begin(net, epoch, lr)` before each epoch (a number returned becomes that epoch's
learning rate); `on_epoch_end(net, epoch, metrics)` after each epoch (true: stop training;
`metrics` holds what the epoch adds to the History: 'loss', 'accuracy', 'val_loss', 'lr', ...);
`on_train_end(net, history)` once.  Epochs count from 0 within one `fit` call.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..ir.core import FlexcoreError

__all__ = ["Callback", "EarlyStopping", "LearningRateScheduler", "ModelCheckpoint"]


class Callback:
    """Base class: every hook does nothing; override the ones you need."""

    def on_train_begin(self, net, history) -> None:
        pass

    def on_epoch_begin(self, net, epoch: int, lr: float) -> float | None:
        return None

    def on_epoch_end(self, net, epoch: int, metrics: dict[str, float]) -> bool | None:
        return None

    def on_train_end(self, net, history) -> None:
        pass


class _Monitor(Callback):
    """Watches one metric and knows when it improved."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        if mode not in ("min", "max", "auto"):
            raise FlexcoreError(f"{type(self).__name__}: mode must be 'min', 'max' or 'auto', got {mode!r}")
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise FlexcoreError(f"{type(self).__name__}: min_delta must be a finite number >= 0, got {min_delta!r}")
        self.monitor = monitor
        # Accuracies grow, losses (and anything else) shrink.
        self.mode = mode if mode != "auto" else ("max" if "acc" in monitor else "min")
        self.min_delta = float(min_delta)
        self.best: float | None = None
        self.best_epoch: int | None = None

    def _reset(self) -> None:
        self.best, self.best_epoch = None, None

    def _value(self, epoch: int, metrics: dict[str, float]) -> float:
        if self.monitor not in metrics:
            raise FlexcoreError(
                f"{type(self).__name__}: metric '{self.monitor}' is not among this epoch's metrics "
                f"({', '.join(sorted(metrics))}); 'val_*' needs validation_data and 'test_*' test_data in fit"
            )
        return float(metrics[self.monitor])

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop after `patience` epochs in a row in which `monitor` did not improve (by more than
    `min_delta`) on its best value; 0 and 1 both stop at the first such epoch (as in Keras).  With `restore_best`, the
    network gets back the weights of its best epoch when training ends (a GInfty that grew since
    keeps its new blocks, with the best epoch's depth).

    After training: `best`, `best_epoch`, and `stopped_epoch` (None if it ran to the end)."""

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", patience: int = 0, min_delta: float = 0.0,
                 restore_best: bool = True):
        super().__init__(monitor, mode, min_delta)
        if not isinstance(patience, (int, np.integer)) or patience < 0:
            raise FlexcoreError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        self.patience = int(patience)
        self.restore_best = bool(restore_best)
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._best_weights: dict[str, np.ndarray] | None = None

    def on_train_begin(self, net, history) -> None:
        self._reset()
        self.wait = 0
        self.stopped_epoch = None
        self._best_weights = None

    def on_epoch_end(self, net, epoch, metrics) -> bool:
        value = self._value(epoch, metrics)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_weights = net.weights()
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, net, history) -> None:
        if self.restore_best and self._best_weights is not None:
            net.set_weights(self._best_weights)


class ModelCheckpoint(_Monitor):
    """Save the network with `Network.save` (atomic: architecture .json + weights .npz) after an
    epoch: with `save_best_only` only when `monitor` improved, else after every epoch.  `path`
    may hold fields filled per epoch, '{epoch}' (counting from 1) and any metric
    ('ckpt/e{epoch:03d}-{val_loss:.3f}').

    `best`, `best_epoch` and `saved` (the paths written, in order) tell what happened."""

    def __init__(self, path: str, monitor: str = "val_loss", mode: str = "auto", save_best_only: bool = True,
                 min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        self.path = str(path)
        self.save_best_only = bool(save_best_only)
        self.saved: list[str] = []

    def on_train_begin(self, net, history) -> None:
        self._reset()

    def on_epoch_end(self, net, epoch, metrics) -> bool:
        value = self._value(epoch, metrics) if (self.save_best_only or self.monitor in metrics) else None
        improved = value is not None and self._improved(value)
        if improved:
            self.best, self.best_epoch = value, epoch
        if improved or not self.save_best_only:
            try:
                path = self.path.format(epoch=epoch + 1, **metrics)
            except (KeyError, IndexError, ValueError) as e:
                raise FlexcoreError(f"ModelCheckpoint: cannot fill the path '{self.path}' ({e!r}); fields: epoch, "
                                    f"{', '.join(sorted(metrics))}") from None
            jpath, _ = net.save(path)
            self.saved.append(jpath)
        return False


class LearningRateScheduler(Callback):
    """Set each epoch's learning rate to `schedule(epoch, lr)`, where `lr` is the rate of the
    previous epoch (at epoch 0: fit's learning_rate), so `lambda epoch, lr: lr * 0.9` decays
    by 10% per epoch.  The rates appear in history['lr']."""

    def __init__(self, schedule: Callable[[int, float], float]):
        if not callable(schedule):
            raise FlexcoreError(f"LearningRateScheduler: schedule must be callable, got {type(schedule).__name__}")
        self.schedule = schedule
        self._last: float | None = None

    def on_train_begin(self, net, history) -> None:
        self._last = None

    def on_epoch_begin(self, net, epoch, lr) -> float:
        prev = float(lr) if self._last is None else self._last
        new = self.schedule(epoch, prev)
        if isinstance(new, (bool, np.bool_)) or not isinstance(new, (int, float, np.integer, np.floating)) \
                or not math.isfinite(new) or new < 0:
            raise FlexcoreError(f"LearningRateScheduler: schedule({epoch}, {prev}) returned {new!r}; "
                                "it must return a finite number >= 0")
        self._last = float(new)
        return self._last
