"""The compiled pieces of ``clr_jax.flax.fit``: one epoch, evaluation, snapshots.

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
import numpy as np
import optax

from clr_jax import data as data_lib
from clr_jax._flax_state import (
    LossFn,
    TrainState,
    all_finite,
    loss_and_grads,
)
from clr_jax.inject import get_hyperparam, set_hyperparam

__all__ = [
    "NO_PLACEMENT",
    "Carry",
    "EpochConfig",
    "EpochLog",
    "EvalSet",
    "Placement",
    "SnapshotBuffer",
    "StepLog",
    "chunk_test_set",
    "empty_snapshots",
    "ensemble_accuracies",
    "evaluate",
    "predict",
    "run_epoch",
]

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


class SnapshotBuffer(NamedTuple):
    """``num_snapshots + 1`` slots of variables; the last slot is scratch."""

    params: Any
    batch_stats: Any
    step: jax.Array  # int32[slots]; -1 for a slot never written


class Carry(NamedTuple):
    """What an epoch hands to the next one."""

    state: TrainState
    halted_at: jax.Array  # int32: update count of the first non-finite step, or -1
    snapshots: SnapshotBuffer | None


class EvalSet(NamedTuple):
    """The test split in equal chunks; ``weight`` is 0 on padding rows."""

    inputs: Any
    labels: jax.Array
    weight: jax.Array


class Placement(NamedTuple):
    """Where a data-parallel epoch keeps things (``None``: one device).

    A batch is split along the mesh's data axis; the carry handed to the next
    epoch stays replicated, so its shardings, part of jit's cache key, do
    not change between epochs (which would compile the epoch twice).
    """

    batch: Any
    replicated: Any

    def shard_batch(self, tree: Any) -> Any:
        return _constrain(tree, self.batch)

    def replicate(self, tree: Any) -> Any:
        return _constrain(tree, self.replicated)

    def put(self, tree: Any) -> Any:
        """``tree`` on the device (replicated over the mesh's devices)."""
        return jax.device_put(tree, self.replicated)


def _constrain(tree: Any, sharding: Any) -> Any:
    if sharding is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, sharding)


NO_PLACEMENT = Placement(None, None)


class EpochConfig(NamedTuple):
    """Static settings of the compiled epoch (hashable)."""

    loss_fn: LossFn
    batch_size: int
    snapshot_every: int | None
    num_snapshots: int
    lr_policy: Callable[..., Any] | None
    placement: Placement


def chunk_test_set(x: Any, y: Any, chunk: int) -> EvalSet:
    """Pads the test split to whole chunks of ``chunk`` rows (host side, once)."""
    n = len(y)
    num_chunks = -(-n // chunk)
    pad = num_chunks * chunk - n

    def split(a):
        a = np.asarray(a)
        a = np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
        return a.reshape(num_chunks, chunk, *a.shape[1:])

    weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return EvalSet(split(x), split(y), weight.reshape(num_chunks, chunk))


def empty_snapshots(state: TrainState, num_snapshots: int) -> SnapshotBuffer:
    def slots(leaf):
        return jnp.zeros((num_snapshots + 1, *jnp.shape(leaf)), jnp.result_type(leaf))

    return SnapshotBuffer(
        params=jax.tree.map(slots, state.params),
        batch_stats=jax.tree.map(slots, state.batch_stats),
        step=jnp.full((num_snapshots + 1,), -1, jnp.int32),
    )


def _select(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _write_snapshot(
    buffer: SnapshotBuffer, state: TrainState, take: jax.Array, config: EpochConfig
) -> SnapshotBuffer:
    """Writes ``state`` to its slot when ``take``, else to the scratch slot.

    One slot-sized write per step, whatever the branch: cheaper than a
    ``cond`` that (under ``vmap``) would select between whole buffers.
    """
    index = state.step // config.snapshot_every - 1
    keep = take & (index < config.num_snapshots)
    slot = jnp.where(keep, index, config.num_snapshots)

    def write(slots, leaf):
        return slots.at[slot].set(leaf)

    return SnapshotBuffer(
        params=jax.tree.map(write, buffer.params, state.params),
        batch_stats=jax.tree.map(write, buffer.batch_stats, state.batch_stats),
        step=buffer.step.at[slot].set(jnp.where(keep, state.step, -1)),
    )


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
        snapshots = _write_snapshot(snapshots, next_state, take, config)
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


def predict(apply_fn, params: Any, batch_stats: Any, x: Any) -> jax.Array:
    """Inference-mode logits (no dropout key is needed in inference mode)."""
    logits, _ = apply_fn(params, batch_stats, x, False, None)
    return logits


def evaluate(
    state: TrainState,
    test: EvalSet,
    loss_fn: LossFn,
    placement: Placement = NO_PLACEMENT,
) -> tuple[jax.Array, jax.Array]:
    """Mean loss and accuracy over the (chunked, padded) test split."""

    def body(totals, chunk):
        x, y, w = chunk
        x = placement.shard_batch(x)
        logits = predict(state.apply_fn, state.params, state.batch_stats, x)
        correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
        losses = loss_fn(logits, y).astype(jnp.float32)
        return totals + jnp.stack([jnp.sum(losses * w), jnp.sum(correct * w)]), None

    totals, _ = jax.lax.scan(body, jnp.zeros((2,), jnp.float32), tuple(test))
    means = totals / jnp.sum(test.weight)
    return means[0], means[1]


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
        carry.state, test, config.loss_fn, config.placement
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


def ensemble_accuracies(
    apply_fn, buffer: SnapshotBuffer, test: EvalSet, num_snapshots: int
):
    """Accuracy of every snapshot alone, of their averaged softmax, and of the last.

    Slots never written (``step == -1``) take no part; with none written the
    accuracies are NaN.
    """
    slots = jax.tree.map(
        lambda a: a[:num_snapshots], (buffer.params, buffer.batch_stats)
    )
    taken = buffer.step[:num_snapshots] >= 0

    def probabilities(variables):
        params, stats = variables

        def chunk(x):
            return jax.nn.softmax(predict(apply_fn, params, stats, x), axis=-1)

        return jax.lax.map(chunk, test.inputs)

    probs = jax.lax.map(probabilities, slots)  # [snapshots, chunks, chunk, classes]

    def acc_of(p):
        correct = jnp.argmax(p, axis=-1) == test.labels
        return jnp.sum(correct * test.weight) / jnp.sum(test.weight)

    each = jax.vmap(acc_of)(probs)
    weights = taken.astype(probs.dtype).reshape(-1, 1, 1, 1)
    mean_probs = jnp.sum(probs * weights, axis=0) / jnp.maximum(jnp.sum(taken), 1)
    nan = jnp.asarray(jnp.nan, each.dtype)
    any_taken = jnp.any(taken)
    last = jnp.max(jnp.where(taken, jnp.arange(num_snapshots), -1))
    return (
        jnp.where(taken, each, nan),
        jnp.where(any_taken, acc_of(mean_probs), nan),
        jnp.where(any_taken, each[jnp.maximum(last, 0)], nan),
    )
