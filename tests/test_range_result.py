"""RangeTestResult: readings on the host, files, plots, warnings at the caller."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clr_jax
from tests.test_range_test import (
    ORACLE,
    W0,
    close_to_mean,
    quadratic_data,
    quadratic_loss,
)


def flat_result(num_steps=50):
    """A sweep whose loss only rises with the rate: no descent to read."""
    lrs = np.geomspace(1e-3, 1.0, num_steps)
    losses = 1.0 + lrs
    return clr_jax.RangeTestResult(lrs, losses, losses)


def test_a_curve_that_never_descends_warns():
    def step(w, batch, lr):
        return w, 1.0 + lr + 0.0 * jnp.sum(batch)

    res = clr_jax.range_test_with_step(
        step,
        jnp.float32(0.0),
        jnp.ones((50, 4)),
        batched=True,
        start_lr=1e-3,
        end_lr=1.0,
        num_steps=50,
        progress=False,
    )
    with pytest.warns(clr_jax.RangeTestWarning, match="no clear descent"):
        assert np.isnan(res.suggest("valley"))
    with pytest.warns(clr_jax.RangeTestWarning, match="no clear descent"):
        assert all(np.isnan(res.bounds()))
    with (
        pytest.warns(clr_jax.RangeTestWarning),
        pytest.raises(ValueError, match="clear descent"),
    ):
        res.to_schedule(step_size=100)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_round_trip(tmp_path, fmt):
    one = clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        metric_fn=close_to_mean,
        progress=False,
        **ORACLE,
    )
    many = clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        progress=False,
        key=jax.random.split(jax.random.key(0), 2),
        **ORACLE,
    )
    for res in (one, many):
        path = tmp_path / f"curve.{fmt}"
        getattr(res, f"save_{fmt}")(path)
        back = getattr(clr_jax.RangeTestResult, f"load_{fmt}")(path)
        for field in (
            "lrs",
            "losses",
            "smoothed_losses",
            "metrics",
            "smoothed_metrics",
        ):
            mine, theirs = getattr(res, field), getattr(back, field)
            assert (mine is None) == (theirs is None), field
            if mine is not None:
                np.testing.assert_array_equal(np.asarray(mine, np.float64), theirs)
        assert back.diverged_step == res.diverged_step
        for method, lr in res.suggestions().items():
            np.testing.assert_array_equal(back.suggest(method), lr)


def test_plots_write_pngs(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    one = clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        metric_fn=close_to_mean,
        progress=False,
        **ORACLE,
    )
    fig = one.plot(path=tmp_path / "one.png", title="oracle")
    assert len(fig.axes) == 2
    many = clr_jax.range_test(
        quadratic_loss,
        W0,
        quadratic_data(),
        optimizer=optax.adamw,
        hyperparams={"weight_decay": [0.0, 0.1, 1.0]},
        progress=False,
        **ORACLE,
    )
    many.plot(path=tmp_path / "band.png", band="std")
    many.plot(path=tmp_path / "lines.png", labels=["wd=0", "wd=0.1", "wd=1"])
    for name in ("one", "band", "lines"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    plt.close("all")


def test_a_warning_points_at_the_callers_line():
    result = flat_result()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", clr_jax.RangeTestWarning)
        result.suggest("valley")
        result.bounds()
        result.suggestions()
    assert len(caught) == 5
    for warning in caught:
        assert warning.filename == __file__, warning.filename


def test_a_result_is_a_pytree_whose_settings_are_static():
    result = clr_jax.range_test(
        quadratic_loss, W0, quadratic_data(), progress=False, **ORACLE
    )
    leaves, treedef = jax.tree.flatten(result)
    again = jax.tree.unflatten(treedef, leaves)
    assert again.config == result.config
    assert result.config.num_steps == ORACLE["num_steps"]
    assert result.config.start_lr == ORACLE["start_lr"]
    np.testing.assert_array_equal(again.losses, result.losses)
