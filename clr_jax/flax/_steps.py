"""The public one-step tools of ``clr_jax.flax``: state, range-test step, evaluation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from clr_jax import _validation as v
from clr_jax.flax import _args as args
from clr_jax.flax import _evaluation, _snapshots
from clr_jax.flax._adapters import adapt
from clr_jax.flax._snapshots import SnapshotEnsemble
from clr_jax.flax._state import TrainState, train_step
from clr_jax.flax._state import create_train_state as _create_state
from clr_jax.inject import is_scheduled, set_hyperparam

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
StepFn = Callable[[TrainState, Any, jax.Array], tuple[TrainState, jax.Array, jax.Array]]


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
    return _evaluation.evaluate(state, test, loss_fn)


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
    test = _evaluation.chunk_test_set(x, y, min(batch_size, len(y)))
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
    return _snapshots.ensemble_probabilities(
        snapshots.params,
        snapshots.batch_stats,
        snapshots.step,
        jnp.asarray(x),
        apply_fn=state.apply_fn,
    )
