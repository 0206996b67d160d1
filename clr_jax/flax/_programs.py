"""The compiled programs of ``fit``: the work of :mod:`._epoch`, vmapped over runs.

A *run* is one training: one seed of one grid point. With ``seeds`` the
carry has a seed axis; with a learning-rate grid a leading grid axis before
it. Per-seed arguments (the data keys) are shared across the grid; data and
the user's functions are shared by every run.

The user's functions (:class:`._epoch.Task`) arrive split in two: their
numeric leaves as an argument, the rest as a static :class:`Static`, so that
a pytree policy or loss with new numbers reuses the compiled program. The
train state carries the optimizer's hyperparameters as leaves for the same
reason. Module-level ``jax.jit`` functions: their cache outlives a ``fit``
call, so a later call with equal static settings does not recompile.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from clr_jax._tree import Static, combine, is_array_like, partition
from clr_jax.flax import _epoch, _snapshots


class Layout(NamedTuple):
    """The run axes of the carry: a grid axis, then a seed axis."""

    grid: bool
    seeds: bool

    @property
    def run_axes(self) -> int:
        return int(self.grid) + int(self.seeds)


def split_task(task: _epoch.Task) -> tuple[Any, Static]:
    """``(numeric leaves, static rest)`` of the user's functions."""
    dynamic, static = partition(task, is_array_like)
    return dynamic, Static(static)


def _over_runs(fn: Callable, layout: Layout, axes: tuple[str, ...]) -> Callable:
    """``fn`` vmapped over the runs; ``axes`` says per argument whether it is
    per ``'run'``, per ``'seed'`` (shared across the grid) or ``'shared'``."""
    if layout.seeds:
        fn = jax.vmap(fn, in_axes=tuple(None if a == "shared" else 0 for a in axes))
    if layout.grid:
        fn = jax.vmap(fn, in_axes=tuple(0 if a == "run" else None for a in axes))
    return fn


@functools.partial(jax.jit, static_argnames=("task_static", "config", "layout"))
def epoch(
    carry, task_dynamic, data_keys, epoch, train, test, *, task_static, config, layout
):
    """One epoch over device-resident data, with its evaluation, every run."""
    task = combine(task_dynamic, task_static.tree)

    def one(carry, data_key):
        return _epoch.run_epoch(carry, data_key, epoch, train, test, task, config)

    carry, steps, epoch_log = _over_runs(one, layout, ("run", "seed"))(carry, data_keys)
    return config.placement.keep_carry(carry), steps, epoch_log


@functools.partial(jax.jit, static_argnames=("task_static", "config", "layout"))
def chunk(carry, task_dynamic, batches, *, task_static, config, layout):
    """A chunk of streamed batches, every run (each sees the same batches)."""
    task = combine(task_dynamic, task_static.tree)

    def one(carry):
        return _epoch.run_chunk(carry, batches, task, config)

    carry, steps = _over_runs(one, layout, ("run",))(carry)
    return config.placement.keep_carry(carry), steps


@functools.partial(jax.jit, static_argnames=("task_static", "config", "layout"))
def evaluation(state, task_dynamic, test, *, task_static, config, layout):
    """The evaluation of every run's state (the streaming path)."""
    task = combine(task_dynamic, task_static.tree)

    def one(state):
        return _epoch.EpochLog(*_epoch.evaluate_state(state, test, task, config))

    return _over_runs(one, layout, ("run",))(state)


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_snapshots", "layout"))
def ensemble(buffer, test, *, apply_fn, num_snapshots, layout):
    """Each snapshot's, the ensemble's and the last snapshot's accuracy, every run."""

    def measure(buffer):
        return _snapshots.accuracies(apply_fn, buffer, test, num_snapshots)

    return _over_runs(measure, layout, ("run",))(buffer)
