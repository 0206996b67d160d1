"""Any model in ``fit``: NNX modules (in place, factories, nnx.Optimizer) and
pytree models (Equinox), differentiating only their inexact leaves."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from clr_jax import flax as clr_flax
from tests.fit_helpers import small_digits

KEY = jax.random.key(0)
digits = pytest.fixture(scope="module")(small_digits)


class NnxNet(nnx.Module):
    """BatchNorm statistics and a dropout RNG stream besides the weights."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.out = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.norm(self.hidden(x)))))


def fit(model, data, **kwargs):
    settings = dict(
        epochs=2,
        batch_size=64,
        key=KEY,
        optimizer=optax.sgd,
        learning_rate=0.1,
        momentum=0.9,
        progress=False,
    )
    settings.update(kwargs)
    settings = {k: x for k, x in settings.items() if x is not None}
    return clr_flax.fit(model, data, **settings)


def test_a_built_nnx_module_is_updated_in_place(digits):
    module = NnxNet(nnx.Rngs(0))
    before = nnx.state(module, nnx.Param)
    before = jax.tree.map(np.array, before)
    result = fit(module, digits)
    assert result.model is module
    after = nnx.state(module, nnx.Param)
    trained = jax.tree.leaves(result.state.params)
    for a, b in zip(jax.tree.leaves(after), trained, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    )
    # BatchNorm statistics and the dropout stream's counter moved too.
    stats = jax.tree.leaves(nnx.state(module, nnx.BatchStat))
    assert any(np.any(leaf != 0) for leaf in stats)
    counts = jax.tree.leaves(nnx.state(module, nnx.RngCount))
    assert max(int(c) for c in counts) >= 10  # one dropout draw per update
    # The module now predicts as the trained state does.
    module.eval()
    logits = module(jnp.asarray(digits.x_test))
    accuracy = np.mean(np.argmax(logits, -1) == digits.y_test)
    np.testing.assert_allclose(accuracy, result.history.test_accuracy[-1], atol=1e-6)


def test_an_nnx_factory_gives_a_fresh_trained_module(digits):
    result = fit(NnxNet, digits)
    assert isinstance(result.model, NnxNet)
    for a, b in zip(
        jax.tree.leaves(nnx.state(result.model, nnx.Param)),
        jax.tree.leaves(result.state.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert fit(NnxNet, digits, seeds=2).model is None  # many runs: no one module


def test_an_nnx_optimizer_is_continued_and_updated_in_place(digits):
    module = NnxNet(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    opt = nnx.Optimizer(module, tx, wrt=nnx.Param)
    result = fit(module, digits, optimizer=opt, learning_rate=None, momentum=None)
    assert int(opt.step[...]) == 10 == int(result.state.step)
    trace = jax.tree.leaves(nnx.as_pure(opt.opt_state))
    for a, b in zip(trace, jax.tree.leaves(result.state.opt_state), strict=True):
        np.testing.assert_array_equal(a, b)
    # A second call continues from the optimizer's state and step: epochs
    # is the total, the start epoch read from the step.
    again = fit(
        module, digits, epochs=4, optimizer=opt, learning_rate=None, momentum=None
    )
    np.testing.assert_array_equal(again.history.step, np.arange(10, 20))
    with pytest.raises(ValueError, match=r"`optimizer`"):
        fit(NnxNet, digits, optimizer=opt, learning_rate=None, momentum=None)


def test_an_equinox_mlp_trains_through_per_example(digits):
    mlp = eqx.nn.MLP(64, 10, width_size=16, depth=1, key=jax.random.key(1))
    result = fit(clr_flax.per_example(mlp), digits, epochs=3)
    accuracy = result.history.test_accuracy
    assert accuracy[-1] > max(accuracy[0], 0.3)  # it learns (15 updates)
    trained = result.model.model
    assert isinstance(trained, eqx.nn.MLP)
    assert trained.activation is mlp.activation  # static leaves pass through
    before, after = (
        eqx.filter(mlp, eqx.is_inexact_array),
        eqx.filter(trained, eqx.is_inexact_array),
    )
    assert not np.array_equal(before.layers[0].weight, after.layers[0].weight)
    logits = jax.vmap(trained)(jnp.asarray(digits.x_test))
    accuracy = np.mean(np.argmax(logits, -1) == digits.y_test)
    np.testing.assert_allclose(accuracy, result.history.test_accuracy[-1], atol=1e-6)


class Custom(eqx.Module):
    """A batched model with static and integer leaves beside its weights."""

    weight: jax.Array
    bias: jax.Array
    calls: jax.Array  # an integer array: passed through, never differentiated
    scale: float = eqx.field(static=True)
    activation: callable = jax.nn.relu

    def __init__(self, key):
        self.weight = 0.1 * jax.random.normal(key, (64, 10))
        self.bias = jnp.zeros(10)
        self.calls = jnp.zeros((), jnp.int32)
        self.scale = 2.0

    def __call__(self, x):
        return self.scale * (self.activation(x) @ self.weight + self.bias[None])


def test_a_custom_equinox_module_updates_only_inexact_leaves(digits):
    model = Custom(jax.random.key(2))
    result = fit(model, digits)
    trained = result.model
    assert isinstance(trained, Custom) and trained.scale == 2.0
    assert trained.calls is model.calls
    assert not np.array_equal(trained.weight, model.weight)
    assert result.history.train_loss[-1] < result.history.train_loss[0]
    with pytest.raises(ValueError, match=r"`seeds`"):
        fit(model, digits, seeds=2)
