"""The result of a range test: curves, suggestions, Smith's bounds, export.

Everything here runs on the host with NumPy, after the compiled sweep of
:mod:`clr_jax.range_test`: slopes are taken against ``log(lr)`` for an
exponential sweep (against ``lr`` for a linear one), the noisy start and the
diverged tail are left out, and a curve without a clear descent gives a
:class:`RangeTestWarning` instead of a number.

References:
  Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
  https://arxiv.org/abs/1506.01186.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import numpy as np
import optax

from clr_jax import _validation as v
from clr_jax import schedules

__all__ = ["BoundsReport", "RangeTestResult", "RangeTestWarning"]

SuggestMethod = Literal["steepest", "minimum", "valley"]

# Fractions of the descent (or of the metric's rise) that mark Smith's bounds:
# the curve "starts to improve" once 10% of the gain is made, and the gain
# "stops" once 90% is made, before the flat bottom and the blow-up.
_BASE_FRACTION = 0.1
_MAX_FRACTION = 0.9
# The valley suggestion sits where two thirds of the descent are made.
_VALLEY_FRACTION = 2.0 / 3.0
# A descent is "clear" when it exceeds this many per-step noise deviations.
_NOISE_MULTIPLE = 2.0


class RangeTestWarning(UserWarning):
    """The curve of a range test does not support a suggestion."""


class BoundsReport(NamedTuple):
    """Smith's bounds with the evidence behind them.

    Attributes:
      base_lr: where the curve starts to improve.
      max_lr: where the improvement stops, before the minimum and divergence.
      source: ``'metric'`` or ``'loss'``, the curve the bounds were read from.
      reason: one sentence saying where the bounds come from.
    """

    base_lr: float
    max_lr: float
    source: str
    reason: str


# ---------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------


class RangeTestResult(NamedTuple):
    """The curve of one range test, or of ``K`` sweeps run together.

    A ``NamedTuple``, hence a pytree. Inside compiled code (the form the scan
    produces) every field is an array and ``diverged_step`` is ``int32`` with
    ``-1`` meaning "never diverged". The result the public functions return is
    the host form: NumPy curves and ``diverged_step`` an ``int`` or ``None``
    (a tuple of those, one per sweep, for ``K`` sweeps).

    Every curve has shape ``[num_steps]``, or ``[K, num_steps]`` for ``K``
    sweeps (``lrs`` included, so that every field has the leading sweep axis).
    After divergence the losses and metrics are NaN.

    Attributes:
      lrs: the learning rate used at each step.
      losses: the raw loss of each step, measured before its update.
      smoothed_losses: bias-corrected EMA of ``losses`` (see :func:`range_test`).
      metrics: the metric of each step, or ``None`` when none was recorded.
      smoothed_metrics: bias-corrected EMA of ``metrics``, or ``None``.
      diverged_step: the step that diverged, or ``None``.
      final_state: the training state after the sweep, frozen at its last
        finite value before divergence (:class:`SweepState` for
        :func:`range_test`); ``None`` once loaded from a file.
    """

    lrs: Any
    losses: Any
    smoothed_losses: Any
    metrics: Any = None
    smoothed_metrics: Any = None
    diverged_step: Any = None
    final_state: Any = None

    # -- shape ----------------------------------------------------------------

    @property
    def num_sweeps(self) -> int | None:
        """``K`` for a result of many sweeps, ``None`` for a single sweep."""
        return np.shape(self.losses)[0] if np.ndim(self.losses) == 2 else None

    def sweep(self, k: int) -> RangeTestResult:
        """Sweep ``k`` of a many-sweep result, as a single-sweep result."""
        if self.num_sweeps is None:
            raise ValueError("`sweep` needs a result of many sweeps; this has one.")
        pick = functools.partial(_index_sweep, k=k)
        return RangeTestResult(
            *(pick(getattr(self, f)) for f in _CURVES),
            diverged_step=self.diverged_step[k],
            final_state=jax.tree.map(lambda x: x[k], self.final_state),
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
        return RangeTestResult(**curves, diverged_step=min(stops) if stops else None)

    # -- suggestions ------------------------------------------------------------

    def suggest(
        self, method: SuggestMethod = "valley", *, skip_start: int | None = None
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
        v.check_choice("method", method, ("steepest", "minimum", "valley"))
        if self.num_sweeps is not None:
            return _per_sweep(self, lambda r: r.suggest(method, skip_start=skip_start))
        curve = _Curve.of(self, skip_start)
        descent = curve.descent(curve.smoothed_losses, curve.losses, "loss")
        if descent is None:
            return math.nan
        if method == "steepest":
            span = slice(descent.peak, descent.trough + 1)
            slopes = np.gradient(curve.smoothed_losses[span], curve.x[span])
            return float(curve.lrs[span][np.argmin(slopes)])
        if method == "minimum":
            return float(curve.lrs[np.argmin(curve.smoothed_losses)] / 10.0)
        return float(curve.lrs[descent.reached(_VALLEY_FRACTION)])

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
        if self.num_sweeps is not None:
            reports = self.bounds_report(
                use_metric=use_metric, metric_mode=metric_mode, skip_start=skip_start
            )
            return (
                np.array([r.base_lr for r in reports]),
                np.array([r.max_lr for r in reports]),
            )
        report = self.bounds_report(
            use_metric=use_metric, metric_mode=metric_mode, skip_start=skip_start
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
        v.check_choice("metric_mode", metric_mode, ("max", "min"))
        if use_metric and self.metrics is None:
            raise ValueError(
                "`use_metric` must be False or None when no metric was recorded "
                "(pass `metric_fn` to range_test); got True."
            )
        if self.num_sweeps is not None:
            return tuple(
                self.sweep(k).bounds_report(
                    use_metric=use_metric,
                    metric_mode=metric_mode,
                    skip_start=skip_start,
                )
                for k in range(self.num_sweeps)
            )
        curve = _Curve.of(self, skip_start)
        if use_metric is not False and self.metrics is not None:
            sign = -1.0 if metric_mode == "max" else 1.0
            descent = curve.descent(
                sign * curve.smoothed_metrics,
                sign * curve.metrics,
                "metric",
                quiet=True,
            )
            if descent is not None:
                return curve.bounds_from(descent, "metric")
            if use_metric:
                warnings.warn(
                    "range test: the metric shows no clear improvement; no bounds. "
                    "Pass use_metric=None to fall back to the loss.",
                    RangeTestWarning,
                    stacklevel=2,
                )
                return BoundsReport(math.nan, math.nan, "metric", "no clear rise")
        descent = curve.descent(curve.smoothed_losses, curve.losses, "loss")
        if descent is None:
            return BoundsReport(math.nan, math.nan, "loss", "no clear descent")
        return curve.bounds_from(descent, "loss")

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
        v.check_choice(
            "kind", kind, ("triangular", "triangular2", "exp_range", "one_cycle")
        )
        if self.num_sweeps is not None:
            raise ValueError(
                "`to_schedule` needs a single sweep; use result.sweep(k) or "
                f"result.mean() on this result of {self.num_sweeps} sweeps."
            )
        base_lr, max_lr = self.bounds()
        if not (math.isfinite(base_lr) and math.isfinite(max_lr)):
            raise ValueError(
                "the range test must show a clear descent to build a schedule; "
                f"got bounds ({base_lr}, {max_lr})."
            )
        if kind == "one_cycle":
            if total_steps is None:
                raise ValueError("`total_steps` must be given for kind='one_cycle'.")
            kwargs.setdefault("div_factor", max_lr / base_lr)
            return schedules.one_cycle(max_lr, total_steps, **kwargs)
        if step_size is None:
            raise ValueError(f"`step_size` must be given for kind={kind!r}.")
        factory = getattr(schedules, kind)
        return factory(base_lr, max_lr, step_size, **kwargs)

    # -- plot and export ----------------------------------------------------------

    def plot(self, **kwargs):
        """Plots the curve; see :func:`clr_jax.plotting.plot_range_test`."""
        from clr_jax.plotting import plot_range_test

        return plot_range_test(self, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The curves as plain lists (NaN as ``None``) and ``diverged_step``."""
        out: dict[str, Any] = {
            f: None if getattr(self, f) is None else _to_list(getattr(self, f))
            for f in _CURVES
        }
        out["diverged_step"] = (
            list(self.diverged_step)
            if isinstance(self.diverged_step, tuple)
            else self.diverged_step
        )
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RangeTestResult:
        """Inverse of :meth:`to_dict`."""
        curves = {
            # float64 conversion turns null (JSON's NaN) back into NaN
            f: None if d.get(f) is None else np.asarray(d[f], np.float64)
            for f in _CURVES
        }
        step = d.get("diverged_step")
        return cls(
            **curves, diverged_step=tuple(step) if isinstance(step, list) else step
        )

    def save_json(self, path) -> None:
        """Writes :meth:`to_dict` as standard JSON (NaN as ``null``)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load_json(cls, path) -> RangeTestResult:
        """Reads a file written by :meth:`save_json`."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def save_csv(self, path) -> None:
        """Writes one row per step (and sweep).

        Columns: ``sweep`` (many-sweep results only), ``step``, ``lr``, ``loss``,
        ``smoothed_loss``, then ``metric`` and ``smoothed_metric`` when
        recorded, and ``diverged`` (1 from the divergence step on).
        """
        batched = self.num_sweeps is not None
        results = [self.sweep(k) for k in range(self.num_sweeps)] if batched else [self]
        names = [_CSV_COLUMNS[f] for f in _CURVES if getattr(self, f) is not None]
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(
                [*(["sweep"] if batched else []), "step", *names, "diverged"]
            )
            for k, r in enumerate(results):
                columns = [np.asarray(getattr(r, f)) for f in _CURVES]
                columns = [c for c in columns if c.ndim]
                stop = len(r.lrs) if r.diverged_step is None else r.diverged_step
                for t in range(len(r.lrs)):
                    row = [repr(float(c[t])) for c in columns]
                    sweep = [k] if batched else []
                    writer.writerow([*sweep, t, *row, int(t >= stop)])

    @classmethod
    def load_csv(cls, path) -> RangeTestResult:
        """Reads a file written by :meth:`save_csv`."""
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        sweeps = sorted({int(r.get("sweep", 0)) for r in rows})
        parts = []
        for k in sweeps:
            mine = [r for r in rows if int(r.get("sweep", 0)) == k]
            curves = {
                f: np.array([float(r[c]) for r in mine])
                for f, c in _CSV_COLUMNS.items()
                if c in mine[0]
            }
            flags = [int(r["diverged"]) for r in mine]
            step = flags.index(1) if 1 in flags else None
            parts.append(cls(**curves, diverged_step=step))
        if "sweep" not in rows[0]:
            return parts[0]
        stacked = {
            f: None
            if getattr(parts[0], f) is None
            else np.stack([getattr(p, f) for p in parts])
            for f in _CURVES
        }
        return cls(**stacked, diverged_step=tuple(p.diverged_step for p in parts))


_CURVES = ("lrs", "losses", "smoothed_losses", "metrics", "smoothed_metrics")
_CSV_COLUMNS = {
    "lrs": "lr",
    "losses": "loss",
    "smoothed_losses": "smoothed_loss",
    "metrics": "metric",
    "smoothed_metrics": "smoothed_metric",
}


def _index_sweep(x, k):
    return None if x is None else x[k]


def _to_list(x) -> list:
    arr = np.asarray(x, np.float64)
    return np.where(np.isfinite(arr), arr, None).tolist()


def _per_sweep(result: RangeTestResult, fn) -> np.ndarray:
    return np.array([fn(result.sweep(k)) for k in range(result.num_sweeps)])


# ---------------------------------------------------------------------------
# Curve analysis on the host
# ---------------------------------------------------------------------------


class _Descent(NamedTuple):
    """The deepest descent of a curve ``y``: from ``y[peak]`` down to ``y[trough]``."""

    y: np.ndarray
    peak: int
    trough: int

    def reached(self, fraction: float) -> int:
        """First index in ``[peak, trough]`` where ``fraction`` of the drop is made."""
        target = self.y[self.peak] - fraction * (
            self.y[self.peak] - self.y[self.trough]
        )
        window = self.y[self.peak : self.trough + 1]
        return self.peak + int(np.argmax(window <= target))


class _Curve(NamedTuple):
    """The usable span of a single-sweep curve, as float64 NumPy arrays."""

    lrs: np.ndarray
    x: np.ndarray  # log(lr) for an exponential sweep, lr for a linear one
    losses: np.ndarray
    smoothed_losses: np.ndarray
    metrics: np.ndarray | None
    smoothed_metrics: np.ndarray | None

    @classmethod
    def of(cls, result: RangeTestResult, skip_start: int | None) -> _Curve:
        lrs = np.asarray(result.lrs, np.float64)
        n = len(lrs)
        start = max(1, n // 10) if skip_start is None else skip_start
        if not isinstance(start, int) or not 0 <= start < n:
            raise ValueError(f"`skip_start` must be an int in [0, {n}); got {start!r}.")
        smoothed = np.asarray(result.smoothed_losses, np.float64)
        stop = n if result.diverged_step is None else int(result.diverged_step)
        bad = np.flatnonzero(~np.isfinite(smoothed[:stop]))
        stop = int(bad[0]) if len(bad) else stop
        span = slice(start, max(start, stop))
        geometric = _is_geometric(lrs)
        x = np.log(lrs) if geometric else lrs

        def cut(a):
            return None if a is None else np.asarray(a, np.float64)[span]

        return cls(
            lrs[span],
            x[span],
            cut(result.losses),
            smoothed[span],
            cut(result.metrics),
            cut(result.smoothed_metrics),
        )

    def descent(
        self, smoothed: np.ndarray, raw: np.ndarray, what: str, *, quiet: bool = False
    ) -> _Descent | None:
        """The deepest descent of ``smoothed``, or ``None`` (and a warning)."""
        if len(smoothed) < 5:
            if not quiet:
                warnings.warn(
                    f"range test: only {len(smoothed)} usable steps before "
                    "divergence; no suggestion. Lower start_lr or add steps.",
                    RangeTestWarning,
                    stacklevel=4,
                )
            return None
        running_max = np.maximum.accumulate(smoothed)
        drops = running_max - smoothed
        trough = int(np.argmax(drops))
        peak = int(np.argmax(smoothed[: trough + 1]))
        drop = float(drops[trough])
        steps = np.diff(raw[np.isfinite(raw)])
        noise = 1.4826 * float(np.median(np.abs(steps))) / math.sqrt(2.0)
        if drop > 0.0 and drop > _NOISE_MULTIPLE * noise and trough > peak:
            return _Descent(smoothed, peak, trough)
        if not quiet:
            warnings.warn(
                f"range test: the smoothed {what} shows no clear descent (largest "
                f"drop {drop:.3g} vs per-step noise {noise:.3g}); no suggestion. "
                "Widen the sweep (start_lr, end_lr), add steps, or check the "
                f"{what}.",
                RangeTestWarning,
                stacklevel=4,
            )
        return None

    def bounds_from(self, descent: _Descent, source: str) -> BoundsReport:
        first = descent.reached(_BASE_FRACTION)
        last = descent.reached(_MAX_FRACTION)
        first = min(first, last - 1) if last > descent.peak else first
        base_lr, max_lr = float(self.lrs[first]), float(self.lrs[last])
        reason = (
            f"the smoothed {source} improves from lr={self.lrs[descent.peak]:.3g} to "
            f"lr={self.lrs[descent.trough]:.3g}; base_lr is where "
            f"{_BASE_FRACTION:.0%} of that gain is made, max_lr where "
            f"{_MAX_FRACTION:.0%} is made."
        )
        return BoundsReport(base_lr, max_lr, source, reason)


def _is_geometric(lrs: np.ndarray) -> bool:
    """True for an exponential sweep (constant ratio between steps)."""
    if len(lrs) < 3 or np.any(lrs <= 0):
        return False
    ratios = np.diff(np.log(lrs))
    return bool(np.allclose(ratios, ratios.mean(), rtol=1e-3, atol=0.0))
