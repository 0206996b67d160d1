"""The compiled epoch of ``clr_jax.flax.fit``: guarded updates, then evaluation.

Everything here is traced once per distinct model, optimizer and settings.
One epoch is one ``lax.scan`` over batches drawn on the device; the
evaluation on the test split is fused into the same program, so an epoch
costs one dispatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from clr_jax import _sharding
from clr_jax import data as data_lib
from clr_jax._tree import all_finite
from clr_jax.flax import _snapshots
from clr_jax.flax._evaluation import EvalSet, evaluate
from clr_jax.flax._state import LossFn, TrainState, loss_and_grads
from clr_jax.inject import get_hyperparam, set_hyperparam

# Momentum-like hyperparameter names, looked up in this order for the history.
MOMENTUM_NAMES = ("momentum", "b1")


class StepLog(NamedTuple):
    """What one update records (a row of the per-step history)."""

    step: jax.Array
    learning_rate: jax.Array
    momentum: jax.Array
    loss: jax.Array
    accuracy: jax.Array


class EpochLog(NamedTuple):
    """What one epoch records (a row of the per-epoch history)."""

    train_loss: jax.Array
    train_accuracy: jax.Array
    test_loss: jax.Array
    test_accuracy: jax.Array
    policy_log: Any = None  # what ``lr_policy`` reported, if anything


class Carry(NamedTuple):
    """What an epoch hands to the next one."""

    state: TrainState
    halted_at: jax.Array  # int32: update count of the first non-finite step, or -1
    snapshots: _snapshots.SnapshotBuffer | None


class Placement(NamedTuple):
    """Where a data-parallel epoch keeps things (``None``: one device).

    A batch is split along the mesh's data axis; the carry handed to the next
    epoch stays replicated, so its shardings, part of jit's cache key, do
    not change between epochs (which would compile the epoch twice).
    """

    batch: Any
    replicated: Any

    def shard_batch(self, tree: Any) -> Any:
        return _sharding.constrain(tree, self.batch)

    def replicate(self, tree: Any) -> Any:
        return _sharding.constrain(tree, self.replicated)

    def put(self, tree: Any) -> Any:
        """``tree`` on the device (replicated over the mesh's devices)."""
        return jax.device_put(tree, self.replicated)


NO_PLACEMENT = Placement(None, None)


class EpochConfig(NamedTuple):
    """Static settings of the compiled epoch (hashable)."""

    loss_fn: LossFn
    batch_size: int
    snapshot_every: int | None
    num_snapshots: int
    lr_policy: Callable[..., Any] | None
    placement: Placement


def _select(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _momentum(opt_state: Any) -> jax.Array:
    for name in MOMENTUM_NAMES:
        value = get_hyperparam(opt_state, name)
        if value is not None:
            return jnp.asarray(value, jnp.float32)
    return jnp.asarray(jnp.nan, jnp.float32)


def _guarded_step(carry: Carry, batch: Any, config: EpochConfig):
    """One update, refused (and training halted) when anything turns non-finite.

    The check reads the loss, the optimizer's updates and the new BatchNorm
    statistics, all known before the parameters change, so the update itself
    runs inside a ``lax.cond``: a finite step costs no select over the state.
    """
    state = carry.state
    batch = config.placement.shard_batch(batch)
    loss, acc, grads, stats = loss_and_grads(state, batch, config.loss_fn)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    running = carry.halted_at < 0
    finite = all_finite((loss, updates, stats))
    ok = running & finite
    next_state = jax.lax.cond(
        ok,
        _apply_update,
        lambda operands: operands[0],
        (state, updates, opt_state, stats),
    )
    halted_at = jnp.where(running & ~finite, state.step, carry.halted_at)
    snapshots = carry.snapshots
    if snapshots is not None:
        take = ok & (next_state.step % config.snapshot_every == 0)
        snapshots = _snapshots.write(
            snapshots,
            next_state,
            take,
            snapshot_every=config.snapshot_every,
            num_snapshots=config.num_snapshots,
        )
    return Carry(next_state, halted_at, snapshots), _step_log(
        state.step, running, loss, acc, opt_state
    )


def _apply_update(operands) -> TrainState:
    state, updates, opt_state, stats = operands
    return state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        batch_stats=stats,
    )


def _step_log(step, running, loss, acc, opt_state) -> StepLog:
    """The step's record; NaN once training has halted."""
    nan = jnp.asarray(jnp.nan, jnp.float32)

    def unless_halted(value):
        return jnp.where(running, jnp.asarray(value, jnp.float32), nan)

    return StepLog(
        step=step,
        learning_rate=unless_halted(get_hyperparam(opt_state, "learning_rate")),
        momentum=unless_halted(_momentum(opt_state)),
        loss=unless_halted(loss),
        accuracy=unless_halted(acc),
    )


def run_epoch(
    carry: Carry,
    data_key: jax.Array,
    epoch: jax.Array,
    train: tuple[Any, jax.Array],
    test: EvalSet,
    config: EpochConfig,
) -> tuple[Carry, StepLog, EpochLog]:
    """One epoch of updates then the test evaluation, for one seed."""
    policy_log = None
    if config.lr_policy is not None:
        carry, policy_log = _apply_policy(carry, epoch, train, config)
    num_train = jnp.shape(train[1])[0]
    order = data_lib.epoch_indices(
        jax.random.fold_in(data_key, epoch), num_train, config.batch_size
    )

    def body(c, idx):
        return _guarded_step(c, data_lib.take(train, idx), config)

    carry, logs = jax.lax.scan(body, carry, order)
    test_loss, test_accuracy = evaluate(
        carry.state, test, config.loss_fn, config.placement.batch
    )
    epoch_log = EpochLog(
        train_loss=jnp.nanmean(logs.loss),
        train_accuracy=jnp.nanmean(logs.accuracy),
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        policy_log=policy_log,
    )
    return config.placement.replicate(carry), logs, epoch_log


def _apply_policy(carry: Carry, epoch, train, config: EpochConfig):
    """The epoch's learning rate written into the optimizer, and the policy's log.

    The policy returns ``lr`` or ``(lr, log)``. A non-finite rate halts
    training before the epoch's first update and is not written, so the
    frozen state stays the last finite one.
    """
    state = carry.state
    out = config.lr_policy(state, epoch, train)
    lr, log = out if isinstance(out, tuple) and len(out) == 2 else (out, None)
    lr = jnp.asarray(lr)
    updated = state.replace(
        opt_state=set_hyperparam(state.opt_state, "learning_rate", lr)
    )
    running = carry.halted_at < 0
    finite = jnp.all(jnp.isfinite(lr))
    halted_at = jnp.where(running & ~finite, state.step, carry.halted_at)
    state = _select(running & finite, updated, state)
    return carry._replace(state=state, halted_at=halted_at), log
