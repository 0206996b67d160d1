"""The argument checks and conversions of ``fit`` (host side, plain Python).

Each check raises ``ValueError`` naming the argument, the rule and the value.
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from clr_jax import _sharding
from clr_jax import _validation as v
from clr_jax.flax._epoch import NO_PLACEMENT, Placement
from clr_jax.flax._state import TrainState
from clr_jax.inject import has_hyperparam, is_scheduled, with_schedules


def build_optimizer(
    optimizer, learning_rate, hyperparams
) -> optax.GradientTransformation:
    """A ready transformation as given, or the factory's through
    :func:`clr_jax.with_schedules` (the same object for equal arguments)."""
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None or hyperparams:
            raise ValueError(
                "`learning_rate` and other hyperparameters must be left out when "
                "`optimizer` is a ready GradientTransformation; got "
                f"{ {'learning_rate': learning_rate, **hyperparams}!r}."
            )
        return optimizer
    if not callable(optimizer):
        v.fail(
            "optimizer",
            "an optax factory (e.g. optax.sgd) or a GradientTransformation",
            optimizer,
        )
    if learning_rate is None:
        raise ValueError(
            "`learning_rate` must be given (a number or a schedule) with an "
            f"optimizer factory; got {learning_rate!r}."
        )
    if not callable(learning_rate):
        v.check_non_negative("learning_rate", learning_rate)
    try:
        items = tuple(sorted(hyperparams.items()))
        return cached_with_schedules(optimizer, learning_rate, items)
    except TypeError:  # unhashable hyperparameters (arrays): no reuse
        return with_schedules(optimizer, learning_rate=learning_rate, **hyperparams)


@functools.lru_cache(maxsize=64)
def cached_with_schedules(optimizer, learning_rate, items):
    """One transformation per distinct arguments: the optimizer is static in the
    compiled epoch's cache key, so rebuilding it would recompile every call."""
    return with_schedules(optimizer, learning_rate=learning_rate, **dict(items))


def check_key(key: Any) -> None:
    """A single PRNG key (see :func:`clr_jax._validation.check_key`)."""
    v.check_key(key)


def check_optimizer_state(opt_state: Any, lr_policy: Any) -> None:
    if not has_hyperparam(opt_state, "learning_rate"):
        raise ValueError(
            "`optimizer` must inject its `learning_rate` (optax.inject_hyperparams "
            "or clr_jax.with_schedules) so that it can be recorded; got a state "
            f"without it: {type(opt_state).__name__}."
        )
    if lr_policy is not None:
        v.check_callable("lr_policy", lr_policy)
        if is_scheduled(opt_state, "learning_rate"):
            raise ValueError(
                "`learning_rate` must be a number, not a schedule, when `lr_policy` "
                "sets it each epoch; got a scheduled learning rate."
            )


def split_data(data: Any) -> tuple[Any, np.ndarray, Any, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` of a Dataset or a 4-tuple."""
    if not isinstance(data, tuple) or len(data) not in (4, 5):
        raise ValueError(
            "`data` must be a clr_jax.data.Dataset or a tuple (x_train, y_train, "
            f"x_test, y_test); got {type(data).__name__}."
        )
    x_train, y_train, x_test, y_test = data[:4]
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if np.shape(x)[:1] != np.shape(y)[:1] or np.ndim(y) != 1 or len(y) == 0:
            raise ValueError(
                f"the {name} inputs and labels in `data` must share a non-empty "
                f"leading axis, labels 1-D; got shapes {np.shape(x)} and "
                f"{np.shape(y)}."
            )
    return x_train, np.asarray(y_train), x_test, np.asarray(y_test)


def check_seeds(seeds: Any, reinitialises: bool) -> int | None:
    if seeds is None:
        return None
    seeds = v.check_step_count("seeds", seeds)
    if not reinitialises:
        raise ValueError(
            "`seeds` needs a model that can be initialised per seed: pass a "
            "Linen module or an NNX factory `rngs -> nnx.Module`; got a built "
            "nnx.Module."
        )
    return seeds


def placement(mesh, data_axis, batch_size: int) -> tuple[Placement, int]:
    """Shardings for ``mesh`` (data parallel) and the number of data shards."""
    axis = _sharding.resolve_data_axis(mesh, data_axis)
    if mesh is None:
        return NO_PLACEMENT, 1
    shards = _sharding.data_shards(mesh, axis)
    v.check_divisible("batch_size", batch_size, shards)
    placement = Placement(
        batch=_sharding.batch_sharding(mesh, axis),
        replicated=_sharding.replicated(mesh),
    )
    return placement, shards


def eval_chunk(eval_batch_size, num_test: int, shards: int) -> int:
    """Test examples per compiled chunk: at most 1024 by default (one chunk
    for small test sets, so no padding), a multiple of the data shards."""
    whole = -(-num_test // shards) * shards
    if eval_batch_size is None:
        return min(whole, 1024 // shards * shards or shards)
    eval_batch_size = v.check_step_count("eval_batch_size", eval_batch_size)
    v.check_divisible("eval_batch_size", eval_batch_size, shards)
    return min(eval_batch_size, whole)


def check_counts(epochs, start_epoch, batch_size, num_train: int) -> tuple:
    epochs = v.check_step_count("epochs", epochs)
    start_epoch = v.check_step_count("start_epoch", start_epoch, minimum=0)
    if start_epoch >= epochs:
        raise ValueError(
            f"`start_epoch` must be < epochs ({epochs}); got {start_epoch}."
        )
    batch_size = v.check_batch_size(batch_size, num_train)
    return epochs, start_epoch, batch_size


def check_initial_state(state: Any, seeds: int | None) -> None:
    if not isinstance(state, TrainState):
        raise ValueError(
            "`initial_state` must be a clr_jax.flax.TrainState (from fit or "
            f"create_train_state); got {type(state).__name__}."
        )
    want = () if seeds is None else (seeds,)
    if jnp.shape(state.step) != want:
        raise ValueError(
            f"`initial_state` must have step shape {want} (one per seed); got "
            f"{jnp.shape(state.step)}."
        )


def snapshots(snapshot_every, total_updates: int) -> tuple[int | None, int]:
    """``(snapshot_every, number of snapshots)`` of the run (``(None, 0)``: none)."""
    if snapshot_every is None:
        return None, 0
    snapshot_every = v.check_step_count("snapshot_every", snapshot_every)
    if snapshot_every > total_updates:
        raise ValueError(
            f"`snapshot_every` must be <= the {total_updates} updates of the run; "
            f"got {snapshot_every}."
        )
    return snapshot_every, total_updates // snapshot_every
