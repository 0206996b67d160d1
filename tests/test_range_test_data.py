"""Data for the range test: loaders, their errors, sizes as floats, validation."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import clr_jax
from clr_jax.data import batch_indices, take

N, DIM, BATCH, STEPS = 512, 2, 16, 30
X = 3.0 + np.random.default_rng(0).normal(size=(N, DIM)).astype(np.float32)
DATA = {"x": jnp.asarray(X)}
W0 = {"w": jnp.zeros(DIM)}
KW = dict(start_lr=1e-3, end_lr=10.0, num_steps=STEPS, progress=False)
BATCHES = take(DATA, batch_indices(jax.random.key(0), N, BATCH, STEPS))


def loss_fn(params, batch):
    return 2.0 * jnp.mean(jnp.sum((params["w"][None, :] - batch["x"]) ** 2, -1))


def host_batches(count=STEPS):
    return [{"x": np.asarray(BATCHES["x"][t])} for t in range(count)]


@pytest.fixture(scope="module")
def pre_batched():
    return clr_jax.range_test(loss_fn, W0, BATCHES, batched=True, **KW)


def near(params, batch):
    """A bounded 'accuracy': the share of examples within 1.5 of the parameters."""
    return jnp.mean(jnp.linalg.norm(params["w"][None, :] - batch["x"], axis=-1) < 1.5)


# Gradient descent on loss_fn diverges above this rate.
CRITICAL_LR = 0.5


@pytest.fixture(scope="module")
def val_sweep():
    """100 steps with a metric, evaluated on held-out data every 2 steps."""
    return clr_jax.range_test(
        loss_fn,
        W0,
        DATA,
        batch_size=BATCH,
        metric_fn=near,
        val_data={"x": DATA["x"][:128]},
        val_every=2,
        val_batch_size=64,
        **(KW | {"num_steps": 100}),
    )


# -- loaders: small stand-ins for the real libraries (no torch or tf needed) ------


class DataLoaderLike:
    """Like torch.utils.data.DataLoader: iterable (not an iterator), sized."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class TfDatasetLike:
    """Like a tf.data.Dataset: iterable, with as_numpy_iterator and a shape."""

    element_spec = "TensorSpec"

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        yield from self.batches

    def as_numpy_iterator(self):
        return iter(self.batches)


class GrainLoaderLike:
    """Like a grain DataLoader: iterable whose iterator has get_state."""

    class _Iterator:
        def __init__(self, batches):
            self.batches, self.position = batches, 0

        def __iter__(self):
            return self

        def __next__(self):
            if self.position == len(self.batches):
                raise StopIteration
            self.position += 1
            return self.batches[self.position - 1]

        def get_state(self):
            return {"position": self.position}

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return self._Iterator(self.batches)


@pytest.mark.parametrize("loader", [DataLoaderLike, TfDatasetLike, GrainLoaderLike])
def test_loaders_are_read_with_iter_and_match_pre_batched_data(loader, pre_batched):
    res = clr_jax.range_test(loss_fn, W0, loader(host_batches()), chunk_size=7, **KW)
    np.testing.assert_allclose(res.losses, pre_batched.losses, rtol=1e-5)


def test_a_ragged_batch_names_its_index_shapes_and_the_fix():
    batches = host_batches()
    batches[9] = {"x": batches[9]["x"][:5]}  # the 10th batch is short
    with pytest.raises(ValueError, match=r"batch 9 has shapes .*\(5, 2\).*batch 0 has"):
        clr_jax.range_test(loss_fn, W0, DataLoaderLike(batches), chunk_size=4, **KW)
    with pytest.raises(ValueError, match="drop the last partial batch"):
        clr_jax.range_test(loss_fn, W0, iter(batches), chunk_size=9, **KW)


def test_a_loader_that_ends_early_says_after_how_many_batches():
    with pytest.raises(ValueError, match="`data` loader ended after 12 batches"):
        clr_jax.range_test(loss_fn, W0, DataLoaderLike(host_batches(12)), **KW)


@pytest.mark.parametrize("form", ["sampled", "batched", "loader"])
def test_integral_float_sizes_work_everywhere(form, pre_batched):
    sizes = dict(num_steps=float(STEPS), chunk_size=10.0)
    data = {"sampled": DATA, "batched": BATCHES, "loader": iter(host_batches())}[form]
    args = dict(KW, **sizes, batched=form == "batched")
    res = clr_jax.range_test(loss_fn, W0, data, batch_size=float(BATCH), **args)
    assert res.losses.shape == (STEPS,)
    if form != "sampled":
        np.testing.assert_allclose(res.losses, pre_batched.losses, rtol=1e-5)
    with pytest.raises(ValueError, match="`batch_size` must be an integer"):
        clr_jax.range_test(loss_fn, W0, data, batch_size=BATCH + 0.5, **args)


def test_non_integral_sizes_are_refused_with_their_name():
    for name, value in [("num_steps", 30.5), ("chunk_size", 2.5), ("val_every", 1.5)]:
        extra = {"val_data": DATA} if name == "val_every" else {}
        with pytest.raises(ValueError, match=f"`{name}` must be an integer"):
            clr_jax.range_test(
                loss_fn, W0, DATA, batch_size=BATCH, **(KW | {name: value} | extra)
            )


def test_a_scalar_leaf_in_data_names_data():
    bad = {"x": DATA["x"], "scale": jnp.float32(2.0)}
    with pytest.raises(ValueError, match=r"in `data` must have a leading.*\['scale'\]"):
        clr_jax.range_test(loss_fn, W0, bad, batch_size=BATCH, **KW)


# -- validation data ---------------------------------------------------------------


def test_validation_every_step_is_the_next_steps_training_loss():
    # Every step trains on the same batch, which is also the validation data:
    # the loss after step t's update is the loss step t + 1 measures before its own.
    same = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), BATCHES)
    res = clr_jax.range_test(
        loss_fn,
        W0,
        same,
        batched=True,
        val_data={"x": same["x"][0]},
        val_every=1,
        **KW,
    )
    stop = res.diverged_step
    np.testing.assert_array_equal(res.val_steps, np.arange(STEPS))
    np.testing.assert_allclose(
        res.val_losses[: stop - 1], res.losses[1:stop], rtol=1e-5
    )
    assert np.all(np.isnan(res.val_losses[stop:]))
    assert res.val_metrics is None


def test_validation_every_k_steps_with_a_metric_and_many_sweeps():
    def metric(params, batch):
        return jnp.mean(
            jnp.linalg.norm(params["w"][None, :] - batch["x"], axis=-1) < 1.5
        )

    keys = jax.random.split(jax.random.key(1), 3)
    res = clr_jax.range_test(
        loss_fn,
        W0,
        DATA,
        batch_size=BATCH,
        key=keys,
        metric_fn=metric,
        val_data={"x": DATA["x"][:64]},
        val_every=7,
        val_batch_size=16,
        **(KW | {"end_lr": 0.3}),
    )
    np.testing.assert_array_equal(res.val_steps, np.tile([6, 13, 20, 27, 29], (3, 1)))
    assert res.val_losses.shape == res.val_metrics.shape == (3, 5)
    assert np.all((res.val_metrics >= 0) & (res.val_metrics <= 1))
    last = loss_fn(
        jax.tree.map(lambda x: x[1], res.final_state.params), {"x": DATA["x"][:64]}
    )
    np.testing.assert_allclose(res.val_losses[1, -1], last, rtol=1e-5)
    one = clr_jax.range_test(
        loss_fn,
        W0,
        DATA,
        batch_size=BATCH,
        key=keys[1],
        metric_fn=metric,
        val_data={"x": DATA["x"][:64]},
        val_every=7,
        val_batch_size=16,
        **(KW | {"end_lr": 0.3}),
    )
    np.testing.assert_allclose(one.val_losses, res.val_losses[1], rtol=1e-5)
    np.testing.assert_array_equal(res.sweep(1).val_metrics, res.val_metrics[1])
    assert res.losses.shape == (3, STEPS)  # the training curves are unchanged
    # Five points a sweep are too few to read bounds from.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", clr_jax.RangeTestWarning)
        base_lr, max_lr = res.bounds(validation=True)
    assert any("only 5 validation points" in str(w.message) for w in caught)
    assert base_lr.shape == max_lr.shape == (3,)
    assert np.all(np.isnan(base_lr)) and np.all(np.isnan(max_lr))


def test_validation_argument_errors():
    base = dict(KW, batch_size=BATCH)
    with pytest.raises(ValueError, match="`val_every` must be None without"):
        clr_jax.range_test(loss_fn, W0, DATA, val_every=5, **base)
    with pytest.raises(ValueError, match="`val_batch_size` must be a divisor of"):
        clr_jax.range_test(loss_fn, W0, DATA, val_data=DATA, val_batch_size=100, **base)
    with pytest.raises(ValueError, match="`val_every` must be <= num_steps"):
        clr_jax.range_test(loss_fn, W0, DATA, val_data=DATA, val_every=99, **base)
    with pytest.raises(TypeError, match="`val_data` must be arrays"):
        clr_jax.range_test(loss_fn, W0, DATA, val_data=iter(host_batches()), **base)
    with pytest.raises(ValueError, match="`val_fn` must be given"):
        clr_jax.range_test_with_step(
            lambda s, b, lr: (s, jnp.mean(b["x"])), W0, DATA, val_data=DATA, **base
        )


def quiet_report(result, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", clr_jax.RangeTestWarning)
        return result.bounds_report(**kwargs)


def test_bounds_are_read_from_the_validation_metric_at_its_points(val_sweep):
    report = quiet_report(val_sweep, validation=True)
    assert report.source == "val_metric"
    assert (
        "validation metric (" in report.reason and "one every 2 steps" in report.reason
    )
    assert KW["start_lr"] < report.base_lr < report.max_lr < CRITICAL_LR
    point_lrs = val_sweep.lrs[val_sweep.val_steps]  # the rate of the step before
    assert report.base_lr in point_lrs and report.max_lr in point_lrs
    on_loss = quiet_report(val_sweep, validation=True, use_metric=False)
    assert on_loss.source == "val_loss"
    assert KW["start_lr"] < on_loss.base_lr < on_loss.max_lr < CRITICAL_LR
    assert quiet_report(val_sweep).source == "metric"  # the default: per step
    reading = val_sweep.read(validation=True)
    assert reading.bounds == report
    assert reading.suggestions == val_sweep.read().suggestions  # from the loss


def test_too_few_validation_points_before_the_blow_up_are_refused(val_sweep):
    every_10 = slice(4, None, 5)  # the points after steps 9, 19, ..., 99
    sparse = val_sweep.replace(
        val_steps=val_sweep.val_steps[every_10],
        val_losses=val_sweep.val_losses[every_10],
        val_metrics=val_sweep.val_metrics[every_10],
    )
    blow_up = sparse.read().blow_up
    points = int(np.sum(sparse.val_steps < blow_up))
    assert points < 10
    with pytest.warns(
        clr_jax.RangeTestWarning,
        match=f"only {points} validation points before the blow-up "
        r"\(one every 10 steps\).*lower val_every",
    ):
        report = sparse.bounds_report(validation=True)
    assert np.isnan(report.base_lr) and np.isnan(report.max_lr)
    assert report.source == "val_metric" and "validation points" in report.notes[-1]


def test_bounds_from_validation_need_the_curves_they_read(pre_batched, val_sweep):
    with pytest.raises(ValueError, match="`validation` must be False when no"):
        pre_batched.bounds(validation=True)
    with pytest.raises(ValueError, match="`validation` must be True or False"):
        val_sweep.bounds(validation="yes")
    no_metric = val_sweep.replace(val_metrics=None)
    with pytest.raises(ValueError, match=r"`use_metric` .* no validation metric"):
        no_metric.bounds(validation=True, use_metric=True)
    assert quiet_report(no_metric, validation=True).source == "val_loss"
