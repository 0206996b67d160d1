"""Snapshot ensembles (Huang et al. 2017): the buffer ``fit`` fills, its scores.

``fit`` writes the model variables into a fixed buffer whenever the update
count reaches a multiple of ``snapshot_every`` (the cycle length, so that
snapshots fall at the learning rate's minima); the ensemble is the averaged
softmax of the snapshots taken.

References:
  Huang et al., "Snapshot Ensembles: Train 1, get M for free", 2017,
  https://arxiv.org/abs/1704.00109.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clr_jax.flax._evaluation import EvalSet, mean_probabilities, predict
from clr_jax.flax._metrics import correct


class SnapshotBuffer(NamedTuple):
    """``num_snapshots + 1`` slots of variables; the last slot is scratch."""

    params: Any
    batch_stats: Any
    step: jax.Array  # int32[slots]; -1 for a slot never written


class SnapshotEnsemble(NamedTuple):
    """Snapshots taken at the learning rate's cycle minima and their ensemble.

    Attributes:
      params, batch_stats: the model variables stacked along a leading
        snapshot axis of length ``M = total_updates // snapshot_every``.
      step: int32[M], the update count at which each was taken (a multiple
        of ``snapshot_every``), -1 for one never taken (training halted, or
        resumed past it).
      test_accuracy: float32[M], each snapshot alone on the test split
        (NumPy, as are the two below).
      ensemble_accuracy: the test accuracy of the averaged softmax of the
        snapshots taken.
      last_accuracy: the last snapshot alone, the baseline the ensemble is
        compared with.

    With ``seeds`` every field gains a leading seed axis.
    """

    params: Any
    batch_stats: Any
    step: jax.Array
    test_accuracy: np.ndarray
    ensemble_accuracy: np.ndarray
    last_accuracy: np.ndarray


def empty(state, num_snapshots: int) -> SnapshotBuffer:
    """A buffer of ``num_snapshots`` zeroed slots (plus the scratch slot)."""

    def slots(leaf):
        return jnp.zeros((num_snapshots + 1, *jnp.shape(leaf)), jnp.result_type(leaf))

    return SnapshotBuffer(
        params=jax.tree.map(slots, state.params),
        batch_stats=jax.tree.map(slots, state.batch_stats),
        step=jnp.full((num_snapshots + 1,), -1, jnp.int32),
    )


@functools.partial(jax.jit, static_argnames=("num_snapshots", "run_axes"))
def empty_runs(state, *, num_snapshots: int, run_axes: int) -> SnapshotBuffer:
    """:func:`empty` for every run (``run_axes`` leading axes), as one
    compiled program reused across calls rather than one per leaf."""
    empty_one = functools.partial(empty, num_snapshots=num_snapshots)
    for _ in range(run_axes):
        empty_one = jax.vmap(empty_one)
    return empty_one(state)


@functools.partial(jax.jit, static_argnames=("kept", "axis"))
def drop_scratch(tree, *, kept: int, axis: int):
    """The buffer's first ``kept`` slots along ``axis``: the scratch slot, kept
    for steps without a snapshot, dropped."""
    return jax.tree.map(lambda a: jax.lax.slice_in_dim(a, 0, kept, axis=axis), tree)


def write(
    buffer: SnapshotBuffer,
    state,
    take: jax.Array,
    *,
    snapshot_every: int,
    num_snapshots: int,
) -> SnapshotBuffer:
    """Writes ``state`` to its slot when ``take``, else to the scratch slot.

    One slot-sized write per step, whatever the branch: cheaper than a
    ``cond`` that (under ``vmap``) would select between whole buffers.
    """
    index = state.step // snapshot_every - 1
    keep = take & (index < num_snapshots)
    slot = jnp.where(keep, index, num_snapshots)

    def put(slots, leaf):
        return slots.at[slot].set(leaf)

    return SnapshotBuffer(
        params=jax.tree.map(put, buffer.params, state.params),
        batch_stats=jax.tree.map(put, buffer.batch_stats, state.batch_stats),
        step=buffer.step.at[slot].set(jnp.where(keep, state.step, -1)),
    )


def probabilities(apply_fn, params, batch_stats, x) -> jax.Array:
    """Softmax outputs of one set of variables on inputs ``x``."""
    logits = predict(apply_fn, params, batch_stats, x)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def ensemble_probabilities(params, batch_stats, steps, x, *, apply_fn):
    """Averaged softmax over the snapshots taken (``steps >= 0``), on ``x``."""
    probs = jax.vmap(functools.partial(probabilities, apply_fn, x=x))(
        params, batch_stats
    )
    return mean_probabilities(probs, steps >= 0)


def _eval_probabilities(apply_fn, params, stats, eval_set: EvalSet) -> jax.Array:
    """Softmax outputs on every example of ``eval_set``, ``[examples, classes]``."""
    parts = []
    if eval_set.chunks is not None:
        probs = jax.lax.map(
            lambda x: probabilities(apply_fn, params, stats, x), eval_set.chunks[0]
        )
        parts.append(probs.reshape(-1, probs.shape[-1]))
    if eval_set.rest is not None:
        parts.append(probabilities(apply_fn, params, stats, eval_set.rest[0]))
    return jnp.concatenate(parts)


def _eval_labels(eval_set: EvalSet) -> jax.Array:
    parts = []
    if eval_set.chunks is not None:
        parts.append(eval_set.chunks[1].reshape(-1))
    if eval_set.rest is not None:
        parts.append(eval_set.rest[1])
    return jnp.concatenate(parts)


def accuracies(apply_fn, buffer: SnapshotBuffer, test: EvalSet, num_snapshots: int):
    """Accuracy of every snapshot alone, of their averaged softmax, and of the last.

    Slots never written (``step == -1``) take no part; with none written the
    accuracies are NaN.
    """
    slots = jax.tree.map(
        lambda a: a[:num_snapshots], (buffer.params, buffer.batch_stats)
    )
    taken = buffer.step[:num_snapshots] >= 0
    labels = _eval_labels(test)

    def snapshot_probs(variables):
        params, stats = variables
        return _eval_probabilities(apply_fn, params, stats, test)

    probs = jax.lax.map(snapshot_probs, slots)  # [snapshots, examples, classes]

    def acc_of(p):
        return jnp.mean(correct(p, labels))

    each = jax.vmap(acc_of)(probs)
    nan = jnp.asarray(jnp.nan, each.dtype)
    any_taken = jnp.any(taken)
    last = jnp.max(jnp.where(taken, jnp.arange(num_snapshots), -1))
    return (
        jnp.where(taken, each, nan),
        jnp.where(any_taken, acc_of(mean_probabilities(probs, taken)), nan),
        jnp.where(any_taken, each[jnp.maximum(last, 0)], nan),
    )
