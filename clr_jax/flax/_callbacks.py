"""Per-epoch hooks of ``fit``: early stopping, a JSON-lines log, the progress bar.

A callback is any function ``callback(epoch, state, metrics)``, called on
the host after each epoch with the epoch number, the :class:`TrainState`
(device arrays, run axes first) and that epoch's metrics (``{'train_loss':
..., 'test_loss': ..., 'test_accuracy': ...}``, NumPy, one value per run).
Returning :data:`STOP` ends training cleanly after that epoch (the state,
history and checkpoint are those of the epoch just run). A callback object
may also have ``on_train_begin(*, start_epoch, epochs, history)`` (``history``
is the restored one when resuming, else ``None``) and ``on_train_end(state)``,
which may return a state to use as the result's (early stopping's best).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from clr_jax import _progress
from clr_jax import _validation as v


class Stop:
    """The signal a callback returns to end training after this epoch."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "clr_jax.flax.STOP"


STOP = Stop()


class EarlyStopping:
    """Stops when a metric has not improved for ``patience`` epochs.

    With many runs (seeds, a grid) the metric is their mean.

    Args:
      monitor: a key of the epoch's metrics, e.g. ``'test_loss'`` or
        ``'test_accuracy'``.
      patience: epochs without improvement before stopping (>= 1).
      min_delta: an improvement smaller than this does not count (>= 0).
      mode: ``'min'``, ``'max'``, or ``'auto'`` (``'min'`` for names with
        ``loss`` in them, else ``'max'``).
      restore_best: make the best epoch's state the result's state.

    Attributes:
      best, best_epoch: the best value and its epoch; ``stopped_epoch`` the
        epoch after which training stopped (``None`` if it did not).

    On resuming, the counters are read back from the restored history; the
    best state is kept only from epochs run in this call.

    Raises:
      ValueError: for a bad ``patience``, ``min_delta`` or ``mode``, and,
        during training, for a ``monitor`` that the metrics do not have.
    """

    def __init__(
        self,
        monitor: str = "test_loss",
        *,
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best: bool = True,
    ):
        self.monitor = monitor
        self.patience = v.check_step_count("patience", patience)
        v.check_non_negative("min_delta", min_delta)
        self.min_delta = float(min_delta)
        v.check_choice("mode", mode, ("auto", "min", "max"))
        if mode == "auto":
            mode = "min" if "loss" in monitor else "max"
        self.mode = mode
        self.restore_best = v.check_bool("restore_best", restore_best)
        self._reset()

    def _reset(self) -> None:
        self.best, self.best_epoch, self.best_state = None, None, None
        self.wait, self.stopped_epoch = 0, None

    def on_train_begin(self, *, start_epoch, epochs, history) -> None:
        del start_epoch, epochs
        self._reset()
        if history is not None:
            epochs_run = np.asarray(history.epoch).reshape(-1, history.epoch.shape[-1])
            for i, epoch in enumerate(epochs_run[0]):
                self._update(int(epoch), history.epoch_metrics(i), None)

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _update(self, epoch: int, metrics: dict, state: Any) -> bool:
        if self.monitor not in metrics:
            v.fail(
                "monitor", f"one of the epoch's metrics {sorted(metrics)}", self.monitor
            )
        value = float(np.mean(metrics[self.monitor]))
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_state = state if self.restore_best else None
            return False
        self.wait += 1
        return self.wait >= self.patience

    def __call__(self, epoch: int, state: Any, metrics: dict) -> Stop | None:
        if self._update(epoch, metrics, state):
            self.stopped_epoch = epoch
            return STOP
        return None

    def on_train_end(self, state: Any) -> Any:
        return self.best_state if self.restore_best else None


def _jsonable(value: Any) -> Any:
    arr = np.asarray(value, np.float64)
    data = np.where(np.isfinite(arr), arr, np.nan).tolist()
    if isinstance(data, list):
        return [_jsonable(x) for x in data]
    return None if data != data else data  # NaN -> null


class JsonLinesLogger:
    """Appends one JSON line per epoch to ``path``: ``{"epoch": e, ...metrics}``.

    Values with run axes are nested lists; NaN and infinities are ``null``.
    The file is appended to (a resumed run continues its log), never
    truncated.

    Args:
      path: the ``.jsonl`` file.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._file = None

    def on_train_begin(self, *, start_epoch, epochs, history) -> None:
        del start_epoch, epochs, history
        self._file = open(self.path, "a")  # noqa: SIM115 (closed at the end)

    def __call__(self, epoch: int, state: Any, metrics: dict) -> None:
        del state
        record = {"epoch": int(epoch), **{k: _jsonable(x) for k, x in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def on_train_end(self, state: Any) -> None:
        del state
        if self._file is not None:
            self._file.close()
            self._file = None


class ProgressBar:
    """A tqdm bar over epochs with the epoch's mean loss and evaluation metrics.

    Args:
      progress: ``None`` draws it only when stderr is a terminal (the shared
        rule of the range test and ``fit``), ``True`` always (needs tqdm),
        ``False`` never.
    """

    def __init__(self, progress: bool | None = None):
        self.progress = _progress.check_progress(progress)
        self._bar = None

    def on_train_begin(self, *, start_epoch, epochs, history) -> None:
        del history
        self._bar = _progress.bar(
            self.progress,
            total=epochs - start_epoch,
            desc="fit",
            unit="epoch",
            leave=True,
        )

    def __call__(self, epoch: int, state: Any, metrics: dict) -> None:
        del epoch, state
        shown = {"loss": metrics["train_loss"]}
        shown.update({k: x for k, x in metrics.items() if k.startswith("test_")})
        short = {
            k.replace("accuracy", "acc"): float(np.mean(x)) for k, x in shown.items()
        }
        self._bar.set_postfix(**short)
        self._bar.update(1)

    def on_train_end(self, state: Any) -> None:
        del state
        if self._bar is not None:
            self._bar.close()
            self._bar = None
