"""Reading a range-test curve on the host: suggestions, Smith's bounds, notes.

Everything here runs with NumPy after the compiled sweep, on the host form of
a result (:meth:`RangeTestResult.to_host`), and reads the zero-phase
smoothing of the raw losses (:func:`._smoothing.smooth`), which does not lag
as the on-device EMA does.

What is read. The curve is cut at its *blow-up*: the on-device divergence,
a non-finite loss, or a rise from the best loss that does not come back
(the median-smoothed loss stays more than a third of the descent above its
best until the end of the sweep, which includes settling at the chance-level
loss of a dead classifier). Nothing past the blow-up is read, and every
suggestion comes from the part before the lowest loss.

When a curve is refused. A descent is *clear* when its depth exceeds what the
noise can make: more than 1% of the loss, and its middle 80% (from 10% to
90% of the drop) more than the largest fluctuation the noise predicts for
the smoothed curve over the steps that part takes
(:meth:`._smoothing.Noise.allowance`). A flat curve is judged against the 1%
floor, not against a zero spread. A curve without a clear descent gives NaN
for every suggestion and bound, never a number read from noise. On seeded
synthetic curves (100 seeds each) of 100, 400 and 1,600 steps this refuses
every flat curve, 99-100% of pure-noise and single-outlier ones and 88, 99
and 99% of random walks, while it reads every low-noise real-shaped descent
and 92, 100 and 100% of noisy ones (82% of very noisy ones at 100 steps,
where noise and drift are hardest to tell apart).

Smith's bounds are read from the loss, or from the metric's rise when one
was recorded (Smith reads accuracy); with ``validation=True`` from the
held-out curves (``val_metrics``, else ``val_losses``): one point every
``val_every`` steps at the rate of the step it follows, cut at the training
loss's blow-up and smoothed over as many steps as the loss. The same rules
apply to those points; fewer than ``MIN_VAL_POINTS`` (10) of them before the
blow-up are refused with a note, since the 10% and 90% marks of the rise
would then fall on neighbouring points.

Notes. Every doubt about a reading is a note: no clear descent, a suggestion
in the first or last 10% of the sweep (lower ``start_lr`` or raise
``end_lr``), a loss still falling at ``end_lr``, a sweep that never diverged,
many sweeps that disagree by more than 3x, a ``'half_edge'`` whose lag
correction spans more than its 2x margin (add steps).
:meth:`RangeTestResult.read` returns them; the suggestions and bounds also
raise them as :class:`RangeTestWarning`; ``bounds_report``, the JSON file,
the command line and the plot show them.

The rules. ``'valley'``, ``'minimum'`` and ``'steepest'`` are fastai's and
torch-lr-finder's rules (:mod:`._peer_rules`), applied here to the
zero-phase curve on the readable part before its minimum. This library's
``'half_edge'`` is half the rate at the *edge*, where training breaks down:
the rate of the lowest loss, or 0.4 times the blow-up's rate when that is
higher (a flat bottom, whose lowest point is poorly placed). Both are read
``round(b / (1 - b))`` steps earlier for an optimizer whose average of
gradients decays by ``b`` (the average's mean age: the loss answers such an
optimizer's rate that many steps late); the half keeps a fixed rate below
the edge, and the suggestion is never past the lowest loss. When the sweep
raises the rate more than 2x over those steps (100 steps from 1e-4 to 10
raise it 2.8x over 9), the correction is coarser than the half's margin and
the reading gets a note. The 0.4 and the half were chosen on the problems of
``benchmarks/suggestions.py``.

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
from clr_jax.inject import MOMENTUM_NAMES
from clr_jax.range_test._peer_rules import (
    gradient_steepest_index,
    single_sweep,
    valley_index,
)
from clr_jax.range_test._smoothing import Noise, running_median, smooth, smoothing_width

SuggestMethod = Literal["half_edge", "steepest", "minimum", "valley"]
METHODS: tuple[str, ...] = ("half_edge", "steepest", "minimum", "valley")

# Fractions of the descent (or of the metric's rise) that mark Smith's bounds:
# the curve "starts to improve" once 10% of the gain is made, and the gain
# "stops" once 90% is made, before the flat bottom and the blow-up.
_BASE_FRACTION = 0.1
_MAX_FRACTION = 0.9
# A descent is clear when deeper than this share of the loss (and than the
# largest change the noise makes, see _smoothing.Noise.allowance).
_MIN_RELATIVE_DROP = 0.01
# A blow-up: the loss stays this share of the descent above its best.
_BLOW_UP_FRACTION = 1.0 / 3.0
# The edge is at least this share of the blow-up's rate: on a flat bottom the
# lowest loss can sit far below where training breaks down.
_EDGE_SHARE_OF_BLOW_UP = 0.4
# half_edge keeps a 2x margin below the edge; when the sweep raises the rate
# by more than that over the optimizer's lag, the lag correction is coarser
# than the margin, and the reading gets a note.
_MAX_LAG_SPAN = 2.0
# Suggestions in this share of the sweep's first or last steps get a note.
_EDGE_FRACTION = 0.1
# Many sweeps disagree when one suggestion varies by more than this factor.
DISAGREE_FACTOR = 3.0
_MIN_STEPS = 5  # usable steps needed for any reading
# Validation points needed for bounds: fewer place both bounds too coarsely.
MIN_VAL_POINTS = 10


class RangeTestWarning(UserWarning):
    """The curve of a range test does not support a suggestion."""


class BoundsReport(NamedTuple):
    """Smith's bounds with the evidence behind them.

    Attributes:
      base_lr: where the curve starts to improve (NaN when refused).
      max_lr: where the improvement stops, before the minimum and the blow-up
        (NaN when refused).
      source: the curve the bounds were read from: ``'loss'`` or ``'metric'``
        (per training step), ``'val_loss'`` or ``'val_metric'`` (on
        ``val_data``).
      reason: one sentence saying where the bounds come from.
      notes: the doubts about this reading (see :class:`Reading`).
    """

    base_lr: float
    max_lr: float
    source: str
    reason: str
    notes: tuple[str, ...] = ()


class Reading(NamedTuple):
    """Everything read from one sweep, as :meth:`RangeTestResult.read` returns it.

    Attributes:
      curve: the zero-phase smoothed raw loss per step, the curve every
        suggestion is read from; NaN from ``stop`` on.
      start: the first step read (``skip_start``).
      stop: the first step not read: the blow-up, or the end of the sweep.
      blow_up: the step where the loss blows up (diverges on the device, turns
        non-finite, or rises from its best and does not come back), or
        ``None`` when it does not within the sweep.
      blow_up_reason: one sentence on how the blow-up was found (``''`` when
        there is none).
      minimum: the step of the lowest smoothed loss read, or ``None``.
      suggestions: ``{method: lr}`` for every method of ``METHODS``; NaN
        where the curve does not support one.
      bounds: Smith's bounds, a :class:`BoundsReport`.
      scoped_notes: ``(scope, note)`` pairs; the scope is ``'curve'`` (every
        reading), a method name or ``'bounds'``.
    """

    curve: np.ndarray
    start: int
    stop: int
    blow_up: int | None
    blow_up_reason: str
    minimum: int | None
    suggestions: dict[str, float]
    bounds: BoundsReport
    scoped_notes: tuple[tuple[str, str], ...]

    @property
    def notes(self) -> tuple[str, ...]:
        """Every note of the reading, in order."""
        return tuple(note for _, note in self.scoped_notes)

    def notes_for(self, what: str) -> tuple[str, ...]:
        """The notes of the curve and of ``what`` (a method or ``'bounds'``)."""
        return tuple(n for scope, n in self.scoped_notes if scope in ("curve", what))


class _Descent(NamedTuple):
    """A descent of a curve ``y``: from ``y[peak]`` down to ``y[trough]``."""

    y: np.ndarray
    peak: int
    trough: int

    @property
    def depth(self) -> float:
        return float(self.y[self.peak] - self.y[self.trough])

    def reached(self, fraction: float, *, for_good: bool = False) -> int:
        """First index in ``[peak, trough]`` where ``fraction`` of the drop is made.

        With ``for_good``, the first from which it stays made until the
        trough: a noise bump before the descent does not count.
        """
        target = self.y[self.peak] - fraction * self.depth
        made = self.y[self.peak : self.trough + 1] <= target
        if for_good:
            made = np.logical_and.accumulate(made[::-1])[::-1]
        return self.peak + int(np.argmax(made))


# ---------------------------------------------------------------------------
# Reading one sweep
# ---------------------------------------------------------------------------


def _start(n: int, skip_start) -> int:
    start = 0 if skip_start is None else skip_start
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)):
        v.fail("skip_start", f"an int in [0, {n})", skip_start)
    if not 0 <= start < n:
        v.fail("skip_start", f"an int in [0, {n})", skip_start)
    return int(start)


def _finite_end(raw: np.ndarray, diverged_step) -> tuple[int, str]:
    """First step not finite or diverged on the device, and why."""
    n = len(raw)
    bad = np.flatnonzero(~np.isfinite(raw))
    first_bad = int(bad[0]) if len(bad) else n
    if first_bad < n and (diverged_step is None or first_bad <= diverged_step):
        return first_bad, "the loss turned non-finite"
    if diverged_step is not None:
        return int(diverged_step), (
            "its EMA passed diverge_threshold times its best (the on-device check)"
        )
    return n, ""


def _rise_that_stays(median: np.ndarray, start: int, noise: Noise) -> int | None:
    """First step from which the loss stays well above its best, or ``None``."""
    span = median[start:]
    if len(span) < _MIN_STEPS:
        return None
    best_at = int(np.argmin(span))
    best = float(span[best_at])
    gain = float(np.max(span[: best_at + 1])) - best
    margin = max(
        _BLOW_UP_FRACTION * gain,
        noise.allowance(1, len(span)),
        _MIN_RELATIVE_DROP * abs(best),
    )
    later = span[best_at + 1 :]
    if not len(later):
        return None
    stays_above = np.minimum.accumulate(later[::-1])[::-1] > best + margin
    if not stays_above.any():
        return None
    return start + best_at + 1 + int(np.argmax(stays_above))


def _locate_blow_up(raw, diverged_step, start, width):
    """``(stop, blow_up, reason)``: where reading stops and why."""
    end, reason = _finite_end(raw, diverged_step)
    blow_up = end if end < len(raw) else None
    if end - start < _MIN_STEPS:
        return end, blow_up, reason
    head = raw[:end]
    median = running_median(head, width)
    noise = Noise.of(head[start:], width)
    rise = _rise_that_stays(median, start, noise)
    if rise is None:
        return end, blow_up, reason
    return (
        rise,
        rise,
        "it rose from its best and did not come back within the sweep",
    )


class _Span(NamedTuple):
    """The readable part ``[start, stop)`` of one curve, smoothed."""

    lrs: np.ndarray  # every rate of the sweep
    raw: np.ndarray  # [start, stop)
    smooth: np.ndarray  # [start, stop)
    start: int
    stop: int
    width: int
    num_steps: int

    def at(self, i: int) -> float:
        """The rate at span index ``i``."""
        return float(self.lrs[self.start + i])

    @property
    def blew_up(self) -> bool:
        """Reading stops before the sweep's end: at the blow-up, span index
        ``len(self.smooth)``."""
        return self.stop < self.num_steps

    def edge(self, i: int) -> str | None:
        """``'first'``/``'last'`` when span index ``i`` is at an edge of the sweep."""
        position = (self.start + i) / max(self.num_steps - 1, 1)
        if position <= _EDGE_FRACTION:
            return "first"
        if position >= 1.0 - _EDGE_FRACTION:
            return "last"
        return None


def _span_of(lrs, values, start: int, stop: int, width: int) -> _Span:
    raw = np.asarray(values, np.float64)[:stop]
    smoothed = smooth(raw, width)
    return _Span(lrs, raw[start:], smoothed[start:], start, stop, width, len(lrs))


def _clear_descent(span: _Span, what: str) -> tuple[_Descent | None, str]:
    """The descent to the span's lowest point, or ``None`` and why not."""
    y = span.smooth
    if len(y) < _MIN_STEPS:
        return None, (
            f"only {len(y)} usable steps before the blow-up; lower start_lr or add "
            "steps"
        )
    trough = int(np.argmin(y))
    descent = _Descent(y, int(np.argmax(y[: trough + 1])), trough)
    noise = Noise.of(span.raw, span.width)
    # Judged on the middle 80% of the drop, over the steps it takes.
    length = descent.reached(_MAX_FRACTION) - descent.reached(_BASE_FRACTION)
    allowed = noise.allowance(length, len(y)) / (_MAX_FRACTION - _BASE_FRACTION)
    floor = _MIN_RELATIVE_DROP * max(abs(y[descent.peak]), abs(y[descent.trough]))
    if descent.depth > max(allowed, floor):
        return descent, ""
    kind = "flat" if allowed <= floor else "within the noise"
    return None, (
        f"the {what} shows no clear descent: its largest drop ({descent.depth:.3g}) "
        f"is {kind} (needs > {max(allowed, floor):.3g}); no suggestion. Widen the "
        "sweep (start_lr, end_lr), add steps, or check the training step"
    )


_EDGE_ADVICE = {
    "first": "in the first 10% of the sweep; lower start_lr",
    "last": "in the last 10% of the sweep; raise end_lr",
}


def lag_steps(momentum: float | None) -> int:
    """Steps by which the loss trails the rate under an average of gradients
    decaying by ``momentum``: the average's mean age, ``b / (1 - b)``.

    Examples:
      >>> lag_steps(0.9), lag_steps(0.0), lag_steps(None)
      (9, 0, 0)
    """
    if momentum is None or not 0.0 < momentum < 1.0:
        return 0
    return round(momentum / (1.0 - momentum))


def _suggest_all(span, descent, lag: int) -> dict[str, tuple[int, float]]:
    """``{method: (span index read, lr)}`` of every method's suggestion."""
    before = span.smooth[: descent.trough + 1]
    steepest = gradient_steepest_index(before) if len(before) > 1 else 0
    valley = valley_index(before)
    return {
        "half_edge": _half_edge(span, descent, lag),
        "steepest": (steepest, span.at(steepest)),
        "minimum": (descent.trough, span.at(descent.trough) / 10.0),
        "valley": (valley, span.at(valley)),
    }


def _half_edge(span, descent, lag: int) -> tuple[int, float]:
    """``(span index read, lr)``: half the edge where training breaks down.

    The edge is the rate of the lowest loss, or a share of the blow-up's when
    higher, both read ``lag`` steps early. The result is never past the
    lowest loss, where the loss already rises.
    """
    at_edge = max(descent.trough - lag, 0)
    edge = span.at(at_edge)
    if span.blew_up:
        at_blow_up = max(len(span.smooth) - lag, 0)
        share = _EDGE_SHARE_OF_BLOW_UP * span.at(at_blow_up)
        if share > edge:
            at_edge, edge = at_blow_up, share
    lowest = span.at(descent.trough)
    return (descent.trough, lowest) if edge / 2.0 > lowest else (at_edge, edge / 2.0)


def _still_falling(span: _Span, descent: _Descent) -> bool:
    """The lowest loss is at the end of a sweep that never blew up."""
    at_end = descent.trough >= len(span.smooth) - 1 - span.width // 2
    return at_end and not span.blew_up


def _suggestions(span, descent, lag: int, notes):
    """``{method: lr}`` with the notes of each; NaN where unsupported."""
    if descent is None:
        return dict.fromkeys(METHODS, math.nan)
    found = _suggest_all(span, descent, lag)
    out = {m: lr for m, (_, lr) in found.items()}
    if _still_falling(span, descent):
        for method in ("minimum", "half_edge"):
            out[method] = math.nan
            notes.append(
                (
                    method,
                    f"{method}: the loss still falls at end_lr, so its lowest point "
                    "is not in the sweep; raise end_lr",
                )
            )
    for method, (i, _) in found.items():
        edge = span.edge(i)
        if edge is not None and math.isfinite(out[method]):
            notes.append(
                (method, f"{method} ({out[method]:.3g}) is {_EDGE_ADVICE[edge]}")
            )
    if math.isfinite(out["half_edge"]):
        notes.extend(_coarse_lag(span, found["half_edge"][0], lag, out["half_edge"]))
    return out


def _lag_span(span: _Span, i: int, lag: int) -> float:
    """How many times the sweep raises the rate over ``lag`` steps from span
    index ``i``: the uncertainty of a reading corrected by that lag (none
    without a lag)."""
    if lag == 0:
        return 1.0
    at = span.start + i
    later = span.lrs[min(at + lag, span.num_steps - 1)]
    return float(later / span.lrs[at]) if span.lrs[at] > 0 else math.inf


def _coarse_lag(span: _Span, i: int, lag: int, lr: float) -> list[tuple[str, str]]:
    """A note for ``half_edge`` read at span index ``i`` when the sweep raises
    the rate more than the half's margin over the lag it corrects."""
    factor = _lag_span(span, i, lag)
    if factor <= _MAX_LAG_SPAN:
        return []
    return [
        (
            "half_edge",
            f"half_edge ({lr:.3g}) is coarse: the loss answers the rate {lag} steps "
            f"late, and over {lag} steps this sweep raises the rate {factor:.2g}x, "
            f"more than the half's {_MAX_LAG_SPAN:g}x margin; add steps",
        )
    ]


class _Source(NamedTuple):
    """Which curve Smith's bounds are read from (see :meth:`RangeTestResult.bounds`)."""

    use_metric: bool | None
    metric_mode: str
    validation: bool


_WORDS = {
    "loss": "loss",
    "metric": "metric",
    "val_loss": "validation loss",
    "val_metric": "validation metric",
}


def _bounds(span, descent, source: str, notes, where: str = "") -> BoundsReport:
    """Smith's bounds from a clear descent (of a loss, or of -metric)."""
    first = descent.reached(_BASE_FRACTION, for_good=True)
    last = descent.reached(_MAX_FRACTION, for_good=True)
    first = min(first, last - 1) if last > descent.peak else first
    base_lr, max_lr = span.at(first), span.at(last)
    what = _WORDS[source]
    reason = (
        f"the smoothed {what}{where} improves from lr={span.at(descent.peak):.3g} "
        f"to lr={span.at(descent.trough):.3g}; base_lr is where "
        f"{_BASE_FRACTION:.0%} of that gain is made for good, max_lr where "
        f"{_MAX_FRACTION:.0%} is."
    )
    if _still_falling(span, descent):
        max_lr = math.nan
        notes.append(
            (
                "bounds",
                f"bounds: the {what} still improves at end_lr, so the improvement "
                "does not stop within the sweep and there is no max_lr; raise end_lr",
            )
        )
    for name, i, lr in (("base_lr", first, base_lr), ("max_lr", last, max_lr)):
        edge = span.edge(i)
        if edge is not None and math.isfinite(lr):
            notes.append(("bounds", f"{name} ({lr:.3g}) is {_EDGE_ADVICE[edge]}"))
    return BoundsReport(base_lr, max_lr, source, reason)


def _curve_bounds(span, source, required, notes, where: str = ""):
    """Bounds from ``span``'s clear improvement; ``None`` to try another curve."""
    descent, why = _clear_descent(span, _WORDS[source])
    if descent is not None:
        return _bounds(span, descent, source, notes, where)
    if not required:
        return None
    gain = "improvement" if source.endswith("metric") else "descent"
    notes.append(("bounds", why.replace("descent", gain)))
    return BoundsReport(math.nan, math.nan, source, f"no clear {gain}")


def _signed(values, source: str, metric_mode: str) -> np.ndarray:
    """The curve as one to minimise: a metric to maximise is negated."""
    sign = -1.0 if source.endswith("metric") and metric_mode == "max" else 1.0
    return sign * np.asarray(values, np.float64)


def _metric_bounds(result, loss_span, how: _Source, notes):
    """Bounds from the metric's rise; ``None`` to fall back to the loss."""
    raw = _signed(result.metrics, "metric", how.metric_mode)
    if not np.all(np.isfinite(raw[: loss_span.stop])):
        return None
    span = _span_of(
        loss_span.lrs, raw, loss_span.start, loss_span.stop, loss_span.width
    )
    return _curve_bounds(span, "metric", bool(how.use_metric), notes)


def _training_bounds(result, span, descent, how: _Source, notes) -> BoundsReport:
    """Bounds from the per-step metric, else from the loss."""
    if how.use_metric is not False and result.metrics is not None:
        report = _metric_bounds(result, span, how, notes)
        if report is not None:
            return report
    if descent is not None:
        return _bounds(span, descent, "loss", notes)
    return BoundsReport(math.nan, math.nan, "loss", "no clear descent")


def _validation_span(result, loss_span, values, every: int) -> _Span:
    """The held-out points read: after steps in ``[start, stop)``, while finite.

    Point ``i`` is the state after step ``val_steps[i]``, so its rate is that
    step's. The smoothing is as wide, in steps, as the loss's.
    """
    steps = np.asarray(result.val_steps)
    lo, hi = (int(i) for i in np.searchsorted(steps, [loss_span.start, loss_span.stop]))
    bad = np.flatnonzero(~np.isfinite(values[lo:hi]))
    hi = lo + int(bad[0]) if len(bad) else hi
    width = max(1, round(loss_span.width / every))
    width += 1 - width % 2
    return _span_of(loss_span.lrs[steps], values, lo, hi, width)


def _validation_bounds(result, loss_span, how: _Source, notes) -> BoundsReport:
    """Bounds from the validation metric, else from the validation loss."""
    if how.use_metric is not False and result.val_metrics is not None:
        required = how.use_metric is True
        report = _held_out_bounds(result, loss_span, "val_metric", how, required, notes)
        if report is not None:
            return report
    return _held_out_bounds(result, loss_span, "val_loss", how, True, notes)


def _held_out_bounds(result, loss_span, source, how, required, notes):
    """Bounds from one validation curve; ``None`` to try the loss instead."""
    values = result.val_metrics if source == "val_metric" else result.val_losses
    values = _signed(values, source, how.metric_mode)
    every = int(np.asarray(result.val_steps)[0]) + 1  # steps k - 1, 2k - 1, ...
    span = _validation_span(result, loss_span, values, every)
    points = len(span.smooth)
    if points < MIN_VAL_POINTS:
        return _too_few_points(points, every, source, notes)
    where = f" ({points} points, one every {every} steps)"
    return _curve_bounds(span, source, required, notes, where)


def _too_few_points(points: int, every: int, source: str, notes) -> BoundsReport:
    notes.append(
        (
            "bounds",
            f"bounds: only {points} validation points before the blow-up (one every "
            f"{every} steps), fewer than the {MIN_VAL_POINTS} needed; lower "
            "val_every or add steps",
        )
    )
    return BoundsReport(math.nan, math.nan, source, "too few validation points")


def _check_source(result, how: _Source) -> None:
    v.check_choice("metric_mode", how.metric_mode, ("max", "min"))
    validation = v.check_bool("validation", how.validation)
    if validation and result.val_losses is None:
        v.fail(
            "validation",
            "False when no validation curve was recorded (pass `val_data` to "
            "range_test)",
            how.validation,
        )
    metrics = result.val_metrics if validation else result.metrics
    if how.use_metric and metrics is None:
        what = "validation metric" if validation else "metric"
        v.fail(
            "use_metric",
            f"False or None when no {what} was recorded (pass `metric_fn` to "
            "range_test)",
            how.use_metric,
        )


def read(
    result,
    *,
    skip_start: int | None = None,
    use_metric: bool | None = None,
    metric_mode: str = "max",
    validation: bool = False,
):
    """See :meth:`RangeTestResult.read`."""
    result = result.to_host()
    how = _Source(use_metric, metric_mode, validation)
    _check_source(result, how)
    if result.num_sweeps is not None:
        return _read_many(result, skip_start, how)
    return _read_one(result, skip_start, how)


def _momentum_of(config, sweep: int) -> float | None:
    """Sweep ``sweep``'s gradient-average decay: swept, else the optimizer's."""
    swept = dict(config.hyperparams)
    for name in MOMENTUM_NAMES:
        values = swept.get(name, ())
        if values:
            return float(values[sweep if len(values) > 1 else 0])
    return config.momentum


def _read_one(result, skip_start, how: _Source, sweep: int = 0) -> Reading:
    lrs = np.asarray(result.lrs, np.float64)
    raw = np.asarray(result.losses, np.float64)
    n = len(lrs)
    start = _start(n, skip_start)
    width = smoothing_width(n)
    stop, blow_up, blow_up_reason = _locate_blow_up(
        raw, result.diverged_step, start, width
    )
    stop = max(stop, start)
    span = _span_of(lrs, raw, start, stop, width)
    notes: list[tuple[str, str]] = []
    descent, why = _clear_descent(span, "loss")
    if descent is None:
        notes.append(("curve", why))
    if blow_up is None:
        notes.append(
            (
                "curve",
                "the sweep never diverged: the loss neither blew up nor rose for "
                "good by end_lr; raise end_lr to see where training breaks down",
            )
        )
    lag = lag_steps(_momentum_of(result.config, sweep))
    suggestions = _suggestions(span, descent, lag, notes)
    if how.validation:
        bounds = _validation_bounds(result, span, how, notes)
    else:
        bounds = _training_bounds(result, span, descent, how, notes)
    curve = np.full(n, np.nan)
    curve[:stop] = smooth(raw[:stop], width)
    reading = Reading(
        curve=curve,
        start=start,
        stop=stop,
        blow_up=blow_up,
        blow_up_reason=blow_up_reason,
        minimum=None if descent is None else start + descent.trough,
        suggestions=suggestions,
        bounds=bounds,
        scoped_notes=(),
    )
    return _with_notes(reading, tuple(notes))


def _with_notes(reading: Reading, scoped: tuple[tuple[str, str], ...]) -> Reading:
    """``reading`` with these notes, and the bounds' share of them in its report."""
    bounds = reading.bounds._replace(
        notes=tuple(n for s, n in scoped if s in ("curve", "bounds"))
    )
    return reading._replace(scoped_notes=scoped, bounds=bounds)


def _disagreements(readings) -> list[tuple[str, str]]:
    """Notes for methods whose per-sweep values spread more than the factor."""
    notes = []
    values = {m: [r.suggestions[m] for r in readings] for m in METHODS}
    values["base_lr"] = [r.bounds.base_lr for r in readings]
    values["max_lr"] = [r.bounds.max_lr for r in readings]
    for name, vals in values.items():
        finite = [x for x in vals if math.isfinite(x) and x > 0]
        if len(finite) < 2 or max(finite) <= DISAGREE_FACTOR * min(finite):
            continue
        scope = "bounds" if name in ("base_lr", "max_lr") else name
        notes.append(
            (
                scope,
                f"{name}: the {len(vals)} sweeps disagree, from {min(finite):.3g} to "
                f"{max(finite):.3g} (more than {DISAGREE_FACTOR:g}x); read the mean "
                "curve (result.mean()) or run longer sweeps",
            )
        )
    return notes


def _read_many(result, skip_start, how: _Source) -> tuple[Reading, ...]:
    readings = []
    for k in range(result.num_sweeps):
        r = _read_one(result.sweep(k), skip_start, how, k)
        scoped = tuple((s, f"sweep {k}: {n}") for s, n in r.scoped_notes)
        readings.append(_with_notes(r, scoped))
    # Sweeps of different hyperparameter values are meant to differ.
    extra = () if result.config.hyperparams else tuple(_disagreements(readings))
    return tuple(_with_notes(r, r.scoped_notes + extra) for r in readings)


# ---------------------------------------------------------------------------
# Public readings (called by RangeTestResult's methods)
# ---------------------------------------------------------------------------


def _warn(notes) -> None:
    for note in dict.fromkeys(notes):  # each distinct note once, in order
        v.warn(f"range test: {note}.", RangeTestWarning)


def _notes_of(readings, what: str) -> list[str]:
    readings = (readings,) if isinstance(readings, Reading) else readings
    return [n for r in readings for n in r.notes_for(what)]


def suggest(result, method: str, *, skip_start: int | None) -> Any:
    """See :meth:`RangeTestResult.suggest`."""
    v.check_choice("method", method, METHODS)
    reading = read(result, skip_start=skip_start, use_metric=False)
    _warn(_notes_of(reading, method))
    if not isinstance(reading, Reading):
        return np.array([r.suggestions[method] for r in reading])
    return reading.suggestions[method]


def suggestions(result, *, skip_start: int | None) -> dict[str, Any]:
    """See :meth:`RangeTestResult.suggestions`."""
    reading = read(result, skip_start=skip_start, use_metric=False)
    _warn([n for m in METHODS for n in _notes_of(reading, m)])
    if not isinstance(reading, Reading):
        return {m: np.array([r.suggestions[m] for r in reading]) for m in METHODS}
    return dict(reading.suggestions)


def bounds_report(result, *, use_metric, metric_mode, skip_start, validation):
    """See :meth:`RangeTestResult.bounds_report`."""
    reading = read(
        result,
        skip_start=skip_start,
        use_metric=use_metric,
        metric_mode=metric_mode,
        validation=validation,
    )
    _warn(_notes_of(reading, "bounds"))
    if not isinstance(reading, Reading):
        return tuple(r.bounds for r in reading)
    return reading.bounds


_KINDS = ("triangular", "triangular2", "exp_range", "one_cycle")


def to_schedule(result, kind, *, step_size, total_steps, **kwargs) -> optax.Schedule:
    """See :meth:`RangeTestResult.to_schedule`."""
    v.check_choice("kind", kind, _KINDS)
    result = single_sweep(result, "to_schedule")
    report = bounds_report(
        result, use_metric=None, metric_mode="max", skip_start=None, validation=False
    )
    base_lr, max_lr = report.base_lr, report.max_lr
    if not (math.isfinite(base_lr) and math.isfinite(max_lr)):
        why = "; ".join(report.notes) or report.reason
        raise ValueError(
            "the range test must show a clear descent, and where it stops, to build "
            f"a schedule; got bounds ({base_lr}, {max_lr}): {why}."
        )
    if kind == "one_cycle":
        if total_steps is None:
            raise ValueError("`total_steps` must be given for kind='one_cycle'.")
        kwargs.setdefault("div_factor", max_lr / base_lr)
        return schedules.one_cycle(max_lr, total_steps, **kwargs)
    if step_size is None:
        raise ValueError(f"`step_size` must be given for kind={kind!r}.")
    return getattr(schedules, kind)(base_lr, max_lr, step_size, **kwargs)
