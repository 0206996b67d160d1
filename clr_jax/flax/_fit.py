"""``fit``: set up the run, drive its epochs, assemble the result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from clr_jax.flax import _history, _loop, _programs, _setup, _snapshots
from clr_jax.flax._adapters import trained_model
from clr_jax.flax._history import FitResult
from clr_jax.flax._state import TrainState

LossFn = Callable[[Any, Any], jax.Array]
MetricsFn = Callable[[Any, Any], dict]
LrPolicy = Callable[[TrainState, jax.Array, tuple[Any, Any]], Any]


def _snapshot_ensemble(run: _setup.Run, carry) -> _snapshots.SnapshotEnsemble:
    buffer = carry.snapshots
    scores = (None, None, None)
    labels = None if run.test is None else jax.tree.leaves(run.data.eval[1])
    if labels and len(labels) == 1 and np.issubdtype(labels[0].dtype, np.integer):
        scores = jax.device_get(
            _programs.ensemble(
                buffer,
                run.test,
                apply_fn=carry.state.apply_fn,
                num_snapshots=run.config.num_snapshots,
                layout=run.layout,
            )
        )
    params, batch_stats, step = _snapshots.drop_scratch(
        (buffer.params, buffer.batch_stats, buffer.step),
        kept=run.config.num_snapshots,
        axis=run.layout.run_axes,
    )
    return _snapshots.SnapshotEnsemble(params, batch_stats, step, *scores)


def _write_back(run: _setup.Run, state: TrainState) -> Any:
    """The trained model (a built NNX module updated in place, and an
    ``nnx.Optimizer`` given as ``optimizer``), with one run."""
    if run.layout.run_axes:
        return None
    model = trained_model(run.adapter, state)
    opt = run.nnx_optimizer
    if opt is not None:
        template = nnx.as_pure(opt.opt_state)
        leaves = jax.tree.leaves(state.opt_state)
        nnx.update(
            opt.opt_state,
            nnx.state(jax.tree.unflatten(jax.tree.structure(template), leaves)),
        )
        opt.step[...] = np.asarray(state.step, np.uint32)
    return model


def _result(run: _setup.Run, outcome: _loop.Outcome) -> FitResult:
    carry = outcome.carry
    state = carry.state if outcome.final_state is None else outcome.final_state
    history = outcome.history
    ensemble = None
    if run.config.num_snapshots:
        ensemble = _snapshot_ensemble(run, carry)
    mean = std = None
    if run.layout.seeds and history is not None:
        mean, std = _history.seed_statistics(history, seed_axis=int(run.layout.grid))
    return FitResult(state, history, ensemble, mean, std, _write_back(run, state))


def fit(
    model: Any,
    data: Any,
    *,
    epochs: int,
    key: jax.Array,
    batch_size: int | None = None,
    optimizer: Callable[..., optax.GradientTransformation]
    | optax.GradientTransformation
    | nnx.Optimizer = optax.sgd,
    learning_rate: Any = None,
    loss_fn: LossFn | None = None,
    metrics_fn: MetricsFn | None = None,
    eval_data: tuple[Any, Any] | None = None,
    seeds: int | None = None,
    snapshot_every: int | None = None,
    lr_policy: LrPolicy | None = None,
    callbacks: Sequence[Callable[..., Any]] = (),
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 1,
    keep: int | None = 3,
    resume: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    data_axis: str | None = None,
    param_sharding: Any = None,
    initial_state: TrainState | None = None,
    start_epoch: int | None = None,
    eval_batch_size: int | None = None,
    chunk_size: int | None = None,
    progress: bool | None = None,
    **hyperparams: Any,
) -> FitResult:
    """Trains a model with any learning-rate and momentum schedules.

    Each epoch over array data is one compiled program: a ``lax.scan`` of
    updates over batches drawn on the device (a fresh permutation per
    epoch, last partial batch dropped), then the evaluation. A loader is
    streamed in compiled chunks instead. The host sees each epoch's
    results, never a step; the compiled programs are reused across epochs
    and across calls, whatever the hyperparameter values (design notes:
    :mod:`clr_jax.flax`).

    Args:
      model: a ``flax.linen.Module``, a built ``flax.nnx.Module`` (updated in
        place after training), a factory ``rngs -> nnx.Module`` (needed with
        ``seeds`` for NNX) or a callable pytree of arrays such as an Equinox
        module (called on a batch; see :func:`per_example`).
      data: a :class:`clr_jax.data.Dataset`, ``(x_train, y_train, x_test,
        y_test)``, ``(x_train, y_train)``, or a loader of ``(inputs,
        targets)`` batches (an iterable re-iterated each epoch, or a function
        ``epoch -> iterable``). Inputs and targets may be pytrees.
      epochs: total number of epochs of the run.
      key: PRNG key, split into the initialisation key (weights, dropout)
        and the data-order key; seed ``i`` of ``seeds=N`` uses
        ``jax.random.split(key, N)[i]``.
      batch_size: examples per update (a loader's own by default).
      optimizer: an optax factory (``optax.sgd``, ``optax.adamw``, ...) built
        with :func:`clr_jax.with_schedules` from ``learning_rate`` and
        ``**hyperparams``; a ready ``GradientTransformation`` whose
        ``learning_rate`` is injected; or an ``nnx.Optimizer`` of the built
        NNX ``model`` (continued from, and updated in place).
      learning_rate: a number or schedule, with a factory. A list of K of
        them (or a schedule whose leaves carry a leading K axis) trains a
        grid of K runs in one compiled program; every result gains a
        leading K axis.
      loss_fn: ``(outputs, targets) -> per-example losses``; default softmax
        cross-entropy with integer labels (float targets need one).
      metrics_fn: ``(outputs, (inputs, targets)) -> {name: scalar}``;
        default accuracy for integer labels, nothing for float targets.
      eval_data: ``(x, y)`` arrays evaluated after each epoch, when ``data``
        has no test split; evaluation is skipped without either.
      seeds: run ``seeds`` trainings at once with ``jax.vmap``; every result
        gains a seed axis and ``FitResult.mean``/``std`` summarise them.
      snapshot_every: snapshot the variables whenever the update count
        reaches a multiple of it (the cycle length, e.g. ``2 * step_size``
        for :func:`clr_jax.triangular`); the ensemble is scored on the
        evaluation split.
      lr_policy: ``(state, epoch, (x_train, y_train)) -> lr`` or ``(lr,
        log)``, called inside the compiled epoch before its first update
        (e.g. :func:`lipschitz_policy`); the learning rate must then be a
        number. Array data only.
      callbacks: functions ``(epoch, state, metrics)`` called on the host
        after each epoch; returning :data:`STOP` ends training (see
        :class:`EarlyStopping`, :class:`JsonLinesLogger`).
      checkpoint_dir: save orbax checkpoints of the carry and history here.
      checkpoint_every: epochs between checkpoints (the last epoch is
        always saved).
      keep: checkpoints kept (``None``: all).
      resume: continue from the latest checkpoint in ``checkpoint_dir``
        (start afresh when there is none; a run that a callback stopped
        stays stopped).
      mesh: a ``jax.sharding.Mesh``: each batch is split along the data axis,
        parameters keep their shardings.
      data_axis: the mesh axis of the batch (default ``'data'`` if the mesh
        has it, else its first axis).
      param_sharding: ``PartitionSpec``s (a pytree prefix of the params, or
        a function ``(path, leaf) -> PartitionSpec``) placing freshly
        initialised parameters on ``mesh``.
      initial_state: a :class:`TrainState` to continue from (its optimizer
        is used; ``optimizer`` and the hyperparameters are ignored); pass the
        ``key`` of the first call.
      start_epoch: the first epoch to run; read from ``initial_state``'s step
        (or the checkpoint), and checked against it when given.
      eval_batch_size: evaluation examples per compiled chunk (default: the
        whole split up to 1024).
      chunk_size: streamed updates per compiled chunk (default: an epoch, up
        to 32).
      progress: a bar over epochs: ``None`` when stderr is a terminal,
        ``True`` always (needs tqdm), ``False`` never.
      **hyperparams: the optimizer factory's other arguments, numbers or
        schedules (lists of them for a grid): ``momentum=...``, ``b1=...``.

    Returns:
      A :class:`FitResult`: the final state, the :class:`History`, the
      :class:`SnapshotEnsemble` (with ``snapshot_every``), with ``seeds`` the
      history's mean and spread over seeds, and the trained model.

    Raises:
      ValueError: for a bad model, data (labels outside the model's outputs
        included), optimizer, key, count, mesh, sharding, callback,
        checkpoint directory or a state that does not fit the model or its
        ``start_epoch``.

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
    settings = _setup.Settings(
        epochs=epochs,
        batch_size=batch_size,
        key=key,
        optimizer=optimizer,
        learning_rate=learning_rate,
        loss_fn=loss_fn,
        metrics_fn=metrics_fn,
        eval_data=eval_data,
        seeds=seeds,
        snapshot_every=snapshot_every,
        lr_policy=lr_policy,
        mesh=mesh,
        data_axis=data_axis,
        param_sharding=param_sharding,
        initial_state=initial_state,
        start_epoch=start_epoch,
        eval_batch_size=eval_batch_size,
        chunk_size=chunk_size,
        callbacks=callbacks,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        keep=keep,
        resume=resume,
        progress=progress,
        hyperparams=hyperparams,
    )
    run = _setup.prepare(model, data, settings)
    return _result(run, _loop.train(run))
