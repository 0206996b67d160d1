"""The result of a range test: the curves, the sweep's settings, and access.

:class:`RangeTestResult` holds the curves and the settings that produced
them. Reading it (suggestions, Smith's bounds) lives in :mod:`._reading`,
files in :mod:`._io` and figures in :mod:`clr_jax.plotting`; the methods
here are the public doors to them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import numpy as np
import optax

from clr_jax.range_test import _io, _reading
from clr_jax.range_test._reading import BoundsReport, RangeTestWarning

__all__ = ["BoundsReport", "RangeTestConfig", "RangeTestResult", "RangeTestWarning"]


class RangeTestConfig(NamedTuple):
    """The settings of a sweep, kept with its curves (plain Python values).

    A value that was traced when the sweep ran is ``None``.
    """

    start_lr: float | None = None
    end_lr: float | None = None
    num_steps: int | None = None
    mode: str | None = None
    beta: float | None = None
    diverge_threshold: float | None = None
    batch_size: int | None = None
    num_sweeps: int | None = None
    optimizer: str | None = None
    hyperparams: tuple[tuple[str, tuple[float, ...]], ...] = ()
    versions: tuple[tuple[str, str], ...] = ()


_CURVES = _io.CURVES
_NO_CONFIG = RangeTestConfig()


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[*_CURVES, "diverged_step", "final_state"],
    meta_fields=["config"],
)
@dataclasses.dataclass(frozen=True)
class RangeTestResult:
    """The curve of one range test, or of ``K`` sweeps run together.

    A pytree: the curves, ``diverged_step`` and ``final_state`` are its
    leaves, the settings (``config``) its static part. Inside compiled code
    every curve is an array and ``diverged_step`` is ``int32`` with ``-1``
    meaning "never diverged". The result the public functions return is the
    host form: NumPy curves and ``diverged_step`` an ``int`` or ``None`` (a
    tuple of those, one per sweep, for ``K`` sweeps).

    Every curve has shape ``[num_steps]``, or ``[K, num_steps]`` for ``K``
    sweeps (``lrs`` included, so that every field has the leading sweep axis).
    After divergence the losses and metrics are NaN.

    Attributes:
      lrs: the learning rate used at each step.
      losses: the raw loss of each step, measured before its update.
      smoothed_losses: bias-corrected EMA of ``losses`` (see
        :func:`clr_jax.range_test_with_step`).
      metrics: the metric of each step, or ``None`` when none was recorded.
      smoothed_metrics: bias-corrected EMA of ``metrics``, or ``None``.
      diverged_step: the step that diverged, or ``None``.
      final_state: the training state after the sweep, frozen at its last
        finite value before divergence (:class:`SweepState` for
        :func:`clr_jax.range_test`); ``None`` once loaded from a file.
      config: the sweep's settings, a :class:`RangeTestConfig`.
    """

    lrs: Any
    losses: Any
    smoothed_losses: Any
    metrics: Any = None
    smoothed_metrics: Any = None
    diverged_step: Any = None
    final_state: Any = None
    config: RangeTestConfig = _NO_CONFIG

    def replace(self, **changes) -> RangeTestResult:
        """A copy with the given fields changed."""
        return dataclasses.replace(self, **changes)

    # -- shape ----------------------------------------------------------------

    @property
    def num_sweeps(self) -> int | None:
        """``K`` for a result of many sweeps, ``None`` for a single sweep."""
        return np.shape(self.losses)[0] if np.ndim(self.losses) == 2 else None

    def sweep(self, k: int) -> RangeTestResult:
        """Sweep ``k`` of a many-sweep result, as a single-sweep result."""
        if self.num_sweeps is None:
            raise ValueError("`sweep` needs a result of many sweeps; this has one.")
        curves = (getattr(self, f) for f in _CURVES)
        return RangeTestResult(
            *(None if c is None else c[k] for c in curves),
            diverged_step=self.diverged_step[k],
            final_state=jax.tree.map(lambda x: x[k], self.final_state),
            config=self.config,
        )

    def mean(self) -> RangeTestResult:
        """The mean curve of a many-sweep result (NaN after the first divergence)."""
        if self.num_sweeps is None:
            return self
        curves = {
            f: None if getattr(self, f) is None else np.mean(getattr(self, f), axis=0)
            for f in _CURVES
        }
        stops = [s for s in self.diverged_step if s is not None]
        return RangeTestResult(
            **curves, diverged_step=min(stops) if stops else None, config=self.config
        )

    # -- readings (see ._reading) ----------------------------------------------

    def suggest(
        self,
        method: _reading.SuggestMethod = "valley",
        *,
        skip_start: int | None = None,
    ):
        """A learning rate read from the smoothed loss curve.

        Slopes are taken against ``log(lr)`` for an exponential sweep and
        against ``lr`` for a linear one. The first ``skip_start`` steps (noisy:
        the EMA has seen few batches) and everything from the divergence on are
        left out.

        * ``'steepest'``: the rate at the most negative slope of the main
          descent (the stretch ``'valley'`` uses).
        * ``'minimum'``: the rate at the lowest loss, divided by 10.
        * ``'valley'``: the rate two thirds of the way down the descending
          stretch, i.e. the deepest descent (the largest drop from a peak to a
          later trough), at the first step where two thirds of that drop are
          made. Steeper than ``'minimum'``, steadier than ``'steepest'``.

        Args:
          method: ``'steepest'``, ``'minimum'`` or ``'valley'``.
          skip_start: steps left out at the start; default ``max(1, n // 10)``.

        Returns:
          A float; a NumPy array with one value per sweep for a many-sweep
          result. NaN, with a :class:`RangeTestWarning`, when the curve shows
          no clear descent.

        Raises:
          ValueError: for an unknown ``method`` or a bad ``skip_start``.
        """
        return _reading.suggest(self, method, skip_start=skip_start)

    def suggestions(self, *, skip_start: int | None = None) -> dict[str, Any]:
        """All three suggestions as ``{method: lr}``."""
        return {
            m: self.suggest(m, skip_start=skip_start)
            for m in ("steepest", "minimum", "valley")
        }

    def bounds(
        self,
        *,
        use_metric: bool | None = None,
        metric_mode: Literal["max", "min"] = "max",
        skip_start: int | None = None,
    ) -> tuple[Any, Any]:
        """Smith's ``(base_lr, max_lr)`` for a cyclical schedule.

        ``base_lr`` is where the curve starts to improve and ``max_lr`` where
        the improvement stops, before the minimum and the blow-up. The curve is
        the smoothed metric when one was recorded and rises clearly (Smith
        reads accuracy), else the smoothed loss. On the descent (or rise) from
        its peak to its trough, ``base_lr`` is the first rate where 10% of the
        gain is made and ``max_lr`` the first where 90% is made.
        :meth:`bounds_report` says which curve was used and why.

        Args:
          use_metric: ``None`` uses the metric when it was recorded and rises
            clearly; ``False`` always uses the loss; ``True`` requires the
            metric.
          metric_mode: ``'max'`` when a higher metric is better (accuracy),
            ``'min'`` otherwise.
          skip_start: as in :meth:`suggest`.

        Returns:
          ``(base_lr, max_lr)``, floats (arrays of one per sweep for a
          many-sweep result); ``(nan, nan)`` with a :class:`RangeTestWarning`
          when the curve shows no clear improvement.

        Raises:
          ValueError: for ``use_metric=True`` without a recorded metric or an
            unknown ``metric_mode``.
        """
        report = self.bounds_report(
            use_metric=use_metric, metric_mode=metric_mode, skip_start=skip_start
        )
        if self.num_sweeps is not None:
            return (
                np.array([r.base_lr for r in report]),
                np.array([r.max_lr for r in report]),
            )
        return report.base_lr, report.max_lr

    def bounds_report(
        self,
        *,
        use_metric: bool | None = None,
        metric_mode: Literal["max", "min"] = "max",
        skip_start: int | None = None,
    ):
        """:meth:`bounds` with its reasoning, a :class:`BoundsReport`.

        A tuple of reports, one per sweep, for a many-sweep result.
        """
        return _reading.bounds_report(
            self, use_metric=use_metric, metric_mode=metric_mode, skip_start=skip_start
        )

    def to_schedule(
        self,
        kind: Literal["triangular", "triangular2", "exp_range", "one_cycle"] = (
            "triangular"
        ),
        *,
        step_size: int | None = None,
        total_steps: int | None = None,
        **kwargs,
    ) -> optax.Schedule:
        """A cyclical schedule between the :meth:`bounds` of this curve.

        Args:
          kind: ``'triangular'``, ``'triangular2'``, ``'exp_range'`` (pass
            ``gamma``) take ``step_size``; ``'one_cycle'`` takes
            ``total_steps`` and peaks at ``max_lr`` starting from ``base_lr``.
          step_size: half-cycle length in updates (see
            :func:`clr_jax.step_size_for`).
          total_steps: length of a one-cycle schedule.
          **kwargs: forwarded to the schedule factory (e.g. ``gamma``, ``window``).

        Returns:
          An ``optax.Schedule``.

        Raises:
          ValueError: for a many-sweep result (pick one with :meth:`sweep` or
            :meth:`mean`), a curve without clear bounds, an unknown ``kind``,
            or a missing ``step_size``/``total_steps``.
        """
        return _reading.to_schedule(
            self, kind, step_size=step_size, total_steps=total_steps, **kwargs
        )

    # -- plot and files (see clr_jax.plotting and ._io) -------------------------

    def plot(self, **kwargs):
        """Plots the curve; see :func:`clr_jax.plotting.plot_range_test`."""
        from clr_jax.plotting import plot_range_test

        return plot_range_test(self, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The curves as plain lists (NaN as ``None``) and ``diverged_step``."""
        return _io.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RangeTestResult:
        """Inverse of :meth:`to_dict`."""
        return _io.from_dict(cls, d)

    def save_json(self, path) -> None:
        """Writes :meth:`to_dict` as standard JSON (NaN as ``null``)."""
        _io.save_json(self, path)

    @classmethod
    def load_json(cls, path) -> RangeTestResult:
        """Reads a file written by :meth:`save_json`."""
        return _io.load_json(cls, path)

    def save_csv(self, path) -> None:
        """Writes one row per step (and sweep).

        Columns: ``sweep`` (many-sweep results only), ``step``, ``lr``, ``loss``,
        ``smoothed_loss``, then ``metric`` and ``smoothed_metric`` when
        recorded, and ``diverged`` (1 from the divergence step on).
        """
        _io.save_csv(self, path)

    @classmethod
    def load_csv(cls, path) -> RangeTestResult:
        """Reads a file written by :meth:`save_csv`."""
        return _io.load_csv(cls, path)
