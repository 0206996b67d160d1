"""Flax (Linen and NNX) training with cyclical learning rates.

Two things live here:

* :func:`range_test_step` turns a Flax model into the ``step_fn(state,
  batch, lr) -> (state, loss, accuracy)`` that ``clr_jax.range_test``'s
  low-level entry sweeps, with BatchNorm statistics and dropout handled;
* :func:`fit`, a training loop: one compiled ``lax.scan`` per epoch over
  device-resident data, evaluation on the test split each epoch, a history
  of the learning rate, momentum and loss of every update, ``jax.vmap`` over
  seeds, snapshot ensembles, data-parallel meshes, and a per-epoch
  learning-rate policy hook.

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

from clr_jax import _flax_loop as loop
from clr_jax import _validation as v
from clr_jax._flax_state import (
    TrainState,
    adapt,
    has_hyperparam,
    is_scheduled,
    set_hyperparam,
    train_step,
)
from clr_jax._flax_state import create_train_state as _create_state
from clr_jax.inject import with_schedules

__all__ = [
    "FitResult",
    "History",
    "SnapshotEnsemble",
    "TrainState",
    "create_train_state",
    "ensemble_probabilities",
    "evaluate",
    "fit",
    "range_test_step",
]

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
StepFn = Callable[[TrainState, Any, jax.Array], tuple[TrainState, jax.Array, jax.Array]]
LrPolicy = Callable[[TrainState, jax.Array, tuple[jax.Array, jax.Array]], Any]


class History(NamedTuple):
    """What :func:`fit` recorded; with ``seeds`` every field gains a leading seed axis.

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
    parameters or the BatchNorm statistics first turned NaN/Inf; -1 when
    training stayed finite. That update and every later one were refused
    (the state stays frozen); their ``loss``, ``accuracy``,
    ``learning_rate`` and ``momentum`` read NaN from the next step on (the
    failing step keeps its loss and learning rate).
    """

    step: jax.Array
    learning_rate: jax.Array
    momentum: jax.Array
    loss: jax.Array
    accuracy: jax.Array
    epoch: jax.Array
    train_loss: jax.Array
    train_accuracy: jax.Array
    test_loss: jax.Array
    test_accuracy: jax.Array
    nonfinite_step: jax.Array


class SnapshotEnsemble(NamedTuple):
    """Snapshots taken at the learning rate's cycle minima and their ensemble.

    Attributes:
      params, batch_stats: the model variables stacked along a leading
        snapshot axis of length ``M = total_updates // snapshot_every``.
      step: int32[M], the update count at which each was taken (a multiple
        of ``snapshot_every``), -1 for one never taken (training halted, or
        resumed past it).
      test_accuracy: float32[M], each snapshot alone on the test split.
      ensemble_accuracy: the test accuracy of the averaged softmax of the
        snapshots taken.
      last_accuracy: the last snapshot alone, the baseline the ensemble is
        compared with.
    """

    params: Any
    batch_stats: Any
    step: jax.Array
    test_accuracy: jax.Array
    ensemble_accuracy: jax.Array
    last_accuracy: jax.Array


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
# Argument handling
# ---------------------------------------------------------------------------


def _build_optimizer(
    optimizer, learning_rate, hyperparams
) -> optax.GradientTransformation:
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None or hyperparams:
            raise ValueError(
                "`learning_rate` and other hyperparameters must be left out when "
                "`optimizer` is a ready GradientTransformation; got "
                f"{ {'learning_rate': learning_rate, **hyperparams}!r}."
            )
        return optimizer
    if not callable(optimizer):
        raise ValueError(
            "`optimizer` must be an optax factory (e.g. optax.sgd) or a "
            f"GradientTransformation; got {optimizer!r}."
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
        return _cached_with_schedules(optimizer, learning_rate, items)
    except TypeError:  # unhashable hyperparameters (arrays): no reuse
        return with_schedules(optimizer, learning_rate=learning_rate, **hyperparams)


@functools.lru_cache(maxsize=64)
def _cached_with_schedules(optimizer, learning_rate, items):
    """One transformation per distinct arguments: the optimizer is static in the
    compiled epoch's cache key, so rebuilding it would recompile every call."""
    return with_schedules(optimizer, learning_rate=learning_rate, **dict(items))


def _check_key(key: Any) -> None:
    ok = isinstance(key, jax.Array) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == jnp.uint32 and key.shape == (2,))
    )
    if not ok or (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim != 0):
        raise ValueError(
            f"`key` must be a single PRNG key (jax.random.key); got {key!r}."
        )


def _check_optimizer_state(opt_state: Any, lr_policy: Any) -> None:
    if not has_hyperparam(opt_state, "learning_rate"):
        raise ValueError(
            "`optimizer` must inject its `learning_rate` (optax.inject_hyperparams "
            "or clr_jax.with_schedules) so that it can be recorded; got a state "
            f"without it: {type(opt_state).__name__}."
        )
    if lr_policy is not None:
        if not callable(lr_policy):
            raise ValueError(f"`lr_policy` must be callable; got {lr_policy!r}.")
        if is_scheduled(opt_state, "learning_rate"):
            raise ValueError(
                "`learning_rate` must be a number, not a schedule, when `lr_policy` "
                "sets it each epoch; got a scheduled learning rate."
            )


def _split_data(data: Any) -> tuple[Any, np.ndarray, Any, np.ndarray]:
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


def _check_seeds(seeds: Any, reinitialises: bool) -> int | None:
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


def _auto_axes(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
    """The same mesh with every axis in Auto mode (``jax.make_mesh`` now gives
    Explicit axes, which ``with_sharding_constraint`` does not accept); the
    partitioner then inserts the gradient all-reduce itself."""
    auto = (jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
    return jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=auto)


def _mesh_sharding(mesh, data_axis, sizes: dict[str, int]):
    """``(replicated, batch)`` shardings of ``mesh``, checking divisibility."""
    if not isinstance(mesh, jax.sharding.Mesh):
        raise ValueError(f"`mesh` must be a jax.sharding.Mesh; got {mesh!r}.")
    axis = mesh.axis_names[0] if data_axis is None else data_axis
    if axis not in mesh.axis_names:
        raise ValueError(
            f"`data_axis` must be one of the mesh's axes {mesh.axis_names}; "
            f"got {data_axis!r}."
        )
    mesh = _auto_axes(mesh)
    devices = mesh.shape[axis]
    for name, size in sizes.items():
        if size % devices:
            raise ValueError(
                f"`{name}` must be a multiple of the {devices} devices along mesh "
                f"axis {axis!r}; got {size}."
            )
    spec = jax.sharding.PartitionSpec
    return (
        jax.sharding.NamedSharding(mesh, spec()),
        jax.sharding.NamedSharding(mesh, spec(axis)),
    )


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
    _check_key(key)
    tx = _build_optimizer(optimizer, learning_rate, hyperparams)
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
    _check_key(key)
    # The learning rate is only a placeholder here: step_fn overwrites it.
    ready = isinstance(optimizer, optax.GradientTransformation)
    tx = _build_optimizer(optimizer, None if ready else 0.0, hyperparams)
    state = _create_state(adapt(model), jnp.asarray(example_input), tx, key)
    _check_optimizer_state(state.opt_state, None)
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


def _seed_keys(key: jax.Array, seeds: int | None) -> tuple[jax.Array, jax.Array]:
    """``(init_keys, data_keys)``, one per seed (a leading axis with ``seeds``)."""
    keys = key if seeds is None else jax.random.split(key, seeds)
    return _per_seed(lambda k: tuple(jax.random.split(k)), keys, seeds)


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


def _check_initial_state(state: Any, seeds: int | None) -> None:
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


def _num_snapshots(snapshot_every, total_updates: int) -> int:
    if snapshot_every is None:
        return 0
    snapshot_every = v.check_step_count("snapshot_every", snapshot_every)
    if snapshot_every > total_updates:
        raise ValueError(
            f"`snapshot_every` must be <= the {total_updates} updates of the run; "
            f"got {snapshot_every}."
        )
    return total_updates // snapshot_every


def _progress_bar(epochs: range, enabled: bool):
    if not enabled:
        return None, epochs
    from tqdm.auto import tqdm  # an optional dependency, imported on use

    bar = tqdm(epochs, desc="fit", unit="epoch")
    return bar, bar


def _history(steps: list, epochs: list, epoch_range: range, halted_at) -> History:
    step_log = jax.tree.map(lambda *a: jnp.concatenate(a, axis=-1), *steps)
    epoch_log = jax.tree.map(lambda *a: jnp.stack(a, axis=-1), *epochs)
    epoch = jnp.asarray(epoch_range, jnp.int32)
    return History(
        **step_log._asdict(),
        epoch=jnp.broadcast_to(epoch, (*jnp.shape(halted_at), len(epoch_range))),
        **epoch_log._asdict(),
        nonfinite_step=halted_at,
    )


def _seed_statistics(history: History) -> tuple[History, History]:
    def stat(fn):
        return jax.tree.map(lambda a: fn(jnp.asarray(a, jnp.float32), axis=0), history)

    return stat(jnp.mean), stat(jnp.std)


def _snapshot_ensemble(carry, test, seeds, num_snapshots) -> SnapshotEnsemble:
    buffer = carry.snapshots
    each, ensemble, last = _ensemble(
        buffer,
        test,
        apply_fn=carry.state.apply_fn,
        num_snapshots=num_snapshots,
        seeds=seeds,
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

    Non-finite values: an update whose loss, parameters or BatchNorm
    statistics are NaN/Inf is refused and training halts for that seed: the
    state stays at the last finite one, ``history.nonfinite_step`` tells
    where, and later steps record NaN. Nothing raises.

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
      lr_policy: ``(state, epoch, (x_train, y_train)) -> lr``, called at the
        start of every epoch *inside* the compiled epoch (``jnp`` code;
        ``epoch`` is an int32 scalar, the data the device arrays). Its value
        is written into the optimizer's injected ``learning_rate``, which
        must then be a number, not a schedule, and holds for the whole epoch;
        nothing recompiles. The hook for adaptive rules such as the
        Lipschitz learning rate.
      mesh: a ``jax.sharding.Mesh`` for data-parallel training: data set and
        state are replicated on every device and each batch is split along
        ``data_axis``; XLA reduces the gradients.
      data_axis: the mesh axis of the batch (default: the mesh's first).
      initial_state: a :class:`TrainState` to continue from (one per seed with
        ``seeds``). Its optimizer is used, so ``optimizer`` and the
        hyperparameters are ignored; pass the ``key`` of the first call.
      start_epoch: the number of the first epoch to run (resuming).
      eval_batch_size: test examples per compiled chunk (default
        ``batch_size``; the last chunk is padded and masked).
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
    x_train, y_train, x_test, y_test = _split_data(data)
    epochs = v.check_step_count("epochs", epochs)
    start_epoch = v.check_step_count("start_epoch", start_epoch, minimum=0)
    if start_epoch >= epochs:
        raise ValueError(
            f"`start_epoch` must be < epochs ({epochs}); got {start_epoch}."
        )
    batch_size = v.check_step_count("batch_size", batch_size)
    if batch_size > len(y_train):
        raise ValueError(
            f"`batch_size` must be <= the {len(y_train)} training examples; got "
            f"{batch_size}."
        )
    eval_batch_size = v.check_step_count(
        "eval_batch_size", batch_size if eval_batch_size is None else eval_batch_size
    )
    _check_key(key)
    adapter = adapt(model)
    seeds = _check_seeds(seeds, adapter.reinitialises or initial_state is not None)
    num_snapshots = _num_snapshots(
        snapshot_every, epochs * (len(y_train) // batch_size)
    )
    init_keys, data_keys = _seed_keys(key, seeds)

    if initial_state is None:
        tx = _build_optimizer(optimizer, learning_rate, hyperparams)
        x0 = jnp.asarray(x_train[:1])
        create = functools.partial(_create_state, adapter, x0, tx)
        state = _per_seed(create, init_keys, seeds)
    else:
        _check_initial_state(initial_state, seeds)
        state = initial_state
    _check_optimizer_state(state.opt_state, lr_policy)

    train = (jnp.asarray(x_train), jnp.asarray(y_train))
    test = loop.chunk_test_set(x_test, y_test, min(eval_batch_size, len(y_test)))
    halted_at = jnp.full(() if seeds is None else (seeds,), -1, jnp.int32)
    snapshots = None
    if num_snapshots:
        empty = functools.partial(loop.empty_snapshots, num_snapshots=num_snapshots)
        snapshots = _batched(empty, seeds, (0,))(state)
    carry = loop.Carry(state, halted_at, snapshots)
    placement = loop.NO_PLACEMENT
    if mesh is not None:
        sizes = {"batch_size": batch_size, "eval_batch_size": test.labels.shape[1]}
        replicated, batch_sharding = _mesh_sharding(mesh, data_axis, sizes)
        placement = loop.Placement(batch_sharding, replicated)
        carry, train, test, data_keys = jax.device_put(
            (carry, train, test, data_keys), replicated
        )

    config = loop.EpochConfig(
        loss_fn=loss_fn or optax.softmax_cross_entropy_with_integer_labels,
        batch_size=batch_size,
        snapshot_every=snapshot_every,
        num_snapshots=num_snapshots,
        lr_policy=lr_policy,
        placement=placement,
    )
    run = functools.partial(_run_epoch, config=config, seeds=seeds)

    epoch_range = range(start_epoch, epochs)
    bar, epoch_iter = _progress_bar(epoch_range, progress)
    step_logs, epoch_logs = [], []
    for epoch in epoch_iter:
        carry, steps, epoch_log = run(
            carry, data_keys, jnp.asarray(epoch, jnp.int32), train, test
        )
        step_logs.append(steps)
        epoch_logs.append(epoch_log)
        if bar is not None:
            bar.set_postfix(
                loss=float(jnp.mean(epoch_log.train_loss)),
                test_acc=float(jnp.mean(epoch_log.test_accuracy)),
            )
    if bar is not None:
        bar.close()

    history = _history(step_logs, epoch_logs, epoch_range, carry.halted_at)
    ensemble = None
    if num_snapshots:
        ensemble = _snapshot_ensemble(carry, test, seeds, num_snapshots)
    mean, std = _seed_statistics(history) if seeds is not None else (None, None)
    return FitResult(carry.state, history, ensemble, mean, std)
