"""Any optimizer: factories, ready transformations, nested injections, refusals."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clr_jax
from clr_jax.data import batch_indices, take

N, DIM, BATCH, STEPS = 512, 2, 16, 60
DATA = {"x": jnp.asarray(3.0 + np.random.default_rng(1).normal(size=(N, DIM)))}
W0 = {"w": jnp.zeros(DIM)}
KW = dict(batch_size=BATCH, start_lr=1e-3, end_lr=10.0, num_steps=STEPS, progress=False)


def loss_fn(params, batch):
    return 2.0 * jnp.mean(jnp.sum((params["w"][None, :] - batch["x"]) ** 2, -1))


def sweep(optimizer, **kw):
    return clr_jax.range_test(loss_fn, W0, DATA, optimizer=optimizer, **(KW | kw))


def reference(tx, steps):
    """``tx`` stepped by hand at the sweep's rates, the rate set in its state."""
    lrs = clr_jax.lr_sweep(1e-3, 10.0, STEPS)(jnp.arange(STEPS))
    idx = batch_indices(jax.random.key(0), N, BATCH, STEPS)

    @jax.jit
    def step(params, state, batch, lr):
        state = clr_jax.set_hyperparam(state, "learning_rate", lr)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    params, state, losses = W0, tx.init(W0), []
    for t in range(steps):
        params, state, loss = step(params, state, take(DATA, idx[t]), lrs[t])
        losses.append(float(loss))
    return np.array(losses)


def test_a_nested_injection_in_a_ready_chain_really_trains():
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    chain = optax.chain(optax.clip_by_global_norm(1.0), inner)
    res = sweep(chain)
    stop = res.diverged_step or STEPS
    np.testing.assert_allclose(res.losses[:stop], reference(chain, stop), rtol=1e-5)
    assert np.nanmin(res.losses) < 0.2 * res.losses[0]  # not a flat curve
    lr = res.final_state.opt_state[1].hyperparams["learning_rate"]
    assert float(lr) == pytest.approx(float(res.lrs[stop - 1]), rel=1e-6)


@pytest.mark.parametrize(
    "factory",
    [
        optax.inject_hyperparams(optax.sgd),  # injects inside
        functools.partial(clr_jax.with_schedules, optax.sgd),  # injects inside
        optax.inject_hyperparams(optax.sgd)(learning_rate=0.0),  # ready
    ],
    ids=["inject_hyperparams", "with_schedules", "ready"],
)
def test_injecting_optimizers_equal_the_plain_factory(factory):
    np.testing.assert_allclose(
        sweep(factory).losses, sweep(optax.sgd).losses, rtol=1e-6
    )


def test_with_schedules_momentum_factory_equals_optax_momentum():
    ours = sweep(functools.partial(clr_jax.with_schedules, optax.sgd, momentum=0.5))
    plain = sweep(functools.partial(optax.sgd, momentum=0.5))
    np.testing.assert_allclose(ours.losses, plain.losses, rtol=1e-5)


def test_a_ready_transformation_sweeps_its_injected_hyperparameters():
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=0.0)
    decays = [0.0, 0.5]
    many = sweep(tx, hyperparams={"weight_decay": decays}, start_lr=1e-4)
    for k, wd in enumerate(decays):
        one = sweep(functools.partial(optax.adamw, weight_decay=wd), start_lr=1e-4)
        np.testing.assert_allclose(many.losses[k], one.losses, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="`hyperparams` names 'momentum', which"):
        sweep(tx, hyperparams={"momentum": [0.9, 0.8]})


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        (optax.sgd(0.1), "no injected `learning_rate` was found"),
        (
            optax.inject_hyperparams(optax.sgd)(
                learning_rate=optax.linear_schedule(0.0, 1.0, 10)
            ),
            "is a schedule",
        ),
        (lambda lr: optax.sgd(lr), "a factory taking `learning_rate`"),
    ],
    ids=["not_injected", "scheduled", "wrong_argument"],
)
def test_an_optimizer_whose_rate_cannot_be_driven_is_refused(optimizer, message):
    calls = []

    def counted(params, batch):
        calls.append(1)
        return loss_fn(params, batch)

    with pytest.raises(ValueError, match=message):
        clr_jax.range_test(counted, W0, DATA, optimizer=optimizer, **KW)
    assert not calls  # refused before the sweep was traced


@pytest.mark.parametrize(
    ("rates", "name"),
    [
        (dict(start_lr=1e-46), "start_lr"),  # 0 in float32
        (dict(end_lr=1e39), "end_lr"),  # inf in float32
        (dict(start_lr=1e-30, end_lr=1e30), "end_lr"),  # the ratio overflows
    ],
)
def test_rates_not_finite_in_float32_are_refused_not_diverged(rates, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        sweep(optax.sgd, **rates)
