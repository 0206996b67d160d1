"""``fit``'s hooks (callbacks, early stopping, JSON lines) and its results' files."""

from __future__ import annotations

import json

import jax
import matplotlib
import numpy as np
import optax
import pytest

from clr_jax import flax as clr_flax
from tests.fit_helpers import Tiny, small_digits

matplotlib.use("Agg")

KEY = jax.random.key(0)
digits = pytest.fixture(scope="module")(small_digits)
# 320 examples in batches of 64: 5 updates per epoch. The rate jumps 30x
# after epoch 2, so the test loss gets worse from epoch 3 on.
JUMP = optax.piecewise_constant_schedule(0.1, {15: 30.0})


def fit(data, **kwargs):
    settings = dict(
        epochs=6,
        batch_size=64,
        key=KEY,
        optimizer=optax.sgd,
        learning_rate=JUMP,
        progress=False,
    )
    settings.update(kwargs)
    return clr_flax.fit(Tiny(), data, **settings)


def test_callbacks_see_each_epoch_and_stop_ends_training(digits):
    seen = []

    def record(epoch, state, metrics):
        seen.append((epoch, int(state.step), sorted(metrics)))
        return clr_flax.STOP if epoch == 1 else None

    result = fit(digits, callbacks=[record])
    assert seen == [
        (0, 5, ["test_accuracy", "test_loss", "train_accuracy", "train_loss"]),
        (1, 10, ["test_accuracy", "test_loss", "train_accuracy", "train_loss"]),
    ]
    np.testing.assert_array_equal(result.history.epoch, [0, 1])
    assert int(result.state.step) == 10


def test_early_stopping_restores_the_best_epoch(digits):
    stopper = clr_flax.EarlyStopping("test_loss", patience=2)
    result = fit(digits, callbacks=[stopper])
    # Epoch 2 is the best; epochs 3 and 4 do not improve: stop after epoch 4.
    assert stopper.best_epoch == 2 and stopper.stopped_epoch == 4
    np.testing.assert_array_equal(result.history.epoch, [0, 1, 2, 3, 4])
    test_loss = result.history.test_loss
    assert np.nanargmin(np.where(np.isnan(test_loss), np.inf, test_loss)) == 2
    assert stopper.best == pytest.approx(float(test_loss[2]))
    # The result's state is the best epoch's, bit for bit.
    three_epochs = fit(digits, epochs=3)
    for a, b in zip(
        jax.tree.leaves(result.state.params),
        jax.tree.leaves(three_epochs.state.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert int(result.state.step) == 15


def test_early_stopping_min_delta_and_mode(digits):
    # No later epoch beats the first by 10: stop after `patience` epochs.
    stopper = clr_flax.EarlyStopping(
        "test_accuracy", patience=2, min_delta=10.0, restore_best=False
    )
    assert stopper.mode == "max"
    result = fit(digits, callbacks=[stopper])
    assert stopper.best_epoch == 0 and stopper.stopped_epoch == 2
    assert int(result.state.step) == 15  # not restored
    with pytest.raises(ValueError, match=r"`monitor`"):
        fit(digits, epochs=1, callbacks=[clr_flax.EarlyStopping("val_loss")])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"patience": 0}, "patience"),
        ({"min_delta": -1.0}, "min_delta"),
        ({"mode": "up"}, "mode"),
        ({"restore_best": "yes"}, "restore_best"),
    ],
)
def test_early_stopping_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=rf"`{name}`"):
        clr_flax.EarlyStopping(**kwargs)


def test_json_lines_logger_appends_one_line_per_epoch(digits, tmp_path):
    path = tmp_path / "log.jsonl"
    fit(digits, epochs=2, learning_rate=0.1, callbacks=[clr_flax.JsonLinesLogger(path)])
    fit(digits, epochs=2, learning_rate=0.1, callbacks=[clr_flax.JsonLinesLogger(path)])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 0, 1]
    assert set(lines[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
    }
    assert lines[0] == lines[2] and lines[1]["train_loss"] < lines[0]["train_loss"]


def test_bad_callbacks_raise(digits):
    with pytest.raises(ValueError, match=r"`callbacks\[0\]`"):
        fit(digits, epochs=1, callbacks=["log"])


# ---------------------------------------------------------------------------
# History and FitResult: save, load, plot
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def result(digits):
    return fit(digits, epochs=2, learning_rate=0.1, seeds=2)


def assert_histories_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
        assert np.asarray(x).dtype == np.asarray(y).dtype


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_history_save_load_round_trip(result, tmp_path, suffix):
    history = result.history
    nan = history._replace(loss=np.where(history.step == 3, np.nan, history.loss))
    path = tmp_path / f"history{suffix}"
    nan.save(path)
    assert_histories_equal(clr_flax.History.load(path), nan)
    with pytest.raises(FileExistsError, match=r"overwrite=True"):
        nan.save(path)
    history.save(path, overwrite=True)
    assert_histories_equal(clr_flax.History.load(path), history)


def test_history_without_evaluation_round_trips(digits, tmp_path):
    history = fit((digits.x_train, digits.y_train), epochs=1).history
    history.save(tmp_path / "h.json")
    loaded = clr_flax.History.load(tmp_path / "h.json")
    assert loaded.test_loss is None and loaded.test_metrics == {}
    assert_histories_equal(loaded, history)


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_fit_result_save_load_round_trip(result, tmp_path, suffix):
    path = tmp_path / f"result{suffix}"
    result.save(path)
    loaded = clr_flax.FitResult.load(path, like=result.state)
    assert_histories_equal(loaded.history, result.history)
    assert isinstance(loaded.state, clr_flax.TrainState)
    for a, b in zip(
        jax.tree.leaves(loaded.state.params),
        jax.tree.leaves(result.state.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    raw = clr_flax.FitResult.load(path).state
    assert isinstance(raw, dict) and any("params" in k for k in raw)
    with pytest.raises(ValueError, match=r"`path`"):
        result.save(tmp_path / "result.txt")


def test_history_plot_draws_loss_metrics_and_rate(result):
    fig = result.history.plot()
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[:3] == ["loss", "metrics", "learning rate"]
    lr_line = fig.axes[2].get_lines()[0]
    np.testing.assert_allclose(lr_line.get_ydata(), 0.1, rtol=1e-6)
    np.testing.assert_array_equal(lr_line.get_xdata(), np.arange(10))
