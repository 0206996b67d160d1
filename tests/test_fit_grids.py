"""No recompilation across hyperparameter values, and grids in one program."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clr_jax
from clr_jax import _tree
from clr_jax import flax as clr_flax
from clr_jax.flax import _snapshots, _state
from tests.fit_helpers import Tiny, small_digits
from tests.helpers import TraceCounter

KEY = jax.random.key(0)
digits = pytest.fixture(scope="module")(small_digits)


# One loss object for the module: it is traced once per compiled program.
LOSS = TraceCounter(optax.softmax_cross_entropy_with_integer_labels)


def fit(data, **kwargs):
    settings = dict(
        epochs=2,
        batch_size=64,
        key=KEY,
        optimizer=optax.sgd,
        momentum=0.9,
        loss_fn=LOSS,
        progress=False,
    )
    settings.update(kwargs)
    return clr_flax.fit(Tiny(), data, **settings)


def test_new_max_lr_and_step_sizes_do_not_recompile_the_epoch(digits):
    fit(digits, learning_rate=clr_jax.triangular(0.01, 0.1, step_size=4))
    LOSS.reset()
    runs = [
        fit(digits, learning_rate=clr_jax.triangular(0.01, max_lr, step_size=step))
        for max_lr, step in [(0.05, 3), (0.2, 5), (0.3, 7), (0.4, 2), (0.5, 9)]
    ]
    assert LOSS.count == 0  # five new schedules, the compiled epoch reused
    np.testing.assert_allclose(
        runs[1].history.learning_rate,
        clr_jax.triangular(0.01, 0.2, step_size=5)(np.arange(10)),
        rtol=1e-6,
    )
    # Numbers are leaves too: a new momentum or constant rate reuses the program.
    fit(digits, learning_rate=0.1)
    LOSS.reset()
    fit(digits, learning_rate=0.3, momentum=0.5)
    assert LOSS.count == 0


def test_an_equal_second_fit_compiles_no_setup_program(digits):
    # Initialisation, stacking, the snapshot buffer and its trimming are
    # module-level programs: a second equal call finds them all compiled.
    programs = (
        _state._init_variables_jit,
        _tree.stack,
        _snapshots.empty_runs,
        _snapshots.drop_scratch,
    )
    kwargs = dict(learning_rate=[0.1, 0.2], seeds=2, snapshot_every=5)
    first = fit(digits, **kwargs)
    sizes = [p._cache_size() for p in programs]
    assert all(sizes)
    second = fit(digits, **kwargs)
    assert [p._cache_size() for p in programs] == sizes
    np.testing.assert_array_equal(first.snapshots.step, second.snapshots.step)


def test_a_grid_of_rates_equals_the_runs_one_by_one(digits):
    rates = [clr_jax.triangular(0.01, m, step_size=5) for m in (0.05, 0.2, 0.5)]
    LOSS.reset()
    grid = fit(digits, learning_rate=rates, seeds=2)
    traced = LOSS.count
    assert grid.history.loss.shape == (3, 2, 10)
    assert grid.history.test_accuracy.shape == (3, 2, 2)  # [K, seeds, epochs]
    assert grid.mean.test_accuracy.shape == (3, 2)  # the mean over seeds
    assert jax.tree.leaves(grid.state.params)[0].shape[:2] == (3, 2)
    for k, rate in enumerate(rates):
        alone = fit(digits, learning_rate=rate, seeds=2)
        for a, b in zip(
            jax.tree.leaves(grid.history), jax.tree.leaves(alone.history), strict=True
        ):
            np.testing.assert_allclose(np.asarray(a)[k], b, rtol=1e-5, atol=1e-6)
        for a, b in zip(
            jax.tree.leaves(grid.state.params),
            jax.tree.leaves(alone.state.params),
            strict=True,
        ):
            np.testing.assert_allclose(a[k], b, rtol=1e-5, atol=1e-6)
    # Another grid of the same size and structure: no new trace.
    LOSS.reset()
    fit(
        digits,
        learning_rate=[clr_jax.triangular(0.02, m, 3) for m in (0.1, 0.3, 0.4)],
        seeds=2,
    )
    assert LOSS.count == 0 < traced


def test_fixed_rate_grids_as_a_list_or_an_array(digits):
    listed = fit(
        digits, learning_rate=[0.05, 0.1, 0.2, 0.4], momentum=[0.0, 0.5, 0.9, 0.9]
    )
    stacked = fit(
        digits,
        learning_rate=jnp.array([0.05, 0.1, 0.2, 0.4]),
        momentum=[0.0, 0.5, 0.9, 0.9],
    )
    np.testing.assert_allclose(
        listed.history.learning_rate[:, 0], [0.05, 0.1, 0.2, 0.4]
    )
    np.testing.assert_allclose(listed.history.momentum[:, 0], [0.0, 0.5, 0.9, 0.9])
    np.testing.assert_array_equal(listed.history.loss, stacked.history.loss)
    # One schedule whose leaves carry the grid axis: schedules stacked leaf
    # by leaf (what jax.vmap over a schedule takes).
    schedules = [clr_jax.triangular(0.01, m, step_size=5) for m in (0.05, 0.2, 0.5)]
    batched = jax.tree.map(lambda *xs: jnp.stack(xs), *schedules)
    one = fit(digits, learning_rate=batched)
    np.testing.assert_allclose(
        one.history.learning_rate[1],
        clr_jax.triangular(0.01, 0.2, step_size=5)(np.arange(10)),
        rtol=1e-6,
    )


def test_bad_grids_raise_naming_the_hyperparameter(digits):
    with pytest.raises(ValueError, match=r"`momentum`|`learning_rate`"):
        fit(digits, learning_rate=[0.1, 0.2], momentum=[0.9, 0.8, 0.7])
    with pytest.raises(ValueError, match=r"`learning_rate`.*one structure"):
        fit(digits, learning_rate=[clr_jax.triangular(0.01, 0.1, 5), 0.1])
    with pytest.raises(ValueError, match=r"`learning_rate`"):
        fit(digits, learning_rate=[])
    with pytest.raises(ValueError, match=r"`learning_rate`"):
        fit(digits, learning_rate=[0.1, -0.1])
