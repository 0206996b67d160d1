"""``fit``: the host driver of training, one compiled epoch after another."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clr_jax import _progress
from clr_jax._tree import stack
from clr_jax.flax import _args as args
from clr_jax.flax import _history, _snapshots
from clr_jax.flax._adapters import adapt
from clr_jax.flax._epoch import Carry, EpochConfig, run_epoch
from clr_jax.flax._evaluation import chunk_test_set
from clr_jax.flax._history import FitResult
from clr_jax.flax._snapshots import SnapshotEnsemble
from clr_jax.flax._state import TrainState
from clr_jax.flax._state import create_train_state as _create_state
from clr_jax.flax._state import create_train_state_jit as _create_state_jit

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
LrPolicy = Callable[[TrainState, jax.Array, tuple[jax.Array, jax.Array]], Any]


def _per_seed(fn: Callable, keys: jax.Array, seeds: int | None) -> Any:
    """``fn`` of each key, stacked along a seed axis when ``seeds`` is given.

    Eager and seed by seed on purpose: the ops are the single-seed ones (their
    compiled kernels are cached across calls, and each seed starts exactly as
    a run of its own would), whereas a vmapped random initialisation is a new
    program that takes seconds to compile on CPU.
    """
    if seeds is None:
        return fn(keys)
    return stack([fn(keys[i]) for i in range(seeds)])


@functools.partial(jax.jit, static_argnames=("seeds",))
def _seed_keys(key: jax.Array, seeds: int | None) -> tuple[jax.Array, jax.Array]:
    """``(init_keys, data_keys)``, one per seed (a leading axis with ``seeds``)."""

    def split(k):
        init_key, data_key = jax.random.split(k)
        return init_key, data_key

    if seeds is None:
        return split(key)
    return jax.vmap(split)(jax.random.split(key, seeds))


def _batched(fn: Callable, seeds: int | None, in_axes: tuple) -> Callable:
    return fn if seeds is None else jax.vmap(fn, in_axes=in_axes)


# Module-level compiled functions: their cache outlives a ``fit`` call, so a
# second run with an equal model, optimizer and settings does not recompile.


@functools.partial(jax.jit, static_argnames=("config", "seeds"))
def _run_epoch(carry, data_keys, epoch, train, test, *, config, seeds):
    epoch_fn = functools.partial(run_epoch, config=config)
    return _batched(epoch_fn, seeds, (0, 0, None, None, None))(
        carry, data_keys, epoch, train, test
    )


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_snapshots", "seeds"))
def _ensemble(buffer, test, *, apply_fn, num_snapshots, seeds):
    def measure(buffer):
        return _snapshots.accuracies(apply_fn, buffer, test, num_snapshots)

    return _batched(measure, seeds, (0,))(buffer)


def _initial_states(adapter, example, tx, init_keys, seeds) -> TrainState:
    x0 = jnp.asarray(example)
    # A built NNX module only hands over its weights: nothing to compile.
    create = _create_state_jit if adapter.reinitialises else _create_state
    return _per_seed(lambda k: create(adapter, x0, tx, k), init_keys, seeds)


def _initial_carry(state: TrainState, seeds, num_snapshots: int) -> Carry:
    halted_at = jnp.full(() if seeds is None else (seeds,), -1, jnp.int32)
    snapshots = None
    if num_snapshots:
        empty = functools.partial(_snapshots.empty, num_snapshots=num_snapshots)
        snapshots = _batched(empty, seeds, (0,))(state)
    return Carry(state, halted_at, snapshots)


def _epochs(run, carry, epoch_range: range, seeds, progress: bool | None):
    """Runs the compiled epoch over ``epoch_range``; results stay on the device
    (the progress bar alone reads two numbers per epoch)."""
    bar = _progress.bar(
        progress, total=len(epoch_range), desc="fit", unit="epoch", leave=True
    )
    step_logs, epoch_logs = [], []
    for epoch in epoch_range:
        carry, steps, epoch_log = run(carry, epoch=np.int32(epoch), seeds=seeds)
        step_logs.append(steps)
        epoch_logs.append(epoch_log)
        if _progress.wanted(progress):
            bar.set_postfix(
                loss=float(jnp.mean(epoch_log.train_loss)),
                test_acc=float(jnp.mean(epoch_log.test_accuracy)),
            )
        bar.update(1)
    bar.close()
    return carry, step_logs, epoch_logs


def _snapshot_ensemble(carry, test, seeds, num_snapshots) -> SnapshotEnsemble:
    buffer = carry.snapshots
    each, ensemble, last = jax.device_get(
        _ensemble(
            buffer,
            test,
            apply_fn=carry.state.apply_fn,
            num_snapshots=num_snapshots,
            seeds=seeds,
        )
    )
    # Drop the scratch slot (the last one) kept for steps without a snapshot.
    axis = 0 if seeds is None else 1
    params, batch_stats, step = jax.tree.map(
        lambda a: jax.lax.slice_in_dim(a, 0, num_snapshots, axis=axis),
        (buffer.params, buffer.batch_stats, buffer.step),
    )
    return SnapshotEnsemble(params, batch_stats, step, each, ensemble, last)


def fit(
    model: Any,
    data: Any,
    *,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    optimizer: Callable[..., optax.GradientTransformation]
    | optax.GradientTransformation = optax.sgd,
    learning_rate: float | optax.Schedule | None = None,
    loss_fn: LossFn | None = None,
    seeds: int | None = None,
    snapshot_every: int | None = None,
    lr_policy: LrPolicy | None = None,
    mesh: jax.sharding.Mesh | None = None,
    data_axis: str | None = None,
    initial_state: TrainState | None = None,
    start_epoch: int = 0,
    eval_batch_size: int | None = None,
    progress: bool | None = None,
    **hyperparams: Any,
) -> FitResult:
    """Trains a Flax model with any learning-rate and momentum schedules.

    Each epoch is one compiled ``lax.scan`` over the device-resident training
    set, its batches drawn inside the scan (a fresh permutation per epoch,
    last partial batch dropped), followed by the test evaluation in the same
    program. The compiled epoch is reused for every epoch (the epoch number
    is an argument, not a constant) and by later calls with an equal model,
    optimizer and settings. The host sees each epoch's results, never a
    step.

    Reproducibility: epoch ``e`` shuffles with ``fold_in(data_key, e)``,
    schedules read the update count stored in the optimizer state and dropout
    keys follow ``state.step``, so ``fit(..., initial_state=s,
    start_epoch=k)`` with ``s`` the state after ``k`` epochs repeats the
    uninterrupted run exactly.

    Non-finite values: an update whose loss, optimizer updates or BatchNorm
    statistics are NaN/Inf (a NaN or infinite learning rate included) is
    refused and training halts for that seed: the state stays at the last
    finite one, ``history.nonfinite_step`` tells where, and later steps
    record NaN. Nothing raises; the check is on-device and costs no select
    over the state on a finite step.

    Args:
      model: a ``flax.linen.Module``, a built ``flax.nnx.Module``, or a
        factory ``rngs -> nnx.Module`` (needed with ``seeds`` for NNX). It
        maps inputs to class logits.
      data: a :class:`clr_jax.data.Dataset` or ``(x_train, y_train, x_test,
        y_test)`` with integer labels.
      epochs: total number of epochs of the run (a resumed call runs epochs
        ``start_epoch .. epochs-1``).
      batch_size: examples per update.
      key: PRNG key, split into the initialisation key (weights, dropout)
        and the data-order key. With ``seeds=N``, seed ``i`` uses
        ``jax.random.split(key, N)[i]`` as its key.
      optimizer: an optax factory (``optax.sgd``, ``optax.adamw``, ...) built
        with :func:`clr_jax.with_schedules` from ``learning_rate`` and
        ``**hyperparams``; or a ready ``GradientTransformation`` whose
        ``learning_rate`` is injected (``optax.inject_hyperparams``).
      learning_rate: a number or schedule (e.g. :func:`clr_jax.triangular`),
        with a factory only.
      loss_fn: ``(logits, labels) -> per-example losses``; default
        ``optax.softmax_cross_entropy_with_integer_labels``. Accuracy is the
        arg-max of the logits against the labels.
      seeds: run ``seeds`` trainings at once with ``jax.vmap`` (their
        initialisation, dropout and data order differ); every result gains a
        leading seed axis and ``FitResult.mean``/``std`` summarise them.
      snapshot_every: snapshot the variables whenever the update count
        reaches a multiple of it. Give the cycle length, e.g. ``2 *
        step_size`` for :func:`clr_jax.triangular` or ``cycle_steps`` for
        :func:`clr_jax.cosine_restarts`, so that snapshots are taken at the
        learning rate's cycle minima (Huang et al.); the ensemble's averaged
        softmax is then evaluated on the test split.
      lr_policy: ``(state, epoch, (x_train, y_train)) -> lr``, or ``(lr,
        log)`` with ``log`` a pytree of scalars kept per epoch in
        ``history.policy_log``. Called at the start of every epoch *inside*
        the compiled epoch (``jnp`` code; ``epoch`` is an int32 scalar, the
        data the device arrays). Its rate is written into the optimizer's
        injected ``learning_rate``, which must then be a number, not a
        schedule, and holds for the whole epoch; nothing recompiles. The hook
        for adaptive rules such as the Lipschitz learning rate
        (:func:`lipschitz_policy`).
      mesh: a ``jax.sharding.Mesh`` for data-parallel training: data set and
        state are replicated on every device and each batch is split along
        ``data_axis``; XLA reduces the gradients.
      data_axis: the mesh axis of the batch (default: the mesh's first).
      initial_state: a :class:`TrainState` to continue from (one per seed with
        ``seeds``). Its optimizer is used, so ``optimizer`` and the
        hyperparameters are ignored; pass the ``key`` of the first call.
      start_epoch: the number of the first epoch to run (resuming).
      eval_batch_size: test examples per compiled chunk (default: the whole
        test split up to 1024; the last chunk is padded and masked).
      progress: a tqdm bar over epochs: ``None`` when stderr is a terminal,
        ``True`` always (needs tqdm), ``False`` never.
      **hyperparams: the optimizer factory's other arguments, numbers or
        schedules: ``momentum=clr_jax.cyclical_momentum(...)``, ``b1=...``,
        ``weight_decay=...``.

    Returns:
      A :class:`FitResult`: the final state, the :class:`History`, the
      :class:`SnapshotEnsemble` (with ``snapshot_every``) and, with
      ``seeds``, the history's mean and spread over seeds.

    Raises:
      ValueError: for a bad model, data, optimizer, key, count, mesh or
        initial state.

    Examples:
      >>> import jax, optax, flax.linen as nn, clr_jax
      >>> from clr_jax import flax as clr_flax
      >>> data = clr_jax.data.load_digits()
      >>> result = clr_flax.fit(
      ...     nn.Dense(10), data, epochs=2, batch_size=128,
      ...     key=jax.random.key(0), optimizer=optax.sgd,
      ...     learning_rate=clr_jax.triangular(0.05, 0.5, step_size=10),
      ...     momentum=clr_jax.cyclical_momentum(0.8, 0.95, step_size=10),
      ...     progress=False)
      >>> result.history.learning_rate.shape, result.history.test_accuracy.shape
      ((20,), (2,))
      >>> bool(result.history.test_accuracy[-1] > 0.8)
      True

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", 2017,
      https://arxiv.org/abs/1506.01186.
      Huang et al., "Snapshot Ensembles: Train 1, get M for free", 2017,
      https://arxiv.org/abs/1704.00109.
    """
    x_train, y_train, x_test, y_test = args.split_data(data)
    epochs, start_epoch, batch_size = args.check_counts(
        epochs, start_epoch, batch_size, len(y_train)
    )
    args.check_key(key)
    adapter = adapt(model)
    seeds = args.check_seeds(seeds, adapter.reinitialises or initial_state is not None)
    placement, shards = args.placement(mesh, data_axis, batch_size)
    eval_chunk = args.eval_chunk(eval_batch_size, len(y_test), shards)
    updates = epochs * (len(y_train) // batch_size)
    snapshot_every, num_snapshots = args.snapshots(snapshot_every, updates)
    init_keys, data_keys = _seed_keys(key, seeds)

    if initial_state is None:
        tx = args.build_optimizer(optimizer, learning_rate, hyperparams)
        state = _initial_states(adapter, x_train[:1], tx, init_keys, seeds)
    else:
        args.check_initial_state(initial_state, seeds)
        state = initial_state
    args.check_optimizer_state(state.opt_state, lr_policy)

    carry = _initial_carry(state, seeds, num_snapshots)
    train = (x_train, y_train)
    test = chunk_test_set(x_test, y_test, eval_chunk)
    # On the device once (replicated over a mesh), not at every epoch's call.
    carry, train, test, data_keys = placement.put((carry, train, test, data_keys))
    config = EpochConfig(
        loss_fn=loss_fn or optax.softmax_cross_entropy_with_integer_labels,
        batch_size=batch_size,
        snapshot_every=snapshot_every,
        num_snapshots=num_snapshots,
        lr_policy=lr_policy,
        placement=placement,
    )
    run = functools.partial(
        _run_epoch, data_keys=data_keys, train=train, test=test, config=config
    )
    epoch_range = range(start_epoch, epochs)
    carry, step_logs, epoch_logs = _epochs(run, carry, epoch_range, seeds, progress)

    history = _history.collect(step_logs, epoch_logs, epoch_range, carry.halted_at)
    ensemble = None
    if num_snapshots:
        ensemble = _snapshot_ensemble(carry, test, seeds, num_snapshots)
    mean, std = _history.seed_statistics(history) if seeds is not None else (None, None)
    return FitResult(carry.state, history, ensemble, mean, std)
