"""The range test as a JAX function: jit, vmap, a user's program, no recompiles."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clr_jax
from clr_jax.range_test import _engine
from tests.helpers import TraceCounter

X = jnp.linspace(-1.0, 1.0, 256)
DATA = (X, 3.0 * X + 0.1 * jax.random.normal(jax.random.key(0), (256,)))
KW = dict(batch_size=32, start_lr=1e-4, end_lr=100.0, num_steps=60, progress=False)


def loss_fn(w, batch):
    xb, yb = batch
    return jnp.mean((w * xb - yb) ** 2)


W0 = jnp.float32(0.0)


def sweep(key=None, params=W0, **kw):
    return clr_jax.range_test(loss_fn, params, DATA, key=key, **(KW | kw))


def assert_curves_close(a, b):
    # float32 round-off differs between batched and single programs
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_jit_vmap_over_keys_equals_one_by_one_and_the_built_in_batching():
    keys = jax.random.split(jax.random.key(1), 3)
    vmapped = jax.jit(jax.vmap(lambda k: sweep(k).losses))(keys)
    built_in = sweep(keys)
    assert vmapped.shape == (3, 60)
    assert_curves_close(vmapped, built_in.losses)
    singles = [sweep(k) for k in keys]
    for k, one in enumerate(singles):
        assert_curves_close(vmapped[k], one.losses)
    assert built_in.diverged_step == tuple(one.diverged_step for one in singles)


def test_traced_result_is_the_device_form_pytree():
    def program(w):
        return sweep(params=w)

    traced = jax.jit(program)(jnp.float32(0.0))
    host = sweep()
    assert isinstance(traced, clr_jax.RangeTestResult)
    assert traced.diverged_step.dtype == jnp.int32
    assert int(traced.diverged_step) == host.diverged_step
    assert_curves_close(traced.losses, host.losses)
    assert traced.config.start_lr == KW["start_lr"]  # concrete settings kept
    never = jax.jit(lambda w: sweep(params=w, end_lr=1e-2))(jnp.float32(0.0))
    assert int(never.diverged_step) == -1  # the device form's "never"
    assert sweep(end_lr=1e-2).diverged_step is None  # the host form's


def test_inside_a_users_jitted_program():
    @jax.jit
    def best_rate_and_final_weight(w0):
        res = sweep(params=w0)
        t = jnp.nanargmin(res.smoothed_losses)
        return res.lrs[t], res.final_state.params

    lr, w = best_rate_and_final_weight(jnp.float32(0.5))
    host = sweep(params=jnp.float32(0.5))
    np.testing.assert_allclose(lr, host.lrs[np.nanargmin(host.smoothed_losses)])
    np.testing.assert_allclose(w, host.final_state.params, rtol=1e-5)


def test_vmap_over_params_equals_batched_params():
    inits = jnp.array([0.0, 1.0, -2.0])
    vmapped = jax.vmap(lambda w: sweep(params=w).losses)(inits)
    stacked = sweep(params=inits, batched_params=True)
    assert stacked.num_sweeps == 3
    assert_curves_close(vmapped, stacked.losses)
    for k, w in enumerate(inits):
        assert_curves_close(stacked.losses[k], sweep(params=w).losses)
    np.testing.assert_allclose(
        stacked.final_state.params[1], sweep(params=1.0).final_state.params, rtol=1e-5
    )


def test_vmap_over_optimizer_hyperparameters_equals_built_in_hyperparams():
    decays = jnp.array([0.0, 0.5])
    adamw = dict(optimizer=optax.adamw, start_lr=1e-3, end_lr=10.0)

    def one(wd):
        return sweep(hyperparams={"weight_decay": wd}, **adamw).losses

    built_in = sweep(hyperparams={"weight_decay": decays}, **adamw)
    assert_curves_close(jax.jit(jax.vmap(one))(decays), built_in.losses)
    partial = functools.partial(optax.adamw, weight_decay=0.5)
    assert_curves_close(
        built_in.losses[1],
        sweep(**(adamw | {"optimizer": partial})).losses,
    )


def test_vmap_over_start_and_end_lr_equals_one_by_one():
    starts, ends = jnp.array([1e-4, 1e-3]), jnp.array([10.0, 100.0])
    out = jax.vmap(lambda s, e: sweep(start_lr=s, end_lr=e))(starts, ends)
    for k in range(2):
        one = sweep(start_lr=float(starts[k]), end_lr=float(ends[k]))
        assert_curves_close(out.losses[k], one.losses)
        assert_curves_close(out.lrs[k], one.lrs)
        assert int(out.diverged_step[k]) == one.diverged_step


def test_range_test_with_step_under_jit_and_vmap():
    def step(w, batch, lr):  # SGD on 0.5 * (w - x)**2: diverges past lr = 2
        return w - lr * (w - batch.mean()), 0.5 * jnp.mean((w - batch) ** 2)

    x = jax.random.normal(jax.random.key(2), (256,))
    args = dict(batch_size=16, start_lr=1e-3, end_lr=10.0, num_steps=80, progress=False)

    def run(w0):
        return clr_jax.range_test_with_step(step, w0, x, **args)

    inits = jnp.array([3.0, -1.0])
    out = jax.jit(jax.vmap(run))(inits)
    for k in range(2):
        one = run(inits[k])
        assert_curves_close(out.losses[k], one.losses)
        assert int(out.diverged_step[k]) == one.diverged_step
        assert 2.0 < float(one.lrs[one.diverged_step]) < 5.0


def test_host_only_forms_refused_inside_a_trace():
    batches = iter([(X[:32], X[:32])] * 60)
    with pytest.raises(TypeError, match="loader or iterator cannot be read inside"):
        jax.jit(lambda w: clr_jax.range_test(loss_fn, w, batches, **KW).losses)(0.0)
    with pytest.raises(ValueError, match="`progress` must be False or None inside"):
        jax.jit(lambda w: sweep(params=w, progress=True).losses)(0.0)


def test_other_rates_and_keys_reuse_the_compiled_sweep():
    counted = TraceCounter(loss_fn)

    def run(**kw):
        return clr_jax.range_test(counted, jnp.float32(0.0), DATA, **(KW | kw))

    run()
    traces, cache = counted.count, _engine.run_chunk._cache_size()
    lr_cache = _engine.sweep_lrs._cache_size()
    run(start_lr=1e-3, end_lr=30.0)
    run(start_lr=3e-5, end_lr=3.0, key=jax.random.key(9), beta=0.9)
    assert counted.count == traces
    assert _engine.run_chunk._cache_size() == cache
    assert _engine.sweep_lrs._cache_size() == lr_cache


def test_many_sweeps_stop_once_every_sweep_has_diverged():
    calls = []

    def step(w, batch, lr):
        jax.debug.callback(lambda: calls.append(1))
        return w - lr * (w - batch.mean()), 0.5 * jnp.mean((w - batch) ** 2)

    x = jax.random.normal(jax.random.key(2), (256,))
    keys = jax.random.split(jax.random.key(3), 4)
    res = clr_jax.range_test_with_step(
        step,
        jnp.float32(3.0),
        x,
        batch_size=16,
        key=keys,
        start_lr=1e-2,
        end_lr=1e4,
        num_steps=320,
        progress=False,
    )
    jax.effects_barrier()
    last = max(res.diverged_step)
    assert last < 200
    # Steps run in blocks of at most 32: the loop stops within a block of the
    # last divergence (one callback per step and sweep), not after 320 steps.
    assert len(calls) <= 4 * (last + 32)
