"""Any pytree model: Equinox modules, NNX modules with state, nnx.Optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clr_jax
from clr_jax.data import batch_indices, take

eqx = pytest.importorskip("equinox")

X = jax.random.normal(jax.random.key(0), (256, 2))
DATA = (X, jnp.sin(X.sum(-1, keepdims=True)))
STEPS = 40
KW = dict(batch_size=32, start_lr=1e-3, end_lr=1.0, num_steps=STEPS, progress=False)
LRS = clr_jax.lr_sweep(1e-3, 1.0, STEPS)(jnp.arange(STEPS))
INDICES = batch_indices(jax.random.key(0), 256, 32, STEPS)


def mse(predict, batch):
    x, y = batch
    return jnp.mean((predict(x) - y) ** 2)


def reference_losses(params, step, steps=10):
    """``step`` at the sweep's rates on the sweep's batches, one at a time."""
    losses = []
    for t in range(steps):
        loss, params = step(params, take(DATA, INDICES[t]), LRS[t])
        losses.append(float(loss))
    return losses, params


# -- Equinox ------------------------------------------------------------------


def eqx_loss(model, batch):
    return mse(jax.vmap(model), batch)


def test_equinox_mlp_trains_like_filtered_sgd_and_keeps_its_static_leaves():
    mlp = eqx.nn.MLP(2, 1, 16, 2, key=jax.random.key(1))
    res = clr_jax.range_test(eqx_loss, mlp, DATA, diverge_threshold=None, **KW)

    @eqx.filter_jit
    def sgd_step(model, batch, lr):
        loss, grads = eqx.filter_value_and_grad(eqx_loss)(model, batch)
        updates = jax.tree.map(lambda g: -lr * g, grads)
        return loss, eqx.apply_updates(model, updates)

    expected, _ = reference_losses(mlp, sgd_step)
    np.testing.assert_allclose(res.losses[:10], expected, rtol=1e-5)
    trained = res.final_state.params
    assert isinstance(trained, eqx.nn.MLP)
    assert trained.activation is mlp.activation  # a function leaf, passed through
    assert not np.allclose(trained.layers[0].weight, mlp.layers[0].weight)
    assert np.isfinite(eqx_loss(trained, DATA))


class Scaled(eqx.Module):
    """A custom module: trained weights, an integer counter, a function, a name."""

    weight: jax.Array
    calls: jax.Array
    squash: object
    name: str = eqx.field(static=True)

    def __call__(self, x):
        return self.squash(x @ self.weight)


def test_custom_equinox_module_trains_only_its_float_arrays():
    model = Scaled(jnp.full((2, 1), 0.1), jnp.array(7, jnp.int32), jnp.tanh, "m")
    res = clr_jax.range_test(eqx_loss, model, DATA, **KW)
    trained = res.final_state.params
    assert isinstance(trained, Scaled) and trained.name == "m"
    assert trained.squash is jnp.tanh
    assert int(trained.calls) == 7 and trained.calls.dtype == jnp.int32
    assert not np.allclose(trained.weight, model.weight)
    # The optimizer state covers the trained leaf only.
    opt_leaves = jax.tree.leaves(res.final_state.opt_state)
    assert all(leaf.shape in ((), (2, 1)) for leaf in opt_leaves)


def test_step_fn_that_changes_a_static_leaf_is_refused():
    def step(state, batch, lr):
        return {"w": state["w"] - lr, "f": jnp.sin}, jnp.mean(batch)

    state = {"w": jnp.float32(1.0), "f": jnp.tanh}
    with pytest.raises(ValueError, match=r"non-array leaves .* at \['f'\]"):
        clr_jax.range_test_with_step(
            step, state, jnp.ones((20, 4)), batched=True, num_steps=10, progress=False
        )


def test_params_without_a_float_array_are_refused():
    with pytest.raises(ValueError, match="`params` must hold at least one floating"):
        clr_jax.range_test(eqx_loss, {"n": jnp.arange(3)}, DATA, **KW)


# -- Flax NNX -----------------------------------------------------------------

nnx = pytest.importorskip("flax.nnx")


class Net(nnx.Module):
    def __init__(self, rngs, dropout=0.0):
        self.lin = nnx.Linear(2, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.bn(self.lin(x)))))


def nnx_loss(model, batch):
    return mse(model, batch)


def nnx_reference(model, steps):
    """SGD on the Params through NNX's own split/merge, statistics carried."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_of(params, rest, batch):
        # Fresh variables at this trace level: NNX mutates only those.
        params, rest = jax.tree.map(lambda a: a, (params, rest))
        instance = nnx.merge(graphdef, params, rest)
        loss = nnx_loss(instance, batch)
        return loss, nnx.split(instance, nnx.Param, ...)[2]

    @jax.jit
    def step(params, rest, batch, lr):
        grad_fn = jax.value_and_grad(loss_of, has_aux=True)
        (loss, rest), grads = grad_fn(params, rest, batch)
        return loss, jax.tree.map(lambda p, g: p - lr * g, params, grads), rest

    losses = []
    for t in range(steps):
        loss, params, rest = step(params, rest, take(DATA, INDICES[t]), LRS[t])
        losses.append(float(loss))
    return losses, nnx.merge(graphdef, params, rest)


def test_nnx_batchnorm_trains_params_and_follows_its_statistics():
    net = Net(nnx.Rngs(0))
    before = np.array(net.bn.mean[...])
    res = clr_jax.range_test(nnx_loss, net, DATA, diverge_threshold=None, **KW)
    assert res.diverged_step is None
    expected, reference = nnx_reference(net, STEPS)
    np.testing.assert_allclose(res.losses, expected, rtol=1e-4, atol=1e-6)
    trained = res.final_state.params
    assert isinstance(trained, Net)
    for got, want in [
        (trained.bn.mean, reference.bn.mean),  # followed the forward pass
        (trained.bn.var, reference.bn.var),
        (trained.lin.kernel, reference.lin.kernel),  # trained
    ]:
        np.testing.assert_allclose(got[...], want[...], rtol=1e-4, atol=1e-6)
    assert not np.allclose(trained.bn.mean[...], before)
    np.testing.assert_array_equal(net.bn.mean[...], before)  # the caller's is kept


def test_nnx_dropout_rng_counter_follows_the_forward_pass():
    net = Net(nnx.Rngs(0, dropout=1), dropout=0.5)
    res = clr_jax.range_test(nnx_loss, net, DATA, **KW)
    steps_run = STEPS if res.diverged_step is None else res.diverged_step
    assert int(res.final_state.params.drop.rngs.count[...]) == steps_run
    assert int(net.drop.rngs.count[...]) == 0


def test_nnx_optimizer_is_accepted_and_other_wrt_refused():
    net = Net(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    opt = nnx.Optimizer(net, tx, wrt=nnx.Param)
    res = clr_jax.range_test(nnx_loss, net, DATA, optimizer=opt, **KW)
    same = clr_jax.range_test(nnx_loss, net, DATA, optimizer=tx, **KW)
    np.testing.assert_array_equal(res.losses, same.losses)
    assert res.losses[0] > np.nanmin(res.losses)  # it trains
    other = nnx.Optimizer(net, tx, wrt=nnx.BatchStat)
    with pytest.raises(ValueError, match=r"`optimizer` must be an nnx\.Optimizer"):
        clr_jax.range_test(nnx_loss, net, DATA, optimizer=other, **KW)
