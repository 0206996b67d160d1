"""``fit``'s data forms: loaders streamed in chunks, optional evaluation, pytrees."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clr_jax import flax as clr_flax
from clr_jax.data import epoch_indices
from tests.fit_helpers import Tiny, small_digits

KEY = jax.random.key(0)
digits = pytest.fixture(scope="module")(small_digits)
BATCH = 64


class TwoInputs(nn.Module):
    """A model of a dict of inputs: pixels and a one-hot 'parity' feature."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(16)(x["pixels"]) + nn.Dense(16)(x["extra"]))
        return nn.Dense(10)(h)


def fit(model, data, **kwargs):
    settings = dict(
        epochs=3,
        batch_size=BATCH,
        key=KEY,
        optimizer=optax.sgd,
        learning_rate=0.1,
        momentum=0.9,
        progress=False,
    )
    settings.update(kwargs)
    return clr_flax.fit(model, data, **settings)


def device_order(n: int, epoch: int) -> np.ndarray:
    """The batches ``fit`` draws on the device in ``epoch`` (one seed)."""
    _, data_key = jax.random.split(KEY)
    return np.asarray(epoch_indices(jax.random.fold_in(data_key, epoch), n, BATCH))


class FakeLoader:
    """A DataLoader-like iterable (not an iterator, not an array pytree): each
    ``iter()`` is one epoch, in the order ``fit`` would draw on the device."""

    def __init__(self, x, y):
        self.x, self.y, self.epoch = x, y, 0

    def __len__(self):
        return len(self.y) // BATCH

    def __iter__(self):
        order = device_order(len(self.y), self.epoch)
        self.epoch += 1
        return iter([(self.x[idx], self.y[idx]) for idx in order])


def params(result):
    return jax.tree.leaves(result.state.params)


def test_a_loader_streams_the_same_run_as_device_resident_arrays(digits):
    arrays = fit(Tiny(), digits)
    loader = FakeLoader(digits.x_train, digits.y_train)
    streamed = fit(Tiny(), loader, eval_data=(digits.x_test, digits.y_test))
    assert loader.epoch == 3  # iter() once per epoch (the first batch is not re-read)
    for a, b in zip(params(streamed), params(arrays), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(streamed.history.loss, arrays.history.loss, rtol=1e-5)
    np.testing.assert_allclose(
        streamed.history.test_accuracy, arrays.history.test_accuracy, atol=1e-6
    )
    np.testing.assert_array_equal(streamed.history.step, arrays.history.step)


def test_chunks_and_a_short_last_chunk_equal_one_chunk_per_epoch(digits):
    def epoch_batches(epoch):  # the `epoch -> iterable` form, 5 batches
        order = device_order(len(digits.y_train), epoch)
        return ((digits.x_train[i], digits.y_train[i]) for i in order)

    whole = fit(Tiny(), epoch_batches, chunk_size=5)
    chunked = fit(Tiny(), epoch_batches, chunk_size=2)  # chunks of 2, 2, 1
    assert whole.history.test_loss is None and whole.history.test_metrics == {}
    np.testing.assert_allclose(chunked.history.loss, whole.history.loss, rtol=1e-5)
    np.testing.assert_array_equal(chunked.history.epoch_end, [5, 10, 15])
    for a, b in zip(params(chunked), params(whole), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_evaluation_data_is_optional_for_arrays(digits):
    result = fit(Tiny(), (digits.x_train, digits.y_train), epochs=2)
    assert result.history.test_loss is None
    assert set(result.history.train_metrics) == {"accuracy"}
    assert result.history.train_loss.shape == (2,)
    with pytest.raises(AttributeError, match=r"accuracy"):
        _ = result.history.test_accuracy


def test_pytree_inputs_in_fit_range_test_step_and_evaluate(digits):
    def as_dict(x):
        parity = np.eye(2, dtype=np.float32)[(x.sum(-1) > 20).astype(int)]
        return {"pixels": x, "extra": parity}

    data = (
        as_dict(digits.x_train),
        digits.y_train,
        as_dict(digits.x_test),
        digits.y_test,
    )
    result = fit(TwoInputs(), data)
    accuracy = result.history.test_accuracy
    assert accuracy[-1] > max(accuracy[0], 0.3)  # it learns (15 updates)
    loss, metrics = clr_flax.evaluate(result.state, data[2], data[3], batch_size=100)
    np.testing.assert_allclose(loss, result.history.test_loss[-1], rtol=1e-5)
    np.testing.assert_allclose(
        metrics["accuracy"], result.history.test_accuracy[-1], atol=1e-6
    )
    step_fn, state = clr_flax.range_test_step(
        TwoInputs(), jax.tree.map(lambda a: a[:1], data[0]), key=KEY
    )
    batch = (jax.tree.map(lambda a: jnp.asarray(a[:32]), data[0]), data[1][:32])
    state, loss, accuracy = jax.jit(step_fn)(state, batch, 0.1)
    assert np.isfinite(loss) and 0.0 <= float(accuracy) <= 1.0


def test_a_ragged_batch_names_its_index_and_the_fix(digits):
    def ragged(epoch):
        yield digits.x_train[:64], digits.y_train[:64]
        yield digits.x_train[64:128], digits.y_train[64:128]
        yield digits.x_train[128:150], digits.y_train[128:150]

    with pytest.raises(ValueError, match=r"`data` batch 2 .*drop_last"):
        fit(Tiny(), ragged, epochs=1, chunk_size=2)


def test_bad_loaders_raise_naming_data(digits):
    with pytest.raises(ValueError, match=r"`data`.*an iterator can be read once"):
        fit(Tiny(), iter([(digits.x_train[:64], digits.y_train[:64])]), epochs=2)
    with pytest.raises(ValueError, match=r"`data`.*at least one batch"):
        fit(Tiny(), lambda epoch: iter([]), epochs=1)
    with pytest.raises(ValueError, match=r"`data`.*pairs"):
        fit(Tiny(), lambda epoch: iter([digits.x_train[:64]]), epochs=1)
    with pytest.raises(ValueError, match=r"`batch_size`"):
        fit(Tiny(), FakeLoader(digits.x_train, digits.y_train), batch_size=32)
    with pytest.raises(ValueError, match=r"`data`"):
        fit(Tiny(), (digits.x_train, digits.y_train[:-1]))
    with pytest.raises(ValueError, match=r"`data`.*scalar"):
        fit(Tiny(), (digits.x_train, np.int32(3)))
    with pytest.raises(ValueError, match=r"`eval_data`"):
        fit(Tiny(), digits, eval_data=(digits.x_test, digits.y_test))
    with pytest.raises(ValueError, match=r"`lr_policy`"):
        fit(
            Tiny(), FakeLoader(digits.x_train, digits.y_train), lr_policy=lambda *a: 0.1
        )
