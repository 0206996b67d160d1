"""Reading a range-test curve on the host: suggestions and Smith's bounds.

Everything here runs with NumPy after the compiled sweep: slopes are taken
against ``log(lr)`` for an exponential sweep (against ``lr`` for a linear
one), the noisy start and the diverged tail are left out, and a curve
without a clear descent gives a :class:`RangeTestWarning` instead of a
number.

References:
  Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
  https://arxiv.org/abs/1506.01186.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import numpy as np
import optax

from clr_jax import _validation as v
from clr_jax import schedules

SuggestMethod = Literal["steepest", "minimum", "valley"]
METHODS: tuple[str, ...] = ("steepest", "minimum", "valley")

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
# Public readings (called by RangeTestResult's methods)
# ---------------------------------------------------------------------------


def suggest(result, method: str, *, skip_start: int | None) -> Any:
    """See :meth:`RangeTestResult.suggest`."""
    v.check_choice("method", method, METHODS)
    if result.num_sweeps is not None:
        return _per_sweep(result, lambda r: suggest(r, method, skip_start=skip_start))
    curve = _Curve.of(result, skip_start)
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


def bounds_report(result, *, use_metric, metric_mode, skip_start):
    """See :meth:`RangeTestResult.bounds_report`."""
    v.check_choice("metric_mode", metric_mode, ("max", "min"))
    if use_metric and result.metrics is None:
        v.fail(
            "use_metric",
            "False or None when no metric was recorded (pass `metric_fn` to "
            "range_test)",
            use_metric,
        )
    if result.num_sweeps is not None:
        return tuple(
            bounds_report(
                result.sweep(k),
                use_metric=use_metric,
                metric_mode=metric_mode,
                skip_start=skip_start,
            )
            for k in range(result.num_sweeps)
        )
    curve = _Curve.of(result, skip_start)
    if use_metric is not False and result.metrics is not None:
        report = _metric_bounds(curve, metric_mode, required=bool(use_metric))
        if report is not None:
            return report
    descent = curve.descent(curve.smoothed_losses, curve.losses, "loss")
    if descent is None:
        return BoundsReport(math.nan, math.nan, "loss", "no clear descent")
    return curve.bounds_from(descent, "loss")


def _metric_bounds(curve, metric_mode: str, *, required: bool):
    """Bounds from the metric's rise; ``None`` to fall back to the loss."""
    sign = -1.0 if metric_mode == "max" else 1.0
    descent = curve.descent(
        sign * curve.smoothed_metrics, sign * curve.metrics, "metric", quiet=True
    )
    if descent is not None:
        return curve.bounds_from(descent, "metric")
    if not required:
        return None
    v.warn(
        "range test: the metric shows no clear improvement; no bounds. "
        "Pass use_metric=None to fall back to the loss.",
        RangeTestWarning,
    )
    return BoundsReport(math.nan, math.nan, "metric", "no clear rise")


_KINDS = ("triangular", "triangular2", "exp_range", "one_cycle")


def to_schedule(result, kind, *, step_size, total_steps, **kwargs) -> optax.Schedule:
    """See :meth:`RangeTestResult.to_schedule`."""
    v.check_choice("kind", kind, _KINDS)
    if result.num_sweeps is not None:
        raise ValueError(
            "`to_schedule` needs a single sweep; use result.sweep(k) or "
            f"result.mean() on this result of {result.num_sweeps} sweeps."
        )
    base_lr, max_lr = result.bounds()
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
    return getattr(schedules, kind)(base_lr, max_lr, step_size, **kwargs)


def _per_sweep(result, fn) -> np.ndarray:
    return np.array([fn(result.sweep(k)) for k in range(result.num_sweeps)])


# ---------------------------------------------------------------------------
# Curve analysis
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
    def of(cls, result, skip_start: int | None) -> _Curve:
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
                v.warn(
                    f"range test: only {len(smoothed)} usable steps before "
                    "divergence; no suggestion. Lower start_lr or add steps.",
                    RangeTestWarning,
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
            v.warn(
                f"range test: the smoothed {what} shows no clear descent (largest "
                f"drop {drop:.3g} vs per-step noise {noise:.3g}); no suggestion. "
                "Widen the sweep (start_lr, end_lr), add steps, or check the "
                f"{what}.",
                RangeTestWarning,
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
