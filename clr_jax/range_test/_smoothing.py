"""The lag-free curve a range test is read from, and the noise on it.

The on-device EMA (``smoothed_losses``) lags: with ``beta = 0.98`` its
minimum sits about ``1 / (1 - beta) = 50`` steps to the right of the raw one,
so a suggestion read from it depends on the sweep's length. The readings use
instead a zero-phase smoothing of the *raw* losses (:func:`smooth`): a
centred running median (which removes single-batch outliers), then a centred
running mean, both ``w`` steps wide with mirrored edges, ``w`` about 4% of
the sweep (at least 5 steps; :func:`smoothing_width`). A centred window
shifts no feature. The EMA stays what the device uses to detect divergence.

The noise (:class:`Noise`) has a white part (mini-batch noise) and a
drifting, random-walk part. Both are read from the raw curve minus a
smoothing of it (the trend removed, over a window of at least 11 steps):
white noise and a random walk leave residuals whose spread and whose
step-to-step spread differ in known proportions, and the two proportions are
solved for the two parts. A drift counts only beyond half the white part,
what the estimate reaches on white noise alone. Spreads are median absolute
deviations, so a single outlier does not move them. The largest change the
noise makes over a part of the curve (:meth:`Noise.allowance`) is ``K``
times the fluctuation it predicts there, ``K = 1 + sqrt(2 ln M)`` with ``M``
the number of independent windows in the span, as the largest of ``M`` noise
values grows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from clr_jax import _validation as v

# Smoothing window: this share of the sweep, at least _MIN_WIDTH steps (odd).
_WIDTH_FRACTION = 0.04
_MIN_WIDTH = 5
# The largest noise change is _NOISE_MARGIN + the expected range of the windows'.
_NOISE_MARGIN = 1.0


def smoothing_width(num_steps: int) -> int:
    """The smoothing window for a sweep of ``num_steps``: odd, >= 5 (or all).

    Examples:
      >>> smoothing_width(100), smoothing_width(400), smoothing_width(1600)
      (5, 17, 65)
    """
    width = max(_MIN_WIDTH, round(_WIDTH_FRACTION * num_steps))
    width += 1 - width % 2
    return max(1, min(width, num_steps - 1 + num_steps % 2))


def _windows(y: np.ndarray, width: int) -> np.ndarray:
    half = width // 2
    padded = np.pad(y, half, mode="reflect") if half else y
    return np.lib.stride_tricks.sliding_window_view(padded, width)


def running_median(y, width: int) -> np.ndarray:
    """Centred running median over ``width`` (odd) steps, edges mirrored."""
    y = np.asarray(y, np.float64)
    return np.median(_windows(y, width), axis=-1) if len(y) > width // 2 else y


def smooth(losses, width: int | None = None) -> np.ndarray:
    """Zero-phase smoothing of raw losses: running median, then running mean.

    Both windows are centred and ``width`` steps wide (odd; default
    :func:`smoothing_width`), the edges mirrored: no feature of the curve is
    shifted, and a single outlier is removed by the median.

    Args:
      losses: finite raw losses, 1-D.
      width: window length in steps, odd.

    Returns:
      The smoothed curve, float64, as long as ``losses``.

    Examples:
      >>> import numpy as np
      >>> y = np.r_[np.ones(10), 100.0, np.ones(10)]  # one outlier batch
      >>> float(smooth(y).max())
      1.0
    """
    y = np.asarray(losses, np.float64)
    width = smoothing_width(len(y)) if width is None else width
    if width % 2 == 0 or width < 1:
        v.fail("width", "an odd number of steps >= 1", width)
    if len(y) <= width // 2:
        return y.copy()
    return np.mean(_windows(running_median(y, width), width), axis=-1)


def _robust_std(x: np.ndarray) -> float:
    """1.4826 * median absolute deviation: the std of normal noise, robustly."""
    if len(x) == 0:
        return 0.0
    return 1.4826 * float(np.median(np.abs(x - np.median(x))))


def _kernel(width: int) -> np.ndarray:
    """The linear part of :func:`smooth`: two running means, a triangle."""
    box = np.full(width, 1.0 / width)
    return np.convolve(box, box)


def _walk_gain(residual: np.ndarray) -> float:
    """Variance of ``residual * y`` for a random walk ``y`` of unit steps."""
    # residual * y = sum_i c_i u_i over the steps u; c_i sums the filter
    # taps on one side of step i (the taps sum to zero).
    return float(np.sum(np.cumsum(residual)[:-1] ** 2))


# The noise is judged on a window of at least this many steps: shorter ones
# cannot tell a random walk from white noise.
_NOISE_WIDTH = 11
_DRIFT_FLOOR = 0.5


class Noise(NamedTuple):
    """The noise of a raw curve: white, plus a drifting (random-walk) part.

    The raw curve minus its smoothed version, ``r = h * y``, has the trend
    removed. A white noise of std ``a`` and a random walk of step std ``b``
    give ``var(r) = a**2 sum(h**2) + b**2 G`` (``G``, the walk's gain) and
    ``var(diff r) = a**2 sum(diff(h)**2) + b**2 sum(h**2)``; both variances
    are taken robustly and the two equations solved for ``a`` and ``b``.
    """

    white: float  # std of the white part, per step
    drift: float  # step std of the random-walk part
    width: int

    @classmethod
    def of(cls, raw: np.ndarray, width: int) -> Noise:
        wide = min(max(width, _NOISE_WIDTH), len(raw) - 1 + len(raw) % 2)
        if len(raw) < 4 or wide < 3:
            return cls(0.0, 0.0, width)
        r = raw - smooth(raw, wide)
        h = -_kernel(wide)
        h[len(h) // 2] += 1.0
        dh = np.diff(np.r_[0.0, h, 0.0])
        matrix = np.array(
            [[np.sum(h**2), _walk_gain(h)], [np.sum(dh**2), np.sum(h**2)]]
        )
        var = np.array([_robust_std(r) ** 2, _robust_std(np.diff(r)) ** 2])
        a2, b2 = np.linalg.solve(matrix, var)
        if b2 < 0.0:  # white noise only
            a2, b2 = var[1] / matrix[1, 0], 0.0
        elif a2 < 0.0:  # a random walk only
            a2, b2 = 0.0, var[1] / matrix[1, 1]
        # On white noise alone the estimate of b reaches about half of a:
        # only a drift beyond that counts.
        b2 = max(0.0, b2 - (_DRIFT_FLOOR**2) * a2)
        return cls(math.sqrt(a2), math.sqrt(b2), width)

    def fluctuation(self, length: int) -> float:
        """Std of the difference of two smoothed values ``length`` steps apart."""
        # The median stage costs about pi/2 in variance over a running mean.
        smoothed_white2 = self.white**2 * float(np.sum(_kernel(self.width) ** 2))
        smoothed_white2 *= math.pi / 2.0
        return math.sqrt(2.0 * smoothed_white2 + length * self.drift**2)

    def allowance(self, length: int, span: int) -> float:
        """The largest change noise makes over ``length`` steps, in a ``span``."""
        windows = max(span / self.width, 2.0)
        return (_NOISE_MARGIN + math.sqrt(2.0 * math.log(windows))) * (
            self.fluctuation(length)
        )
