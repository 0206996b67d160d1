"""The LR range test: oracle, equivalences, divergence, suggestions, I/O."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clr_jax
from clr_jax._tree import all_finite
from clr_jax.data import batch_indices, take
from clr_jax.range_test._engine import run_chunk
from tests.helpers import TraceCounter

# -- the oracle: SGD on 0.5 * L * (w - x)**2 diverges exactly when lr > 2/L ------

CURVATURE = 4.0
CRITICAL_LR = 2.0 / CURVATURE  # |1 - lr * L| > 1  <=>  lr > 2/L
N, DIM, BATCH = 2048, 2, 32


@functools.cache
def quadratic_data(seed=0, offset=3.0):
    x = offset + np.random.default_rng(seed).normal(size=(N, DIM))
    return {"x": jnp.asarray(x, jnp.float32)}


def quadratic_loss(params, batch, shift=0.0):
    per_example = (
        0.5 * CURVATURE * jnp.sum((params["w"][None, :] - batch["x"]) ** 2, -1)
    )
    return jnp.mean(per_example) + shift


def close_to_mean(params, batch):
    """A bounded 'accuracy': share of examples within 1 of the parameters."""
    dist = jnp.sqrt(jnp.sum((params["w"][None, :] - batch["x"]) ** 2, -1))
    return jnp.mean(dist < 1.5)


W0 = {"w": jnp.zeros(DIM)}
ORACLE = dict(batch_size=BATCH, start_lr=1e-3, end_lr=10.0, num_steps=300)


@functools.cache
def oracle_result():
    return clr_jax.range_test(
        quadratic_loss, W0, quadratic_data(), progress=False, **ORACLE
    )


def test_oracle_divergence_lr_is_just_past_two_over_curvature():
    res = oracle_result()
    assert res.diverged_step is not None
    diverged_lr = float(res.lrs[res.diverged_step])
    assert CRITICAL_LR <= diverged_lr <= 1.6 * CRITICAL_LR
    before = res.lrs <= CRITICAL_LR
    assert np.all(np.isfinite(res.losses[before]))
    assert np.all(np.isnan(res.losses[res.diverged_step + 1 :]))


def test_oracle_suggestions_and_bounds_are_below_the_critical_lr():
    res = oracle_result()
    suggestions = res.suggestions()
    assert all(0.0 < lr < CRITICAL_LR for lr in suggestions.values()), suggestions
    base_lr, max_lr = res.bounds()
    assert 0.0 < base_lr < max_lr < CRITICAL_LR
    report = res.bounds_report()
    assert report.source == "loss" and "base_lr" in report.reason
    sched = res.to_schedule("triangular", step_size=10)
    np.testing.assert_allclose([sched(0), sched(10)], [base_lr, max_lr], rtol=1e-6)


def test_state_is_frozen_at_the_last_finite_state():
    res = oracle_result()
    w = res.final_state.params["w"]
    assert np.all(np.isfinite(w))
    # The frozen parameters are those the diverging step was measured at.
    idx = batch_indices(jax.random.key(0), N, BATCH, 300)[res.diverged_step]
    loss = quadratic_loss({"w": w}, take(quadratic_data(), idx))
    np.testing.assert_allclose(loss, res.losses[res.diverged_step], rtol=1e-5)


# -- equivalences ------------------------------------------------------------


def test_scan_equals_a_python_loop_step_by_step():
    data, steps, beta = quadratic_data(1), 60, 0.9
    res = clr_jax.range_test(
        quadratic_loss,
        W0,
        data,
        batch_size=BATCH,
        optimizer=functools.partial(optax.sgd, momentum=0.9),
        start_lr=1e-3,
        end_lr=1.0,
        num_steps=steps,
        beta=beta,
        key=jax.random.key(7),
        progress=False,
    )
    idx = batch_indices(jax.random.key(7), N, BATCH, steps)
    lrs = clr_jax.lr_sweep(1e-3, 1.0, steps)(jnp.arange(steps))

    @jax.jit
    def reference_step(params, opt_state, batch, lr):
        loss, grads = jax.value_and_grad(quadratic_loss)(params, batch)
        updates, opt_state = optax.sgd(lr, momentum=0.9).update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state = W0, optax.sgd(0.0, momentum=0.9).init(W0)
    ema, best, losses, smoothed, diverged = 0.0, np.inf, [], [], None
    for t in range(steps):
        batch = take(data, idx[t])
        params, opt_state, loss = reference_step(params, opt_state, batch, lrs[t])
        ema = beta * ema + (1 - beta) * float(loss)
        losses.append(float(loss))
        smoothed.append(ema / (1 - beta ** (t + 1)))
        best = min(best, smoothed[-1])
        if smoothed[-1] - best > 3.0 * abs(best):
            diverged = t
            break
    n = len(losses)
    np.testing.assert_allclose(res.lrs, lrs, rtol=1e-6)
    np.testing.assert_allclose(res.losses[:n], losses, rtol=2e-5)
    np.testing.assert_allclose(res.smoothed_losses[:n], smoothed, rtol=2e-5)
    assert res.diverged_step == diverged


def test_vmapped_seeds_equal_single_sweeps():
    keys = jax.random.split(jax.random.key(3), 3)
    kw = ORACLE
    many = clr_jax.range_test(
        quadratic_loss, W0, quadratic_data(), key=keys, progress=False, **kw
    )
    assert many.num_sweeps == 3 and many.losses.shape == (3, 300)
    for k in range(3):
        one = clr_jax.range_test(
            quadratic_loss, W0, quadratic_data(), key=keys[k], progress=False, **kw
        )
        np.testing.assert_allclose(many.sweep(k).losses, one.losses, rtol=1e-5)
        assert many.diverged_step[k] == one.diverged_step
        # Frozen at its own divergence while the other sweeps ran on.
        np.testing.assert_allclose(
            many.final_state.params["w"][k], one.final_state.params["w"], rtol=1e-5
        )
    assert len(set(many.diverged_step)) >= 2  # the sweeps stop at different steps
    assert many.suggest("valley").shape == (3,)


def test_vmapped_weight_decays_equal_single_sweeps():
    decays = [0.0, 0.5]
    kw = dict(ORACLE, start_lr=1e-4)
    many = clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        optimizer=optax.adamw,
        hyperparams={"weight_decay": decays},
        progress=False,
        **kw,
    )
    for k, wd in enumerate(decays):
        one = clr_jax.range_test(
            quadratic_loss,
            W0,
            quadratic_data(),
            optimizer=functools.partial(optax.adamw, weight_decay=wd),
            progress=False,
            **kw,
        )
        np.testing.assert_allclose(many.sweep(k).losses, one.losses, rtol=1e-5)
    assert not np.allclose(many.losses[0], many.losses[1], equal_nan=True)
    wd = many.final_state.opt_state.hyperparams["weight_decay"]
    np.testing.assert_allclose(wd, decays)


# -- divergence ----------------------------------------------------------------


def test_nan_loss_diverges_and_freezes_finite_params():
    def loss_fn(params, batch):  # NaN once w crosses 1
        return quadratic_loss(params, batch) + jnp.sum(jnp.sqrt(1.0 - params["w"]))

    res = clr_jax.range_test(
        loss_fn, W0, quadratic_data(), progress=False, diverge_threshold=None, **ORACLE
    )
    t = res.diverged_step
    assert t is not None and not np.isfinite(res.losses[t])
    assert np.all(np.isfinite(res.losses[:t]))
    assert np.all(np.isnan(res.losses[t + 1 :]))
    assert np.all(np.isnan(res.smoothed_losses[t + 1 :]))
    assert np.all(np.isfinite(res.final_state.params["w"]))


def test_non_finite_update_diverges_and_keeps_the_previous_state():
    def step(w, batch, lr):  # finite loss, but the update overflows at lr > 1
        loss = jnp.mean(batch) + lr
        return jnp.where(lr > 1.0, jnp.inf, w + 1.0), loss

    res = clr_jax.range_test_with_step(
        step,
        jnp.float32(0.0),
        jnp.ones((30, 4)),
        batched=True,
        start_lr=1e-2,
        end_lr=10.0,
        num_steps=30,
        diverge_threshold=None,
        progress=False,
    )
    t = res.diverged_step
    assert float(res.lrs[t]) > 1.0 >= float(res.lrs[t - 1])
    assert np.isfinite(res.losses[t])  # the loss was fine; the update was not
    assert float(res.final_state) == t  # t updates applied, the t-th dropped


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, None])
def test_the_finiteness_check_sees_exactly_the_non_finite_elements(bad):
    big = np.full(1000, 3e38, np.float32)  # finite, though its sum is not
    tree = {"w": big, "b": jnp.ones(3, jnp.bfloat16), "n": jnp.arange(3)}
    if bad is not None:
        tree["w"] = big.copy()
        tree["w"][500] = bad
    assert bool(jax.jit(all_finite)(tree)) is (bad is None)


def _marked_step(s, batch, lr):
    """Writes inf into an unused leaf at step ``inf_at``, a NaN loss at
    ``nan_at``; otherwise a plain finite step."""
    loss = jnp.mean((s["w"] - batch) ** 2)
    loss = jnp.where(s["count"] == s["nan_at"], jnp.nan, loss)
    spare = jnp.where(s["count"] == s["inf_at"], jnp.inf, s["spare"])
    w = s["w"] - lr * 2.0 * (s["w"] - jnp.mean(batch))
    return dict(s, w=w, spare=spare, count=s["count"] + 1), loss


def _masked_reference(state, batches, lrs, beta):
    """The sweep's semantics step by step: stop at a non-finite loss or state,
    keep the last finite state; NaN losses from the divergence on."""
    n = len(lrs)
    losses, smoothed, ema = np.full(n, np.nan), np.full(n, np.nan), 0.0
    for t in range(n):
        new, loss = jax.jit(_marked_step)(state, batches[t], lrs[t])
        losses[t] = loss
        ema = beta * ema + (1 - beta) * float(loss)
        smoothed[t] = ema / (1 - beta ** (t + 1))
        if not np.isfinite(loss) or not np.all(np.isfinite(new["spare"])):
            return losses, smoothed, t, state
        state = new
    return losses, smoothed, None, state


def test_divergence_inside_a_block_matches_the_step_by_step_reference():
    # 59 steps run as six blocks of 10, the last step padding; the sweeps
    # diverge mid-block (a non-finite state with a finite loss, a NaN loss),
    # on a block's first step, or never (through the padding). Blocks in
    # which no sweep diverges come after divergences and before the padding.
    inf_at, nan_at = np.array([7, -1, 30, -1]), np.array([-1, 25, -1, -1])
    k, n, beta = len(inf_at), 59, 0.9
    states = {
        "w": jnp.zeros(k),
        "spare": jnp.zeros(k),
        "count": jnp.zeros(k, jnp.int32),
        "inf_at": jnp.asarray(inf_at, jnp.int32),
        "nan_at": jnp.asarray(nan_at, jnp.int32),
    }
    batches = jax.random.normal(jax.random.key(4), (n, 8))
    kw = dict(batched=True, start_lr=1e-3, end_lr=0.1, num_steps=n, beta=beta)
    kw |= dict(diverge_threshold=None, progress=False)
    res = clr_jax.range_test_with_step(
        _marked_step, states, batches, batched_state=True, **kw
    )

    def one(state):  # one sweep; under a user's vmap below
        r = clr_jax.range_test_with_step(_marked_step, state, batches, **kw)
        return r.losses, r.diverged_step, r.final_state

    vmapped = jax.jit(jax.vmap(one))(states)
    for i in range(k):
        state = jax.tree.map(lambda x, i=i: x[i], states)
        losses, smoothed, t, final = _masked_reference(state, batches, res.lrs[i], beta)
        np.testing.assert_allclose(res.losses[i], losses, rtol=1e-6)
        np.testing.assert_allclose(res.smoothed_losses[i], smoothed, rtol=1e-5)
        np.testing.assert_allclose(vmapped[0][i], losses, rtol=1e-6)
        assert res.diverged_step[i] == t
        assert int(vmapped[1][i]) == (-1 if t is None else t)
        for got in (res.final_state, vmapped[2]):
            assert int(got["count"][i]) == (n if t is None else t)
            np.testing.assert_allclose(got["w"][i], final["w"], rtol=1e-6)
            assert float(got["spare"][i]) == 0.0


def test_negative_losses_diverge_past_the_critical_lr_only():
    shifted = functools.partial(quadratic_loss, shift=-10.0)
    res = clr_jax.range_test(shifted, W0, quadratic_data(), progress=False, **ORACLE)
    assert np.nanmin(res.losses) < 0
    assert res.diverged_step is not None
    assert float(res.lrs[res.diverged_step]) >= CRITICAL_LR
    # Suggestions do not depend on a constant shift of the loss.
    np.testing.assert_allclose(
        res.suggest("valley"), oracle_result().suggest("valley"), rtol=0.07
    )
    assert 0 < res.bounds()[1] < CRITICAL_LR


def test_without_threshold_only_non_finite_losses_stop_the_sweep():
    res = clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        progress=False,
        diverge_threshold=None,
        **ORACLE,
    )
    t = res.diverged_step
    assert t is None or t > oracle_result().diverged_step
    assert t is None or not np.isfinite(res.losses[t])


# -- metric, caching, purity ------------------------------------------------------


def test_metric_is_recorded_and_drives_the_bounds():
    res = clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        metric_fn=close_to_mean,
        progress=False,
        **ORACLE,
    )
    assert res.metrics.shape == res.losses.shape
    stop = res.diverged_step
    assert np.all((res.metrics[:stop] >= 0) & (res.metrics[:stop] <= 1))
    report = res.bounds_report()
    assert report.source == "metric"
    assert 0 < report.base_lr < report.max_lr < CRITICAL_LR
    assert res.bounds(use_metric=False) == oracle_result().bounds()


def test_repeated_calls_do_not_recompile():
    loss_fn = TraceCounter(quadratic_loss)

    def run(**kw):
        sgd = functools.partial(optax.sgd, momentum=0.5)  # a new partial each call
        args = dict(ORACLE, optimizer=sgd, progress=False)
        return clr_jax.range_test(loss_fn, W0, quadratic_data(), **(args | kw))

    run()
    per_compile = loss_fn.count
    cache = run_chunk._cache_size()
    run(start_lr=1e-4, end_lr=3.0, key=jax.random.key(5), beta=0.9)
    run(diverge_threshold=8.0)
    assert loss_fn.count == per_compile > 0
    assert run_chunk._cache_size() == cache
    # A chunked sweep (what a progress bar uses) is one compiled function.
    run(chunk_size=70)
    assert run_chunk._cache_size() == cache + 1
    assert loss_fn.count == 2 * per_compile


def test_progress_bar_gives_the_same_curve(capsys):
    plain = oracle_result()
    with_bar = clr_jax.range_test(
        quadratic_loss, W0, quadratic_data(), progress=True, **ORACLE
    )
    np.testing.assert_array_equal(plain.losses, with_bar.losses)
    assert "range test" in capsys.readouterr().err


def test_no_bar_by_default_when_stderr_is_not_a_terminal(capsys):
    clr_jax.range_test(quadratic_loss, W0, quadratic_data(), **ORACLE)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="`progress`"):
        clr_jax.range_test(quadratic_loss, W0, quadratic_data(), progress=1, **ORACLE)


def test_callers_params_are_untouched():
    params = {"w": jnp.array([0.5, -0.5])}
    before = np.array(params["w"])
    res = clr_jax.range_test(
        quadratic_loss, params, quadratic_data(), progress=False, **ORACLE
    )
    assert not params["w"].is_deleted()
    np.testing.assert_array_equal(params["w"], before)
    assert not np.array_equal(res.final_state.params["w"], before)


def test_has_aux_losses():
    def loss_with_aux(params, batch):
        return quadratic_loss(params, batch), {"note": jnp.ones(3)}

    res = clr_jax.range_test(
        loss_with_aux, W0, quadratic_data(), has_aux=True, progress=False, **ORACLE
    )
    np.testing.assert_array_equal(res.losses, oracle_result().losses)


# -- data forms -------------------------------------------------------------------


def test_pre_batched_and_iterator_data_match_sampled_data():
    steps = 50
    kw = dict(start_lr=1e-3, end_lr=10.0, num_steps=steps, progress=False)
    sampled = clr_jax.range_test(
        quadratic_loss, W0, quadratic_data(), batch_size=BATCH, **kw
    )
    idx = batch_indices(jax.random.key(0), N, BATCH, steps)
    batches = take(quadratic_data(), idx)  # leaf shape [steps, batch, dim]
    pre = clr_jax.range_test(quadratic_loss, W0, batches, batched=True, **kw)
    np.testing.assert_allclose(pre.losses, sampled.losses, rtol=1e-5)

    pulled = []

    def host_batches():
        for t in range(10 * steps):
            pulled.append(t)
            yield {"x": np.asarray(batches["x"][min(t, steps - 1)])}

    it = clr_jax.range_test(quadratic_loss, W0, host_batches(), chunk_size=7, **kw)
    np.testing.assert_allclose(it.losses, sampled.losses, rtol=1e-5)
    assert len(pulled) <= steps  # never more than the sweep needs


def test_iterator_stops_early_after_divergence():
    pulled = []

    def host_batches():
        data = np.asarray(quadratic_data()["x"])
        for t in range(10**6):
            pulled.append(t)
            yield {"x": data[(t * BATCH) % N : (t * BATCH) % N + BATCH]}

    res = clr_jax.range_test(
        quadratic_loss,
        W0,
        host_batches(),
        chunk_size=10,
        progress=False,
        start_lr=1e-3,
        end_lr=100.0,
        num_steps=300,
    )
    assert res.diverged_step is not None
    assert len(pulled) <= res.diverged_step + 2 * 10 + 10


def test_exhausted_iterator_raises():
    batches = ({"x": np.ones((4, DIM), np.float32)} for _ in range(5))
    with pytest.raises(ValueError, match="`data` loader ended after 5 batches"):
        clr_jax.range_test(
            quadratic_loss, W0, batches, num_steps=20, chunk_size=4, progress=False
        )


# -- argument checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(batch_size=N + 1), "batch_size"),
        (dict(batch_size=None), "batch_size"),
        (dict(batch_size=0), "batch_size"),
        (dict(num_steps=1), "num_steps"),
        (dict(start_lr=1.0, end_lr=1.0), "end_lr"),
        (dict(start_lr=0.0), "start_lr"),
        (dict(mode="cubic"), "mode"),
        (dict(beta=1.0), "beta"),
        (dict(beta=-0.1), "beta"),
        (dict(diverge_threshold=1.0), "diverge_threshold"),
        (dict(chunk_size=500), "chunk_size"),
        (dict(key=jax.random.split(jax.random.key(0), (2, 2))), "key"),
        (dict(hyperparams={"weight_decay": [0.1, 0.2], "b1": [0.9]}), "hyperparams"),
        (dict(hyperparams={"learning_rate": [0.1]}), "hyperparams"),
        (
            dict(
                hyperparams={"weight_decay": [0.1, 0.2]},
                key=jax.random.split(jax.random.key(0), 3),
            ),
            "key",
        ),
        (dict(batched=True, num_steps=N + 1), "num_steps"),
        (dict(optimizer=None), "optimizer"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    args = dict(batch_size=BATCH, num_steps=20, progress=False) | kwargs
    if args.get("hyperparams"):
        args["optimizer"] = optax.adamw
    with pytest.raises(ValueError, match=f"`{name}"):
        clr_jax.range_test(quadratic_loss, W0, quadratic_data(), **args)


def test_step_fn_must_return_scalars():
    def step(w, batch, lr):
        return w, batch  # a vector "loss"

    with pytest.raises(ValueError, match="scalar loss"):
        clr_jax.range_test_with_step(
            step,
            jnp.float32(0.0),
            jnp.ones((100, 2)),
            batched=True,
            num_steps=100,
            progress=False,
        )
