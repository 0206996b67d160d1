"""The compiled work of ``clr_jax.flax.fit``: guarded updates, then evaluation.

Everything here runs on the device, for one run (one seed of one grid
point); :mod:`._programs` vmaps it over runs and compiles it. Two shapes of
work share the guarded update:

* :func:`run_epoch`: one epoch over device-resident data, its batches drawn
  inside a ``lax.scan``, the evaluation fused into the same program;
* :func:`run_chunk`: a chunk of batches streamed from a host loader (the
  last chunk of an epoch may be shorter: a program of its own size, so no
  step is padding).
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
from clr_jax.flax._state import TrainState, loss_and_grads
from clr_jax.inject import MOMENTUM_NAMES, get_hyperparam, set_hyperparam


class StepLog(NamedTuple):
    """What one update records (a row of the per-step history)."""

    step: jax.Array
    learning_rate: jax.Array
    momentum: jax.Array
    loss: jax.Array
    metrics: dict


class EpochLog(NamedTuple):
    """What one epoch records on the device besides its steps."""

    test_loss: jax.Array | None
    test_metrics: dict
    policy_log: Any = None  # what ``lr_policy`` reported, if anything


class Carry(NamedTuple):
    """What an epoch hands to the next one."""

    state: TrainState
    halted_at: jax.Array  # int32: update count of the first non-finite step, or -1
    snapshots: _snapshots.SnapshotBuffer | None


class Task(NamedTuple):
    """The user's functions: a pytree (numeric leaves are jit arguments)."""

    loss_fn: Callable[..., Any]
    metrics_fn: Callable[..., dict]
    lr_policy: Callable[..., Any] | None


class Placement(NamedTuple):
    """Where a sharded run keeps things (``None``: one device).

    ``batch`` splits one batch along the mesh's data axis; ``carry`` holds
    the sharding of every leaf of the carry (a tuple, in leaf order), which
    the carry keeps from epoch to epoch: parameters stay as they arrived
    (model-sharded or replicated) and the next epoch's cache key is the same.
    """

    batch: Any
    carry: Any

    def shard_batch(self, tree: Any) -> Any:
        return _sharding.constrain(tree, self.batch)

    def keep_carry(self, tree: Any) -> Any:
        return _sharding.constrain_leaves(tree, self.carry)


NO_PLACEMENT = Placement(None, None)


class EpochConfig(NamedTuple):
    """Static settings of the compiled work (hashable)."""

    batch_size: int | None
    snapshot_every: int | None
    num_snapshots: int
    placement: Placement


def _momentum(opt_state: Any) -> jax.Array:
    for name in MOMENTUM_NAMES:
        value = get_hyperparam(opt_state, name)
        if value is not None:
            return jnp.asarray(value, jnp.float32)
    return jnp.asarray(jnp.nan, jnp.float32)


def guarded_step(carry: Carry, batch, task: Task, config: EpochConfig):
    """One update, refused (and training halted) when anything turns non-finite.

    The check reads the loss, the optimizer's updates and the new BatchNorm
    statistics, all known before the parameters change, so the update itself
    runs inside a ``lax.cond``: a finite step costs no select over the state.
    """
    state = carry.state
    batch = config.placement.shard_batch(batch)
    loss, metrics, grads, stats = loss_and_grads(
        state, batch, task.loss_fn, task.metrics_fn
    )
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
    log = _step_log(state.step, running, loss, metrics, opt_state)
    return Carry(next_state, halted_at, snapshots), log


def _apply_update(operands) -> TrainState:
    state, updates, opt_state, stats = operands
    return state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        batch_stats=stats,
    )


def _step_log(step, running, loss, metrics, opt_state) -> StepLog:
    """The step's record; NaN once training has halted."""
    nan = jnp.asarray(jnp.nan, jnp.float32)

    def unless_halted(value):
        return jnp.where(running, jnp.asarray(value, jnp.float32), nan)

    return StepLog(
        step=step,
        learning_rate=unless_halted(get_hyperparam(opt_state, "learning_rate")),
        momentum=unless_halted(_momentum(opt_state)),
        loss=unless_halted(loss),
        metrics=jax.tree.map(unless_halted, metrics),
    )


def evaluate_state(state, test: EvalSet | None, task: Task, config: EpochConfig):
    """``(test_loss, test_metrics)``, or ``(None, {})`` without evaluation data."""
    if test is None:
        return None, {}
    return evaluate(state, test, task.loss_fn, task.metrics_fn, config.placement.batch)


def run_epoch(carry: Carry, data_key, epoch, train, test, task: Task, config):
    """One epoch over device-resident ``train``, then the evaluation."""
    policy_log = None
    if task.lr_policy is not None:
        carry, policy_log = apply_policy(carry, epoch, train, task)
    num_train = jax.tree.leaves(train)[0].shape[0]
    order = data_lib.epoch_indices(
        jax.random.fold_in(data_key, epoch), num_train, config.batch_size
    )

    def body(c, idx):
        return guarded_step(c, data_lib.take(train, idx), task, config)

    carry, logs = jax.lax.scan(body, carry, order)
    test_loss, test_metrics = evaluate_state(carry.state, test, task, config)
    return carry, logs, EpochLog(test_loss, test_metrics, policy_log)


def run_chunk(carry: Carry, batches, task: Task, config: EpochConfig):
    """The stacked ``batches`` (leading axis: steps) of a streamed chunk."""

    def body(c, batch):
        return guarded_step(c, batch, task, config)

    return jax.lax.scan(body, carry, batches)


def apply_policy(carry: Carry, epoch, train, task: Task):
    """The epoch's learning rate written into the optimizer, and the policy's log.

    The policy returns ``lr`` or ``(lr, log)``. A non-finite rate halts
    training before the epoch's first update and is not written, so the
    frozen state stays the last finite one.
    """
    state = carry.state
    out = task.lr_policy(state, epoch, train)
    lr, log = out if isinstance(out, tuple) and len(out) == 2 else (out, None)
    lr = jnp.asarray(lr)
    updated = state.replace(
        opt_state=set_hyperparam(state.opt_state, "learning_rate", lr)
    )
    running = carry.halted_at < 0
    finite = jnp.all(jnp.isfinite(lr))
    halted_at = jnp.where(running & ~finite, state.step, carry.halted_at)
    keep = running & finite
    state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), updated, state)
    return carry._replace(state=state, halted_at=halted_at), log
