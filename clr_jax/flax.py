"""Flax (Linen and NNX) training with cyclical learning rates.

Two things live here:

* :func:`range_test_step` turns a Flax model into the ``step_fn(state,
  batch, lr) -> (state, loss, accuracy)`` that ``clr_jax.range_test``'s
  low-level entry sweeps, with BatchNorm statistics and dropout handled;
* :func:`fit`, a training loop: one compiled ``lax.scan`` per epoch over
  device-resident data, evaluation on the test split each epoch, a history
  of the learning rate, momentum and loss of every update, ``jax.vmap`` over
  seeds, snapshot ensembles, data-parallel meshes, and a per-epoch
  learning-rate policy hook (:func:`lipschitz_policy`, the Lipschitz
  adaptive rate, is one; re-exported from ``clr_jax._flax_lipschitz``).

Models come in three forms: a ``flax.linen.Module``; a built
``flax.nnx.Module``; or a factory ``rngs -> nnx.Module`` (an NNX module
class taking ``rngs`` first is one), which lets every seed initialise its
own weights. Linen modules are switched between training and inference
through a ``train`` argument of ``__call__`` (or ``deterministic=not
train``) when they have one; NNX modules through ``deterministic`` and
``use_running_average`` attributes (``nnx.view``), as ``nnx.Dropout`` and
``nnx.BatchNorm`` use them.

This is the only public module that imports flax: use ``from clr_jax import
flax as clr_flax``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clr_jax import _flax_args as args
from clr_jax import _flax_loop as loop
from clr_jax import _validation as v
from clr_jax._flax_lipschitz import adamo, lipschitz_policy, with_inverse_time_decay
from clr_jax._flax_state import TrainState, adapt, train_step
from clr_jax._flax_state import create_train_state as _create_state
from clr_jax._flax_state import create_train_state_jit as _create_state_jit
from clr_jax.inject import is_scheduled, set_hyperparam

__all__ = [
    "FitResult",
    "History",
    "SnapshotEnsemble",
    "TrainState",
    "adamo",
    "create_train_state",
    "ensemble_probabilities",
    "evaluate",
    "fit",
    "lipschitz_policy",
    "range_test_step",
    "with_inverse_time_decay",
]

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
StepFn = Callable[[TrainState, Any, jax.Array], tuple[TrainState, jax.Array, jax.Array]]
LrPolicy = Callable[[TrainState, jax.Array, tuple[jax.Array, jax.Array]], Any]


class History(NamedTuple):
    """What :func:`fit` recorded, as NumPy arrays (fetched once, after the run).

    With ``seeds`` every field gains a leading seed axis.

    Per update (``steps`` = the updates run by this call):
      step: int32[steps], the update count (``state.step`` before the update;
        the ``count`` its schedules saw).
      learning_rate, momentum: float32[steps], read from the optimizer's
        injected hyperparameters inside the step. ``momentum`` is the
        ``momentum`` (SGD) or ``b1`` (Adam family) hyperparameter, NaN when
        the optimizer has neither.
      loss, accuracy: float32[steps], training mini-batch loss and accuracy
        (training mode).

    Per epoch (``epochs`` = the epochs run by this call):
      epoch: int32[epochs], the epoch numbers.
      train_loss, train_accuracy: float32[epochs], means over the epoch's
        mini-batches (finite ones; NaN when there were none).
      test_loss, test_accuracy: float32[epochs], on the whole test split in
        inference mode after the epoch.

    nonfinite_step: int32 scalar, the update count at which the loss, the
    optimizer's updates or the BatchNorm statistics first turned NaN/Inf
    (a NaN learning rate included); -1 when training stayed finite. That
    update and every later one were refused (the state stays frozen); their
    ``loss``, ``accuracy``, ``learning_rate`` and ``momentum`` read NaN from
    the next step on (the failing step keeps its loss and learning rate).

    policy_log: what ``lr_policy`` reported with its rate (``(lr, log)``),
    the same pytree with one value per epoch (``[epochs]``); ``None``
    otherwise.
    """

    step: np.ndarray
    learning_rate: np.ndarray
    momentum: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    epoch: np.ndarray
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    nonfinite_step: np.ndarray
    policy_log: Any = None


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


class FitResult(NamedTuple):
    """The outcome of :func:`fit`.

    Attributes:
      state: the final :class:`TrainState` (the last finite one if training
        halted); with ``seeds``, every leaf has a leading seed axis.
      history: the :class:`History`.
      snapshots: a :class:`SnapshotEnsemble`, or ``None`` without
        ``snapshot_every``.
      mean, std: the history's mean and standard deviation over seeds
        (``None`` without ``seeds``).
    """

    state: TrainState
    history: History
    snapshots: SnapshotEnsemble | None
    mean: History | None
    std: History | None


# ---------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------


def create_train_state(
    model: Any,
    example_input: Any,
    *,
    key: jax.Array,
    optimizer: Callable[..., optax.GradientTransformation]
    | optax.GradientTransformation = optax.sgd,
    learning_rate: float | optax.Schedule | None = None,
    **hyperparams: Any,
) -> TrainState:
    """Initialises a Flax model and its optimizer as a :class:`TrainState`.

    Args:
      model: a ``flax.linen.Module``, a built ``flax.nnx.Module`` (its current
        weights are used; ``key`` then only seeds Linen-style dropout) or a
        factory ``rngs -> nnx.Module``.
      example_input: a batch of inputs (its leading axis may be 1).
      key: PRNG key of the initialisation and of dropout.
      optimizer: an optax factory taking ``learning_rate`` (built through
        :func:`clr_jax.with_schedules`), or a ready ``GradientTransformation``
        whose learning rate is injected (``optax.inject_hyperparams``).
      learning_rate: a number or schedule, with a factory only.
      **hyperparams: the factory's other arguments (``momentum``, ``b1``,
        ``weight_decay``, ...), numbers or schedules.

    Returns:
      A :class:`TrainState` with an int32 ``step`` of 0.

    Raises:
      ValueError: for an unknown kind of model, a bad optimizer or key.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, flax.linen as nn
      >>> from clr_jax import flax as clr_flax
      >>> state = clr_flax.create_train_state(
      ...     nn.Dense(3), jnp.ones((1, 4)), key=jax.random.key(0),
      ...     optimizer=optax.sgd, learning_rate=0.1, momentum=0.9)
      >>> int(state.step), state.params["kernel"].shape
      (0, (4, 3))
    """
    args.check_key(key)
    tx = args.build_optimizer(optimizer, learning_rate, hyperparams)
    return _create_state(adapt(model), jnp.asarray(example_input), tx, key)


def range_test_step(
    model: Any,
    example_input: Any,
    *,
    key: jax.Array,
    optimizer: Callable[..., optax.GradientTransformation]
    | optax.GradientTransformation = optax.sgd,
    loss_fn: LossFn | None = None,
    **hyperparams: Any,
) -> tuple[StepFn, TrainState]:
    """The range-test ``step_fn`` of a Flax model, and its initial state.

    ``step_fn(state, batch, lr) -> (state, loss, accuracy)`` writes ``lr``
    into the optimizer's injected ``learning_rate`` and makes one update in
    training mode: BatchNorm statistics are updated (Linen
    ``mutable=['batch_stats']``; NNX through ``nnx.split``/``nnx.merge``) and
    dropout draws a fresh mask every step (Linen: ``fold_in(dropout_key,
    step)``; NNX: the model's ``dropout`` RNG stream). It is pure, so it runs
    inside ``lax.scan``, ``jit`` and ``vmap``.

    Args:
      model: a ``flax.linen.Module``, a built ``flax.nnx.Module`` or a factory
        ``rngs -> nnx.Module``.
      example_input: a batch of inputs, to initialise the model.
      key: PRNG key of the initialisation and of dropout.
      optimizer: an optax factory taking ``learning_rate`` (its learning rate
        is injected for you), or a ``GradientTransformation`` whose numeric
        learning rate is injected already.
      loss_fn: ``(logits, labels) -> per-example losses``; default softmax
        cross-entropy with integer labels.
      **hyperparams: the factory's other arguments (e.g. ``momentum=0.9``).

    Returns:
      ``(step_fn, state)``. A batch is a pair ``(inputs, labels)``.

    Raises:
      ValueError: for an unknown kind of model, a bad optimizer or key, or an
        optimizer whose learning rate is not an injected number.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from clr_jax import flax as clr_flax
      >>> step_fn, state = clr_flax.range_test_step(
      ...     nn.Dense(2), jnp.ones((1, 3)), key=jax.random.key(0))
      >>> batch = (jnp.ones((4, 3)), jnp.array([0, 1, 0, 1]))
      >>> state, loss, accuracy = step_fn(state, batch, 0.1)
      >>> int(state.step), float(state.opt_state.hyperparams["learning_rate"])
      (1, 0.1)
    """
    args.check_key(key)
    # The learning rate is only a placeholder here: step_fn overwrites it.
    ready = isinstance(optimizer, optax.GradientTransformation)
    tx = args.build_optimizer(optimizer, None if ready else 0.0, hyperparams)
    state = _create_state(adapt(model), jnp.asarray(example_input), tx, key)
    args.check_optimizer_state(state.opt_state, None)
    if is_scheduled(state.opt_state, "learning_rate"):
        raise ValueError(
            "`optimizer` must inject a numeric `learning_rate` for the range test "
            "to set; got a scheduled one."
        )
    loss_fn = loss_fn or optax.softmax_cross_entropy_with_integer_labels

    def step_fn(state: TrainState, batch: Any, lr: jax.Array):
        opt_state = set_hyperparam(state.opt_state, "learning_rate", lr)
        return train_step(state.replace(opt_state=opt_state), batch, loss_fn)

    return step_fn, state


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _evaluate_jit(state, test, loss_fn):
    return loop.evaluate(state, test, loss_fn)


def evaluate(
    state: TrainState,
    x: Any,
    y: Any,
    *,
    batch_size: int = 1024,
    loss_fn: LossFn | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Mean loss and accuracy of ``state`` on ``(x, y)`` in inference mode.

    Args:
      state: a :class:`TrainState` (one seed).
      x, y: inputs and integer labels.
      batch_size: examples per compiled chunk (the last one is padded).
      loss_fn: ``(logits, labels) -> per-example losses``; default softmax
        cross-entropy with integer labels.

    Returns:
      ``(loss, accuracy)`` as float32 scalars.

    Raises:
      ValueError: for a ``batch_size`` that is not an integer >= 1.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from clr_jax import flax as clr_flax
      >>> state = clr_flax.create_train_state(
      ...     nn.Dense(2), jnp.ones((1, 3)), key=jax.random.key(0), learning_rate=0.1)
      >>> x, y = jnp.zeros((5, 3)), jnp.zeros(5, int)  # zero inputs: equal logits
      >>> loss, accuracy = clr_flax.evaluate(state, x, y)
      >>> round(float(loss), 4), float(accuracy)
      (0.6931, 1.0)
    """
    batch_size = v.check_step_count("batch_size", batch_size)
    loss_fn = loss_fn or optax.softmax_cross_entropy_with_integer_labels
    test = loop.chunk_test_set(x, y, min(batch_size, len(y)))
    return _evaluate_jit(state, test, loss_fn)


def ensemble_probabilities(
    state: TrainState, snapshots: SnapshotEnsemble, x: Any
) -> jax.Array:
    """Averaged softmax of the snapshots taken (one seed), on inputs ``x``.

    Args:
      state: any :class:`TrainState` of the model (for its ``apply_fn``).
      snapshots: the :class:`SnapshotEnsemble` of a :func:`fit`.
      x: a batch of inputs.

    Returns:
      float32[batch, classes] class probabilities.

    Examples:
      >>> result = clr_flax.fit(  # doctest: +SKIP
      ...     model, data, epochs=30, batch_size=128, key=jax.random.key(0),
      ...     learning_rate=clr_jax.triangular(0.01, 0.3, step_size=50),
      ...     snapshot_every=100, progress=False)
      >>> probs = clr_flax.ensemble_probabilities(  # doctest: +SKIP
      ...     result.state, result.snapshots, data.x_test)

    References:
      Huang et al., "Snapshot Ensembles: Train 1, get M for free", 2017,
      https://arxiv.org/abs/1704.00109.
    """
    return _ensemble_probabilities(
        snapshots.params,
        snapshots.batch_stats,
        snapshots.step,
        jnp.asarray(x),
        apply_fn=state.apply_fn,
    )


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _ensemble_probabilities(params, batch_stats, steps, x, *, apply_fn):
    def probabilities(params, stats):
        logits = loop.predict(apply_fn, params, stats, x)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    probs = jax.vmap(probabilities)(params, batch_stats)
    taken = (steps >= 0).astype(jnp.float32)
    weights = taken.reshape(-1, 1, 1)
    return jnp.sum(probs * weights, axis=0) / jnp.maximum(jnp.sum(taken), 1.0)


# ---------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------


def _stack(trees: list) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _per_seed(fn: Callable, keys: jax.Array, seeds: int | None) -> Any:
    """``fn`` of each key, stacked along a seed axis when ``seeds`` is given.

    Eager and seed by seed on purpose: the ops are the single-seed ones (their
    compiled kernels are cached across calls, and each seed starts exactly as
    a run of its own would), whereas a vmapped random initialisation is a new
    program that takes seconds to compile on CPU.
    """
    if seeds is None:
        return fn(keys)
    return _stack([fn(keys[i]) for i in range(seeds)])


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
    epoch_fn = functools.partial(loop.run_epoch, config=config)
    return _batched(epoch_fn, seeds, (0, 0, None, None, None))(
        carry, data_keys, epoch, train, test
    )


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_snapshots", "seeds"))
def _ensemble(buffer, test, *, apply_fn, num_snapshots, seeds):
    def measure(buffer):
        return loop.ensemble_accuracies(apply_fn, buffer, test, num_snapshots)

    return _batched(measure, seeds, (0,))(buffer)


def _initial_states(adapter, example, tx, init_keys, seeds) -> TrainState:
    x0 = jnp.asarray(example)
    # A built NNX module only hands over its weights: nothing to compile.
    create = _create_state_jit if adapter.reinitialises else _create_state
    return _per_seed(lambda k: create(adapter, x0, tx, k), init_keys, seeds)


def _initial_carry(state: TrainState, seeds, num_snapshots: int) -> loop.Carry:
    halted_at = jnp.full(() if seeds is None else (seeds,), -1, jnp.int32)
    snapshots = None
    if num_snapshots:
        empty = functools.partial(loop.empty_snapshots, num_snapshots=num_snapshots)
        snapshots = _batched(empty, seeds, (0,))(state)
    return loop.Carry(state, halted_at, snapshots)


def _epochs(run, carry, epoch_range: range, seeds, progress: bool):
    """Runs the compiled epoch over ``epoch_range``; results stay on the device
    (the progress bar alone reads two numbers per epoch)."""
    bar, epoch_iter = _progress_bar(epoch_range, progress)
    step_logs, epoch_logs = [], []
    for epoch in epoch_iter:
        carry, steps, epoch_log = run(carry, epoch=np.int32(epoch), seeds=seeds)
        step_logs.append(steps)
        epoch_logs.append(epoch_log)
        if bar is not None:
            bar.set_postfix(
                loss=float(jnp.mean(epoch_log.train_loss)),
                test_acc=float(jnp.mean(epoch_log.test_accuracy)),
            )
    if bar is not None:
        bar.close()
    return carry, step_logs, epoch_logs


def _progress_bar(epochs: range, enabled: bool):
    if not enabled:
        return None, epochs
    from tqdm.auto import tqdm  # an optional dependency, imported on use

    bar = tqdm(epochs, desc="fit", unit="epoch")
    return bar, bar


def _history(steps: list, epochs: list, epoch_range: range, halted_at) -> History:
    """The host (NumPy) history, fetched once at the end of the run."""
    steps, epochs, halted_at = jax.device_get((steps, epochs, halted_at))
    step_log = jax.tree.map(lambda *a: np.concatenate(a, axis=-1), *steps)
    epoch_log = jax.tree.map(lambda *a: np.stack(a, axis=-1), *epochs)
    epoch = np.arange(epoch_range.start, epoch_range.stop, dtype=np.int32)
    per_epoch = epoch_log._asdict()
    policy_log = per_epoch.pop("policy_log")
    return History(
        **step_log._asdict(),
        epoch=np.broadcast_to(epoch, (*np.shape(halted_at), len(epoch))).copy(),
        **per_epoch,
        nonfinite_step=halted_at,
        policy_log=policy_log,
    )


def _seed_statistics(history: History) -> tuple[History, History]:
    def stat(fn):
        return jax.tree.map(lambda a: fn(np.asarray(a, np.float64), axis=0), history)

    return stat(np.mean), stat(np.std)


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
    progress: bool = True,
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
      progress: show a tqdm bar over epochs.
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
    test = loop.chunk_test_set(x_test, y_test, eval_chunk)
    # On the device once (replicated over a mesh), not at every epoch's call.
    carry, train, test, data_keys = placement.put((carry, train, test, data_keys))
    config = loop.EpochConfig(
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

    history = _history(step_logs, epoch_logs, epoch_range, carry.halted_at)
    ensemble = None
    if num_snapshots:
        ensemble = _snapshot_ensemble(carry, test, seeds, num_snapshots)
    mean, std = _seed_statistics(history) if seeds is not None else (None, None)
    return FitResult(carry.state, history, ensemble, mean, std)
