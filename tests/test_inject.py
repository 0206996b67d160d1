"""with_schedules: scheduled LR and momentum, float32 hyperparameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clr_jax


def _run(opt, params, steps):
    def step(carry, _):
        params, state = carry
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), state.hyperparams

    return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)


@pytest.mark.parametrize(
    ("factory", "name"), [(optax.sgd, "momentum"), (optax.adam, "b1")]
)
def test_bfloat16_params_keep_float32_hyperparams_and_stable_state(factory, name):
    params = {"w": jnp.ones((4,), jnp.bfloat16)}
    momentum = clr_jax.cyclical_momentum(0.9, 0.999, step_size=3)
    opt = clr_jax.with_schedules(
        factory, learning_rate=clr_jax.triangular(1e-3, 1e-2, 3), **{name: momentum}
    )
    (new_params, state), hyper = _run(opt, params, steps=7)  # a scan: stable carry
    assert hyper[name].dtype == jnp.float32
    np.testing.assert_allclose(hyper[name], momentum(jnp.arange(7)), rtol=1e-7)
    assert float(hyper[name][0]) == pytest.approx(0.999, abs=1e-7)
    assert new_params["w"].dtype == jnp.bfloat16
    init_dtypes = jax.tree.map(lambda x: x.dtype, opt.init(params))
    assert jax.tree.map(lambda x: x.dtype, state) == init_dtypes


def test_plain_inject_hyperparams_rounds_momentum_in_bfloat16():
    # The trap with_schedules exists for: optax casts to the params' dtype.
    params = jnp.ones((2,), jnp.bfloat16)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.999)
    assert float(opt.init(params).hyperparams["momentum"]) == 1.0


def test_float32_updates_equal_plain_optax():
    lr = clr_jax.one_cycle(0.1, 50)
    mom = clr_jax.one_cycle_momentum(50)
    params = {"w": jnp.linspace(-1.0, 1.0, 5)}
    ours = clr_jax.with_schedules(optax.sgd, learning_rate=lr, momentum=mom)
    plain = optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=mom)
    (p_ours, _), h_ours = _run(ours, params, steps=20)
    (p_plain, _), h_plain = _run(plain, params, steps=20)
    np.testing.assert_array_equal(p_ours["w"], p_plain["w"])
    np.testing.assert_array_equal(h_ours["learning_rate"], h_plain["learning_rate"])


def test_get_and_set_hyperparam_inside_a_chained_state():
    from clr_jax.inject import get_hyperparam, is_scheduled, set_hyperparam

    opt = optax.chain(
        optax.clip(1.0),
        clr_jax.with_schedules(optax.sgd, learning_rate=0.1, momentum=0.9),
    )
    state = opt.init(jnp.zeros(3, jnp.bfloat16))
    state = set_hyperparam(state, "learning_rate", 0.25)
    lr = get_hyperparam(state, "learning_rate")
    assert lr.dtype == jnp.float32 and float(lr) == 0.25
    assert not is_scheduled(state, "learning_rate")
    assert get_hyperparam(state, "b1", default="absent") == "absent"
    with pytest.raises(ValueError, match="`b1`"):
        set_hyperparam(state, "b1", 0.9)


def test_nested_injections_are_found_and_the_innermost_reaches_the_update():
    from clr_jax.inject import get_hyperparam, set_hyperparam

    # inject_hyperparams of a factory that injects again: the outer rate is
    # passed to the inner factory, which reads its own state instead.
    opt = optax.inject_hyperparams(optax.inject_hyperparams(optax.sgd))(
        learning_rate=0.0
    )
    params = jnp.ones(3)
    state = set_hyperparam(opt.init(params), "learning_rate", 0.5)
    assert float(state.inner_state.hyperparams["learning_rate"]) == 0.5
    assert float(state.hyperparams["learning_rate"]) == 0.5  # every one is set
    updates, _ = opt.update(jnp.ones(3), state, params)
    np.testing.assert_allclose(updates, -0.5 * np.ones(3))
    inner = state._replace(hyperparams={"learning_rate": jnp.float32(9.0)})
    assert float(get_hyperparam(inner, "learning_rate")) == 0.5  # the inner one


def test_check_settable_refuses_missing_and_scheduled_rates():
    from clr_jax.inject import check_settable

    params = jnp.ones(2)
    ok = optax.chain(optax.clip(1.0), optax.inject_hyperparams(optax.sgd)(0.1))
    check_settable(ok.init(params), "learning_rate")
    with pytest.raises(ValueError, match="`optimizer` must let the range test"):
        check_settable(optax.sgd(0.1).init(params), "learning_rate")
    scheduled = optax.inject_hyperparams(optax.sgd)(lambda c: 0.1 * c)
    with pytest.raises(ValueError, match="is a schedule"):
        check_settable(scheduled.init(params), "learning_rate")
