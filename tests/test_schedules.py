"""Every schedule against its float64 reference, plus one table of properties.

The registry below lists each schedule once (with several step sizes); every
property test runs over the whole registry.
"""

from __future__ import annotations

import contextlib
import functools
import json
import pickle
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clr_jax
from tests import reference as ref
from tests.helpers import TraceCounter


class Case(NamedTuple):
    name: str
    make: Callable[..., optax.Schedule]  # make(value, steps) -> schedule
    reference: Callable[[np.ndarray], np.ndarray]
    scale: float  # |max - base|, for the absolute tolerance
    boundaries: tuple[int, ...]
    value: float  # the hyperparameter that vmap/grad tests vary
    steps: int  # the integer hyperparameter that vmap tests vary


def _multiples(period: int, n: int = 9) -> tuple[int, ...]:
    return tuple(k * period for k in range(n))


def _cases() -> list[Case]:
    cases = []
    for s in (1, 2, 3, 1000, 2**20):
        cases += [
            Case(
                f"triangular-s{s}",
                lambda m, st: clr_jax.triangular(1e-3, m, st),
                functools.partial(ref.cyclical, base=1e-3, peak=6e-3, up=s),
                5e-3,
                _multiples(s),
                6e-3,
                s,
            ),
            Case(
                f"triangular-asym-s{s}",
                lambda m, st: clr_jax.triangular(
                    1e-3, m, st, step_size_down=2 * st + 1
                ),
                functools.partial(
                    ref.cyclical, base=1e-3, peak=6e-3, up=s, down=2 * s + 1
                ),
                5e-3,
                _multiples(3 * s + 1) + _multiples(3 * s + 1, 4)[1:] + (s, 4 * s + 1),
                6e-3,
                s,
            ),
            Case(
                f"triangular2-s{s}",
                lambda m, st: clr_jax.triangular2(0.1, m, st),
                functools.partial(ref.triangular2, base=0.1, peak=1.0, up=s),
                0.9,
                _multiples(s),
                1.0,
                s,
            ),
            Case(
                f"exp_range-s{s}",
                lambda m, st: clr_jax.exp_range(0.1, m, st, gamma=0.9999),
                functools.partial(
                    ref.exp_range, base=0.1, peak=1.0, up=s, gamma=0.9999
                ),
                0.9,
                _multiples(s),
                1.0,
                s,
            ),
            Case(
                f"cyclical_momentum-s{s}",
                lambda m, st: clr_jax.cyclical_momentum(0.85, m, st),
                functools.partial(ref.cyclical, base=0.95, peak=0.85, up=s),
                0.1,
                _multiples(s),
                0.95,
                s,
            ),
            Case(
                f"cosine_restarts-s{s}",
                lambda m, st: clr_jax.cosine_restarts(m, st, min_lr=1e-4),
                functools.partial(ref.cosine_restarts, peak=0.1, t0=s, min_lr=1e-4),
                0.1,
                _multiples(s),
                0.1,
                s,
            ),
            Case(
                f"cosine_restarts-mult2-decay-s{s}",
                lambda m, st: clr_jax.cosine_restarts(m, st, cycle_mult=2, decay=0.5),
                functools.partial(
                    ref.cosine_restarts, peak=0.1, t0=s, mult=2, decay=0.5
                ),
                0.1,
                tuple(s * (2**k - 1) for k in range(8)),
                0.1,
                s,
            ),
            Case(
                f"cosine_restarts-floor-mult2-decay-s{s}",
                lambda m, st: clr_jax.cosine_restarts(
                    m, st, min_lr=0.01, cycle_mult=2, decay=0.5
                ),
                functools.partial(
                    ref.cosine_restarts, peak=0.1, t0=s, min_lr=0.01, mult=2, decay=0.5
                ),
                0.1,
                tuple(s * (2**k - 1) for k in range(8)),
                0.1,
                s,
            ),
            Case(
                f"cosine_restarts-mult1.5-s{s}",
                lambda m, st: clr_jax.cosine_restarts(m, st, cycle_mult=1.5),
                functools.partial(ref.cosine_restarts, peak=0.1, t0=s, mult=1.5),
                0.1,
                tuple(int(s * (1.5**k - 1) / 0.5) for k in range(8)),
                0.1,
                s,
            ),
        ]
        for window in ("welch", "hann"):
            cases.append(
                Case(
                    f"cyclical-{window}-s{s}",
                    lambda m, st, w=window: clr_jax.cyclical(1e-3, m, st, window=w),
                    functools.partial(
                        ref.cyclical, base=1e-3, peak=6e-3, up=s, window=window
                    ),
                    5e-3,
                    _multiples(s),
                    6e-3,
                    s,
                )
            )
    for total in (10, 100, 2**20 + 3, 2**31 - 1):
        for anneal in ("cos", "linear"):
            for three in (False, True):
                ends = (int(0.3 * total) - 1, int(0.6 * total) - 2, total - 1, total)
                cases.append(
                    Case(
                        f"one_cycle-{total}-{anneal}-{'3' if three else '2'}phase",
                        lambda m, st, a=anneal, th=three: clr_jax.one_cycle(
                            m, st, anneal_strategy=a, three_phase=th
                        ),
                        functools.partial(
                            ref.one_cycle,
                            max_lr=0.1,
                            total=total,
                            anneal=anneal,
                            three_phase=three,
                        ),
                        0.1,
                        ends,
                        0.1,
                        total,
                    )
                )
                cases.append(
                    Case(
                        f"one_cycle_momentum-{total}-{anneal}-{3 if three else 2}phase",
                        lambda m, st, a=anneal, th=three: clr_jax.one_cycle_momentum(
                            st,
                            base_momentum=0.85,
                            max_momentum=m,
                            anneal_strategy=a,
                            three_phase=th,
                        ),
                        functools.partial(
                            ref.one_cycle,
                            max_lr=0.1,
                            total=total,
                            anneal=anneal,
                            three_phase=three,
                            momentum=(0.85, 0.95),
                        ),
                        0.1,
                        ends,
                        0.95,
                        total,
                    )
                )
    for n in (2, 3, 100, 2**31 - 1):
        cases += [
            Case(
                f"lr_sweep-exp-{n}",
                lambda m, st: clr_jax.lr_sweep(1e-7, m, st),
                functools.partial(ref.lr_sweep, start=1e-7, end=10.0, n=n),
                10.0,
                (n - 1,),
                10.0,
                n,
            ),
            Case(
                f"lr_sweep-linear-{n}",
                lambda m, st: clr_jax.lr_sweep(0.0, m, st, mode="linear"),
                functools.partial(
                    ref.lr_sweep, start=0.0, end=10.0, n=n, mode="linear"
                ),
                10.0,
                (n - 1,),
                10.0,
                n,
            ),
        ]
    return cases


CASES = _cases()
SMALL = [
    c for c in CASES if c.steps in (3, 100)
]  # one or two per family for the costlier properties
FAMILIES = [  # one case per schedule and option, for the costlier value tests
    c
    for c in SMALL
    if c.name.endswith("-s3")
    or c.name
    in (
        "one_cycle-100-cos-3phase",
        "one_cycle_momentum-100-linear-2phase",
        "lr_sweep-exp-100",
        "lr_sweep-linear-3",
    )
]
ONE_PER_CLASS = [  # each value class and cycle-start mode once
    c
    for c in FAMILIES
    if c.name
    in (
        "triangular-asym-s3",
        "exp_range-s3",
        "cosine_restarts-s3",
        "cosine_restarts-mult1.5-s3",
        "one_cycle-100-cos-3phase",
        "one_cycle_momentum-100-linear-2phase",
        "lr_sweep-exp-100",
    )
]
ids = lambda cases: [c.name for c in cases]  # noqa: E731


def _build(case: Case, value=None, steps=None):
    return case.make(
        case.value if value is None else value, case.steps if steps is None else steps
    )


def _grid(case: Case) -> np.ndarray:
    return ref.boundary_grid(case.boundaries, extra=range(0, 40))


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_matches_float64_reference_under_jit(case):
    counts = _grid(case)
    got = jax.jit(_build(case))(jnp.asarray(counts, jnp.int32))
    want = case.reference(counts)
    np.testing.assert_allclose(
        np.asarray(got, np.float64), want, rtol=1e-6, atol=1e-6 * case.scale
    )


@pytest.mark.parametrize("case", SMALL, ids=ids(SMALL))
def test_float64_under_x64(case):
    with jax.enable_x64(True):
        counts = _grid(case)
        got = jax.jit(_build(case))(jnp.asarray(counts, jnp.int64))
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(
            np.asarray(got), case.reference(counts), rtol=1e-12, atol=1e-12 * case.scale
        )


def test_huge_counts_are_exact_where_float32_phase_is_not():
    sched = clr_jax.triangular(0.0, 1.0, 3)
    counts = np.asarray([2**24 + 1, 2**24 + 2, 2**31 - 1])
    np.testing.assert_allclose(
        sched(jnp.asarray(counts, jnp.int32)),
        ref.cyclical(counts, 0.0, 1.0, 3),
        atol=1e-7,
    )
    # A float32 phase gets these wrong (2**24 + 1 rounds to 2**24).
    assert float(jnp.float32(2**24 + 1)) == 2**24


# ---------------------------------------------------------------------------
# Properties every schedule has
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", SMALL, ids=ids(SMALL))
def test_shapes_and_dtype(case):
    sched = _build(case)
    assert sched(0).shape == () and sched(0).dtype == jnp.float32
    counts = jnp.arange(6, dtype=jnp.int32).reshape(2, 3)
    out = sched(counts)
    assert out.shape == (2, 3) and out.dtype == jnp.float32
    np.testing.assert_allclose(
        out.ravel(), [sched(int(c)) for c in counts.ravel()], rtol=1e-6
    )


@pytest.mark.parametrize("case", SMALL, ids=ids(SMALL))
def test_no_recompilation_across_counts(case):
    sched = TraceCounter(_build(case))
    f = jax.jit(sched)
    for count in (0, 1, 7, 2**24 + 1, 2**31 - 1):
        f(jnp.int32(count))
    assert sched.count == 1


@pytest.mark.parametrize("case", SMALL, ids=ids(SMALL))
def test_vmap_over_value_compiles_once(case):
    traced = TraceCounter(
        lambda values, count: jax.vmap(lambda x: _build(case, value=x)(count))(values)
    )
    many = jax.jit(traced)

    values = jnp.asarray([0.5, 0.8, 1.0]) * case.value
    for count in (0, 5, case.steps):
        got = many(values, jnp.int32(count))
        want = [_build(case, value=float(x))(count) for x in values]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    many(values * 0.9, jnp.int32(1))
    assert traced.count == 1


@pytest.mark.parametrize("case", SMALL, ids=ids(SMALL))
def test_vmap_over_integer_steps_compiles_once(case):
    traced = TraceCounter(
        lambda steps, count: jax.vmap(lambda st: _build(case, steps=st)(count))(steps)
    )
    many = jax.jit(traced)

    steps = jnp.asarray([case.steps, case.steps + 1, 2 * case.steps + 3], jnp.int32)
    for count in (0, 3, 2 * case.steps + 1):
        got = many(steps, jnp.int32(count))
        want = [_build(case, steps=int(st))(count) for st in steps]
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    assert traced.count == 1


@pytest.mark.parametrize("case", SMALL, ids=ids(SMALL))
def test_grad_with_respect_to_value(case):
    with jax.enable_x64(True):
        count = case.steps // 2 + 1
        f = lambda x: _build(case, value=x)(count)  # noqa: E731
        grad = jax.grad(f)(jnp.float64(case.value))
        eps = 1e-6 * case.value
        numeric = (f(case.value + eps) - f(case.value - eps)) / (2 * eps)
        assert np.isfinite(grad)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("case", SMALL, ids=ids(SMALL))
def test_constant_size_jaxpr(case):
    """The program does not grow with the number of cycles (a few dozen ops)."""
    eqns = len(jax.make_jaxpr(_build(case))(jnp.int32(5)).eqns)
    assert eqns < 80


@pytest.mark.parametrize("case", SMALL, ids=ids(SMALL))
def test_inside_scan_and_inject_hyperparams(case):
    sched = _build(case)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=sched)
    params = jnp.zeros(2)

    def step(state, _):
        _, state = opt.update(jnp.ones(2), state, params)
        return state, state.hyperparams["learning_rate"]

    _, lrs = jax.lax.scan(step, opt.init(params), None, length=12)
    # The hyperparameter after update t is the value for count t.
    np.testing.assert_allclose(lrs, sched(jnp.arange(12)), rtol=1e-6)


def test_inside_join_schedules_and_sgd():
    warm = optax.linear_schedule(0.0, 1e-3, 10)
    sched = optax.join_schedules([warm, clr_jax.triangular(1e-3, 6e-3, 5)], [10])
    np.testing.assert_allclose(
        [sched(t) for t in (10, 15, 20)], [1e-3, 6e-3, 1e-3], rtol=1e-6
    )
    opt = optax.sgd(clr_jax.cosine_restarts(0.1, 4))
    state = opt.init(jnp.ones(1))
    updates, _ = opt.update(jnp.ones(1), state)
    np.testing.assert_allclose(updates, [-0.1], rtol=1e-6)


def test_cost_does_not_grow_with_cycles_unlike_sgdr():
    def eqns(schedule):
        return len(jax.make_jaxpr(schedule)(jnp.int32(0)).eqns)

    restarts = clr_jax.cosine_restarts
    # 2**31 cycles in int32 range cost what a few hundred do...
    assert eqns(restarts(1.0, 1)) == eqns(restarts(1.0, 10**7))
    # ...and so do thousands of geometric cycles (one binary search).
    assert eqns(restarts(1.0, 1, cycle_mult=1.01)) == eqns(
        restarts(1.0, 10**7, cycle_mult=1.01)
    )

    def sgdr(cycles):
        kw = [
            dict(init_value=0.0, peak_value=1.0, warmup_steps=0, decay_steps=10)
        ] * cycles
        return len(jax.make_jaxpr(optax.sgdr_schedule(kw))(jnp.int32(0)).eqns)

    assert sgdr(20) > 5 * sgdr(2)


# ---------------------------------------------------------------------------
# Semantics worth stating on their own
# ---------------------------------------------------------------------------


def test_inverted_wave_is_allowed():
    sched = clr_jax.triangular(0.9, 0.1, 4)
    np.testing.assert_allclose(
        [sched(0), sched(4), sched(8)], [0.9, 0.1, 0.9], rtol=1e-6
    )


def test_window_callable():
    sched = clr_jax.cyclical(0.0, 1.0, 4, window=lambda h: h**3)
    np.testing.assert_allclose(sched(2), 0.125, rtol=1e-6)


def test_scale_fn_iterations_receives_the_count():
    sched = clr_jax.cyclical(
        0.0, 1.0, 10, scale_fn=lambda t: 1.0 / (1.0 + t), scale_mode="iterations"
    )
    np.testing.assert_allclose(sched(10), 1.0 / 11.0, rtol=1e-6)


def test_lr_sweep_reaches_end_exactly():
    for start, end, n in ((1e-7, 10.0, 100), (3e-5, 0.7, 37), (1e-3, 1e-1, 2)):
        assert float(clr_jax.lr_sweep(start, end, n)(n - 1)) == float(jnp.float32(end))


def test_non_integer_cycle_mult_is_continuous_form():
    sched = clr_jax.cosine_restarts(
        1.0, 2, cycle_mult=1.5
    )  # starts 0, 2, 5, 9.5, 16.25
    np.testing.assert_allclose(
        sched(10), 0.5 + 0.5 * np.cos(np.pi * 0.5 / 6.75), rtol=1e-6
    )


def test_traced_cycle_mult_matches_concrete():
    f = jax.jit(
        lambda m, c: clr_jax.cosine_restarts(1.0, 7, cycle_mult=m, decay=0.8)(c)
    )
    counts = jnp.arange(0, 400, dtype=jnp.int32)
    for mult in (1.0, 1.5, 2.0, 3.0):
        np.testing.assert_allclose(
            f(jnp.float32(mult), counts),
            clr_jax.cosine_restarts(1.0, 7, cycle_mult=mult, decay=0.8)(counts),
            atol=2e-6,
        )


def test_vmap_over_gamma_and_pct_start():
    counts = jnp.arange(0, 200, 7, dtype=jnp.int32)
    gammas = jnp.asarray([0.99, 0.995, 1.0])
    got = jax.jit(jax.vmap(lambda g: clr_jax.exp_range(0.1, 1.0, 10, g)(counts)))(
        gammas
    )
    for row, g in zip(got, (0.99, 0.995, 1.0), strict=True):
        want = ref.exp_range(np.asarray(counts), 0.1, 1.0, 10, g)
        np.testing.assert_allclose(row, want, rtol=2e-6)
    pcts = jnp.asarray([0.2, 0.3, 0.45])
    got = jax.vmap(lambda p: clr_jax.one_cycle(0.1, 100, pct_start=p)(counts))(pcts)
    for row, p in zip(got, (0.2, 0.3, 0.45), strict=True):
        want = ref.one_cycle(np.asarray(counts), 0.1, 100, pct_start=p)
        np.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-7)


def test_step_size_for():
    assert clr_jax.step_size_for(50_000, 100) == 2000
    assert clr_jax.step_size_for(1797, 128, epochs=2) == 30
    assert clr_jax.step_size_for(1797, 128, epochs=2, drop_last=True) == 28


def test_float_count_is_rejected():
    with pytest.raises(TypeError, match="count"):
        clr_jax.triangular(0.1, 1.0, 4)(jnp.float32(3.0))


# ---------------------------------------------------------------------------
# Bad input: ValueError naming the argument, the rule and the value
# ---------------------------------------------------------------------------

BAD = [
    (clr_jax.triangular, (0.1, 1.0, 0), {}, "step_size", "0"),
    (clr_jax.triangular, (0.1, 1.0, 2.5), {}, "step_size", "2.5"),
    (clr_jax.triangular, (0.1, 1.0, -3), {}, "step_size", "-3"),
    (clr_jax.triangular, (0.1, 1.0, 3), {"step_size_down": 0}, "step_size_down", "0"),
    (clr_jax.triangular, (float("nan"), 1.0, 3), {}, "base_lr", "nan"),
    (clr_jax.triangular, (0.1, float("inf"), 3), {}, "max_lr", "inf"),
    (clr_jax.triangular, (-0.1, 1.0, 3), {}, "base_lr", "-0.1"),
    (clr_jax.triangular, (0.1, 1.0, 3), {"window": "blackman"}, "window", "blackman"),
    (
        clr_jax.triangular,
        (0.1, 1.0, 3),
        {"window": lambda h: 2 * h},
        "window",
        "[0, 1]",
    ),
    (clr_jax.triangular, (0.1, 1.0, 2**31 - 1), {}, "step_size", "2147483647"),
    (clr_jax.cyclical, (0.1, 1.0, 3), {"scale_mode": "epoch"}, "scale_mode", "epoch"),
    (clr_jax.exp_range, (0.1, 1.0, 3, 0.0), {}, "gamma", "0.0"),
    (clr_jax.exp_range, (0.1, 1.0, 3, 1.5), {}, "gamma", "1.5"),
    (clr_jax.cyclical_momentum, (0.85, 1.2, 3), {}, "max_momentum", "1.2"),
    (clr_jax.cosine_restarts, (0.1, 0), {}, "cycle_steps", "0"),
    (clr_jax.cosine_restarts, (0.1, 10), {"cycle_mult": 0.5}, "cycle_mult", "0.5"),
    (clr_jax.cosine_restarts, (0.1, 10), {"decay": 0.0}, "decay", "0.0"),
    (clr_jax.cosine_restarts, (0.1, 10), {"min_lr": -1.0}, "min_lr", "-1.0"),
    (clr_jax.one_cycle, (0.1, 0), {}, "total_steps", "0"),
    (clr_jax.one_cycle, (0.1, 100), {"pct_start": 1.0}, "pct_start", "1.0"),
    (clr_jax.one_cycle, (0.1, 100), {"pct_start": 0.0}, "pct_start", "0.0"),
    (clr_jax.one_cycle, (0.1, 3), {}, "pct_start", "0.3"),
    (
        clr_jax.one_cycle,
        (0.1, 100),
        {"anneal_strategy": "exp"},
        "anneal_strategy",
        "exp",
    ),
    (clr_jax.one_cycle, (0.1, 100), {"div_factor": 0.0}, "div_factor", "0.0"),
    (
        clr_jax.one_cycle,
        (0.1, 100),
        {"three_phase": True, "pct_start": 0.6},
        "pct_start",
        "0.6",
    ),
    (
        clr_jax.one_cycle_momentum,
        (100,),
        {"base_momentum": -0.1},
        "base_momentum",
        "-0.1",
    ),
    (clr_jax.lr_sweep, (1e-7, 10.0, 1), {}, "num_steps", "1"),
    (clr_jax.lr_sweep, (0.0, 10.0, 100), {}, "start_lr", "0.0"),
    (clr_jax.lr_sweep, (1e-7, 10.0, 100), {"mode": "log"}, "mode", "log"),
    (clr_jax.lr_sweep, (-1.0, 10.0, 100), {"mode": "linear"}, "start_lr", "-1.0"),
    (clr_jax.step_size_for, (1000, 0), {}, "batch_size", "0"),
    (clr_jax.step_size_for, (1000, 10), {"epochs": 0}, "epochs", "0"),
    # F3: finite in float64 but not in the float32 the schedule computes in
    (clr_jax.triangular, (0.0, 1e39, 10), {}, "max_lr", "1e+39"),
    (clr_jax.lr_sweep, (1e-46, 1.0, 10), {}, "start_lr", "1e-46"),
    (clr_jax.lr_sweep, (1e-40, 1.0, 10), {}, "start_lr", "1e-40"),  # subnormal
    (clr_jax.exp_range, (0.1, 1.0, 3, 1e-50), {}, "gamma", "1e-50"),
    (clr_jax.one_cycle, (1e38, 100), {"div_factor": 1e-3}, "div_factor", "0.001"),
    (
        clr_jax.one_cycle,
        (0.1, 100),
        {"final_div_factor": 1e-45},
        "final_div_factor",
        "1e-45",
    ),
    # F5, and the floor
    (clr_jax.cosine_restarts, (1.0, 1), {"decay": 1.5}, "decay", "1.5"),
    (clr_jax.cosine_restarts, (0.001, 10), {"min_lr": 0.01}, "max_lr", "0.001"),
    # F8: an array with a shape, empty or not
    (clr_jax.triangular, (np.array([]), 6e-3, 20), {}, "base_lr", "(0,)"),
    (clr_jax.triangular, (1e-3, jnp.array([6e-3, 7e-3]), 20), {}, "max_lr", "(2,)"),
    (clr_jax.one_cycle, (0.1, np.array([100])), {}, "total_steps", "(1,)"),
    # F11: flags are real bools
    (clr_jax.one_cycle, (0.1, 100), {"three_phase": "False"}, "three_phase", "False"),
    (clr_jax.one_cycle_momentum, (100,), {"three_phase": 1}, "three_phase", "1"),
    (clr_jax.step_size_for, (100, 10), {"drop_last": "no"}, "drop_last", "no"),
    # F6: callables checked on probes
    (clr_jax.cyclical, (0.0, 1.0, 10), {"scale_fn": lambda c: c**2}, "scale_fn", "4.0"),
    (
        clr_jax.cyclical,
        (0.0, 1.0, 10),
        {"scale_fn": lambda c: -1 / c},
        "scale_fn",
        "-1",
    ),
    (
        clr_jax.cyclical,
        (0.0, 1.0, 10),
        {"scale_fn": jnp.log, "scale_mode": "iterations"},
        "scale_fn",
        "-inf",
    ),
    (clr_jax.cyclical, (0.0, 1.0, 10), {"scale_fn": "half"}, "scale_fn", "half"),
    (clr_jax.triangular, (0.0, 1.0, 10), {"window": 3}, "window", "3"),
    # momentum modes
    (clr_jax.cyclical_momentum, (0.85, 0.95, 3), {"mode": "exp"}, "mode", "exp"),
    (clr_jax.cyclical_momentum, (0.85, 0.95, 3), {"gamma": 0.9}, "gamma", "0.9"),
]

BAD_TYPES = [  # F8 and friends: not a number at all
    (clr_jax.triangular, ([0.001], 6e-3, 20), {}, "base_lr", "[0.001]"),
    (clr_jax.triangular, (0.001, "0.006", 20), {}, "max_lr", "'0.006'"),
    (clr_jax.triangular, (True, 1.0, 20), {}, "base_lr", "True"),
    (clr_jax.triangular, (0.0, 1.0, [20]), {}, "step_size", "[20]"),
    (clr_jax.one_cycle, (0.1, 100), {"pct_start": [0.3]}, "pct_start", "[0.3]"),
    (clr_jax.cosine_restarts, (0.1, 10), {"cycle_mult": 2j}, "cycle_mult", "2j"),
    (clr_jax.cyclical_momentum, (0.85, None, 3), {}, "max_momentum", "None"),
    (clr_jax.lr_sweep, (1e-3, 1.0, (10,)), {}, "num_steps", "(10,)"),
    (clr_jax.step_size_for, (1000, 10), {"epochs": [4]}, "epochs", "[4]"),
]


@pytest.mark.parametrize(("factory", "args", "kwargs", "name", "value"), BAD)
def test_bad_input_names_argument_and_value(factory, args, kwargs, name, value):
    with pytest.raises(ValueError, match=f"`{name}`") as err:
        factory(*args, **kwargs)
    assert value in str(err.value)


@pytest.mark.parametrize(("factory", "args", "kwargs", "name", "value"), BAD_TYPES)
def test_bad_type_names_argument_and_value(factory, args, kwargs, name, value):
    with pytest.raises(TypeError, match=f"`{name}`") as err:
        factory(*args, **kwargs)
    assert value in str(err.value)


def test_scalars_and_zero_d_arrays_are_accepted():
    want = clr_jax.triangular(1e-3, 6e-3, 20)(7)
    for wrap in (float, np.float32, np.asarray, jnp.asarray):
        got = clr_jax.triangular(wrap(1e-3), wrap(6e-3), np.int64(20))(7)
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_traced_hyperparameters_must_be_scalars():
    with pytest.raises(ValueError, match=r"`max_lr`.*shape \(2,\)"):
        jax.jit(lambda m: clr_jax.triangular(1e-3, m, 20)(3))(jnp.ones(2))


def test_under_x64_float64_hyperparameters_are_accepted():
    with jax.enable_x64(True):
        sched = clr_jax.triangular(0.0, 1e39, 10)
        assert float(sched(5)) == pytest.approx(5e38)


def test_traced_values_are_not_validated_or_branched_on():
    # Under jit the bounds are tracers: construction must not raise or branch.
    f = jax.jit(lambda lo, hi: clr_jax.triangular(lo, hi, 4)(jnp.int32(2)))
    np.testing.assert_allclose(f(0.1, 0.5), 0.3, rtol=1e-6)


def test_traced_float_step_size_is_a_type_error():
    with pytest.raises(TypeError, match="step_size"):
        jax.jit(lambda s: clr_jax.triangular(0.1, 1.0, s)(3))(jnp.float32(4.0))


# ---------------------------------------------------------------------------
# Schedules as values: pytree, repr, equality, pickling, configs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_round_trips_through_json_pickle_and_repr(case):
    sched = _build(case)
    config = json.loads(json.dumps(sched.to_dict()))
    rebuilt = clr_jax.schedule_from_dict(config)
    assert rebuilt == sched and hash(rebuilt) == hash(sched)
    assert pickle.loads(pickle.dumps(sched)) == sched
    assert eval(repr(sched), vars(clr_jax)) == sched  # repr reads like the call


@pytest.mark.parametrize("case", ONE_PER_CLASS, ids=ids(ONE_PER_CLASS))
def test_jit_argument_traces_once_and_stacks_under_vmap(case):
    traced = TraceCounter(lambda sched, count: sched(count))
    evaluate = jax.jit(traced)
    counts = jnp.arange(0, 3 * case.steps + 7, dtype=jnp.int32)
    schedules = [
        _build(case, value=case.value * x, steps=case.steps + k)
        for x, k in ((1.0, 0), (0.8, 1), (0.6, 3))
    ]
    want = np.stack([np.asarray(s(counts)) for s in schedules])
    for sched, row in zip(schedules, want, strict=True):
        np.testing.assert_allclose(evaluate(sched, counts), row, rtol=2e-6, atol=1e-8)
    assert traced.count == 1  # new max_lr and step sizes, one compilation

    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *schedules)
    got = jax.vmap(lambda sched: sched(counts))(stacked)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-8)


def test_jit_argument_traces_once_for_triangular_max_lr():
    traced = TraceCounter(lambda sched, count: sched(count))
    evaluate = jax.jit(traced)
    for max_lr in (6e-3, 8e-3, 1e-2):
        sched = clr_jax.triangular(1e-3, max_lr, 2000)
        np.testing.assert_allclose(evaluate(sched, 2000), max_lr, rtol=1e-6)
    assert traced.count == 1


def test_equality_and_hash_go_by_value():
    a = clr_jax.triangular(1e-3, 6e-3, 2000)
    b = clr_jax.triangular(0.001, 0.006, step_size=2000.0)
    assert a == b and hash(a) == hash(b) and {a: "run"}[b] == "run"
    assert a != clr_jax.triangular(1e-3, 7e-3, 2000)
    assert a != clr_jax.triangular(1e-3, 6e-3, 2000, window="hann")
    assert a != clr_jax.triangular2(1e-3, 6e-3, 2000)
    arrays = [clr_jax.triangular(1e-3, x(6e-3), 20) for x in (np.float32, jnp.float32)]
    assert arrays[0] == arrays[1] and hash(arrays[0]) == hash(arrays[1])

    def inside_jit(max_lr):
        sched = clr_jax.triangular(1e-3, max_lr, 20)
        assert sched == clr_jax.triangular(1e-3, max_lr, 20)  # the same tracer
        assert sched != clr_jax.triangular(1e-3, max_lr * 1.0, 20)  # another one
        hash(sched)
        return sched(5)

    jax.jit(inside_jit)(6e-3)


def test_hyperparameters_are_leaves_and_settings_static():
    sched = clr_jax.triangular(1e-3, 6e-3, 2000, window="hann")
    paths = jax.tree_util.tree_flatten_with_path(sched)[0]
    assert [jax.tree_util.keystr(p) for p, _ in paths] == [
        ".base_lr",
        ".max_lr",
        ".step_size",
        ".step_size_down",
    ]
    assert jax.tree.leaves(sched) == [1e-3, 6e-3, 2000, 2000]
    decay = optax.cosine_decay_schedule(6e-3, 10_000)
    assert jax.tree.leaves(clr_jax.triangular(1e-3, decay, 20)) == [1e-3, 20, 20]
    nested = clr_jax.triangular(1e-3, clr_jax.lr_sweep(1e-3, 1e-2, 9, mode="linear"), 4)
    assert jax.tree.leaves(nested) == [1e-3, 1e-3, 1e-2, 9, 4, 4]
    with pytest.raises(AttributeError, match="immutable"):
        sched.max_lr = 1.0


def test_unflattening_does_not_rerun_the_checks():
    sched = clr_jax.triangular(1e-3, 6e-3, 10)
    # A negative rate, which no constructor accepts:
    negated = jax.tree.map(lambda x: -x if isinstance(x, float) else x, sched)
    assert float(negated(0)) == pytest.approx(-1e-3)
    holes = jax.tree.unflatten(jax.tree.structure(sched), [None] * 4)
    assert holes.max_lr is None


def test_repr_reads_like_the_call():
    decay = optax.cosine_decay_schedule(6e-3, 10_000)
    cases = {
        clr_jax.triangular(1e-3, 6e-3, 2000): (
            "triangular(base_lr=0.001, max_lr=0.006, step_size=2000)"
        ),
        clr_jax.triangular2(1e-3, 6e-3, 20, step_size_down=30, window="hann"): (
            "triangular2(base_lr=0.001, max_lr=0.006, step_size=20, "
            "step_size_down=30, window='hann')"
        ),
        clr_jax.exp_range(0.0, 1.0, 10, 0.99): (
            "exp_range(base_lr=0.0, max_lr=1.0, step_size=10, gamma=0.99)"
        ),
        clr_jax.cyclical_momentum(0.85, 0.95, 10, mode="exp_range", gamma=0.9): (
            "cyclical_momentum(base_momentum=0.85, max_momentum=0.95, step_size=10, "
            "mode='exp_range', gamma=0.9)"
        ),
        clr_jax.one_cycle(0.1, 100, three_phase=True): (
            "one_cycle(max_lr=0.1, total_steps=100, three_phase=True)"
        ),
        clr_jax.triangular(1e-3, decay, 20): (
            "triangular(base_lr=0.001, "
            "max_lr=cosine_decay_schedule.<locals>.schedule, step_size=20)"
        ),
    }
    for sched, text in cases.items():
        assert repr(sched) == text


def _cube(h):
    return h**3


def test_pickling_names_the_callable_that_cannot_be_pickled():
    assert pickle.loads(pickle.dumps(clr_jax.cyclical(0, 1, 4, window=_cube)))(2) == (
        pytest.approx(0.125)
    )
    lam = clr_jax.cyclical(0.0, 1.0, 4, window=lambda h: h**3)
    with pytest.raises(pickle.PicklingError, match=r"`window`.*lambda"):
        pickle.dumps(lam)
    closure = clr_jax.triangular(1e-3, optax.cosine_decay_schedule(6e-3, 10), 4)
    with pytest.raises(pickle.PicklingError, match="`max_lr`"):
        pickle.dumps(closure)


def test_configs_refuse_what_json_cannot_hold():
    closure = clr_jax.triangular(1e-3, optax.cosine_decay_schedule(6e-3, 10), 4)
    with pytest.raises(TypeError, match="`max_lr`"):
        closure.to_dict()
    with pytest.raises(TypeError, match="`window`"):
        clr_jax.cyclical(0.0, 1.0, 4, window=_cube).to_dict()
    with pytest.raises(ValueError, match=r"config\['schedule'\].*sgdr"):
        clr_jax.schedule_from_dict({"schedule": "sgdr"})
    with pytest.raises(TypeError, match="'schedule' key"):
        clr_jax.schedule_from_dict({"max_lr": 0.1})
    with pytest.raises(ValueError, match="`max_lr`"):
        clr_jax.schedule_from_dict(
            {"schedule": "triangular", "base_lr": 0, "max_lr": -1, "step_size": 4}
        )


def test_replace_builds_a_checked_copy():
    sched = clr_jax.exp_range(1e-3, 6e-3, 20, gamma=0.99)
    assert sched.replace(max_lr=0.01) == clr_jax.exp_range(1e-3, 0.01, 20, 0.99)
    with pytest.raises(ValueError, match="`gamma`"):
        sched.replace(gamma=1.5)


# ---------------------------------------------------------------------------
# Composition: bounds that are schedules
# ---------------------------------------------------------------------------


def test_a_bound_schedule_gives_a_decaying_peak():
    decay = optax.cosine_decay_schedule(6e-3, 10_000)
    sched = clr_jax.triangular(1e-3, decay, 2000)
    counts = np.arange(0, 12_000, 37)
    peak = np.asarray(decay(jnp.asarray(counts)), np.float64)
    want = 1e-3 + (peak - 1e-3) * ref.cyclical(counts, 0.0, 1.0, 2000)
    np.testing.assert_allclose(sched(counts), want, rtol=1e-5, atol=1e-9)


def test_nested_clr_jax_bounds_compose_and_stay_leaves():
    ramp = clr_jax.lr_sweep(0.1, 0.05, 100, mode="linear")
    counts = jnp.arange(120)
    np.testing.assert_allclose(
        clr_jax.one_cycle(ramp, 100)(counts),
        ramp(counts) * clr_jax.one_cycle(1.0, 100)(counts),
        rtol=2e-6,
    )
    np.testing.assert_allclose(
        clr_jax.cosine_restarts(ramp, 7, cycle_mult=2)(counts),
        ramp(counts) * clr_jax.cosine_restarts(1.0, 7, cycle_mult=2)(counts),
        rtol=2e-6,
    )
    traced = TraceCounter(lambda sched, count: sched(count))
    evaluate = jax.jit(traced)
    for end in (0.05, 0.02):
        sched = clr_jax.one_cycle(clr_jax.lr_sweep(0.1, end, 100), 100)
        np.testing.assert_allclose(evaluate(sched, counts), sched(counts), rtol=1e-6)
    assert traced.count == 1


def test_bound_schedules_are_checked_on_a_probe():
    with pytest.raises(ValueError, match=r"`max_lr`.*-0\.1"):
        clr_jax.triangular(0.0, lambda c: jnp.full(c.shape, -0.1), 10)
    with pytest.raises(ValueError, match="`base_lr` must accept an array"):
        clr_jax.triangular(lambda c: 0.1 if c < 10 else 0.01, 1.0, 10)
    below_floor = clr_jax.lr_sweep(1e-3, 1e-2, 10)
    with pytest.raises(ValueError, match=r"`max_lr`.*count=0"):
        clr_jax.cosine_restarts(below_floor, 10, min_lr=5e-3)


# ---------------------------------------------------------------------------
# Counts (F1, F2): widened, range-checked, clipped when traced
# ---------------------------------------------------------------------------

INT_DTYPES = [np.int8, np.int16, np.uint8, np.uint16, np.uint32, np.int64, np.uint64]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_concrete_counts_of_any_integer_dtype_are_widened(dtype):
    tri = clr_jax.triangular(1e-3, 6e-3, 2000)
    cycle = clr_jax.one_cycle(0.1, 100_000)
    for count in (0, 5, 127):
        assert float(tri(dtype(count))) == float(tri(count))
        assert float(cycle(dtype(count))) == float(cycle(count))
    assert float(tri(np.int8(0))) == float(np.float32(1e-3))  # F1: was 0.00076


def test_traced_narrow_counts_are_widened():
    sched = clr_jax.lr_sweep(1e-3, 1.0, 1000)
    for dtype in (jnp.int8, jnp.int16, jnp.uint8, jnp.uint16):
        assert float(jax.jit(sched)(jnp.asarray(100, dtype))) == float(sched(100))


@pytest.mark.parametrize(
    "count",
    [np.int64(2**32 + 5), np.int64(2**31), 2**31, np.uint32(2**31), [0, 2**40]],
    ids=["int64-wraps-to-5", "int64-2**31", "python-2**31", "uint32", "list"],
)
def test_counts_past_int32_are_refused(count):
    with pytest.raises(ValueError, match=r"`count` must be <= 2\*\*31 - 1"):
        clr_jax.triangular2(1e-3, 6e-3, 50)(count)


def test_counts_past_int32_are_refused_under_x64_and_clipped_when_traced():
    with jax.enable_x64(True):
        sched = clr_jax.cosine_restarts(0.1, 1000, cycle_mult=2)
        for count in (2**32 - 1, np.int64(2**32 - 1), jnp.int64(2**32 - 1)):
            with pytest.raises(ValueError, match="4294967295"):
                sched(count)
        last = ref.cosine_restarts([2**31 - 1], 0.1, 1000, mult=2)
        np.testing.assert_allclose(sched(2**31 - 1), last, rtol=1e-12)
        traced = jax.jit(sched)(jnp.int64(2**32 - 1))
        np.testing.assert_allclose(traced, last, rtol=1e-12)  # clipped to 2**31 - 1


def test_negative_counts_give_the_value_at_zero():
    sched = clr_jax.exp_range(1e-3, 6e-3, 2000, gamma=0.99)
    at_zero = float(sched(0))
    assert float(sched(-2000)) == at_zero  # F2: was 2.7e6
    assert float(sched(np.int64(-(2**32) + 5))) == at_zero  # not wrapped to 5
    traced = jax.jit(sched)(jnp.asarray([-5, -1, 0], jnp.int32))
    np.testing.assert_array_equal(traced, [at_zero] * 3)
    # optax.join_schedules evaluates later pieces at step - boundary < 0.
    joined = optax.join_schedules(
        [optax.linear_schedule(0.0, 1e-3, 10), clr_jax.triangular(1e-3, 6e-3, 5)],
        [10],
    )
    got = [float(joined(t)) for t in (0, 5, 10, 15)]
    np.testing.assert_allclose(got, [0.0, 5e-4, 1e-3, 6e-3], rtol=1e-6)


def test_traced_unsigned_counts_are_clipped():
    sched = clr_jax.triangular(0.0, 1.0, 3)
    got = jax.jit(sched)(jnp.asarray(2**32 - 1, jnp.uint32))
    assert float(got) == float(sched(2**31 - 1))


# ---------------------------------------------------------------------------
# Callables (F6), exactness (F4, F7) and eager compilation (F12)
# ---------------------------------------------------------------------------


def _spikes_off_the_257_grid(h):
    """A window that is fine on the old 257-point probe and 5.0 between."""
    on_grid = jnp.abs(h * 256 - jnp.round(h * 256)) < 1e-6
    return jnp.where(on_grid, h, 5.0)


def test_window_probe_covers_every_height_and_dense_edges():
    for step_size in (2000, 2**20):
        with pytest.raises(ValueError, match=r"`window`.*5\.0"):
            clr_jax.triangular(1e-3, 6e-3, step_size, window=_spikes_off_the_257_grid)
    # one bad height among the 2000 a cycle uses is caught
    bad_height = np.float32(1234) / np.float32(2000)

    def one_bad(h):
        return jnp.where(h == bad_height, 1.5, h)

    with pytest.raises(ValueError, match=r"h=0\.617"):
        clr_jax.triangular(1e-3, 6e-3, 2000, window=one_bad)
    clr_jax.triangular(1e-3, 6e-3, 2000, step_size_down=7, window=jnp.sqrt)


def test_scale_fn_receives_floats():
    seen = []

    def scale(x):
        seen.append(x.dtype)
        return 1.0 / (1.0 + x * x)  # x * x overflows in int32 at x = 46341

    sched = clr_jax.cyclical(0.0, 1.0, 1, scale_fn=scale, scale_mode="iterations")
    assert seen and all(jnp.issubdtype(d, jnp.floating) for d in seen)
    np.testing.assert_allclose(sched(2**31 - 1), 1.0 / (1.0 + (2.0**31 - 1) ** 2))


def test_cycle_mult_near_one_builds_in_bounded_time_and_memory():
    for mult in (1.000000001, 1.0 + 2**-52):  # F4: the table grew past 8 GB
        sched = clr_jax.cosine_restarts(0.1, 1, cycle_mult=mult)
        assert sum(np.size(leaf) for leaf in jax.tree.leaves(sched)) < 16
        values = np.asarray(sched(jnp.asarray([0, 1, 2, 10, 2**31 - 1])))
        assert np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= 0.1))
    # longer cycles keep the exact table: 2928 cycles, padded to 4096 entries
    sched = clr_jax.cosine_restarts(0.1, 1000, cycle_mult=1.003)
    assert max(np.size(leaf) for leaf in jax.tree.leaves(sched)) == 4096
    counts = np.asarray([0, 999, 1000, 1001, 2002, 2003, 2004, 5_000_000, 2**31 - 1])
    want = ref.cosine_restarts(counts, 0.1, 1000, mult=1.003)
    np.testing.assert_allclose(sched(counts), want, rtol=1e-6, atol=1e-7)


def test_three_phase_one_cycle_phase_ends_are_integer_exact():
    total = 2**30
    sched = clr_jax.one_cycle(0.1, total, pct_start=0.5, three_phase=True)
    counts = np.asarray(
        [0, 2**29 - 2, 2**29 - 1, 2**29, 2**30 - 3, 2**30 - 2, total - 1]
    )
    want = ref.one_cycle(counts, 0.1, total, pct_start=0.5, three_phase=True)
    np.testing.assert_allclose(sched(counts), want, rtol=1e-6, atol=1e-12)
    assert float(sched(total - 1)) == pytest.approx(4e-7, rel=1e-6)  # F7: was 0.004
    as_argument = jax.jit(lambda s, c: s(c))(sched, jnp.asarray(counts, jnp.int32))
    np.testing.assert_allclose(as_argument, want, rtol=1e-6, atol=1e-12)


@contextlib.contextmanager
def _backend_compiles():
    events = []

    def listener(name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("case", FAMILIES, ids=ids(FAMILIES))
def test_eager_calls_compile_once(case):
    sched = _build(case)
    sched(1)  # warm-up: every operation compiles once
    with _backend_compiles() as compiles:
        for cycle in range(2, 60, 3):  # F12: triangular2 compiled once per cycle
            sched(cycle * 2 * case.steps + 1)
        seen = len(compiles)
        jax.jit(lambda x: x * 1.2345)(jnp.float32(1.0))  # the listener works
    assert seen == 0 and len(compiles) >= 1


# ---------------------------------------------------------------------------
# Semantics: the floor, Keras's mapping, momentum modes
# ---------------------------------------------------------------------------


def test_min_lr_is_a_floor_of_every_cycle():
    for mult in (1.0, 1.5):
        sched = clr_jax.cosine_restarts(0.1, 7, min_lr=0.01, decay=0.5, cycle_mult=mult)
        values = np.asarray(sched(jnp.arange(3000)))
        assert values.min() >= np.float32(0.01) and values.max() <= np.float32(0.1)
    floored = clr_jax.cosine_restarts(0.1, 7, min_lr=0.01, decay=0.5)
    assert float(floored(57)) >= 0.01  # was 0.00625, below the floor


@pytest.mark.parametrize(
    ("t_mul", "m_mul", "alpha"), [(1.0, 0.5, 0.1), (2.0, 0.7, 0.0), (3.0, 0.5, 0.2)]
)
def test_keras_cosine_decay_restarts_mapping(t_mul, m_mul, alpha):
    initial, first = 0.1, 7
    counts = np.arange(0, 500)
    ours = clr_jax.cosine_restarts(
        initial, first, cycle_mult=t_mul, decay=m_mul, min_lr=alpha * initial
    )
    want = ref.keras_cosine_decay_restarts(counts, initial, first, t_mul, m_mul, alpha)
    np.testing.assert_allclose(ours(counts), want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclical_momentum_modes_match_the_rate_scale(mode):
    gamma = 0.99 if mode == "exp_range" else 1.0
    mom = clr_jax.cyclical_momentum(0.85, 0.95, 7, mode=mode, gamma=gamma)
    rate = {
        "triangular": clr_jax.triangular(0.0, 1.0, 7),
        "triangular2": clr_jax.triangular2(0.0, 1.0, 7),
        "exp_range": clr_jax.exp_range(0.0, 1.0, 7, gamma),
    }[mode]
    counts = jnp.arange(100)
    np.testing.assert_allclose(mom(counts), 0.95 - 0.1 * rate(counts), rtol=1e-6)


# ---------------------------------------------------------------------------
# PyTorch parity (optional; skipped cleanly without torch)
# ---------------------------------------------------------------------------


def _torch_lrs(make_scheduler, steps, key="lr"):
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = make_scheduler(opt)
    values = []
    for _ in range(steps):
        values.append(opt.param_groups[0][key])
        opt.step()
        sched.step()
    return np.asarray(values)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_pytorch_cycliclr_parity(mode):
    torch = pytest.importorskip("torch")
    steps = 200
    got = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, 1e-3, 6e-3, step_size_up=7, step_size_down=12, mode=mode, gamma=0.99
        ),
        steps,
    )
    ours = {
        "triangular": clr_jax.triangular(1e-3, 6e-3, 7, step_size_down=12),
        "triangular2": clr_jax.triangular2(1e-3, 6e-3, 7, step_size_down=12),
        "exp_range": clr_jax.exp_range(1e-3, 6e-3, 7, 0.99, step_size_down=12),
    }[mode]
    np.testing.assert_allclose(ours(jnp.arange(steps)), got, rtol=1e-5, atol=1e-9)
    # CyclicLR cycles momentum (0.8 -> 0.9 by default) with the same scale.
    torch_momentum = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, 1e-3, 6e-3, step_size_up=7, step_size_down=12, mode=mode, gamma=0.99
        ),
        steps,
        key="momentum",
    )
    momentum = clr_jax.cyclical_momentum(
        0.8,
        0.9,
        7,
        step_size_down=12,
        mode=mode,
        gamma=0.99 if mode == "exp_range" else 1.0,
    )
    np.testing.assert_allclose(momentum(jnp.arange(steps)), torch_momentum, rtol=1e-6)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_pytorch_onecycle_parity(anneal, three_phase):
    torch = pytest.importorskip("torch")
    total = 97
    kw = dict(total_steps=total, anneal_strategy=anneal, three_phase=three_phase)
    lrs = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 0.3, **kw), total)
    moms = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 0.3, **kw),
        total,
        key="momentum",
    )
    counts = jnp.arange(total)
    np.testing.assert_allclose(
        clr_jax.one_cycle(0.3, **kw)(counts), lrs, rtol=1e-5, atol=1e-9
    )
    np.testing.assert_allclose(
        clr_jax.one_cycle_momentum(**kw)(counts), moms, rtol=1e-5
    )


@pytest.mark.parametrize("t_mult", [1, 2, 3])
def test_pytorch_warm_restarts_parity(t_mult):
    torch = pytest.importorskip("torch")
    got = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            o, 5, T_mult=t_mult, eta_min=1e-3
        ),
        300,
    )
    ours = clr_jax.cosine_restarts(0.1, 5, min_lr=1e-3, cycle_mult=t_mult)
    np.testing.assert_allclose(ours(jnp.arange(300)), got, rtol=1e-5, atol=1e-8)
