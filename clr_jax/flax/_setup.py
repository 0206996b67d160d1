"""Setting up a ``fit`` run: model, data, optimizer, runs and the initial carry.

:func:`prepare` checks every argument and returns a :class:`Run`: the carry
on the device (fresh, an ``initial_state``, or restored from the latest
checkpoint), the epoch to start from, the data on the device (or the loader
to stream), and the static settings of the compiled programs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from clr_jax import _progress
from clr_jax import _validation as v
from clr_jax._tree import Static, stack
from clr_jax.flax import _args as args
from clr_jax.flax import _data, _metrics, _placement, _snapshots
from clr_jax.flax._adapters import Adapter, adapt
from clr_jax.flax._callbacks import ProgressBar
from clr_jax.flax._checkpoint import Checkpointer
from clr_jax.flax._epoch import Carry, EpochConfig, Task
from clr_jax.flax._evaluation import chunk_eval_set
from clr_jax.flax._history import History
from clr_jax.flax._optimizer import OptimizerSpec, build_spec, grid_members, stack_specs
from clr_jax.flax._programs import Layout, split_task
from clr_jax.flax._state import TrainState, create_train_state


class Settings(NamedTuple):
    """``fit``'s keyword arguments, as given."""

    epochs: Any
    batch_size: Any
    key: Any
    optimizer: Any
    learning_rate: Any
    loss_fn: Any
    metrics_fn: Any
    eval_data: Any
    seeds: Any
    snapshot_every: Any
    lr_policy: Any
    mesh: Any
    data_axis: Any
    param_sharding: Any
    initial_state: Any
    start_epoch: Any
    eval_batch_size: Any
    chunk_size: Any
    callbacks: Any
    checkpoint_dir: Any
    checkpoint_every: Any
    keep: Any
    resume: Any
    progress: Any
    hyperparams: dict


class Run(NamedTuple):
    """Everything the host driver needs."""

    carry: Carry
    start_epoch: int
    epochs: int
    restored: History | None
    stopped: bool
    layout: Layout
    task_dynamic: Any
    task_static: Static
    config: EpochConfig
    data: _data.Data
    train: Any  # the training arrays on the device; None when streamed
    test: Any  # the EvalSet on the device, or None
    data_keys: jax.Array
    chunk: int
    chunk_sharding: Any
    check_targets: Callable[[Any], None]
    callbacks: tuple
    checkpointer: Checkpointer | None
    key: jax.Array
    adapter: Adapter
    nnx_optimizer: Any


@functools.partial(jax.jit, static_argnames=("seeds",))
def _seed_keys(key: jax.Array, seeds: int | None) -> tuple[jax.Array, jax.Array]:
    """``(init_keys, data_keys)``, one per seed (a leading axis with ``seeds``)."""

    def split(k):
        init_key, data_key = jax.random.split(k)
        return init_key, data_key

    if seeds is None:
        return split(key)
    return jax.vmap(split)(jax.random.split(key, seeds))


def _model_and_optimizer(model: Any, optimizer: Any) -> tuple[Adapter, Any]:
    """The adapter, and an ``nnx.Optimizer`` given as ``optimizer`` (or None)."""
    adapter = adapt(model)
    if not isinstance(optimizer, nnx.Optimizer):
        return adapter, None
    if not isinstance(model, nnx.Module):
        v.fail(
            "optimizer",
            "an nnx.Optimizer only with the built nnx.Module it updates",
            optimizer,
        )
    return adapter, optimizer


def _specs(s: Settings, nnx_optimizer) -> tuple[list[OptimizerSpec], bool]:
    """One spec per grid run (one without a grid), and whether there is a grid."""
    if nnx_optimizer is not None:
        return [build_spec(nnx_optimizer.tx, s.learning_rate, s.hyperparams)], False
    if not callable(s.optimizer) or hasattr(s.optimizer, "update"):
        return [build_spec(s.optimizer, s.learning_rate, s.hyperparams)], False
    members = grid_members({"learning_rate": s.learning_rate, **s.hyperparams})
    if members is None:
        return [build_spec(s.optimizer, s.learning_rate, s.hyperparams)], False
    specs = []
    for member in members:
        lr = member.pop("learning_rate")
        specs.append(build_spec(s.optimizer, lr, member))
    return specs, True


def _nnx_opt_state(nnx_optimizer, opt_state: Any) -> Any:
    """The ``nnx.Optimizer``'s state in the structure of ``opt_state``."""
    given = jax.tree.leaves(nnx.as_pure(nnx_optimizer.opt_state))
    if len(given) != len(jax.tree.leaves(opt_state)):
        v.fail(
            "optimizer", "an nnx.Optimizer of this model (wrt=nnx.Param)", nnx_optimizer
        )
    return jax.tree.unflatten(jax.tree.structure(opt_state), given)


def _fresh_state(adapter, data, s: Settings, nnx_optimizer, place) -> tuple:
    """A freshly initialised state per run, stacked, and its :class:`Layout`."""
    seeds = args.check_seeds(s.seeds, adapter.reinitialises)
    specs, grid = _specs(s, nnx_optimizer)
    init_keys, _ = _seed_keys(s.key, seeds)
    x0 = data.example_inputs()

    def one(spec, key):
        state = create_train_state(adapter, x0, spec, key, place)
        if nnx_optimizer is not None:
            state = state.replace(
                opt_state=_nnx_opt_state(nnx_optimizer, state.opt_state),
                step=jnp.asarray(nnx_optimizer.step[...], jnp.int32),
            )
        return state

    def per_seed(spec):  # eager and seed by seed: each starts as a run of its own
        if seeds is None:
            return one(spec, init_keys)
        return stack([one(spec, init_keys[i]) for i in range(seeds)])

    states = [per_seed(spec) for spec in specs]
    if grid:
        stacked_spec = stack_specs([state.optimizer for state in states])
        state = stack([st.replace(optimizer=None) for st in states])
        state = state.replace(optimizer=stacked_spec)
    else:
        state = states[0]
    return state, Layout(grid=grid, seeds=seeds is not None)


def _given_state(adapter, data, s: Settings) -> tuple:
    grid, seeds = args.state_layout(s.initial_state, s.seeds)
    layout = Layout(grid=grid, seeds=seeds)
    x0 = data.example_inputs()
    expected = jax.eval_shape(lambda k: adapter.init(k, x0), jax.random.key(0))
    args.check_state_matches(s.initial_state, expected, layout.run_axes)
    if s.param_sharding is not None:
        v.fail(
            "param_sharding",
            "None with an initial_state (its arrays keep their shardings)",
            s.param_sharding,
        )
    return s.initial_state, layout


def _initial_carry(state: TrainState, layout: Layout, num_snapshots: int) -> Carry:
    runs = np.shape(state.step)
    halted_at = jnp.full(runs, -1, jnp.int32)
    snapshots = None
    if num_snapshots:
        snapshots = _snapshots.empty_runs(
            state, num_snapshots=num_snapshots, run_axes=layout.run_axes
        )
    return Carry(state, halted_at, snapshots)


def _abstract_single(state: TrainState, run_axes: int) -> Any:
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a)[run_axes:], a.dtype), state
    )


def _check_task(state, layout: Layout, data: _data.Data, loss_fn) -> Callable:
    """Checks the targets against the model's outputs; returns the check of a
    streamed chunk's (stacked) targets."""
    single = _abstract_single(state, layout.run_axes)
    inputs, targets = data.example_batch()
    outputs = jax.eval_shape(
        lambda st, x: st.apply_fn(st.params, st.batch_stats, x, False, None)[0],
        single,
        inputs,
    )
    _metrics.check_task(loss_fn, targets, outputs)
    if not data.streamed:
        _metrics.check_labels(data.train.train[1], outputs, "the training split")
    if data.eval is not None:
        _metrics.check_labels(data.eval[1], outputs, "the evaluation split")

    def check_chunk(stacked_targets):
        if isinstance(stacked_targets, np.ndarray) and stacked_targets.ndim >= 2:
            flat = stacked_targets.reshape(-1, *stacked_targets.shape[2:])
            _metrics.check_labels(flat, outputs, "a streamed batch")

    return check_chunk


def _callbacks(s: Settings) -> tuple:
    callbacks = args.check_callbacks(s.callbacks)
    if _progress.wanted(_progress.check_progress(s.progress)):
        callbacks = (*callbacks, ProgressBar(s.progress))
    return callbacks


def _starting_state(adapter, data, s: Settings, nnx_optimizer) -> tuple:
    """``(state, layout)``: the given ``initial_state`` or a fresh one."""
    if s.initial_state is not None:
        if nnx_optimizer is not None:
            v.fail(
                "initial_state",
                "None with an nnx.Optimizer (it holds the state)",
                s.initial_state,
            )
        return _given_state(adapter, data, s)
    place = _placement.param_placer(s.mesh, s.param_sharding)
    return _fresh_state(adapter, data, s, nnx_optimizer, place)


def _restore(checkpointer, carry, s: Settings):
    """``(carry, start epoch or None, history, stopped)`` from the checkpoint."""
    if checkpointer is None:
        return carry, None, None, False
    try:
        restored = checkpointer.restore(carry, s.key)
    except BaseException:
        checkpointer.close()
        raise
    if restored is None:
        return carry, None, None, False
    if s.start_epoch is not None and s.start_epoch != restored.epochs_done:
        checkpointer.close()
        v.fail(
            "start_epoch",
            f"None or {restored.epochs_done}, the epochs done by the latest checkpoint",
            s.start_epoch,
        )
    return restored.carry, restored.epochs_done, restored.history, restored.stopped


def _device_data(data: _data.Data, s: Settings, shards: int) -> tuple:
    """The training arrays (None when streamed) and the EvalSet, on the device."""
    train = None if data.streamed else _placement.replicate(data.train.train, s.mesh)
    test = None
    if data.eval is not None:
        n = jax.tree.leaves(data.eval)[0].shape[0]
        chunk = args.eval_chunk(s.eval_batch_size, n, shards)
        test = _placement.replicate(chunk_eval_set(data.eval, chunk), s.mesh)
    return train, test


class _Plan(NamedTuple):
    """The run's shape, fixed before any state exists."""

    epochs: int
    adapter: Adapter
    nnx_optimizer: Any
    data: _data.Data
    batch_size: int
    axis: str | None
    shards: int
    per_epoch: int | None
    snapshot_every: int | None
    num_snapshots: int


def _plan(model: Any, data: Any, s: Settings) -> _Plan:
    epochs = v.check_step_count("epochs", s.epochs)
    args.check_key(s.key)
    adapter, nnx_optimizer = _model_and_optimizer(model, s.optimizer)
    data = _data.split_data(data, s.eval_data, s.start_epoch or 0)
    batch_size = _data.batch_size_of(data, s.batch_size)
    axis, shards = _placement.data_layout(s.mesh, s.data_axis, batch_size)
    per_epoch = _data.updates_per_epoch(data, batch_size)
    snapshot_every, num_snapshots = args.snapshots(
        s.snapshot_every, per_epoch and epochs * per_epoch
    )
    if s.lr_policy is not None and data.streamed:
        v.fail(
            "lr_policy",
            "None with a loader (a policy reads the training arrays)",
            s.lr_policy,
        )
    return _Plan(
        epochs,
        adapter,
        nnx_optimizer,
        data,
        batch_size,
        axis,
        shards,
        per_epoch,
        snapshot_every,
        num_snapshots,
    )


class _Start(NamedTuple):
    carry: Carry
    placement: Any
    layout: Layout
    start_epoch: int
    restored: History | None
    stopped: bool
    checkpointer: Checkpointer | None
    check_targets: Callable[[Any], None]


def _start(plan: _Plan, s: Settings) -> _Start:
    """The initial carry on the device (fresh, given or restored) and its epoch."""
    directory, every, keep, resume = args.check_checkpointing(
        s.checkpoint_dir, s.checkpoint_every, s.keep, s.resume
    )
    state, layout = _starting_state(plan.adapter, plan.data, s, plan.nnx_optimizer)
    args.check_optimizer_state(state.opt_state, s.lr_policy)
    check_targets = _check_task(state, layout, plan.data, s.loss_fn)
    carry = _initial_carry(state, layout, plan.num_snapshots)
    carry, placement = _placement.place_carry(carry, s.mesh, plan.axis)
    checkpointer = None
    if directory is not None:
        checkpointer = Checkpointer(directory, every=every, keep=keep, resume=resume)
    carry, start, restored, stopped = _restore(checkpointer, carry, s)
    try:
        if start is None:
            start = args.start_epoch_of(state, s.start_epoch, plan.per_epoch)
        args.check_start(start, plan.epochs, resumed=restored is not None)
        _data.check_one_shot(plan.data, plan.epochs - start)
    except ValueError:
        if checkpointer is not None:
            checkpointer.close()
        raise
    return _Start(
        carry, placement, layout, start, restored, stopped, checkpointer, check_targets
    )


def _task(s: Settings) -> tuple[Any, Static]:
    """The user's functions, split into numeric leaves and a static rest."""
    v.check_callable("loss_fn", s.loss_fn, optional=True)
    v.check_callable("metrics_fn", s.metrics_fn, optional=True)
    task = Task(
        s.loss_fn or _metrics.default_loss,
        s.metrics_fn or _metrics.default_metrics,
        s.lr_policy,
    )
    return split_task(task)


def prepare(model: Any, data: Any, s: Settings) -> Run:
    """Checks ``fit``'s arguments and sets up its :class:`Run`."""
    callbacks = _callbacks(s)
    plan = _plan(model, data, s)
    task_dynamic, task_static = _task(s)
    chunk = args.chunk_size(
        s.chunk_size, plan.per_epoch if plan.data.streamed else None
    )
    train, test = _device_data(plan.data, s, plan.shards)
    start = _start(plan, s)  # the last step: it may open the checkpoint manager
    _, data_keys = _seed_keys(s.key, s.seeds if start.layout.seeds else None)
    return Run(
        carry=start.carry,
        start_epoch=start.start_epoch,
        epochs=plan.epochs,
        restored=start.restored,
        stopped=start.stopped,
        layout=start.layout,
        task_dynamic=task_dynamic,
        task_static=task_static,
        config=EpochConfig(
            plan.batch_size, plan.snapshot_every, plan.num_snapshots, start.placement
        ),
        data=plan.data,
        train=train,
        test=test,
        data_keys=_placement.replicate(data_keys, s.mesh),
        chunk=chunk,
        chunk_sharding=_placement.chunk_sharding(s.mesh, plan.axis),
        check_targets=start.check_targets,
        callbacks=callbacks,
        checkpointer=start.checkpointer,
        key=s.key,
        adapter=plan.adapter,
        nnx_optimizer=plan.nnx_optimizer,
    )
