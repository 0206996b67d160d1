"""Tests of clr_jax.flax: the range-test adapters and the training loop ``fit``.

Tiny settings throughout (digits, a few epochs, small models): most of the
time goes into compiling, so each test compiles as few programs as it can.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import clr_jax
from clr_jax import flax as clr_flax
from clr_jax.data import Dataset, load_digits
from tests.helpers import TraceCounter, run_with_host_devices

REPO = Path(__file__).resolve().parents[1]
KEY = jax.random.key(0)


# ---------------------------------------------------------------------------
# Models: an MLP and a CNN with BatchNorm and dropout, in Linen and in NNX
# ---------------------------------------------------------------------------


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.Dropout(0.2, deterministic=not train)(x.reshape(x.shape[0], -1))
        return nn.Dense(10)(x)


class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


class NnxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.out = nnx.Linear(8 * 64, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.norm(self.conv(x)))
        return self.out(self.drop(x.reshape(x.shape[0], -1)))


MODELS = {
    "linen-mlp": (LinenMLP, False),
    "linen-cnn": (LinenCNN, True),
    "nnx-mlp": (NnxMLP, False),
    "nnx-cnn": (NnxCNN, True),
}


def make_model(name: str):
    """A fresh Linen module, or the NNX class itself (a ``rngs -> Module`` factory)."""
    cls, _ = MODELS[name]
    return cls() if issubclass(cls, nn.Module) else cls


def digits_subset() -> dict[bool, Dataset]:
    """Digits, flat and as images, cut to 640 training examples (5 batches of 128)."""

    def small(ds: Dataset) -> Dataset:
        return ds._replace(x_train=ds.x_train[:640], y_train=ds.y_train[:640])

    return {image: small(load_digits(image=image)) for image in (False, True)}


@pytest.fixture(scope="module")
def digits() -> dict[bool, Dataset]:
    return digits_subset()


def data_for(digits, name: str) -> Dataset:
    return digits[MODELS[name][1]]


def leaves(tree) -> list[np.ndarray]:
    def as_numpy(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return np.asarray(leaf)

    return [as_numpy(leaf) for leaf in jax.tree.leaves(tree)]


def assert_trees_equal(a, b) -> None:
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6) -> None:
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


SCHEDULE = clr_jax.triangular(0.02, 0.2, step_size=5)
MOMENTUM = clr_jax.cyclical_momentum(0.8, 0.95, step_size=5)


def run(name, digits, **kwargs):
    settings = dict(
        epochs=3,
        batch_size=128,
        key=KEY,
        optimizer=optax.sgd,
        learning_rate=SCHEDULE,
        momentum=MOMENTUM,
        progress=False,
    )
    settings.update(kwargs)
    return clr_flax.fit(make_model(name), data_for(digits, name), **settings)


# ---------------------------------------------------------------------------
# fit: learning, history, seeds, resuming, snapshots
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_fit_loss_falls_and_history_records_schedules(name, digits):
    result = run(name, digits, epochs=4)
    history = result.history
    steps = 4 * 5
    assert history.loss.shape == history.learning_rate.shape == (steps,)
    assert history.test_accuracy.shape == (4,)
    np.testing.assert_array_equal(history.step, np.arange(steps))
    np.testing.assert_array_equal(history.epoch, np.arange(4))
    # The LR and momentum each update used, read from the injected state.
    np.testing.assert_allclose(history.learning_rate, SCHEDULE(history.step), 1e-6)
    np.testing.assert_allclose(history.momentum, MOMENTUM(history.step), 1e-6)
    assert history.train_loss[-1] < 0.6 * history.train_loss[0]
    assert history.test_loss[-1] < history.test_loss[0]
    assert history.test_accuracy[-1] > 0.7
    assert int(history.nonfinite_step) == -1
    assert int(result.state.step) == steps
    assert result.snapshots is None and result.mean is None


def test_progress_bar_counts_epochs(digits, capsys):
    run("linen-mlp", digits, epochs=2, progress=True)  # reuses the compiled epoch
    err = capsys.readouterr().err
    assert "fit" in err and "2/2" in err and "test_acc" in err
    # By default a bar is drawn only on a terminal: a job's log stays clean.
    run("linen-mlp", digits, epochs=2, progress=None)
    assert capsys.readouterr().err == ""


def test_vmapped_seeds_equal_seeds_run_one_by_one(digits):
    seeds = 3
    together = run("nnx-cnn", digits, epochs=2, seeds=seeds)
    assert together.history.loss.shape == (seeds, 10)
    assert together.history.test_accuracy.shape == (seeds, 2)
    for i, key in enumerate(jax.random.split(KEY, seeds)):
        alone = run("nnx-cnn", digits, epochs=2, key=key)
        assert_trees_close(
            jax.tree.map(lambda a, i=i: a[i], together.history), alone.history
        )
        assert_trees_close(
            jax.tree.map(lambda a, i=i: a[i], together.state.params),
            alone.state.params,
        )
    # Seeds differ (initialisation and data order), and the summary matches.
    assert not np.allclose(together.history.loss[0], together.history.loss[1])
    np.testing.assert_allclose(
        together.mean.test_accuracy, together.history.test_accuracy.mean(0), 1e-6
    )
    np.testing.assert_allclose(
        together.std.test_accuracy, together.history.test_accuracy.std(0), 1e-5
    )


@pytest.mark.parametrize("name", ["linen-cnn", "nnx-cnn"])
def test_resuming_equals_the_uninterrupted_run_bit_for_bit(name, digits):
    full = run(name, digits, epochs=4)
    first = run(name, digits, epochs=4, start_epoch=0)
    assert_trees_equal(full.state, first.state)
    half = run(name, digits, epochs=2)
    rest = run(name, digits, epochs=4, initial_state=half.state, start_epoch=2)
    assert_trees_equal(full.state.params, rest.state.params)
    assert_trees_equal(full.state.batch_stats, rest.state.batch_stats)
    assert_trees_equal(full.state.opt_state, rest.state.opt_state)
    for field in ("step", "learning_rate", "momentum", "loss", "accuracy"):
        np.testing.assert_array_equal(
            getattr(rest.history, field), getattr(full.history, field)[10:]
        )
    np.testing.assert_array_equal(rest.history.epoch, [2, 3])
    np.testing.assert_array_equal(rest.history.test_loss, full.history.test_loss[2:])


def test_snapshots_are_taken_at_the_cycle_minima(digits):
    step_size = 5  # a cycle of 10 updates, 2 epochs of 5 batches
    schedule = clr_jax.triangular(0.01, 0.2, step_size=step_size)
    result = run(
        "linen-cnn",
        digits,
        epochs=6,
        learning_rate=schedule,
        snapshot_every=2 * step_size,
    )
    snaps = result.snapshots
    np.testing.assert_array_equal(snaps.step, [10, 20, 30])
    # Each snapshot's update count is a local minimum of the schedule: the
    # LR is at its base there and higher one update before and after.
    lr = np.asarray(schedule(snaps.step))
    np.testing.assert_allclose(lr, 0.01, rtol=1e-6)
    assert np.all(np.asarray(schedule(snaps.step - 1)) > lr)
    assert np.all(np.asarray(schedule(snaps.step + 1)) > lr)
    # The last snapshot is the final state (the run ends on a cycle minimum).
    last = jax.tree.map(lambda a: a[-1], (snaps.params, snaps.batch_stats))
    assert_trees_equal(last, (result.state.params, result.state.batch_stats))
    np.testing.assert_allclose(
        snaps.test_accuracy[-1], result.history.test_accuracy[-1]
    )
    np.testing.assert_allclose(snaps.last_accuracy, snaps.test_accuracy[-1])
    # The ensemble accuracy is that of the averaged softmax.
    data = digits[True]
    probs = clr_flax.ensemble_probabilities(result.state, snaps, data.x_test)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    accuracy = np.mean(np.argmax(probs, -1) == data.y_test)
    np.testing.assert_allclose(snaps.ensemble_accuracy, accuracy, rtol=1e-6)
    assert 0.8 < float(snaps.ensemble_accuracy) <= 1.0


def test_nonfinite_update_halts_and_keeps_the_last_finite_state(digits):
    data = digits[False]
    x_train = np.array(data.x_train)
    x_train[123] = np.nan  # poisons exactly one batch of the first epoch
    poisoned = data._replace(x_train=x_train)
    # The settings of test_fit_loss_falls...[linen-mlp]: its compiled epoch is reused.
    result = clr_flax.fit(
        LinenMLP(),
        poisoned,
        epochs=3,
        batch_size=128,
        key=KEY,
        learning_rate=SCHEDULE,
        momentum=MOMENTUM,
        progress=False,
    )
    history = result.history
    halted = int(history.nonfinite_step)
    assert 0 <= halted < 5  # the first epoch sees every example
    assert int(result.state.step) == halted
    loss = np.asarray(history.loss)
    assert np.all(np.isfinite(loss[:halted]))
    assert np.all(np.isnan(loss[halted:]))
    assert np.isfinite(history.learning_rate[halted])
    assert np.all(np.isnan(history.learning_rate[halted + 1 :]))
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves(result.state))
    assert np.all(np.isfinite(history.test_loss))  # the frozen, finite state


def test_a_nan_learning_rate_from_the_policy_halts_training(digits):
    def policy(state, epoch, train):  # e.g. 1/K with K = 0 in the second epoch
        return jnp.where(epoch == 1, jnp.nan, 0.05)

    result = run("nnx-cnn", digits, learning_rate=0.05, momentum=0.9, lr_policy=policy)
    history = result.history
    # Halted before the first update of epoch 1, with the last finite state.
    assert int(history.nonfinite_step) == 5
    assert int(result.state.step) == 5
    assert np.all(np.isfinite(history.loss[:5]))
    assert np.all(np.isnan(history.loss[5:]) & np.isnan(history.learning_rate[5:]))
    assert result.state.opt_state.hyperparams["learning_rate"] == np.float32(0.05)
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves(result.state.params))


def test_the_epoch_is_compiled_once_whatever_the_number_of_epochs(digits):
    def make_loss():  # a new function object: a new compiled epoch
        return TraceCounter(optax.softmax_cross_entropy_with_integer_labels)

    def policy(state, epoch, train):  # a rate, and a log kept per epoch
        lr = 0.05 / (1.0 + epoch)
        return lr, {"lr": lr, "step": state.step}

    settings = dict(lr_policy=policy, learning_rate=0.05, momentum=0.9)

    def count(epochs, loss_fn):
        loss_fn.reset()
        result = run("linen-mlp", digits, epochs=epochs, loss_fn=loss_fn, **settings)
        return loss_fn.count, result

    reused = make_loss()
    traces_one_epoch, _ = count(1, make_loss())
    traces_four_epochs, result = count(4, reused)
    assert traces_one_epoch == traces_four_epochs > 0
    assert count(2, reused)[0] == 0  # an equal run reuses the compiled epoch
    # The policy's rate held for each whole epoch.
    lrs = np.asarray(result.history.learning_rate).reshape(4, 5)
    expected = np.broadcast_to((0.05 / (1.0 + np.arange(4)))[:, None], (4, 5))
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    np.testing.assert_allclose(result.history.policy_log["lr"], expected[:, 0], 1e-6)
    np.testing.assert_array_equal(result.history.policy_log["step"], [0, 5, 10, 15])


# ---------------------------------------------------------------------------
# Data-parallel mesh (a subprocess with four host devices)
# ---------------------------------------------------------------------------

# Runs in a fresh interpreter with four host CPU devices; the single-device
# run to compare with is the same call in this process (already compiled).
MESH_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from test_flax import digits_subset, run

    assert jax.device_count() == 4
    mesh = jax.make_mesh((4,), ("data",))
    result = run("linen-cnn", digits_subset(), epochs=2, mesh=mesh)
    replicated = all(
        leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(result.state)
    )
    np.savez(
        sys.argv[1],
        replicated=replicated,
        loss=result.history.loss,
        test_accuracy=result.history.test_accuracy,
        *[np.asarray(leaf) for leaf in jax.tree.leaves(result.state.params)],
    )
    """
)


def test_mesh_run_equals_the_single_device_run(digits, tmp_path):
    out = tmp_path / "sharded.npz"
    proc = run_with_host_devices(MESH_SCRIPT, 4, str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = np.load(out)
    single = run("linen-cnn", digits, epochs=2)
    assert sharded["replicated"]  # parameters and state stay on every device
    np.testing.assert_allclose(sharded["loss"], single.history.loss, rtol=1e-4)
    np.testing.assert_allclose(
        sharded["test_accuracy"], single.history.test_accuracy, atol=1e-6
    )
    params = jax.tree.leaves(single.state.params)
    for i, leaf in enumerate(params):
        np.testing.assert_allclose(sharded[f"arr_{i}"], leaf, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# Range-test adapters
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linen-cnn", "nnx-cnn"])
def test_range_test_step_updates_batch_stats_and_draws_new_dropout(name, digits):
    data = data_for(digits, name)
    step_fn, state = clr_flax.range_test_step(
        make_model(name), data.x_train[:1], key=KEY, momentum=0.9
    )
    batch = (jnp.asarray(data.x_train[:64]), jnp.asarray(data.y_train[:64]))

    def sweep(state, lr):
        state, loss, accuracy = step_fn(state, batch, lr)
        return state, (loss, accuracy)

    lrs = jnp.full((3,), 0.0, jnp.float32)  # lr 0: parameters never move
    final, (losses, accuracies) = jax.jit(lambda s: jax.lax.scan(sweep, s, lrs))(state)
    assert int(final.step) == 3
    assert float(final.opt_state.hyperparams["learning_rate"]) == 0.0
    assert_trees_equal(final.params, state.params)
    # BatchNorm statistics moved; dropout drew different masks each step.
    stats = [leaf for leaf in leaves(final.batch_stats) if leaf.dtype == np.float32]
    before = [leaf for leaf in leaves(state.batch_stats) if leaf.dtype == np.float32]
    assert any(not np.array_equal(a, b) for a, b in zip(stats, before, strict=True))
    assert len(set(np.asarray(losses).tolist())) == 3
    assert np.all((accuracies >= 0) & (accuracies <= 1))


@pytest.mark.parametrize("name", ["nnx-cnn"])
def test_range_test_with_flax_step(name, digits):
    data = data_for(digits, name)
    step_fn, state = clr_flax.range_test_step(
        make_model(name), data.x_train[:1], key=KEY, momentum=0.9
    )
    result = clr_jax.range_test_with_step(
        step_fn,
        state,
        (data.x_train, data.y_train),
        batch_size=64,
        start_lr=1e-4,
        end_lr=30.0,
        num_steps=60,
        key=KEY,
        progress=False,
    )
    losses = np.asarray(result.smoothed_losses)
    assert np.nanmin(losses) < 0.8 * losses[0]  # it learns along the sweep
    assert np.asarray(result.metrics).shape == (60,)  # accuracy per step
    assert isinstance(result.final_state, clr_flax.TrainState)
    assert 0 < int(result.final_state.step) <= 60
    np.testing.assert_array_equal(state.step, 0)  # the caller's state is untouched


# ---------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------


def fit_kwargs(**changes):
    kwargs = dict(
        epochs=1,
        batch_size=128,
        key=KEY,
        learning_rate=0.1,
        progress=False,
    )
    kwargs.update(changes)
    return kwargs


BAD = {
    "epochs": (LinenMLP(), fit_kwargs(epochs=0), "epochs"),
    "batch_size": (LinenMLP(), fit_kwargs(batch_size=10_000), "batch_size"),
    "key": (LinenMLP(), fit_kwargs(key=0), "key"),
    "no-learning-rate": (LinenMLP(), fit_kwargs(learning_rate=None), "learning_rate"),
    "negative-learning-rate": (
        LinenMLP(),
        fit_kwargs(learning_rate=-1.0),
        "learning_rate",
    ),
    "ready-tx-and-lr": (
        LinenMLP(),
        fit_kwargs(optimizer=optax.sgd(0.1)),
        "learning_rate",
    ),
    "tx-without-injected-lr": (
        LinenMLP(),
        fit_kwargs(optimizer=optax.sgd(0.1), learning_rate=None),
        "learning_rate",
    ),
    "seeds-with-built-nnx": ("built-nnx", fit_kwargs(seeds=2), "seeds"),
    "seeds-zero": (LinenMLP(), fit_kwargs(seeds=0), "seeds"),
    "snapshot_every": (LinenMLP(), fit_kwargs(snapshot_every=1000), "snapshot_every"),
    "start_epoch": (LinenMLP(), fit_kwargs(start_epoch=1), "start_epoch"),
    "policy-with-schedule": (
        LinenMLP(),
        fit_kwargs(learning_rate=SCHEDULE, lr_policy=lambda s, e, d: 0.1),
        "learning_rate",
    ),
    "model": (nn.Dense, fit_kwargs(), "model"),
    "mesh": (LinenMLP(), fit_kwargs(mesh="data"), "mesh"),
    "data_axis": (LinenMLP(), fit_kwargs(mesh="1-device", data_axis="x"), "data_axis"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_raise_value_error_naming_them(case, digits):
    model, kwargs, name = BAD[case]
    # Built here, not at import: the mesh script imports this module.
    if model == "built-nnx":
        model = NnxMLP(nnx.Rngs(0))
    if kwargs.get("mesh") == "1-device":
        kwargs = {**kwargs, "mesh": jax.make_mesh((1,), ("data",))}
    with pytest.raises(ValueError, match=f"`{name}`"):
        clr_flax.fit(model, digits[False], **kwargs)


def test_bad_data_raises_value_error(digits):
    data = digits[False]
    with pytest.raises(ValueError, match="`data`"):  # (x, y) alone is fine, not 3
        clr_flax.fit(
            LinenMLP(), (data.x_train, data.y_train, data.x_test), **fit_kwargs()
        )
    with pytest.raises(ValueError, match="`data`"):
        mismatched = data._replace(y_test=data.y_test[:-1])
        clr_flax.fit(LinenMLP(), mismatched, **fit_kwargs())


def test_range_test_step_rejects_a_scheduled_learning_rate():
    tx = clr_jax.with_schedules(optax.sgd, learning_rate=SCHEDULE)
    with pytest.raises(ValueError, match="learning_rate"):
        clr_flax.range_test_step(LinenMLP(), jnp.ones((1, 64)), key=KEY, optimizer=tx)
