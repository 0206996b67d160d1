"""What ``fit`` returns: the per-step and per-epoch history, and the result.

The device keeps every epoch's logs until the run ends (or a checkpoint or
callback asks for them); :func:`collect` fetches them once and assembles
the NumPy :class:`History`.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import numpy as np

from clr_jax.flax import _results_io
from clr_jax.flax._snapshots import SnapshotEnsemble
from clr_jax.flax._state import TrainState


class History(NamedTuple):
    """What :func:`fit` recorded, as NumPy arrays.

    Every field has the run axes first: ``[K]`` for a learning-rate grid of
    K settings, then ``[seeds]`` with ``seeds``.

    Per update (``steps`` = the updates in this history):
      step: int32[steps], the update count (``state.step`` before the update;
        the ``count`` its schedules saw).
      learning_rate, momentum: float32[steps], read from the optimizer's
        injected hyperparameters inside the step. ``momentum`` is the
        ``momentum`` (SGD) or ``b1`` (Adam family) hyperparameter, NaN when
        the optimizer has neither.
      loss: float32[steps], the training mini-batch loss (training mode).
      metrics: ``{name: float32[steps]}``, ``metrics_fn`` on each training
        mini-batch (by default ``accuracy`` for integer labels, nothing for
        float targets).

    Per epoch (``epochs`` = the epochs in this history):
      epoch: int32[epochs], the epoch numbers.
      epoch_end: int32[epochs], the index into the per-update fields one past
        each epoch's last update.
      train_loss: float32[epochs]; train_metrics: ``{name: float32[epochs]}``,
        means over the epoch's mini-batches (finite ones; NaN when there were
        none).
      test_loss: float32[epochs], on the whole evaluation split in inference
        mode after the epoch (``None`` without evaluation data);
        test_metrics: ``{name: float32[epochs]}`` likewise (``{}`` without).

    nonfinite_step: int32, the update count at which the loss, the
    optimizer's updates or the BatchNorm statistics first turned NaN/Inf (a
    NaN learning rate included); -1 when training stayed finite. That update
    and every later one were refused (the state stays frozen); their
    ``loss``, ``metrics``, ``learning_rate`` and ``momentum`` read NaN from
    the next step on (the failing step keeps its loss and learning rate).

    policy_log: what ``lr_policy`` reported with its rate (``(lr, log)``),
    the same pytree with one value per epoch (``[epochs]``); ``None``
    otherwise.

    ``accuracy``, ``train_accuracy`` and ``test_accuracy`` read the
    ``'accuracy'`` metric. :meth:`save`/:meth:`load` write and read ``.npz``
    or ``.json``; :meth:`plot` draws loss, metrics and rate against the step.
    """

    step: np.ndarray
    learning_rate: np.ndarray
    momentum: np.ndarray
    loss: np.ndarray
    metrics: dict
    epoch: np.ndarray
    epoch_end: np.ndarray
    train_loss: np.ndarray
    train_metrics: dict
    test_loss: np.ndarray | None
    test_metrics: dict
    nonfinite_step: np.ndarray
    policy_log: Any = None

    @property
    def accuracy(self) -> np.ndarray:
        return _metric(self.metrics, "accuracy", "per-update")

    @property
    def train_accuracy(self) -> np.ndarray:
        return _metric(self.train_metrics, "accuracy", "training")

    @property
    def test_accuracy(self) -> np.ndarray:
        return _metric(self.test_metrics, "accuracy", "evaluation")

    def epoch_metrics(self, i: int) -> dict[str, np.ndarray]:
        """Epoch ``i``'s losses and metrics (``i`` indexes this history's epochs)."""
        out = {"train_loss": self.train_loss[..., i]}
        out.update({f"train_{k}": a[..., i] for k, a in self.train_metrics.items()})
        if self.test_loss is not None:
            out["test_loss"] = self.test_loss[..., i]
        out.update({f"test_{k}": a[..., i] for k, a in self.test_metrics.items()})
        return out

    def save(self, path, *, overwrite: bool = False) -> None:
        """Writes the history to ``path`` (``.npz`` or ``.json``); an existing
        file is replaced only with ``overwrite=True``."""
        _results_io.save({"history": self._asdict()}, path, overwrite)

    @classmethod
    def load(cls, path) -> History:
        """Reads a history written by :meth:`save`."""
        return from_dict(_results_io.load(path)["history"])

    def plot(self, *, axes=None):
        """Loss, metrics and learning rate (and momentum) against the update
        count; many runs as their mean and a min-max band. Returns the figure."""
        from clr_jax.flax import _plot

        return _plot.plot_history(self, axes=axes)


def _metric(metrics: dict, name: str, where: str) -> np.ndarray:
    if name not in metrics:
        raise AttributeError(
            f"no {where} {name!r} in this history (metrics: {sorted(metrics)}); "
            "accuracy is recorded for integer labels by default, or by a "
            "metrics_fn that returns it."
        )
    return metrics[name]


def from_dict(fields: dict) -> History:
    """A :class:`History` from its ``_asdict()`` (arrays as written)."""
    fields = dict(fields)
    for name in ("metrics", "train_metrics", "test_metrics"):
        fields[name] = dict(fields.get(name) or {})
    return History(**fields)


class FitResult(NamedTuple):
    """The outcome of :func:`fit`.

    Attributes:
      state: the final :class:`TrainState` (the last finite one if training
        halted; the best one when early stopping restores it); every leaf has
        the run axes first (grid, then seeds).
      history: the :class:`History`.
      snapshots: a :class:`SnapshotEnsemble`, or ``None`` without
        ``snapshot_every``.
      mean, std: the history's mean and standard deviation over seeds
        (``None`` without ``seeds``).
      model: the trained model for a built NNX module (the same object,
        updated in place), an NNX factory or a pytree model, with one run;
        ``None`` for Linen (the variables are in ``state``) and for many runs.
    """

    state: TrainState
    history: History
    snapshots: SnapshotEnsemble | None
    mean: History | None
    std: History | None
    model: Any = None

    def save(self, path, *, overwrite: bool = False) -> None:
        """Writes the history, the state's arrays and the snapshot ensemble to
        ``path`` (``.npz`` or ``.json``); an existing file is replaced only
        with ``overwrite=True``."""
        tree = {
            "history": self.history._asdict(),
            "state": _results_io.leaves_by_path(self.state),
        }
        if self.snapshots is not None:
            tree["snapshots"] = _results_io.leaves_by_path(self.snapshots)
        _results_io.save(tree, path, overwrite)

    @classmethod
    def load(cls, path, *, like: TrainState | None = None) -> FitResult:
        """Reads a result written by :meth:`save`.

        Args:
          path: the ``.npz`` or ``.json`` file.
          like: a state of the same model and optimizer (e.g. from
            :func:`create_train_state`) to restore ``state`` into; without
            it ``state`` is a dict ``{leaf path: array}``.

        Returns:
          A :class:`FitResult` (``snapshots`` as a dict of arrays, ``mean``,
          ``std`` and ``model`` ``None``).

        Raises:
          ValueError: naming ``like`` when its leaves are not those saved.
        """
        tree = _results_io.load(path)
        history = from_dict(tree["history"])
        state = tree["state"]
        if like is not None:
            state = _results_io.restore_like(like, state, "like")
        snapshots = tree.get("snapshots")
        return cls(state, history, snapshots, None, None)


# ---------------------------------------------------------------------------
# Assembling the history on the host
# ---------------------------------------------------------------------------


class EpochRecord(NamedTuple):
    """One epoch's logs on the device: its step logs (one per chunk) and its
    epoch log."""

    epoch: int
    steps: list
    log: Any


def _nanmean(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN epoch
        return np.nanmean(np.asarray(a, np.float64), axis=-1).astype(np.float32)


def collect(records: list[EpochRecord], halted_at) -> History | None:
    """The host (NumPy) history of ``records`` (``None`` when there are none)."""
    if not records:
        return None
    records, halted_at = jax.device_get((records, halted_at))
    runs = np.shape(halted_at)
    per_epoch = [_concat(r.steps) for r in records]
    steps = _concat(per_epoch)
    ends = np.cumsum([np.shape(p.loss)[-1] for p in per_epoch]).astype(np.int32)
    logs = jax.tree.map(lambda *a: np.stack(a, axis=-1), *[r.log for r in records])

    def per_run(values):
        return np.broadcast_to(
            np.asarray(values, np.int32), (*runs, len(values))
        ).copy()

    return History(
        **steps._asdict(),
        epoch=per_run([r.epoch for r in records]),
        epoch_end=per_run(ends),
        train_loss=np.stack([_nanmean(p.loss) for p in per_epoch], axis=-1),
        train_metrics={
            name: np.stack([_nanmean(p.metrics[name]) for p in per_epoch], axis=-1)
            for name in steps.metrics
        },
        test_loss=logs.test_loss,
        test_metrics=dict(logs.test_metrics),
        nonfinite_step=np.asarray(halted_at),
        policy_log=logs.policy_log,
    )


def _concat(logs: list) -> Any:
    return jax.tree.map(lambda *a: np.concatenate(a, axis=-1), *logs)


def concatenate(first: History | None, second: History | None) -> History | None:
    """``first`` then ``second`` (a resumed run's history after the restored one)."""
    if first is None or second is None:
        return first if second is None else second
    offset = first.epoch_end[..., -1:] if np.size(first.epoch_end) else 0
    joined = jax.tree.map(
        lambda a, b: np.concatenate([a, b], axis=-1),
        first._replace(nonfinite_step=None, epoch_end=None),
        second._replace(nonfinite_step=None, epoch_end=None),
    )
    return joined._replace(
        nonfinite_step=second.nonfinite_step,
        epoch_end=np.concatenate([first.epoch_end, second.epoch_end + offset], -1),
    )


def seed_statistics(history: History, seed_axis: int) -> tuple[History, History]:
    """The history's mean and standard deviation over the seed axis."""

    def stat(fn):
        return jax.tree.map(
            lambda a: fn(np.asarray(a, np.float64), axis=seed_axis), history
        )

    return stat(np.mean), stat(np.std)
