"""fastai's and torch-lr-finder's suggestion rules, and the curves they read.

``'valley'``, ``'minimum'`` and ``'steepest'`` are the rules of fastai 2.8 and
torch-lr-finder 0.2.2, written from their behaviour: on the same arrays
:func:`fastai_valley`, :func:`fastai_minimum`, :func:`fastai_steep` and
:func:`torch_lr_finder_steepest` give those libraries' numbers (tested
against their outputs). A result's suggestions apply them to the lag-free
curve (:mod:`._reading`); :func:`peer_suggestions` instead applies them to
the curves and spans those libraries themselves record
(:func:`fastai_inputs`, :func:`torch_lr_finder_inputs`: the EMA, trimmed),
for a side-by-side comparison.

References:
  fastai, ``fastai.callback.schedule`` (``valley``, ``steep``, ``minimum``),
  https://docs.fast.ai/callback.schedule.html.
  torch-lr-finder, ``LRFinder.plot(suggest_lr=True)``,
  https://github.com/davidtvs/pytorch-lr-finder.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from clr_jax import _validation as v


def single_sweep(result, what: str):
    """The host form of ``result``, which must be a single sweep for ``what``."""
    result = result.to_host()
    if result.num_sweeps is not None:
        raise ValueError(
            f"`{what}` needs a single sweep; use result.sweep(k) or result.mean() "
            f"on this result of {result.num_sweeps} sweeps."
        )
    return result


def check_curve(name: str, values, *, at_least: int) -> np.ndarray:
    """``values`` as a 1-D array of at least ``at_least`` finite values."""
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) < at_least or not np.all(np.isfinite(arr)):
        v.fail(name, f"a 1-D array of at least {at_least} finite values", values)
    return arr


def check_pair(lrs, losses, at_least: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Rates and losses checked as curves of equal length."""
    lrs = check_curve("lrs", lrs, at_least=at_least)
    losses = check_curve("losses", losses, at_least=at_least)
    if len(lrs) != len(losses):
        v.fail("losses", f"the length of `lrs` ({len(lrs)})", f"length {len(losses)}")
    return lrs, losses


def valley_index(losses: np.ndarray) -> int:
    """fastai's valley: the middle of the longest strictly decreasing run.

    The run is the longest strictly decreasing subsequence (not necessarily
    contiguous) and ends at ``end``, the first step where one of that length
    ends; fastai takes its start as ``end - length`` and returns the step
    ``start + floor(s) + floor(s / 2)`` with ``s = (end - start) / 3``.
    """
    tails: list[float] = []  # patience sorting on -loss: strictly increasing
    best_length, end = 1, 0
    for i, loss in enumerate(losses.tolist()):
        at = bisect.bisect_left(tails, -loss)
        if at == len(tails):
            tails.append(-loss)
        else:
            tails[at] = -loss
        if at + 1 > best_length:
            best_length, end = at + 1, i
    start = end - best_length if best_length > 1 else 0
    sections = (end - start) / 3
    return start + int(sections) + int(sections / 2)


def fastai_valley(lrs, losses) -> float:
    """fastai 2.8's ``valley`` suggestion on the given arrays.

    The rate in the middle of the longest strictly decreasing run of
    ``losses`` (a subsequence, not necessarily contiguous): with ``end`` the
    first step where a run of the longest length ``L`` ends and
    ``start = end - L``, the step ``start + floor(s) + floor(s / 2)``,
    ``s = (end - start) / 3``.

    Args:
      lrs: the rates, 1-D.
      losses: the losses at those rates, finite, as long as ``lrs``.

    Returns:
      The suggested rate, a float.

    Raises:
      ValueError: for arrays that are not 1-D, finite and of equal length.

    Examples:
      >>> import numpy as np
      >>> lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
      >>> fastai_valley(lrs, [2.0, 2.2, 2.1, 1.5, 1.0, 0.8, 5.0])  # run 2.2 .. 0.8
      0.001

    References:
      fastai, ``fastai.callback.schedule.valley``,
      https://docs.fast.ai/callback.schedule.html.
    """
    lrs, losses = check_pair(lrs, losses)
    return float(lrs[valley_index(losses)])


def fastai_minimum(lrs, losses) -> float:
    """fastai 2.8's ``minimum`` suggestion: the rate of the lowest loss, / 10.

    Args:
      lrs: the rates, 1-D.
      losses: the losses at those rates, finite, as long as ``lrs``.

    Returns:
      ``lrs[argmin(losses)] / 10``, a float.

    Raises:
      ValueError: for arrays that are not 1-D, finite and of equal length.

    Examples:
      >>> fastai_minimum([0.01, 0.1, 1.0], [2.0, 1.0, 3.0])
      0.01
    """
    lrs, losses = check_pair(lrs, losses)
    return float(lrs[int(np.argmin(losses))]) / 10.0


def _forward_steepest_index(lrs: np.ndarray, losses: np.ndarray) -> int:
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return int(np.argmin(slopes))


def fastai_steep(lrs, losses) -> float:
    """fastai 2.8's ``steep`` suggestion: the most negative forward slope.

    The slope between steps ``i`` and ``i + 1`` is taken against ``log(lr)``;
    the suggestion is ``lrs[i]`` at its minimum.

    Args:
      lrs: positive rates, 1-D, at least 2.
      losses: the losses at those rates, finite, as long as ``lrs``.

    Returns:
      The suggested rate, a float.

    Raises:
      ValueError: for arrays that are not 1-D, finite and of equal length, or
        non-positive rates.

    Examples:
      >>> fastai_steep([0.01, 0.1, 1.0, 10.0], [2.0, 1.9, 1.0, 3.0])
      0.1
    """
    lrs, losses = check_pair(lrs, losses, at_least=2)
    if np.any(lrs <= 0):
        v.fail("lrs", "positive (slopes are taken against log(lr))", lrs)
    return float(lrs[_forward_steepest_index(lrs, losses)])


def gradient_steepest_index(losses: np.ndarray) -> int:
    return int(np.argmin(np.gradient(losses)))


def torch_lr_finder_steepest(lrs, losses) -> float:
    """torch-lr-finder 0.2.2's suggestion: the steepest ``np.gradient`` step.

    The gradient is taken against the step index (central differences inside,
    one-sided at the ends), which is the slope per ``log(lr)`` of an
    exponential sweep up to a constant; the suggestion is the rate at its
    minimum. (torch-lr-finder first trims ``skip_start=10`` and
    ``skip_end=5`` steps; :func:`torch_lr_finder_inputs` does that.)

    Args:
      lrs: the rates, 1-D, at least 2.
      losses: the losses at those rates, finite, as long as ``lrs``.

    Returns:
      The suggested rate, a float.

    Raises:
      ValueError: for arrays that are not 1-D and of equal length, or rates
        that are not finite. (NaN losses are allowed and read as numpy's
        ``argmin`` reads them, as torch-lr-finder does.)

    Examples:
      >>> torch_lr_finder_steepest([0.01, 0.1, 1.0, 10.0], [2.0, 1.9, 1.0, 3.0])
      0.1
    """
    lrs = check_curve("lrs", lrs, at_least=2)
    losses = np.asarray(losses, np.float64)  # NaN is allowed, as in numpy
    if losses.shape != lrs.shape:
        v.fail("losses", f"a 1-D array as long as `lrs` ({len(lrs)})", losses)
    return float(lrs[gradient_steepest_index(losses)])


def _fastai_recorded(smoothed: np.ndarray) -> int:
    """Steps fastai's ``lr_find`` records: up to its own 4x stop, inclusive."""
    with np.errstate(invalid="ignore"):
        best = np.fmin.accumulate(smoothed)
        stops = np.flatnonzero(smoothed > 4.0 * best)  # NaN never stops it
    return int(stops[0]) + 1 if len(stops) else len(smoothed)


def fastai_inputs(result) -> tuple[np.ndarray, np.ndarray]:
    """The arrays fastai's ``lr_find`` would pass to its rules for this sweep.

    fastai records the bias-corrected EMA of the loss (this result's
    ``smoothed_losses``, which are fastai's for ``beta=0.98``) until it
    exceeds 4 times its minimum, that step included (a NaN loss does not stop
    it: it records NaN on); then it drops the first ``num_steps // 10`` and
    the last 5 recorded steps, and cuts at the first NaN. Where this sweep
    stopped before fastai would have (a higher ``diverge_threshold``), its
    NaN tail ends the curve. (fastai's rates grow to ``end_lr`` at step
    ``num_steps``, one past the sweep's last; these are the sweep's rates.)

    Args:
      result: a single-sweep :class:`RangeTestResult`.

    Returns:
      ``(lrs, losses)``, NumPy arrays in the curves' dtype (possibly empty).
    """
    result = single_sweep(result, "fastai_inputs")
    smoothed = np.asarray(result.smoothed_losses)
    n = len(smoothed)
    span = slice(n // 10, max(n // 10, _fastai_recorded(smoothed) - 5))
    lrs, losses = np.asarray(result.lrs)[span], smoothed[span]
    bad = np.flatnonzero(np.isnan(losses))
    cut = int(bad[0]) if len(bad) else len(losses)
    return lrs[:cut], losses[:cut]


def torch_lr_finder_inputs(
    result, *, skip_start: int = 10, skip_end: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """The arrays torch-lr-finder would suggest from for this sweep's raw losses.

    torch-lr-finder smooths without bias correction, ``s_0 = l_0``,
    ``s_t = f l_t + (1 - f) s_{t-1}`` with ``smooth_f = f = 1 - beta``; it
    stops at the first ``s_t > diverge_th * best`` (``diverge_th`` =
    ``diverge_threshold``, its default 5 when that is ``None``), recording
    that step (a NaN does not stop it); and ``plot`` trims ``skip_start``
    and ``skip_end`` steps. Where this sweep stopped first, its NaN tail is
    what torch-lr-finder reads.

    Args:
      result: a single-sweep :class:`RangeTestResult`.
      skip_start, skip_end: torch-lr-finder's trims (its defaults).

    Returns:
      ``(lrs, losses)``, float64 NumPy arrays (possibly empty).
    """
    result = single_sweep(result, "torch_lr_finder_inputs")
    config = result.config
    smooth_f = 1.0 - (0.98 if config.beta is None else config.beta)
    diverge_th = config.diverge_threshold or 5.0
    history: list[float] = []
    best = math.inf
    for t, loss in enumerate(np.asarray(result.losses, np.float64).tolist()):
        if t:
            loss = smooth_f * loss + (1.0 - smooth_f) * history[-1]
        best = loss if t == 0 else min(best, loss)  # min() keeps a NaN best out
        history.append(loss)
        if loss > diverge_th * best:
            break
    stop = len(history) - skip_end
    lrs = np.asarray(result.lrs, np.float64)[: len(history)]
    return lrs[skip_start:stop], np.asarray(history)[skip_start:stop]


def peer_suggestions(result) -> dict[str, float]:
    """What fastai and torch-lr-finder would suggest from this sweep.

    Their rules on the curves they record (:func:`fastai_inputs`,
    :func:`torch_lr_finder_inputs`), with none of this library's checks:
    keys ``'fastai_valley'``, ``'fastai_steep'``, ``'fastai_minimum'`` and
    ``'torch_lr_finder_steepest'``. NaN where a curve is too short (fastai
    and torch-lr-finder raise then). For many sweeps, one array per key.

    Args:
      result: a :class:`RangeTestResult`.

    Returns:
      ``{rule: lr}``.
    """
    result = result.to_host()
    if result.num_sweeps is not None:
        per = [peer_suggestions(result.sweep(k)) for k in range(result.num_sweeps)]
        return {key: np.array([p[key] for p in per]) for key in per[0]}
    fa_lrs, fa_losses = fastai_inputs(result)
    tl_lrs, tl_losses = torch_lr_finder_inputs(result)
    rules = (
        ("fastai_valley", fastai_valley, fa_lrs, fa_losses, 1),
        ("fastai_steep", fastai_steep, fa_lrs, fa_losses, 2),
        ("fastai_minimum", fastai_minimum, fa_lrs, fa_losses, 1),
        ("torch_lr_finder_steepest", torch_lr_finder_steepest, tl_lrs, tl_losses, 2),
    )
    return {
        name: rule(lrs, losses) if len(lrs) >= at_least else math.nan
        for name, rule, lrs, losses, at_least in rules
    }
