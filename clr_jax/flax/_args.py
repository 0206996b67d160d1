"""The argument checks of ``fit`` (host side, plain Python).

Each check raises ``ValueError`` naming the argument, the rule and the value.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from clr_jax import _validation as v
from clr_jax.flax._state import TrainState
from clr_jax.inject import has_hyperparam, is_scheduled


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


def check_seeds(seeds: Any, reinitialises: bool) -> int | None:
    if seeds is None:
        return None
    seeds = v.check_step_count("seeds", seeds)
    if not reinitialises:
        raise ValueError(
            "`seeds` needs a model that can be initialised per seed: pass a "
            "Linen module or an NNX factory `rngs -> nnx.Module`; got a built "
            "model (an nnx.Module or a pytree)."
        )
    return seeds


def eval_chunk(eval_batch_size, num_eval: int, shards: int) -> int:
    """Evaluation examples per compiled chunk: the whole split up to 1024 by
    default, a multiple of the data shards (the remainder is one more,
    smaller chunk)."""
    if eval_batch_size is None:
        whole = max(num_eval // shards * shards, shards)
        return min(whole, 1024 // shards * shards or shards)
    eval_batch_size = v.check_step_count("eval_batch_size", eval_batch_size)
    v.check_divisible("eval_batch_size", eval_batch_size, shards)
    return eval_batch_size


def chunk_size(value: Any, length: int | None) -> int:
    """Streamed updates per compiled chunk: the epoch up to 32 by default."""
    if value is None:
        return min(length or 32, 32)
    return v.check_step_count("chunk_size", value)


def snapshots(snapshot_every, total_updates: int | None) -> tuple[int | None, int]:
    """``(snapshot_every, number of snapshots)`` of the run (``(None, 0)``: none)."""
    if snapshot_every is None:
        return None, 0
    snapshot_every = v.check_step_count("snapshot_every", snapshot_every)
    if total_updates is None:
        v.fail(
            "snapshot_every",
            "None for a loader without len() (the number of snapshots is fixed by "
            "the run's total updates)",
            snapshot_every,
        )
    if snapshot_every > total_updates:
        raise ValueError(
            f"`snapshot_every` must be <= the {total_updates} updates of the run; "
            f"got {snapshot_every}."
        )
    return snapshot_every, total_updates // snapshot_every


def check_callbacks(callbacks: Any) -> tuple:
    if callbacks is None:
        return ()
    if callable(callbacks):
        callbacks = (callbacks,)
    callbacks = tuple(callbacks)
    for i, callback in enumerate(callbacks):
        v.check_callable(f"callbacks[{i}]", callback)
    return callbacks


def check_checkpointing(checkpoint_dir, checkpoint_every, keep, resume) -> tuple:
    resume = v.check_bool("resume", resume)
    if checkpoint_dir is None:
        if resume:
            v.fail("resume", "False without a checkpoint_dir", resume)
        return None, None, None, False
    every = v.check_step_count("checkpoint_every", checkpoint_every)
    keep = None if keep is None else v.check_step_count("keep", keep)
    return checkpoint_dir, every, keep, resume


def state_layout(state: Any, seeds: int | None) -> tuple[bool, bool]:
    """``(grid, seeds)`` run axes of an ``initial_state``, from its step's shape.

    Raises:
      ValueError: naming ``initial_state`` for anything but a TrainState, or
        a step shape that fits no layout.
    """
    if not isinstance(state, TrainState):
        raise ValueError(
            "`initial_state` must be a clr_jax.flax.TrainState (from fit or "
            f"create_train_state); got {type(state).__name__}."
        )
    shape = np.shape(state.step)
    axes = len(shape) - (seeds is not None)
    if axes not in (0, 1) or (seeds is not None and shape[-1:] != (seeds,)):
        want = "(seeds,) or (K, seeds)" if seeds is not None else "() or (K,)"
        raise ValueError(
            f"`initial_state` must have step shape {want} (one per run); got {shape}."
        )
    return axes == 1, seeds is not None


def check_state_matches(state: TrainState, expected: Any, run_axes: int) -> None:
    """``state``'s params and variables have the model's paths, shapes, dtypes.

    Raises:
      ValueError: naming ``initial_state`` and the first leaf that differs.
    """
    got = (state.params, state.batch_stats)
    if jax.tree.structure(got) != jax.tree.structure(expected):
        raise ValueError(
            "`initial_state` must be a state of this model; its parameter tree "
            f"differs: {jax.tree.structure(got)} vs the model's "
            f"{jax.tree.structure(expected)}."
        )
    pairs = zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected), strict=True
    )
    for (path, leaf), want in pairs:
        shape = tuple(np.shape(leaf))[run_axes:]
        if shape != tuple(want.shape) or leaf.dtype != want.dtype:
            raise ValueError(
                "`initial_state` must be a state of this model; at "
                f"{jax.tree_util.keystr(path)} it holds {leaf.dtype}{list(shape)}, "
                f"the model {want.dtype}{list(want.shape)}."
            )


def start_epoch_of(state: TrainState, start_epoch, per_epoch: int | None) -> int:
    """The first epoch to run after ``state``: its step over the updates per epoch.

    Raises:
      ValueError: naming ``start_epoch`` when it disagrees with the state's
        step (or is missing for a loader without ``len()``), or
        ``initial_state`` for a step that is not a whole number of epochs.
    """
    if start_epoch is not None:
        start_epoch = v.check_step_count("start_epoch", start_epoch, minimum=0)
    step = int(np.max(np.asarray(state.step)))
    if per_epoch is None and step == 0:
        per_epoch = 1  # a fresh state: epoch 0 whatever the epoch length
    if per_epoch is None:
        if start_epoch is None:
            v.fail(
                "start_epoch",
                "given with an initial_state and a loader without len() (the "
                "epoch cannot be read from the step)",
                None,
            )
        return start_epoch
    if step % per_epoch:
        v.fail(
            "initial_state",
            f"a state at the end of an epoch (a multiple of {per_epoch} updates)",
            f"step {step}",
        )
    derived = step // per_epoch
    if start_epoch is not None and start_epoch != derived:
        v.fail(
            "start_epoch",
            f"None or {derived}, the epochs done by initial_state (step {step}, "
            f"{per_epoch} updates per epoch)",
            start_epoch,
        )
    return derived


def check_start(start: int, epochs: int, resumed: bool) -> None:
    """A resumed run may be complete; a given state must leave epochs to run."""
    if start > epochs or (start == epochs and not resumed):
        v.fail(
            "epochs",
            f"> the {start} epochs already done by the state to continue from",
            epochs,
        )
