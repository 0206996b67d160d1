"""RangeTestResult: readings on the host, refusals, peers' rules, files, plots.

Fixtures under tests/data/:

* ``range_test_cnn_momentum_{400,100}.json``: the README's example,
  ``clr-jax range-test --model cnn --optimizer momentum --steps N
  --no-progress --out DIR``, run at commit aaf815d (the curves of the earlier
  reading's failures: steepest 2.5 and valley 4.7 read after the blow-up at 400
  steps, one raw loss of 143 at 100), saved in the current format without
  its ``reading``;
* ``range_test_mlp_sgd_still_falls.json``: ``clr-jax range-test --model mlp
  --optimizer sgd --end-lr 1 --steps 200 ...``, a loss still falling at
  ``end_lr``;
* ``peer_parity.json``: fastai's and torch-lr-finder's own answers, written
  by ``tests/data/make_peer_parity.py`` (see its docstring).
"""

import functools
import json
import math
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clr_jax
from clr_jax.range_test import _describe, _peer_rules, _reading, _smoothing
from tests.test_range_test import (
    ORACLE,
    W0,
    close_to_mean,
    quadratic_data,
    quadratic_loss,
)

DATA = Path(__file__).with_name("data")
CURVES = ("lrs", "losses", "smoothed_losses", "metrics", "smoothed_metrics")


def load(name: str) -> clr_jax.RangeTestResult:
    return clr_jax.RangeTestResult.load_json(DATA / f"{name}.json")


def quiet_read(result, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", clr_jax.RangeTestWarning)
        return result.read(**kwargs)


def ema(raw, beta=0.98):
    """The bias-corrected EMA the device computes, in float32."""
    e, out = np.float32(0.0), []
    for t, x in enumerate(np.asarray(raw, np.float32)):
        e = np.float32(beta) * e + np.float32(1 - beta) * x
        out.append(e / np.float32(1 - beta ** (t + 1)))
    return np.asarray(out, np.float32)


def curve(losses, *, start=1e-4, end=10.0, diverged_step=None, **kwargs):
    losses = np.asarray(losses, np.float32)
    lrs = np.geomspace(start, end, len(losses)).astype(np.float32)
    return clr_jax.RangeTestResult(
        lrs, losses, ema(losses), diverged_step=diverged_step, **kwargs
    )


# -- synthetic curves (seeded) ------------------------------------------------


def real_shaped(rng, n, noise, *, blow_up=True):
    """Flat, a sigmoid descent, then (optionally) an exponential blow-up."""
    x = np.linspace(0.0, 1.0, n)
    centre, width = rng.uniform(0.35, 0.7), rng.uniform(0.03, 0.12)
    low = rng.uniform(0.1, 1.5)
    y = low + (2.3 - low) / (1.0 + np.exp((x - centre) / width))
    if blow_up:
        start = centre + rng.uniform(0.12, 0.25)
        y = y + np.where(x > start, np.expm1((x - start) * rng.uniform(10, 40)), 0)
    return y + noise * rng.normal(size=n) * (1.0 + y / 2.3) / 2.0


SYNTHETIC = {
    # a constant loss, with float32 jitter in a tenth of the steps
    "flat": lambda rng, n: 2.3025851 + (rng.random(n) < 0.1) * 2.4e-7,
    "noise": lambda rng, n: 2.3 + 0.05 * rng.normal(size=n),
    # one outlier batch on noise
    "outlier": lambda rng, n: (
        2.3
        + 0.05 * rng.normal(size=n)
        + 60.0 * (np.arange(n) == rng.integers(n // 5, n))
    ),
    "random_walk": lambda rng, n: 2.3 + np.cumsum(0.03 * rng.normal(size=n)),
}


@functools.cache
def one_sweep():
    return clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        metric_fn=close_to_mean,
        progress=False,
        **ORACLE,
    )


@functools.cache
def seed_sweeps():
    return clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        key=jax.random.split(jax.random.key(0), 3),
        metric_fn=close_to_mean,
        progress=False,
        **ORACLE,
    )


@functools.cache
def decay_sweeps():
    return clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        optimizer=optax.adamw,
        hyperparams={"weight_decay": [0.0, 0.1, 1.0]},
        metric_fn=close_to_mean,
        progress=False,
        **ORACLE,
    )


def refused(result) -> bool:
    reading = quiet_read(result)
    return all(math.isnan(x) for x in reading.suggestions.values())


# -- the README's example, and the earlier reading's failures -----------------


def test_readme_example_at_400_steps_stops_at_the_blow_up_that_4x_misses():
    result = load("range_test_cnn_momentum_400")
    assert result.diverged_step is None  # the on-device 4x check never fired
    reading = quiet_read(result)
    blow_up_lr = float(result.lrs[reading.blow_up])
    assert 1.0 < blow_up_lr < 1.6, blow_up_lr  # the raw loss jumps at ~1.3
    assert "did not come back" in reading.blow_up_reason
    # Every suggestion is read before the minimum, which is before the blow-up.
    min_lr = float(result.lrs[reading.minimum])
    for method, lr in reading.suggestions.items():
        assert 1e-3 < lr <= min_lr < blow_up_lr, (method, lr)
    assert reading.suggestions["steepest"] < 0.7  # was 2.5, read after the blow-up
    assert not any("never diverged" in n for n in reading.notes)
    # fastai's and torch-lr-finder's own rules read the relaxation after it.
    peers = result.peer_suggestions()
    assert peers["fastai_steep"] > blow_up_lr
    assert peers["torch_lr_finder_steepest"] > blow_up_lr


def test_readme_example_at_100_steps_is_refused_not_read_from_an_outlier():
    result = load("range_test_cnn_momentum_100")
    assert np.nanmax(result.losses) > 100.0  # the one raw loss of 143
    reading = quiet_read(result)
    assert all(math.isnan(x) for x in reading.suggestions.values())
    assert math.isnan(reading.bounds.base_lr) and math.isnan(reading.bounds.max_lr)
    assert reading.blow_up is not None and reading.minimum is None
    (note,) = (n for n in reading.notes if "no clear descent" in n)
    with pytest.warns(clr_jax.RangeTestWarning, match="no clear descent"):
        assert math.isnan(result.suggest("valley"))
    with pytest.warns(clr_jax.RangeTestWarning, match="no clear descent"):
        report = result.bounds_report()
    assert note in report.notes
    with (
        pytest.warns(clr_jax.RangeTestWarning),
        pytest.raises(ValueError, match="clear descent"),
    ):
        result.to_schedule(step_size=100)


def test_a_loss_still_falling_at_end_lr_gives_no_minimum_and_no_max_lr():
    result = load("range_test_mlp_sgd_still_falls")
    reading = quiet_read(result)
    assert reading.blow_up is None
    assert math.isnan(reading.suggestions["minimum"])
    assert math.isnan(reading.suggestions["half_edge"])
    assert math.isnan(reading.bounds.max_lr)
    assert math.isfinite(reading.bounds.base_lr)
    assert any("never diverged" in n for n in reading.notes)
    assert any("still falls at end_lr" in n for n in reading.notes)
    assert any("still improves at end_lr" in n for n in reading.bounds.notes)
    with (
        pytest.warns(clr_jax.RangeTestWarning, match="raise end_lr"),
        pytest.raises(ValueError, match="raise end_lr"),
    ):
        result.to_schedule(step_size=100)


@pytest.mark.parametrize("kind", sorted(SYNTHETIC))
@pytest.mark.parametrize("num_steps", [100, 400])
def test_synthetic_curves_without_a_descent_are_refused(kind, num_steps):
    results = [
        curve(SYNTHETIC[kind](np.random.default_rng(seed), num_steps))
        for seed in range(20)
    ]
    count = sum(refused(r) for r in results)
    # Measured on 100 seeds (see _reading's docstring): flat, noise and an
    # outlier are refused in 99-100%, a random walk in 88-99%.
    needed = 15 if kind == "random_walk" else 20
    assert count >= needed, count


@pytest.mark.parametrize("num_steps", [100, 400])
def test_noisy_real_shaped_descents_are_read(num_steps):
    results = [
        curve(real_shaped(np.random.default_rng(seed), num_steps, 0.15))
        for seed in range(20)
    ]
    read = sum(not refused(r) for r in results)
    assert read >= (17 if num_steps == 100 else 20), read


def test_a_single_outlier_does_not_move_the_noise_estimate():
    rng = np.random.default_rng(3)
    y = 2.3 + 0.05 * rng.normal(size=200)
    spiked = y.copy()
    spiked[120] = 80.0
    width = _smoothing.smoothing_width(200)
    clean, spike = _smoothing.Noise.of(y, width), _smoothing.Noise.of(spiked, width)
    assert spike.white == pytest.approx(clean.white, rel=0.05)
    assert spike.drift == pytest.approx(clean.drift, abs=0.01)
    assert 0.04 < clean.white < 0.06  # the std that was put in


def test_a_constant_curve_has_no_noise_and_is_still_refused():
    flat = np.full(100, 2.3025851, np.float32)
    noise = _smoothing.Noise.of(flat.astype(np.float64), 5)
    assert noise.white == 0.0 and noise.drift == 0.0
    with pytest.warns(clr_jax.RangeTestWarning) as caught:
        assert math.isnan(curve(flat).suggest("steepest"))
    assert any("is flat" in str(w.message) for w in caught)


# -- no lag -------------------------------------------------------------------


def test_the_reading_curve_has_no_lag_and_the_ema_has():
    n = 400
    x = np.linspace(0.0, 1.0, n)
    y = 2.3 - 1.5 * np.exp(-(((x - 0.6) / 0.08) ** 2))  # a dip at step ~240
    result = curve(y)
    reading = quiet_read(result)
    assert abs(reading.minimum - int(np.argmin(y))) <= 1
    assert int(np.argmin(result.smoothed_losses)) - int(np.argmin(y)) > 20


def test_suggestions_hardly_move_with_the_sweep_length():
    # The same loss against the rate, sampled by 100, 400 and 1600 steps.
    def loss_at(lrs):
        u = np.log10(lrs)
        return 0.5 + 1.8 / (1.0 + np.exp((u + 1.5) / 0.25)) + np.exp(4.0 * (u - 0.5))

    found = {}
    for n in (100, 400, 1600):
        lrs = np.geomspace(1e-4, 10.0, n)
        noisy = loss_at(lrs) + 0.03 * np.random.default_rng(n).normal(size=n)
        found[n] = quiet_read(curve(noisy)).suggestions
    for method in _reading.METHODS:
        values = [found[n][method] for n in found]
        assert max(values) / min(values) < 2.0, (method, values)


# -- the notes: edges, divergence, sweeps that disagree -------------------------


def test_a_descent_from_the_first_step_says_lower_start_lr():
    x = np.linspace(0.0, 1.0, 200)
    y = 0.5 + 2.0 * np.exp(-x / 0.05) + np.where(x > 0.6, np.expm1(20 * (x - 0.6)), 0)
    reading = quiet_read(curve(y))
    assert any("first 10%" in n and "lower start_lr" in n for n in reading.notes)
    with pytest.warns(clr_jax.RangeTestWarning, match="lower start_lr"):
        curve(y).bounds()


def test_a_descent_at_the_last_steps_says_raise_end_lr():
    x = np.linspace(0.0, 1.0, 200)
    y = 2.3 - 1.5 / (1.0 + np.exp(-(x - 0.95) / 0.02))
    reading = quiet_read(curve(y))
    assert any("last 10%" in n and "raise end_lr" in n for n in reading.notes)
    assert any("never diverged" in n for n in reading.notes)


def test_a_sweep_stopped_on_the_device_is_not_said_to_never_diverge():
    result = one_sweep()
    reading = quiet_read(result)
    assert reading.blow_up <= result.diverged_step  # the rise before is seen too
    assert not any("never diverged" in n for n in reading.notes)
    x = np.linspace(0.0, 1.0, 200)
    y = 0.5 + 1.8 / (1.0 + np.exp((x - 0.5) / 0.05))
    y[150], y[151:] = 9.0, np.nan  # the device stopped the sweep at step 150
    reading = quiet_read(curve(y, diverged_step=150))
    assert reading.blow_up == 150 and "on-device check" in reading.blow_up_reason
    y[150] = np.inf
    reading = quiet_read(curve(y, diverged_step=150))
    assert reading.blow_up == 150 and "non-finite" in reading.blow_up_reason


def disagreeing_sweeps(hyperparams=()):
    """Three sweeps whose descents sit a decade apart."""
    x = np.linspace(0.0, 1.0, 300)
    rows = []
    for k, centre in enumerate((0.35, 0.55, 0.75)):
        noise = 0.02 * np.random.default_rng(k).normal(size=300)
        y = 0.6 + 1.7 / (1.0 + np.exp((x - centre) / 0.04)) + noise
        rows.append(
            y + np.where(x > centre + 0.15, np.expm1(30 * (x - centre - 0.15)), 0)
        )
    losses = np.asarray(rows, np.float32)
    lrs = np.broadcast_to(np.geomspace(1e-4, 10.0, 300), losses.shape).astype(
        np.float32
    )
    config = clr_jax.RangeTestConfig(num_sweeps=3, hyperparams=hyperparams)
    return clr_jax.RangeTestResult(
        lrs, losses, np.stack([ema(r) for r in losses]), config=config
    )


def test_sweeps_that_disagree_by_more_than_the_factor_say_so():
    result = disagreeing_sweeps()
    with pytest.warns(clr_jax.RangeTestWarning, match="3 sweeps disagree") as caught:
        values = result.suggest("valley")
    assert values.shape == (3,) and values.max() > 3.0 * values.min()
    assert any("more than 3x" in str(w.message) for w in caught)
    readings = quiet_read(result)
    assert all(any("disagree" in n for n in r.notes) for r in readings)


def test_sweeps_over_hyperparameter_values_are_meant_to_differ():
    result = disagreeing_sweeps(hyperparams=(("weight_decay", (0.0, 0.1, 1.0)),))
    readings = quiet_read(result)
    assert not any("disagree" in n for r in readings for n in r.notes)


def test_a_warning_points_at_the_callers_line():
    lrs = np.geomspace(1e-3, 1.0, 50)
    result = clr_jax.RangeTestResult(lrs, 1.0 + lrs, 1.0 + lrs)  # no descent
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", clr_jax.RangeTestWarning)
        result.suggest("valley")
        result.bounds()
        result.suggestions()
    assert len(caught) == 3  # one note, once per call
    for warning in caught:
        assert warning.filename == __file__, warning.filename
        assert "no clear descent" in str(warning.message)


def test_a_curve_that_never_descends_warns_and_builds_no_schedule():
    def step(w, batch, lr):
        return w, 1.0 + lr + 0.0 * jnp.sum(batch)

    res = clr_jax.range_test_with_step(
        step,
        jnp.float32(0.0),
        jnp.ones((50, 4)),
        batched=True,
        start_lr=1e-3,
        end_lr=1.0,
        num_steps=50,
        progress=False,
    )
    with pytest.warns(clr_jax.RangeTestWarning, match="no clear descent"):
        assert np.isnan(res.suggest("valley"))
    with pytest.warns(clr_jax.RangeTestWarning, match="no clear descent"):
        assert all(np.isnan(res.bounds()))
    with (
        pytest.warns(clr_jax.RangeTestWarning),
        pytest.raises(ValueError, match="clear descent"),
    ):
        res.to_schedule(step_size=100)


def test_bad_arguments_of_the_readings_raise():
    result = load("range_test_cnn_momentum_400")
    with pytest.raises(ValueError, match="skip_start"):
        result.read(skip_start=400)
    with pytest.raises(ValueError, match="skip_start"):
        result.suggest("valley", skip_start=1.5)
    with pytest.raises(ValueError, match="method"):
        result.suggest("steep")
    with pytest.raises(ValueError, match="losses"):
        _peer_rules.fastai_valley([1.0, 2.0], [1.0, np.nan])
    with pytest.raises(ValueError, match="losses"):
        _peer_rules.fastai_minimum([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="width"):
        _smoothing.smooth(np.ones(10), width=4)
    stacked = result.replace(
        **{f: np.stack([[getattr(result, f)]]) for f in CURVES}, diverged_step=None
    )
    with pytest.raises(ValueError, match="one leading sweep axis"):
        stacked.read()


def test_readings_inside_a_trace_say_to_read_the_concrete_result():
    result = load("range_test_cnn_momentum_100")

    @jax.jit
    def inside(losses):
        result.replace(losses=losses).read()
        return losses

    with pytest.raises(TypeError, match="on the host"):
        inside(jnp.asarray(result.losses))


# -- the peers' rules, against fastai's and torch-lr-finder's own answers ------


def peer_record():
    return json.loads((DATA / "peer_parity.json").read_text(encoding="utf-8"))


def f32(values):
    return np.array([np.nan if x is None else x for x in values], np.float32)


def test_fastai_and_torch_lr_finder_rules_match_their_libraries():
    record = peer_record()
    assert record["versions"]["fastai"] == "2.8.12"
    assert len(record["rules"]) >= 20
    for case in record["rules"]:
        lrs, losses = f32(case["lrs"]), f32(case["losses"])
        name = case["name"]
        valley = _peer_rules.fastai_valley(lrs, losses)
        assert np.float32(valley) == np.float32(case["fastai_valley"]), name
        assert _peer_rules.fastai_minimum(lrs, losses) == pytest.approx(
            case["fastai_minimum"], rel=1e-7
        ), name
        if len(lrs) < 2:
            continue
        steepest = _peer_rules.torch_lr_finder_steepest(lrs, losses)
        assert np.float32(steepest) == np.float32(case["torch_lr_finder_steepest"])
        steep = np.float32(_peer_rules.fastai_steep(lrs, losses))
        if steep != np.float32(case["fastai_steep"]):  # a float32 tie of slopes
            slopes = np.diff(losses.astype(np.float64)) / np.diff(np.log(lrs))
            theirs = int(np.flatnonzero(lrs == np.float32(case["fastai_steep"]))[0])
            assert slopes[theirs] - slopes.min() <= 1e-5 * abs(slopes.min()), name


def scripted_sweep(raw, *, start_lr, end_lr, **kwargs):
    """The engine on a step whose loss is ``raw[i]`` at step ``i``."""
    raw = f32(raw)
    # A NaN in the state would stop the sweep at once: keep a mask instead.
    table = (jnp.asarray(np.nan_to_num(raw)), jnp.asarray(np.isnan(raw)))
    return clr_jax.range_test_with_step(
        scripted_step,
        (jnp.int32(0), table),
        jnp.zeros((len(raw), 1)),
        batched=True,
        start_lr=start_lr,
        end_lr=end_lr,
        num_steps=len(raw),
        progress=False,
        **kwargs,
    )


def scripted_step(state, batch, lr):
    i, (values, missing) = state
    loss = jnp.where(missing[i], jnp.nan, values[i]) + 0.0 * jnp.sum(batch)
    return (i + 1, (values, missing)), loss


def test_peer_suggestions_equal_what_fastai_and_torch_lr_finder_report():
    for case in peer_record()["pipelines"]:
        raw, start, end = case["raw"], case["start_lr"], case["end_lr"]
        n, fa, tl = len(raw), case["fastai"], case["torch_lr_finder"]
        # fastai's rates reach end_lr one step past its last.
        ours = scripted_sweep(
            raw, start_lr=start, end_lr=start * (end / start) ** ((n - 1) / n)
        )
        recorded = f32(fa["losses"])
        np.testing.assert_allclose(
            ours.smoothed_losses[: len(recorded)], recorded, rtol=1e-5
        )
        peers = ours.peer_suggestions()
        for key in ("fastai_valley", "fastai_steep", "fastai_minimum"):
            assert peers[key] == pytest.approx(fa[key], rel=1e-5), (case["name"], key)
        ours = scripted_sweep(
            raw, start_lr=start, end_lr=end, beta=0.98, diverge_threshold=None
        )
        got = ours.peer_suggestions()["torch_lr_finder_steepest"]
        assert got == pytest.approx(tl["torch_lr_finder_steepest"], rel=1e-5), case[
            "name"
        ]


def test_the_methods_apply_the_peers_rules_to_the_lag_free_curve():
    result = load("range_test_cnn_momentum_400")
    reading = quiet_read(result)
    start, stop = reading.start, reading.minimum + 1
    lrs, lagless = result.lrs[start:stop], reading.curve[start:stop]
    assert reading.suggestions["valley"] == _peer_rules.fastai_valley(lrs, lagless)
    assert reading.suggestions["minimum"] == _peer_rules.fastai_minimum(lrs, lagless)
    assert reading.suggestions["steepest"] == _peer_rules.torch_lr_finder_steepest(
        lrs, lagless
    )


def expected_half_edge(lrs, reading, lag: int) -> float:
    """Half the larger of the lowest loss's rate and 0.4 times the blow-up's,
    both ``lag`` steps early; at most the lowest loss's rate."""
    edge = lrs[max(reading.minimum - lag, 0)]
    if reading.blow_up is not None:
        edge = max(edge, 0.4 * lrs[max(reading.blow_up - lag, 0)])
    return min(edge / 2.0, lrs[reading.minimum])


def with_momentum(result, momentum):
    return result.replace(config=result.config._replace(momentum=momentum))


def test_half_edge_reads_the_optimizers_lag_before_the_edge():
    result = load("range_test_cnn_momentum_400")
    assert result.config.momentum is None  # recorded before the lag was kept
    for momentum, lag in ((None, 0), (0.9, 9), (0.5, 1)):
        reading = quiet_read(with_momentum(result, momentum))
        expected = expected_half_edge(result.lrs, reading, lag)
        assert reading.suggestions["half_edge"] == pytest.approx(expected)


def test_half_edge_takes_each_sweeps_own_swept_momentum():
    sweeps = clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        hyperparams={"momentum": [0.0, 0.5, 0.9]},
        progress=False,
        **ORACLE,
    )
    assert sweeps.config.momentum is None
    readings = quiet_read(sweeps)
    for reading, lag in zip(readings, (0, 1, 9), strict=True):
        expected = expected_half_edge(sweeps.lrs[0], reading, lag)
        assert reading.suggestions["half_edge"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "num_steps, momentum, coarse",
    [
        (100, 0.9, True),  # from 1e-4 to 10: 2.8x over 9 steps
        (400, 0.9, False),  # 1.3x
        (100, None, False),  # no lag to correct
    ],
)
def test_half_edge_is_noted_when_the_sweep_outruns_the_lag_correction(
    num_steps, momentum, coarse
):
    result, _ = flat_bottom(lowest_at=-0.5, rise_at=-0.05, n=num_steps)
    result = with_momentum(result, momentum)
    notes = [n for n in quiet_read(result).notes_for("half_edge") if "coarse" in n]
    assert bool(notes) == coarse
    if coarse:
        assert "9 steps late" in notes[0] and "2.8x" in notes[0]
        with pytest.warns(clr_jax.RangeTestWarning, match="coarse"):
            assert math.isfinite(result.suggest())  # noted, still given
        assert not any("coarse" in n for n in quiet_read(result).notes_for("valley"))


def test_the_lag_span_is_the_rates_growth_over_the_lag_within_the_sweep():
    lrs = np.linspace(0.0, 1.0, 101)  # a linear sweep may start at 0
    span = _reading._Span(lrs, lrs, lrs, 0, 101, 5, 101)
    assert _reading._lag_span(span, 10, 9) == pytest.approx(0.19 / 0.10)
    assert _reading._lag_span(span, 95, 9) == pytest.approx(1.0 / 0.95)  # the end
    assert _reading._lag_span(span, 0, 9) == math.inf  # from a zero rate: noted
    assert _reading._lag_span(span, 0, 0) == 1.0  # no lag, nothing to correct


def flat_bottom(lowest_at: float, rise_at: float, n: int = 400):
    """A descent to a bottom flat from 10**-2 to 10**rise_at, its lowest
    point at 10**lowest_at, then a blow-up."""
    u = np.log10(np.geomspace(1e-4, 10.0, n))
    loss = 0.8 + 1.5 / (1.0 + np.exp((u + 2.5) / 0.1))
    loss -= 0.03 * np.exp(-(((u - lowest_at) / 0.15) ** 2))
    loss += np.where(u > rise_at, np.expm1(3.0 * (u - rise_at)), 0.0)
    result = curve(loss)
    return result, quiet_read(result)


def test_half_edge_on_a_flat_bottom_follows_the_blow_up_not_the_lowest_point():
    result, reading = flat_bottom(lowest_at=-0.5, rise_at=-0.05)
    at_minimum = result.lrs[reading.minimum]
    at_blow_up = result.lrs[reading.blow_up]
    assert at_minimum == pytest.approx(10**-0.5, rel=0.05)
    assert 2.5 < at_blow_up / at_minimum < 5.0  # 0.4 x blow-up: past half
    assert reading.suggestions["half_edge"] == pytest.approx(0.2 * at_blow_up)
    # Never past the lowest loss: there the loss already rises.
    result, reading = flat_bottom(lowest_at=-1.5, rise_at=0.3)
    at_minimum = result.lrs[reading.minimum]
    assert result.lrs[reading.blow_up] / at_minimum > 20.0
    assert reading.suggestions["half_edge"] == pytest.approx(at_minimum)
    # Where the bottom is not flat, half the lowest loss's rate.
    sharp = load("range_test_cnn_momentum_400")
    sharp_reading = quiet_read(sharp)
    assert sharp_reading.suggestions["half_edge"] == pytest.approx(
        sharp.lrs[sharp_reading.minimum] / 2.0
    )


@pytest.mark.parametrize(
    "optimizer, momentum",
    [
        (optax.sgd, None),
        (functools.partial(optax.sgd, momentum=0.9), 0.9),
        (optax.adam, 0.9),
        (functools.partial(optax.adam, b1=0.8), 0.8),
    ],
)
def test_the_record_keeps_the_optimizers_gradient_average_decay(
    optimizer, momentum, tmp_path
):
    result = clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        optimizer=optimizer,
        progress=False,
        **ORACLE,
    )
    assert result.config.momentum == momentum
    result.save_json(tmp_path / "curve.json")
    back = clr_jax.RangeTestResult.load_json(tmp_path / "curve.json")
    assert back.config.momentum == momentum


# -- the record: JSON and CSV ----------------------------------------------------


def assert_same_record(back, result):
    for field in CURVES:
        mine, theirs = getattr(result, field), getattr(back, field)
        assert (mine is None) == (theirs is None), field
        if mine is not None:
            mine = np.asarray(mine)
            assert theirs.dtype == mine.dtype, field
            np.testing.assert_array_equal(theirs, mine)
    assert back.diverged_step == result.to_host().diverged_step
    assert back.config == result.config


def test_the_json_record_holds_the_whole_configuration(tmp_path):
    result = decay_sweeps()
    result.save_json(tmp_path / "curve.json")
    record = json.loads((tmp_path / "curve.json").read_text(encoding="utf-8"))
    config = record["config"]
    assert config["start_lr"] == ORACLE["start_lr"]
    assert config["end_lr"] == ORACLE["end_lr"]
    assert config["num_steps"] == ORACLE["num_steps"]
    assert config["batch_size"] == ORACLE["batch_size"]
    assert config["mode"] == "exponential" and config["beta"] == pytest.approx(0.98)
    assert config["diverge_threshold"] == 4.0 and config["num_sweeps"] == 3
    assert config["optimizer"] == "optax.adamw"
    assert config["hyperparams"] == {  # the float32 values swept
        "weight_decay": [0.0, float(np.float32(0.1)), 1.0]
    }
    assert set(config["versions"]) >= {"clr_jax", "jax", "numpy", "optax"}
    assert record["dtypes"]["losses"] == "float32"
    assert len(record["reading"]) == 3 and "notes" in record["reading"][0]
    assert_same_record(
        clr_jax.RangeTestResult.load_json(tmp_path / "curve.json"), result
    )


def test_json_and_csv_keep_inf_nan_and_float32(tmp_path):
    lrs = np.geomspace(1e-3, 1.0, 8).astype(np.float32)
    losses = np.array(
        [2.0, 1.5, -np.inf, 1.0, np.inf, np.nan, np.nan, np.nan], np.float32
    )
    result = clr_jax.RangeTestResult(
        lrs, losses, losses, diverged_step=4, config=clr_jax.RangeTestConfig(beta=0.9)
    )
    for fmt in ("json", "csv"):
        path = tmp_path / f"curve.{fmt}"
        getattr(result, f"save_{fmt}")(path)
        back = getattr(clr_jax.RangeTestResult, f"load_{fmt}")(path)
        for field in ("lrs", "losses", "smoothed_losses"):
            assert getattr(back, field).dtype == np.float32, (fmt, field)
            np.testing.assert_array_equal(getattr(back, field), getattr(result, field))
        assert back.diverged_step == 4
    back = clr_jax.RangeTestResult.load_json(tmp_path / "curve.json")
    assert back.config == result.config
    json.loads((tmp_path / "curve.json").read_text(encoding="utf-8"))  # standard


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_round_trip_of_one_and_many_sweeps(tmp_path, fmt):
    one, many = one_sweep(), seed_sweeps()
    for res in (one, many):
        path = tmp_path / f"curve.{fmt}"
        getattr(res, f"save_{fmt}")(path)
        back = getattr(clr_jax.RangeTestResult, f"load_{fmt}")(path)
        if fmt == "json":
            assert_same_record(back, res)
        for field in CURVES:
            if getattr(res, field) is not None:
                np.testing.assert_array_equal(getattr(back, field), getattr(res, field))
        assert back.diverged_step == res.diverged_step
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", clr_jax.RangeTestWarning)
            for method, lr in res.suggestions().items():
                np.testing.assert_array_equal(back.suggest(method), lr)


def test_validation_points_round_trip_and_are_plotted(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    base = load("range_test_cnn_momentum_400")
    steps = np.arange(19, 400, 20, dtype=np.int32)
    losses = np.asarray(base.losses)[steps].copy()
    losses[-3:] = np.nan
    result = base.replace(
        val_steps=steps,
        val_losses=losses,
        val_metrics=np.asarray(base.metrics)[steps],
    )
    result.save_json(tmp_path / "val.json")
    back = clr_jax.RangeTestResult.load_json(tmp_path / "val.json")
    for field in ("val_steps", "val_losses", "val_metrics"):
        mine, theirs = getattr(result, field), getattr(back, field)
        assert theirs.dtype == mine.dtype, field
        np.testing.assert_array_equal(theirs, mine)
    fig = back.plot()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "validation loss" in labels
    close(fig)


def test_files_of_the_first_format_still_load(tmp_path):
    old = {
        "lrs": [0.001, 0.01, 0.1],
        "losses": [2.0, 1.0, None],
        "smoothed_losses": [2.0, 1.5, None],
        "metrics": None,
        "smoothed_metrics": None,
        "diverged_step": 2,
    }
    (tmp_path / "old.json").write_text(json.dumps(old), encoding="utf-8")
    back = clr_jax.RangeTestResult.load_json(tmp_path / "old.json")
    assert back.diverged_step == 2 and np.isnan(back.losses[2])
    assert back.config == clr_jax.RangeTestConfig()


# -- the device form -----------------------------------------------------------


def test_the_device_form_reads_writes_and_plots_as_the_host_form(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    host = disagreeing_sweeps()
    device = host.replace(
        **{
            f: jnp.asarray(getattr(host, f))
            for f in ("lrs", "losses", "smoothed_losses")
        },
        diverged_step=jnp.array([-1, -1, -1], jnp.int32),
    )
    assert device.to_host().diverged_step == (None, None, None)
    mine, theirs = quiet_read(device), quiet_read(host)
    for a, b in zip(mine, theirs, strict=True):
        assert a.suggestions == b.suggestions and a.notes == b.notes
    one = device.sweep(1).replace(diverged_step=jnp.int32(250))
    assert one.to_host().diverged_step == 250
    assert quiet_read(one).blow_up <= 250
    device.save_json(tmp_path / "device.json")
    assert_same_record(
        clr_jax.RangeTestResult.load_json(tmp_path / "device.json"), host
    )
    device.save_csv(tmp_path / "device.csv")
    close(device.plot(path=tmp_path / "device.png"))


# -- plots -----------------------------------------------------------------------


def close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def within(value, limits):
    low, high = sorted(limits)
    return low <= value <= high


def markers(ax):
    return [
        line
        for line in ax.get_lines()
        if line.get_marker() not in ("None", None, "") and len(line.get_xdata())
    ]


def test_every_marker_and_the_blow_up_are_on_the_canvas(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    result = load("range_test_cnn_momentum_400")
    fig = result.plot(
        suggestions=_reading.METHODS, path=tmp_path / "one.png", show_ema=True
    )
    ax = fig.axes[0]
    marks = markers(ax)
    assert len(marks) == len(_reading.METHODS)
    for line in marks:
        (x,), (y,) = line.get_xdata(), line.get_ydata()
        assert within(x, ax.get_xlim()) and within(y, ax.get_ylim()), line.get_label()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("blow-up: lr 1.") for t in labels), labels
    # The level the dead network settles at (about 2.7) is in view too.
    assert ax.get_ylim()[1] > 2.6
    close(fig)


def test_the_notes_are_written_on_the_plot(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    result = load("range_test_cnn_momentum_100")
    fig = result.plot(path=tmp_path / "refused.png")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("no clear descent" in t for t in texts), texts
    assert (tmp_path / "refused.png").stat().st_size > 1000
    close(fig)


def test_a_hyperparameter_sweep_draws_one_labelled_line_per_value(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    many = decay_sweeps()
    fig = many.plot(path=tmp_path / "lines.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    for value in ("0", "0.1", "1"):
        assert f"weight_decay={value}" in labels, labels
    assert not fig.axes[0].collections  # no band
    close(fig)
    seeds = seed_sweeps()
    fig = seeds.plot(path=tmp_path / "band.png", band="std")
    assert fig.axes[0].collections  # the band
    close(fig)
    fig = seeds.plot(labels=["a", "b", "c"])
    assert {"a", "b", "c"} <= {
        t.get_text() for t in fig.axes[0].get_legend().get_texts()
    }
    close(fig)
    with pytest.raises(ValueError, match="labels"):
        seeds.plot(labels=["a"])


# -- the command line's summary ----------------------------------------------------


def test_the_command_line_prints_the_blow_up_suggestions_and_notes(capsys):
    pytest.importorskip("matplotlib")
    from clr_jax.cli import _commands, _compare

    for name in ("range_test_cnn_momentum_400", "range_test_cnn_momentum_100"):
        result = load(name)
        config = result.config
        sweep = _compare.Sweep(
            start_lr=config.start_lr, end_lr=config.end_lr, num_steps=config.num_steps
        )
        summary = _compare.range_test_summary(result, sweep)
        _commands._print_range_test(summary)
        out = capsys.readouterr().out
        assert "the loss blew up at iteration" in out
        assert set(summary["suggestions"]) == set(_reading.METHODS)
        for note in summary["notes"]:
            assert f"note: {note}" in out
        json.dumps(summary, allow_nan=False)  # plain data
    assert "no clear descent" in " ".join(summary["notes"])
    assert "bounds: none" in out


# -- many sweeps: one sweep and the mean, validation curves included -------------


def test_a_sweep_and_the_mean_carry_the_validation_curves():
    result = disagreeing_sweeps()
    steps = np.arange(9, 300, 10, dtype=np.int32)
    val_losses = np.asarray(result.losses)[:, steps] + 0.1
    val_losses[2, -4:] = np.nan  # the last sweep diverged
    result = result.replace(
        val_steps=np.broadcast_to(steps, val_losses.shape),
        val_losses=val_losses,
        val_metrics=1.0 / val_losses,
    )
    for k in range(3):
        one = result.sweep(k)
        np.testing.assert_array_equal(one.val_steps, steps)
        np.testing.assert_array_equal(one.val_losses, val_losses[k])
        np.testing.assert_array_equal(one.val_metrics, 1.0 / val_losses[k])
    mean = result.mean()
    np.testing.assert_array_equal(mean.val_steps, steps)
    np.testing.assert_allclose(mean.val_losses, val_losses.mean(axis=0))
    assert np.all(np.isnan(mean.val_losses[-4:]))
    np.testing.assert_allclose(mean.val_metrics, (1.0 / val_losses).mean(axis=0))
    bare = disagreeing_sweeps()
    assert bare.sweep(0).val_losses is None and bare.mean().val_steps is None


# -- the optimizer in the record -------------------------------------------------


def test_the_recorded_optimizer_has_no_memory_address():
    describe = _describe.describe_optimizer
    assert describe(optax.sgd) == "optax.sgd"
    assert describe(functools.partial(optax.sgd, momentum=0.9)) == (
        "optax.sgd(momentum=0.9)"
    )
    assert describe(optax.inject_hyperparams(optax.adam)) == (
        "optax.inject_hyperparams(optax.adam)"
    )
    schedule = clr_jax.triangular(1e-3, 1e-2, 10)
    assert describe(functools.partial(optax.sgd, learning_rate=schedule)) == (
        f"optax.sgd(learning_rate={schedule!r})"
    )
    ready = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    assert describe(ready, ready.init(W0)) == (  # the rate is the sweep's
        "optax.GradientTransformationExtraArgs(momentum=0.9)"
    )

    def local_factory(learning_rate):
        return optax.sgd(learning_rate)

    assert describe(local_factory).endswith(
        "test_the_recorded_optimizer_has_no_memory_address.<locals>.local_factory"
    )
    assert one_sweep().config.optimizer == "optax.sgd"
    assert decay_sweeps().config.optimizer == "optax.adamw"


# -- the oracle (kept from before) -----------------------------------------------


def test_a_result_is_a_pytree_whose_settings_are_static():
    result = one_sweep()
    leaves, treedef = jax.tree.flatten(result)
    again = jax.tree.unflatten(treedef, leaves)
    assert again.config == result.config
    assert result.config.num_steps == ORACLE["num_steps"]
    assert result.config.start_lr == ORACLE["start_lr"]
    np.testing.assert_array_equal(again.losses, result.losses)
