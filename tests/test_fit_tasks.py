"""Any task: regression with MSE end to end, custom metrics, label checks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clr_jax
from clr_jax import flax as clr_flax

KEY = jax.random.key(0)


class Regressor(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.tanh(nn.Dense(16)(x)))


def regression_data(n=384):
    """y = sin(x . w) per example, a (n, 1) float target."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    w = np.array([0.5, -1.0, 0.25, 0.75], np.float32)
    y = np.sin(x @ w)[:, None].astype(np.float32)
    return x[:256], y[:256], x[256:], y[256:]


def mse(outputs, targets):
    return jnp.mean(optax.squared_error(outputs, targets), axis=-1)


def regression_metrics(outputs, batch):
    _, targets = batch
    return {
        "mae": jnp.mean(jnp.abs(outputs - targets)),
        "rmse": jnp.sqrt(jnp.mean((outputs - targets) ** 2)),
    }


def test_regression_with_mse_end_to_end_records_every_metric():
    data = regression_data()
    result = clr_flax.fit(
        Regressor(),
        data,
        epochs=8,
        batch_size=32,
        key=KEY,
        learning_rate=clr_jax.triangular(0.01, 0.1, step_size=16),
        momentum=0.9,
        loss_fn=mse,
        metrics_fn=regression_metrics,
        progress=False,
    )
    history = result.history
    assert set(history.metrics) == set(history.train_metrics) == {"mae", "rmse"}
    assert set(history.test_metrics) == {"mae", "rmse"}
    assert history.metrics["mae"].shape == history.loss.shape == (64,)
    assert history.test_metrics["rmse"].shape == (8,)
    assert history.test_loss[-1] < 0.5 * history.test_loss[0]
    # The evaluation's loss is the mean squared error, its rmse the root of it.
    np.testing.assert_allclose(
        history.test_metrics["rmse"] ** 2, history.test_loss, rtol=1e-4
    )
    loss, metrics = clr_flax.evaluate(
        result.state,
        data[2],
        data[3],
        batch_size=50,
        loss_fn=mse,
        metrics_fn=regression_metrics,
    )
    np.testing.assert_allclose(loss, history.test_loss[-1], rtol=1e-5)
    np.testing.assert_allclose(
        metrics["mae"], history.test_metrics["mae"][-1], rtol=1e-5
    )
    with pytest.raises(AttributeError, match=r"accuracy"):
        _ = history.accuracy


def test_float_targets_get_no_default_metric_and_need_a_loss():
    data = regression_data()
    one_epoch = dict(epochs=1, batch_size=32, key=KEY, learning_rate=0.05)
    result = clr_flax.fit(Regressor(), data, loss_fn=mse, progress=False, **one_epoch)
    assert result.history.metrics == {} and result.history.test_metrics == {}
    with pytest.raises(ValueError, match=r"`loss_fn`.*squared_error"):
        clr_flax.fit(Regressor(), data, progress=False, **one_epoch)


def test_range_test_step_with_mse_on_float_targets():
    x, y, _, _ = regression_data()
    step_fn, state = clr_flax.range_test_step(
        Regressor(), x[:1], key=KEY, loss_fn=mse, momentum=0.9
    )
    result = clr_jax.range_test_with_step(
        step_fn,
        state,
        (x, y),
        batch_size=32,
        start_lr=1e-3,
        end_lr=10.0,
        num_steps=40,
        key=KEY,
        progress=False,
    )
    losses = np.asarray(result.losses)
    assert np.isfinite(losses[0]) and np.nanmin(losses) < losses[0]
    assert result.metrics is None  # no metric for float targets
    # One custom metric is recorded as the sweep's metric.
    step_fn, state = clr_flax.range_test_step(
        Regressor(),
        x[:1],
        key=KEY,
        loss_fn=mse,
        metrics_fn=lambda out, batch: {"mae": jnp.mean(jnp.abs(out - batch[1]))},
    )
    _, _, mae = step_fn(state, (jnp.asarray(x[:8]), jnp.asarray(y[:8])), 0.01)
    assert np.isfinite(mae) and float(mae) >= 0


def fit_one_epoch(data, **kwargs):
    """One epoch of a softmax regression on ``data``."""
    settings = dict(epochs=1, key=KEY, learning_rate=0.1, progress=False)
    return clr_flax.fit(nn.Dense(10), data, **settings, **kwargs)


@pytest.mark.parametrize(
    ("split", "bad", "message"),
    [
        ("train", 10, r"\[0, 10\).*from 0 to 10 in the training split"),
        ("train", -1, r"from -1 to .* in the training split"),
        ("test", 12, r"in the evaluation split"),
    ],
)
def test_labels_outside_the_outputs_raise_naming_data(split, bad, message):
    data = clr_jax.data.load_digits()
    labels = np.array(data.y_train if split == "train" else data.y_test)
    labels[3] = bad
    data = data._replace(**{f"y_{split}": labels})
    with pytest.raises(ValueError, match=rf"`data`.*{message}"):
        fit_one_epoch(data, batch_size=128)


def test_a_streamed_batch_with_bad_labels_raises_naming_data():
    data = clr_jax.data.load_digits()
    labels = np.array(data.y_train[:256])
    labels[200] = 10
    batches = [
        (data.x_train[i : i + 64], labels[i : i + 64]) for i in range(0, 256, 64)
    ]
    with pytest.raises(ValueError, match=r"`data`.*in a streamed batch"):
        fit_one_epoch(lambda epoch: iter(batches))


def test_range_test_step_refuses_several_metrics():
    x, y, _, _ = regression_data()
    step_fn, state = clr_flax.range_test_step(
        Regressor(), x[:1], key=KEY, loss_fn=mse, metrics_fn=regression_metrics
    )
    with pytest.raises(ValueError, match=r"`metrics_fn`.*at most one"):
        step_fn(state, (jnp.asarray(x[:8]), jnp.asarray(y[:8])), 0.01)


def test_evaluate_checks_labels_against_the_outputs():
    data = clr_jax.data.load_digits()
    state = clr_flax.create_train_state(
        nn.Dense(10), data.x_train[:1], key=KEY, learning_rate=0.1
    )
    labels = np.array(data.y_test)
    labels[0] = 10
    with pytest.raises(ValueError, match=r"`y` labels must lie in \[0, 10\)"):
        clr_flax.evaluate(state, data.x_test, labels)
