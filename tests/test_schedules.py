"""Every schedule against its float64 reference, plus one table of properties.

The registry below lists each schedule once (with several step sizes); every
property test runs over the whole registry.
"""

from __future__ import annotations

import functools
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
]


@pytest.mark.parametrize(("factory", "args", "kwargs", "name", "value"), BAD)
def test_bad_input_names_argument_and_value(factory, args, kwargs, name, value):
    with pytest.raises(ValueError, match=f"`{name}`") as err:
        factory(*args, **kwargs)
    assert value in str(err.value)


def test_traced_values_are_not_validated_or_branched_on():
    # Under jit the bounds are tracers: construction must not raise or branch.
    f = jax.jit(lambda lo, hi: clr_jax.triangular(lo, hi, 4)(jnp.int32(2)))
    np.testing.assert_allclose(f(0.1, 0.5), 0.3, rtol=1e-6)


def test_traced_float_step_size_is_a_type_error():
    with pytest.raises(TypeError, match="step_size"):
        jax.jit(lambda s: clr_jax.triangular(0.1, 1.0, s)(3))(jnp.float32(4.0))


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
