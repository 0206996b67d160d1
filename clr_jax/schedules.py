"""Cyclical learning-rate schedules as pure ``optax.Schedule`` functions.

Count convention (every schedule here): the value at ``count`` is the one
used by update number ``count``, where ``count = 0`` is the first update.
That is exactly what Optax passes to a schedule, and it equals PyTorch's
learning rate after ``count`` calls of ``scheduler.step()``.

Design rules, each checked by the test suite:

* the position inside a cycle is integer arithmetic, so ``count = 2**31 - 1``
  is as exact as ``count = 7`` (a float32 phase is wrong past ``2**24``);
* the cost of one evaluation does not grow with the number of cycles;
* numeric hyperparameters may be JAX arrays, even tracers, so ``jax.vmap``
  over ``max_lr`` or an integer ``step_size`` compiles once;
* concrete bad values raise ``ValueError`` naming the argument, the rule and
  the value; traced values are never branched on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import jax.numpy as jnp
import numpy as np
import optax

from clr_jax import _validation as v

__all__ = [
    "cosine_restarts",
    "cyclical",
    "cyclical_momentum",
    "exp_range",
    "lr_sweep",
    "one_cycle",
    "one_cycle_momentum",
    "step_size_for",
    "triangular",
    "triangular2",
]

WindowName = Literal["triangular", "welch", "hann"]
Window = WindowName | Callable[[jnp.ndarray], jnp.ndarray]

_WINDOWS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "triangular": lambda h: h,
    "welch": lambda h: 1.0 - (1.0 - h) ** 2,
    "hann": lambda h: 0.5 - 0.5 * jnp.cos(jnp.pi * h),
}


# ---------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------


def _float_dtype(*values) -> jnp.dtype:
    """float32 (float64 under x64), or wider if a hyperparameter asks for it."""
    return jnp.promote_types(jnp.result_type(*values, float), jnp.float32)


def _as_count(count) -> jnp.ndarray:
    count = jnp.asarray(count)
    if not jnp.issubdtype(count.dtype, jnp.integer):
        raise TypeError(
            "`count` must be an integer (the number of updates applied); "
            f"got dtype {count.dtype}."
        )
    return count


def _resolve_window(window: Window) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """Maps a window name or callable ``h -> [0, 1]`` to a function of ``h``."""
    if callable(window):
        probe = np.linspace(0.0, 1.0, 257, dtype=np.float32)
        try:
            out = np.asarray(window(jnp.asarray(probe)), dtype=np.float64)
        except Exception as err:  # a broken callable deserves a clear message
            raise ValueError(
                "`window` callable must accept an array of heights in [0, 1]; "
                f"calling it raised {err!r}."
            ) from err
        if out.shape != probe.shape:
            raise ValueError(
                "`window` callable must return one value per height (same "
                f"shape); got shape {out.shape} for input shape {probe.shape}."
            )
        bad = ~np.isfinite(out) | (out < 0.0) | (out > 1.0)
        if bad.any():
            raise ValueError(
                "`window` callable must map [0, 1] into [0, 1]; got "
                f"{out[bad][0]!r} at h={probe[bad][0]:.4f}."
            )
        return window
    v.check_choice("window", window, tuple(_WINDOWS))
    return _WINDOWS[window]


def _check_bounds(low_name: str, low, high_name: str, high) -> None:
    v.check_non_negative(low_name, low)
    v.check_non_negative(high_name, high)


# ---------------------------------------------------------------------------
# The cyclical family (Smith 2017)
# ---------------------------------------------------------------------------


def _cycle_position(count, step_up, step_down, dtype):
    """Returns ``(cycle, h)``: the 1-based cycle and the height in [0, 1].

    ``h`` rises linearly from 0 to 1 over ``step_up`` updates and falls back
    over ``step_down``. All arithmetic before the final division is integer.
    """
    total = step_up + step_down
    cycle_index = count // total
    pos = count - cycle_index * total
    rising = pos <= step_up
    h = jnp.where(
        rising,
        pos.astype(dtype) / jnp.asarray(step_up, dtype),
        (total - pos).astype(dtype) / jnp.asarray(step_down, dtype),
    )
    return cycle_index + 1, h


def cyclical(
    base_lr,
    max_lr,
    step_size,
    *,
    step_size_down=None,
    window: Window = "triangular",
    scale_fn: Callable[[jnp.ndarray], jnp.ndarray] | None = None,
    scale_mode: Literal["cycle", "iterations"] = "cycle",
) -> optax.Schedule:
    r"""General cyclical learning rate (Smith, 2017).

    The rate moves between ``base_lr`` and ``max_lr``: it rises for
    ``step_size`` updates, falls for ``step_size_down`` updates, and repeats.
    With ``c`` the 1-based cycle, ``p`` the position inside the cycle and
    ``h`` the height along the rise or fall,

    .. math::

       h = p / s_{up} \text{ if } p \le s_{up}
           \text{ else } (s_{up} + s_{down} - p) / s_{down}

       lr = base\_lr + (max\_lr - base\_lr) \cdot w(h) \cdot scale\_fn(x)

    where ``w`` is the window and ``x`` is ``c`` (``scale_mode='cycle'``) or
    ``count`` (``'iterations'``). ``base_lr > max_lr`` gives the inverted
    wave (see :func:`cyclical_momentum`).

    Count convention: ``count`` is the number of updates already applied (0 for
    the first update). The value equals PyTorch's
    ``torch.optim.lr_scheduler.CyclicLR`` after ``count`` calls of ``step()``.

    Args:
      base_lr: lower bound, the value at ``count = 0``. Non-negative.
      max_lr: upper bound, reached at ``count = step_size``. Non-negative.
      step_size: updates in the rising half-cycle, a positive integer.
      step_size_down: updates in the falling half; defaults to ``step_size``.
      window: ``'triangular'`` (linear), ``'welch'`` (parabolic,
        ``1 - (1 - h)**2``), ``'hann'`` (sinusoidal, ``(1 - cos(pi h)) / 2``),
        or a callable mapping heights in [0, 1] to [0, 1].
      scale_fn: amplitude scale; gets the integer cycle or count. ``None``
        means 1 (constant amplitude).
      scale_mode: what ``scale_fn`` receives, ``'cycle'`` or ``'iterations'``.

    Returns:
      An ``optax.Schedule``.

    Raises:
      ValueError: for a negative or non-finite bound, a non-positive or
        non-integer step size, an unknown ``window`` or ``scale_mode``, or a
        window callable that leaves [0, 1].

    Examples:
      >>> import clr_jax
      >>> sched = clr_jax.cyclical(0.001, 0.006, 4, window="hann")
      >>> [round(float(sched(t)), 6) for t in range(0, 9, 2)]
      [0.001, 0.0035, 0.006, 0.0035, 0.001]

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
      https://arxiv.org/abs/1506.01186.
    """
    _check_bounds("base_lr", base_lr, "max_lr", max_lr)
    step_up = v.check_step_count("step_size", step_size)
    step_down = (
        step_up
        if step_size_down is None
        else v.check_step_count("step_size_down", step_size_down)
    )
    if not v.is_traced((step_up, step_down)) and np.any(
        np.asarray(step_up) + np.asarray(step_down) > v.INT32_MAX
    ):
        raise ValueError(
            "`step_size` + `step_size_down` must be <= 2**31 - 1 (one cycle "
            f"must fit in int32); got {step_up} + {step_down}."
        )
    window_fn = _resolve_window(window)
    v.check_choice("scale_mode", scale_mode, ("cycle", "iterations"))
    if scale_fn is not None and not callable(scale_fn):
        raise ValueError(f"`scale_fn` must be callable or None; got {scale_fn!r}.")

    def schedule(count):
        count = _as_count(count)
        dtype = _float_dtype(base_lr, max_lr)
        cycle, h = _cycle_position(count, step_up, step_down, dtype)
        amplitude = (jnp.asarray(max_lr, dtype) - base_lr) * window_fn(h)
        if scale_fn is not None:
            amplitude = amplitude * scale_fn(cycle if scale_mode == "cycle" else count)
        return jnp.asarray(base_lr + amplitude, dtype)

    return schedule


def triangular(
    base_lr, max_lr, step_size, *, step_size_down=None, window: Window = "triangular"
) -> optax.Schedule:
    r"""Cyclical rate with constant amplitude (Smith's ``triangular`` policy).

    .. math:: lr = base\_lr + (max\_lr - base\_lr) \cdot w(h)

    with ``h`` the height along the current rise or fall (see :func:`cyclical`).

    Count convention: ``count`` is the number of updates already applied (0 for
    the first update); equals PyTorch ``CyclicLR(mode='triangular')`` after
    ``count`` calls of ``step()``.

    Args:
      base_lr: lower bound, the value at ``count = 0``.
      max_lr: upper bound, reached at ``count = step_size``.
      step_size: updates per half-cycle.
      step_size_down: updates in the falling half; defaults to ``step_size``.
      window: ``'triangular'``, ``'welch'``, ``'hann'`` or a callable.

    Returns:
      An ``optax.Schedule``.

    Raises:
      ValueError: as :func:`cyclical`.

    Examples:
      >>> import clr_jax, optax
      >>> sched = clr_jax.triangular(0.001, 0.006, step_size=2000)
      >>> [round(float(sched(t)), 6) for t in (0, 1000, 2000, 3000, 4000)]
      [0.001, 0.0035, 0.006, 0.0035, 0.001]
      >>> opt = optax.sgd(sched)  # the whole integration

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
      https://arxiv.org/abs/1506.01186.
    """
    return cyclical(
        base_lr, max_lr, step_size, step_size_down=step_size_down, window=window
    )


def triangular2(
    base_lr, max_lr, step_size, *, step_size_down=None, window: Window = "triangular"
) -> optax.Schedule:
    r"""Cyclical rate whose amplitude halves every cycle (``triangular2``).

    .. math:: lr = base\_lr + (max\_lr - base\_lr) \cdot w(h) / 2^{c - 1}

    with ``c`` the 1-based cycle number.

    Count convention: ``count`` is the number of updates already applied (0 for
    the first update); equals PyTorch ``CyclicLR(mode='triangular2')`` after
    ``count`` calls of ``step()``.

    Args:
      base_lr: lower bound.
      max_lr: peak of the first cycle.
      step_size: updates per half-cycle.
      step_size_down: updates in the falling half; defaults to ``step_size``.
      window: ``'triangular'``, ``'welch'``, ``'hann'`` or a callable.

    Returns:
      An ``optax.Schedule``.

    Raises:
      ValueError: as :func:`cyclical`.

    Examples:
      >>> import clr_jax
      >>> sched = clr_jax.triangular2(0.0, 1.0, step_size=10)
      >>> [float(sched(t)) for t in (10, 30, 50)]
      [1.0, 0.5, 0.25]

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
      https://arxiv.org/abs/1506.01186.
    """
    return cyclical(
        base_lr,
        max_lr,
        step_size,
        step_size_down=step_size_down,
        window=window,
        scale_fn=lambda cycle: 0.5 ** (cycle - 1),
        scale_mode="cycle",
    )


def exp_range(
    base_lr,
    max_lr,
    step_size,
    gamma,
    *,
    step_size_down=None,
    window: Window = "triangular",
) -> optax.Schedule:
    r"""Cyclical rate whose amplitude decays as ``gamma**count`` (``exp_range``).

    .. math:: lr = base\_lr + (max\_lr - base\_lr) \cdot w(h) \cdot \gamma^{count}

    Only the amplitude decays; ``base_lr`` stays. ``count`` is the total
    number of updates, as in PyTorch and TF-Addons.

    Count convention: ``count`` is the number of updates already applied (0 for
    the first update); equals PyTorch ``CyclicLR(mode='exp_range')`` after
    ``count`` calls of ``step()``.

    Args:
      base_lr: lower bound.
      max_lr: upper bound before decay.
      step_size: updates per half-cycle.
      gamma: decay per update, in (0, 1].
      step_size_down: updates in the falling half; defaults to ``step_size``.
      window: ``'triangular'``, ``'welch'``, ``'hann'`` or a callable.

    Returns:
      An ``optax.Schedule``.

    Raises:
      ValueError: as :func:`cyclical`, and for ``gamma`` outside (0, 1].

    Examples:
      >>> import clr_jax
      >>> sched = clr_jax.exp_range(0.0, 1.0, step_size=10, gamma=0.9)
      >>> round(float(sched(10)), 6)  # 0.9**10
      0.348678

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
      https://arxiv.org/abs/1506.01186.
    """
    v.check_interval("gamma", gamma, 0.0, 1.0, closed_low=False, closed_high=True)

    # log(gamma) from the float64 value when concrete: float32(0.9999) alone is
    # off by 1e-4 in its logarithm, which gamma**count would amplify.
    concrete_gamma = v.concrete(gamma)
    log_gamma = None if concrete_gamma is None else np.log(concrete_gamma)

    def decay(count):
        dtype = _float_dtype(base_lr, max_lr, gamma)
        log = jnp.log(jnp.asarray(gamma, dtype)) if log_gamma is None else log_gamma
        return jnp.exp(count.astype(dtype) * jnp.asarray(log, dtype))

    return cyclical(
        base_lr,
        max_lr,
        step_size,
        step_size_down=step_size_down,
        window=window,
        scale_fn=decay,
        scale_mode="iterations",
    )


def cyclical_momentum(
    base_momentum,
    max_momentum,
    step_size,
    *,
    step_size_down=None,
    window: Window = "triangular",
) -> optax.Schedule:
    r"""Momentum that cycles opposite to a cyclical learning rate.

    Momentum is ``max_momentum`` where the paired learning rate is at its
    lowest and ``base_momentum`` at its peak (Smith, 2018):

    .. math:: m = max\_m - (max\_m - base\_m) \cdot w(h)

    Pair it with a :func:`triangular` (or :func:`cyclical`) rate built with the
    same ``step_size``/``step_size_down``/``window``.

    Count convention: ``count`` is the number of updates already applied (0 for
    the first update); equals PyTorch ``CyclicLR(cycle_momentum=True)``'s
    momentum after ``count`` calls of ``step()``.

    Args:
      base_momentum: momentum at the learning-rate peak, in [0, 1].
      max_momentum: momentum at the learning-rate minimum, in [0, 1].
      step_size: updates per half-cycle.
      step_size_down: updates in the falling half; defaults to ``step_size``.
      window: ``'triangular'``, ``'welch'``, ``'hann'`` or a callable.

    Returns:
      An ``optax.Schedule`` of momentum values.

    Raises:
      ValueError: as :func:`cyclical`, and for momenta outside [0, 1].

    Examples:
      >>> import clr_jax
      >>> mom = clr_jax.cyclical_momentum(0.85, 0.95, step_size=100)
      >>> [round(float(mom(t)), 6) for t in (0, 100, 200)]
      [0.95, 0.85, 0.95]

    References:
      Smith, "A disciplined approach to neural network hyper-parameters: Part
      1", 2018, https://arxiv.org/abs/1803.09820.
    """
    for name, value in (
        ("base_momentum", base_momentum),
        ("max_momentum", max_momentum),
    ):
        v.check_interval(name, value, 0.0, 1.0, closed_low=True, closed_high=True)
    return cyclical(
        max_momentum,
        base_momentum,
        step_size,
        step_size_down=step_size_down,
        window=window,
    )


# ---------------------------------------------------------------------------
# Cosine annealing with warm restarts (SGDR)
# ---------------------------------------------------------------------------


def _restart_table(cycle_steps: int, cycle_mult: float):
    """Exact starts of every cycle that begins below 2**31, for concrete args.

    Cycle ``i`` starts at ``S_i = T0 (m**i - 1) / (m - 1)``. Since counts are
    integers, ``count >= S_i`` iff ``count >= ceil(S_i)``; the table holds
    those integer thresholds and the fractional offsets, computed once on the
    host in float64 (exact for these magnitudes).
    """
    starts = [0.0]
    length = float(cycle_steps)
    while starts[-1] + length <= v.INT32_MAX:
        starts.append(starts[-1] + length)
        length *= cycle_mult
    starts_arr = np.asarray(starts, np.float64)
    thresholds = np.ceil(starts_arr).astype(np.int32)
    floors = np.floor(starts_arr).astype(np.int32)
    lengths = cycle_steps * cycle_mult ** np.arange(len(starts), dtype=np.float64)
    return thresholds, floors, starts_arr - floors, lengths


def _restart_position_float(count, cycle_steps, cycle_mult, dtype):
    """Cycle index and position for traced ``cycle_steps``/``cycle_mult``."""
    c = count.astype(dtype)
    t0 = jnp.asarray(cycle_steps, dtype)
    m = jnp.asarray(cycle_mult, dtype)
    geometric = m != 1.0
    safe_m = jnp.where(geometric, m, 2.0)
    log_m = jnp.log(safe_m)

    def start(n):
        geo = t0 * jnp.expm1(n * log_m) / (safe_m - 1.0)
        return jnp.where(geometric, geo, t0 * n)

    guess = jnp.where(
        geometric,
        jnp.floor(jnp.log1p(c * (safe_m - 1.0) / t0) / log_m),
        jnp.floor(c / t0),
    )
    # One correction either way absorbs the rounding of the log; the few-ulp
    # slack puts an integer count that sits on a rounded start in the new cycle.
    slack = 1.0 - 8.0 * jnp.finfo(dtype).eps
    guess = jnp.where(c < start(guess) * slack, guess - 1.0, guess)
    guess = jnp.where(c >= start(guess + 1.0) * slack, guess + 1.0, guess)
    length = jnp.where(geometric, t0 * safe_m**guess, t0)
    return guess, jnp.maximum(c - start(guess), 0.0), length


def cosine_restarts(
    max_lr, cycle_steps, *, min_lr=0.0, cycle_mult=1.0, decay=1.0
) -> optax.Schedule:
    r"""Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017).

    Cycle ``i`` (0-based) lasts ``T_i = cycle_steps * cycle_mult**i`` updates
    and peaks at ``max_lr * decay**i``; inside it, with ``t`` updates since its
    start,

    .. math:: lr = min\_lr + (peak_i - min\_lr) (1 + \cos(\pi t / T_i)) / 2

    Count convention: ``count`` is the number of updates already applied (0 for
    the first update); for integer ``cycle_mult`` and ``decay = 1`` this equals
    PyTorch ``CosineAnnealingWarmRestarts(T_0=cycle_steps, T_mult=cycle_mult,
    eta_min=min_lr)`` after ``count`` calls of ``step()``. Non-integer
    ``cycle_mult`` places cycle ``i`` at the real-valued start
    ``cycle_steps * (cycle_mult**i - 1) / (cycle_mult - 1)``.

    One evaluation costs the same whatever the number of cycles (an integer
    modulus, or a binary search in a table of cycle starts), unlike
    ``optax.sgdr_schedule``, which joins one schedule per cycle. Positions are
    exact for every int32 count when ``cycle_steps`` and ``cycle_mult`` are
    concrete, and when ``cycle_mult == 1``; with a traced ``cycle_mult`` (or a
    traced ``cycle_steps`` and ``cycle_mult != 1``) cycle starts are computed
    in floating point.

    Args:
      max_lr: peak of the first cycle, non-negative.
      cycle_steps: length of the first cycle, a positive integer.
      min_lr: floor of every cycle, non-negative.
      cycle_mult: growth factor of cycle lengths, ``>= 1``.
      decay: factor applied to the peak at every restart, positive.

    Returns:
      An ``optax.Schedule``.

    Raises:
      ValueError: for a negative or non-finite rate, a non-positive or
        non-integer ``cycle_steps``, ``cycle_mult < 1`` or ``decay <= 0``.

    Examples:
      >>> import clr_jax
      >>> sched = clr_jax.cosine_restarts(1.0, 10, cycle_mult=2)
      >>> [round(float(sched(t)), 6) for t in (0, 5, 10, 20, 30)]
      [1.0, 0.5, 1.0, 0.5, 1.0]

    References:
      Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
      Restarts", ICLR 2017, https://arxiv.org/abs/1608.03983.
    """
    _check_bounds("min_lr", min_lr, "max_lr", max_lr)
    cycle_steps = v.check_step_count("cycle_steps", cycle_steps)
    v.check_finite("cycle_mult", cycle_mult)
    mult = v.concrete(cycle_mult)
    if mult is not None and np.any(mult < 1.0):
        raise ValueError(f"`cycle_mult` must be >= 1; got {cycle_mult!r}.")
    v.check_positive("decay", decay)

    concrete_steps = not v.is_traced(cycle_steps) and np.ndim(cycle_steps) == 0
    concrete_mult = mult is not None and mult.ndim == 0
    if concrete_mult and float(mult) == 1.0:
        mode = "modulo"
    elif concrete_mult and concrete_steps:
        mode = "table"
        table = _restart_table(int(cycle_steps), float(mult))
    else:
        mode = "float"

    def schedule(count):
        count = _as_count(count)
        dtype = _float_dtype(max_lr, min_lr, decay, cycle_mult)
        if mode == "modulo":
            index = count // cycle_steps
            pos = (count - index * cycle_steps).astype(dtype)
            length = jnp.asarray(cycle_steps, dtype)
            index = index.astype(dtype)
        elif mode == "table":
            thresholds, floors, fractions, lengths = (jnp.asarray(a) for a in table)
            idx = jnp.searchsorted(thresholds, count, side="right") - 1
            pos = (count - floors[idx]).astype(dtype) - fractions[idx].astype(dtype)
            length = lengths[idx].astype(dtype)
            index = idx.astype(dtype)
        else:
            index, pos, length = _restart_position_float(
                count, cycle_steps, cycle_mult, dtype
            )
        peak = jnp.asarray(max_lr, dtype) * jnp.asarray(decay, dtype) ** index
        # (1 + cos(pi x)) / 2 as cos^2(pi x / 2): accurate as the cycle ends.
        cosine = jnp.cos(0.5 * jnp.pi * pos / length) ** 2
        return jnp.asarray(min_lr + (peak - min_lr) * cosine, dtype)

    return schedule


# ---------------------------------------------------------------------------
# One-cycle (Smith 2018) and its momentum partner
# ---------------------------------------------------------------------------


def _check_one_cycle(total_steps, pct_start, anneal_strategy, three_phase) -> int:
    total = v.check_step_count("total_steps", total_steps)
    v.check_interval(
        "pct_start", pct_start, 0.0, 1.0, closed_low=False, closed_high=False
    )
    v.check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
    if not v.is_traced((total, pct_start)):
        warmup = float(pct_start) * int(total)
        if warmup <= 1.0:
            raise ValueError(
                "`pct_start` * `total_steps` must be > 1 so that the warm-up "
                f"phase lasts at least one update; got {pct_start} * {total} "
                f"= {warmup}."
            )
        if three_phase and int(total) - 2.0 * warmup + 1.0 <= 0.0:
            raise ValueError(
                "with `three_phase=True`, `pct_start` must leave room for the "
                f"final annihilation phase (pct_start < 0.5 + 1/(2 total_steps)); "
                f"got pct_start={pct_start}, total_steps={total}."
            )
    return total


def _one_cycle(values, total_steps, pct_start, anneal_strategy, three_phase):
    """Piecewise anneal through ``values`` at PyTorch ``OneCycleLR``'s phase ends.

    Phase ends (in updates) are ``pct_start*T - 1``, then ``2*pct_start*T - 2``
    (three-phase only), then ``T - 1``; each phase anneals from its start
    value to its end value. Past ``T - 1`` the final value is held.
    """

    def schedule(count):
        count = _as_count(count)
        dtype = _float_dtype(pct_start, *values)
        total = jnp.asarray(total_steps, dtype)
        warmup = jnp.asarray(pct_start, dtype) * total
        ends = [warmup - 1.0, 2.0 * warmup - 2.0] if three_phase else [warmup - 1.0]
        ends.append(total - 1.0)
        starts = [jnp.zeros((), dtype), *ends[:-1]]
        step = jnp.minimum(count, jnp.asarray(total_steps, count.dtype) - 1)
        step = step.astype(dtype)

        def phase(i):
            pct = (step - starts[i]) / (ends[i] - starts[i])
            if anneal_strategy == "cos":
                # cos^2 / sin^2 weights: no cancellation near either end.
                to_end = jnp.sin(0.5 * jnp.pi * pct) ** 2
                to_start = jnp.cos(0.5 * jnp.pi * pct) ** 2
            else:
                to_end, to_start = pct, 1.0 - pct
            return to_start * values[i] + to_end * values[i + 1]

        # PyTorch takes the first phase whose end is >= step, else the last.
        value = phase(len(ends) - 1)
        for i in reversed(range(len(ends) - 1)):
            value = jnp.where(step <= ends[i], phase(i), value)
        return jnp.asarray(value, dtype)

    return schedule


def one_cycle(
    max_lr,
    total_steps,
    *,
    pct_start=0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    div_factor=25.0,
    final_div_factor=1e4,
    three_phase: bool = False,
) -> optax.Schedule:
    r"""Smith's 1cycle policy with PyTorch ``OneCycleLR`` semantics.

    The rate warms up from ``initial = max_lr / div_factor`` to ``max_lr``
    over the first ``pct_start * total_steps - 1`` updates, then anneals to
    ``initial / final_div_factor`` at update ``total_steps - 1``. With
    ``three_phase=True`` it first returns symmetrically to ``initial`` and
    only then anneals to the minimum. Each phase interpolates with

    .. math::

       \text{cos: } end + (start - end)(1 + \cos(\pi p)) / 2, \qquad
       \text{linear: } start + (end - start) p

    where ``p`` is the fraction of the phase elapsed.

    Count convention: ``count`` is the number of updates already applied (0 for
    the first update); equals PyTorch ``OneCycleLR`` after ``count`` calls of
    ``step()``. Counts past ``total_steps - 1`` hold the final value (PyTorch
    raises there).

    Args:
      max_lr: peak learning rate, positive.
      total_steps: number of updates in the cycle, a positive integer.
      pct_start: fraction of the cycle spent warming up, in (0, 1).
      anneal_strategy: ``'cos'`` or ``'linear'``.
      div_factor: ``max_lr / initial_lr``, positive.
      final_div_factor: ``initial_lr / min_lr``, positive.
      three_phase: use the symmetric three-phase variant.

    Returns:
      An ``optax.Schedule``.

    Raises:
      ValueError: for a non-positive or non-finite rate or factor, bad
        ``total_steps``/``pct_start``, a warm-up shorter than one update, or
        an unknown ``anneal_strategy``.

    Examples:
      >>> import clr_jax
      >>> sched = clr_jax.one_cycle(0.1, total_steps=100)
      >>> [round(float(sched(t)), 6) for t in (0, 29, 99)]
      [0.004, 0.1, 0.0]

    References:
      Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks
      Using Large Learning Rates", 2017, https://arxiv.org/abs/1708.07120.
    """
    v.check_positive("max_lr", max_lr)
    v.check_positive("div_factor", div_factor)
    v.check_positive("final_div_factor", final_div_factor)
    total = _check_one_cycle(total_steps, pct_start, anneal_strategy, three_phase)
    initial = max_lr / div_factor
    final = initial / final_div_factor
    values = (
        [initial, max_lr, initial, final] if three_phase else [initial, max_lr, final]
    )
    return _one_cycle(values, total, pct_start, anneal_strategy, three_phase)


def one_cycle_momentum(
    total_steps,
    *,
    base_momentum=0.85,
    max_momentum=0.95,
    pct_start=0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    three_phase: bool = False,
) -> optax.Schedule:
    r"""The momentum partner of :func:`one_cycle` (``OneCycleLR(cycle_momentum)``).

    Momentum falls from ``max_momentum`` to ``base_momentum`` while the rate
    warms up, and rises back to ``max_momentum`` while it anneals (three-phase:
    back up during the second phase, then held at ``max_momentum``), using the
    same phase ends and interpolation as :func:`one_cycle`.

    Count convention: ``count`` is the number of updates already applied (0 for
    the first update); equals PyTorch ``OneCycleLR``'s momentum after ``count``
    calls of ``step()``.

    Args:
      total_steps: number of updates in the cycle.
      base_momentum: momentum at the learning-rate peak, in [0, 1].
      max_momentum: momentum at the start and end, in [0, 1].
      pct_start: fraction of the cycle spent warming up, in (0, 1).
      anneal_strategy: ``'cos'`` or ``'linear'``.
      three_phase: use the symmetric three-phase variant.

    Returns:
      An ``optax.Schedule`` of momentum values.

    Raises:
      ValueError: as :func:`one_cycle`, and for momenta outside [0, 1].

    Examples:
      >>> import clr_jax
      >>> mom = clr_jax.one_cycle_momentum(100)
      >>> [round(float(mom(t)), 6) for t in (0, 29, 99)]
      [0.95, 0.85, 0.95]

    References:
      Smith, "A disciplined approach to neural network hyper-parameters: Part
      1", 2018, https://arxiv.org/abs/1803.09820.
    """
    for name, value in (
        ("base_momentum", base_momentum),
        ("max_momentum", max_momentum),
    ):
        v.check_interval(name, value, 0.0, 1.0, closed_low=True, closed_high=True)
    total = _check_one_cycle(total_steps, pct_start, anneal_strategy, three_phase)
    values = (
        [max_momentum, base_momentum, max_momentum, max_momentum]
        if three_phase
        else [max_momentum, base_momentum, max_momentum]
    )
    return _one_cycle(values, total, pct_start, anneal_strategy, three_phase)


# ---------------------------------------------------------------------------
# Range-test ramp and Smith's step-size rule
# ---------------------------------------------------------------------------


def lr_sweep(
    start_lr,
    end_lr,
    num_steps,
    *,
    mode: Literal["exponential", "linear"] = "exponential",
) -> optax.Schedule:
    r"""The learning-rate ramp of a range test.

    .. math::

       \text{exponential: } lr = start \cdot (end / start)^{t / (n - 1)},
       \qquad \text{linear: } lr = start + (end - start) \, t / (n - 1)

    with ``t = min(count, n - 1)``: the ramp starts at ``start_lr`` on the
    first update, reaches ``end_lr`` exactly at ``count == num_steps - 1`` and
    holds it afterwards.

    Count convention: ``count`` is the number of updates already applied (0 for
    the first update).

    Args:
      start_lr: rate of the first update; positive for ``'exponential'``,
        non-negative for ``'linear'``.
      end_lr: rate of the last update, same rule.
      num_steps: number of updates in the sweep, at least 2.
      mode: ``'exponential'`` (fastai, torch-lr-finder) or ``'linear'``
        (Smith's paper).

    Returns:
      An ``optax.Schedule``.

    Raises:
      ValueError: for ``num_steps < 2``, an unknown ``mode``, a non-finite
        or negative rate, or a non-positive rate in exponential mode.

    Examples:
      >>> import clr_jax
      >>> sweep = clr_jax.lr_sweep(1e-4, 1.0, num_steps=5)
      >>> [round(float(sweep(t)), 6) for t in range(5)]
      [0.0001, 0.001, 0.01, 0.1, 1.0]
    """
    v.check_choice("mode", mode, ("exponential", "linear"))
    check = v.check_positive if mode == "exponential" else v.check_non_negative
    check("start_lr", start_lr)
    check("end_lr", end_lr)
    num_steps = v.check_step_count("num_steps", num_steps, minimum=2)

    def schedule(count):
        count = _as_count(count)
        dtype = _float_dtype(start_lr, end_lr)
        last = jnp.asarray(num_steps, count.dtype) - 1
        t = jnp.clip(count, 0, last)
        frac = t.astype(dtype) / last.astype(dtype)
        start = jnp.asarray(start_lr, dtype)
        end = jnp.asarray(end_lr, dtype)
        if mode == "exponential":
            value = start * jnp.exp(frac * jnp.log(end / start))
        else:
            value = start + (end - start) * frac
        return jnp.where(t == last, end, value).astype(dtype)

    return schedule


def step_size_for(
    num_examples: int, batch_size: int, *, epochs: float = 4, drop_last: bool = False
) -> int:
    """Smith's rule for the half-cycle length: a few epochs of updates.

    ``step_size = round(epochs * iterations_per_epoch)``, with
    ``iterations_per_epoch = ceil(num_examples / batch_size)`` (``floor`` when
    ``drop_last``). Smith recommends ``epochs`` between 2 and 10; the default 4
    sits inside that range.

    Args:
      num_examples: training-set size, a positive integer.
      batch_size: examples per update, a positive integer.
      epochs: epochs per half-cycle, positive.
      drop_last: whether the last partial batch of an epoch is dropped.

    Returns:
      The half-cycle length in updates, a Python int ``>= 1``.

    Raises:
      ValueError: for non-positive or non-integer sizes, ``epochs <= 0``, or
        ``drop_last`` with ``batch_size > num_examples``.

    Examples:
      >>> import clr_jax
      >>> clr_jax.step_size_for(50_000, 100, epochs=4)  # CIFAR-10, Smith's setup
      2000
    """
    n = v.check_step_count("num_examples", num_examples)
    b = v.check_step_count("batch_size", batch_size)
    v.check_positive("epochs", epochs)
    per_epoch = n // b if drop_last else math.ceil(n / b)
    if per_epoch == 0:
        raise ValueError(
            "`batch_size` must be <= `num_examples` when `drop_last=True`; got "
            f"batch_size={b}, num_examples={n}."
        )
    return max(1, round(float(epochs) * per_epoch))
