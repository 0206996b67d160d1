"""Float64 NumPy references, written from the papers' formulas.

Each function takes an iterable of integer counts and returns float64 values.
Cycle positions use Python integers, so references are exact at any count.
They follow the published definitions (Smith 2017's ``cycle``/``x`` formula,
PyTorch's documented OneCycleLR phases, SGDR's restart rule), independently
of how ``clr_jax`` computes them.
"""

from __future__ import annotations

import math

import numpy as np


def _windows(name):
    return {
        "triangular": lambda h: h,
        "welch": lambda h: 1.0 - (1.0 - h) ** 2,
        "hann": lambda h: (1.0 - math.cos(math.pi * h)) / 2.0,
    }[name]


def cyclical(counts, base, peak, up, down=None, window="triangular", scale=None):
    """Smith's CLR, general form; ``scale(cycle, count)`` scales the amplitude.

    Symmetric case (Smith 2017): cycle = floor(1 + t/(2s)),
    x = |t/s - 2 cycle + 1|, h = max(0, 1 - x). The asymmetric case uses the
    fraction of the cycle elapsed, rising over ``up`` and falling over ``down``.
    """
    down = up if down is None else down
    w = _windows(window) if isinstance(window, str) else window
    out = []
    for t in counts:
        t = int(t)
        if up == down:
            cycle = 1 + t // (2 * up)
            x = abs(t - (2 * cycle - 1) * up) / up  # |t/s - 2 cycle + 1|, exactly
            h = max(0.0, 1.0 - x)
        else:
            cycle = 1 + t // (up + down)
            pos = t - (cycle - 1) * (up + down)
            h = pos / up if pos <= up else (up + down - pos) / down
        s = 1.0 if scale is None else scale(cycle, t)
        out.append(base + (peak - base) * float(w(h)) * s)
    return np.asarray(out, np.float64)


def triangular2(counts, base, peak, up, down=None, window="triangular"):
    return cyclical(
        counts, base, peak, up, down, window, scale=lambda c, t: 0.5 ** (c - 1)
    )


def exp_range(counts, base, peak, up, gamma, down=None, window="triangular"):
    return cyclical(counts, base, peak, up, down, window, scale=lambda c, t: gamma**t)


def cosine_restarts(counts, peak, t0, min_lr=0.0, mult=1.0, decay=1.0):
    """SGDR: cycle i lasts t0 * mult**i, starts where the previous ends.

    ``decay`` scales the amplitude above the fixed floor ``min_lr`` (Keras's
    ``m_mul``), so every value stays in ``[min_lr, peak]``.
    """
    out = []
    for t in counts:
        t = int(t)
        if mult == 1:
            i, start, length = t // t0, (t // t0) * t0, t0
        else:
            i, start, length = 0, 0, t0
            # Integer mult keeps every boundary an exact integer.
            while start + length <= t:
                start += length
                length = length * mult
                i += 1
        amplitude = (peak - min_lr) * decay**i
        out.append(
            min_lr + amplitude * (1 + math.cos(math.pi * (t - start) / length)) / 2
        )
    return np.asarray(out, np.float64)


def keras_cosine_decay_restarts(counts, initial, first_steps, t_mul, m_mul, alpha):
    """Keras ``CosineDecayRestarts`` in its own parametrisation (fractions of
    the first cycle): the multiplier decays from 1 to ``alpha``, and each
    restart scales the part above ``alpha`` by ``m_mul``."""
    out = []
    for t in counts:
        fraction = int(t) / first_steps
        if t_mul == 1.0:
            restarts = math.floor(fraction)
            fraction -= restarts
        else:
            restarts = math.floor(
                math.log1p(fraction * (t_mul - 1.0)) / math.log(t_mul)
            )
            # The log rounds: move to the cycle whose start <= fraction < next.
            while (t_mul ** (restarts + 1) - 1.0) / (t_mul - 1.0) <= fraction:
                restarts += 1
            while (t_mul**restarts - 1.0) / (t_mul - 1.0) > fraction:
                restarts -= 1
            done = (t_mul**restarts - 1.0) / (t_mul - 1.0)
            fraction = (fraction - done) / t_mul**restarts
        cosine = 0.5 * m_mul**restarts * (1.0 + math.cos(math.pi * fraction))
        out.append(initial * ((1.0 - alpha) * cosine + alpha))
    return np.asarray(out, np.float64)


def one_cycle(
    counts,
    max_lr,
    total,
    pct_start=0.3,
    anneal="cos",
    div=25.0,
    final_div=1e4,
    three_phase=False,
    momentum=None,
):
    """OneCycleLR as documented: phase ends at pct*T - 1, (2 pct T - 2), T - 1.

    ``momentum=(base, max)`` returns the momentum curve instead.
    """
    initial = max_lr / div
    final = initial / final_div
    if momentum is None:
        values = (
            [initial, max_lr, initial, final]
            if three_phase
            else [initial, max_lr, final]
        )
    else:
        base, high = momentum
        values = [high, base, high, high] if three_phase else [high, base, high]
    ends = [pct_start * total - 1]
    if three_phase:
        ends.append(2 * pct_start * total - 2)
    ends.append(total - 1)

    def anneal_fn(a, b, p):
        if anneal == "cos":
            return b + (a - b) / 2.0 * (math.cos(math.pi * p) + 1)
        return (b - a) * p + a

    out = []
    for t in counts:
        t = min(int(t), total - 1)
        start = 0.0
        for i, end in enumerate(ends):
            if t <= end or i == len(ends) - 1:
                out.append(
                    anneal_fn(values[i], values[i + 1], (t - start) / (end - start))
                )
                break
            start = end
    return np.asarray(out, np.float64)


def lr_sweep(counts, start, end, n, mode="exponential"):
    out = []
    for t in counts:
        f = min(int(t), n - 1) / (n - 1)
        out.append(
            start * (end / start) ** f
            if mode == "exponential"
            else start + (end - start) * f
        )
    return np.asarray(out, np.float64)


def boundary_grid(period_points, *, extra=()):
    """Counts at every given boundary ±1, plus huge counts near 2**24 and 2**31."""
    counts = set(extra)
    for p in period_points:
        counts.update({p - 1, p, p + 1})
    for k in (1, 2, 3, 7):
        counts.update({2**24 - k, 2**24 + k})
    counts.update({2**24, 2**31 - 3, 2**31 - 2, 2**31 - 1})
    return np.asarray(sorted(c for c in counts if 0 <= c <= 2**31 - 1), np.int64)
