"""What ``fit`` returns: the per-step and per-epoch history, and the result."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from clr_jax.flax._snapshots import SnapshotEnsemble
from clr_jax.flax._state import TrainState


class History(NamedTuple):
    """What :func:`fit` recorded, as NumPy arrays (fetched once, after the run).

    With ``seeds`` every field gains a leading seed axis.

    Per update (``steps`` = the updates run by this call):
      step: int32[steps], the update count (``state.step`` before the update;
        the ``count`` its schedules saw).
      learning_rate, momentum: float32[steps], read from the optimizer's
        injected hyperparameters inside the step. ``momentum`` is the
        ``momentum`` (SGD) or ``b1`` (Adam family) hyperparameter, NaN when
        the optimizer has neither.
      loss, accuracy: float32[steps], training mini-batch loss and accuracy
        (training mode).

    Per epoch (``epochs`` = the epochs run by this call):
      epoch: int32[epochs], the epoch numbers.
      train_loss, train_accuracy: float32[epochs], means over the epoch's
        mini-batches (finite ones; NaN when there were none).
      test_loss, test_accuracy: float32[epochs], on the whole test split in
        inference mode after the epoch.

    nonfinite_step: int32 scalar, the update count at which the loss, the
    optimizer's updates or the BatchNorm statistics first turned NaN/Inf
    (a NaN learning rate included); -1 when training stayed finite. That
    update and every later one were refused (the state stays frozen); their
    ``loss``, ``accuracy``, ``learning_rate`` and ``momentum`` read NaN from
    the next step on (the failing step keeps its loss and learning rate).

    policy_log: what ``lr_policy`` reported with its rate (``(lr, log)``),
    the same pytree with one value per epoch (``[epochs]``); ``None``
    otherwise.
    """

    step: np.ndarray
    learning_rate: np.ndarray
    momentum: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    epoch: np.ndarray
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    nonfinite_step: np.ndarray
    policy_log: Any = None


class FitResult(NamedTuple):
    """The outcome of :func:`fit`.

    Attributes:
      state: the final :class:`TrainState` (the last finite one if training
        halted); with ``seeds``, every leaf has a leading seed axis.
      history: the :class:`History`.
      snapshots: a :class:`SnapshotEnsemble`, or ``None`` without
        ``snapshot_every``.
      mean, std: the history's mean and standard deviation over seeds
        (``None`` without ``seeds``).
    """

    state: TrainState
    history: History
    snapshots: SnapshotEnsemble | None
    mean: History | None
    std: History | None


def collect(steps: list, epochs: list, epoch_range: range, halted_at) -> History:
    """The host (NumPy) history, fetched once at the end of the run."""
    steps, epochs, halted_at = jax.device_get((steps, epochs, halted_at))
    step_log = jax.tree.map(lambda *a: np.concatenate(a, axis=-1), *steps)
    epoch_log = jax.tree.map(lambda *a: np.stack(a, axis=-1), *epochs)
    epoch = np.arange(epoch_range.start, epoch_range.stop, dtype=np.int32)
    per_epoch = epoch_log._asdict()
    policy_log = per_epoch.pop("policy_log")
    return History(
        **step_log._asdict(),
        epoch=np.broadcast_to(epoch, (*np.shape(halted_at), len(epoch))).copy(),
        **per_epoch,
        nonfinite_step=halted_at,
        policy_log=policy_log,
    )


def seed_statistics(history: History) -> tuple[History, History]:
    def stat(fn):
        return jax.tree.map(lambda a: fn(np.asarray(a, np.float64), axis=0), history)

    return stat(np.mean), stat(np.std)
