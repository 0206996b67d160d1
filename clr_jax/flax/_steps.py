"""The public one-step tools of ``clr_jax.flax``: state, range-test step, evaluation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from clr_jax import _validation as v
from clr_jax._tree import leading_size
from clr_jax.flax import _args as args
from clr_jax.flax import _evaluation, _metrics, _snapshots
from clr_jax.flax._adapters import adapt
from clr_jax.flax._optimizer import build_spec
from clr_jax.flax._snapshots import SnapshotEnsemble
from clr_jax.flax._state import TrainState, train_step
from clr_jax.flax._state import create_train_state as _create_state
from clr_jax.inject import is_scheduled, set_hyperparam

LossFn = Callable[[Any, Any], jax.Array]
MetricsFn = Callable[[Any, Any], dict]
StepFn = Callable[[TrainState, Any, jax.Array], tuple]


def _as_arrays(tree: Any) -> Any:
    return jax.tree.map(jnp.asarray, tree)


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
        weights are used; ``key`` then only seeds Linen-style dropout), a
        factory ``rngs -> nnx.Module`` or a callable pytree model.
      example_input: a batch of inputs, arrays or a pytree of them (its
        leading axis may be 1).
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
    spec = build_spec(optimizer, learning_rate, hyperparams)
    return _create_state(adapt(model), _as_arrays(example_input), spec, key)


def range_test_step(
    model: Any,
    example_input: Any,
    *,
    key: jax.Array,
    optimizer: Callable[..., optax.GradientTransformation]
    | optax.GradientTransformation = optax.sgd,
    loss_fn: LossFn | None = None,
    metrics_fn: MetricsFn | None = None,
    **hyperparams: Any,
) -> tuple[StepFn, TrainState]:
    """The range-test ``step_fn`` of a Flax model, and its initial state.

    ``step_fn(state, batch, lr) -> (state, loss, metric)`` writes ``lr``
    into the optimizer's injected ``learning_rate`` and makes one update in
    training mode: BatchNorm statistics are updated (Linen
    ``mutable=['batch_stats']``; NNX through ``nnx.split``/``nnx.merge``) and
    dropout draws a fresh mask every step (Linen: ``fold_in(dropout_key,
    step)``; NNX: the model's ``dropout`` RNG stream). It is pure, so it runs
    inside ``lax.scan``, ``jit`` and ``vmap``.

    Args:
      model: a ``flax.linen.Module``, a built ``flax.nnx.Module``, a factory
        ``rngs -> nnx.Module`` or a callable pytree model.
      example_input: a batch of inputs (arrays or a pytree), to initialise
        the model.
      key: PRNG key of the initialisation and of dropout.
      optimizer: an optax factory taking ``learning_rate`` (its learning rate
        is injected for you), or a ``GradientTransformation`` whose numeric
        learning rate is injected already.
      loss_fn: ``(outputs, targets) -> per-example losses``; default softmax
        cross-entropy with integer labels.
      metrics_fn: ``(outputs, batch) -> {name: scalar}`` with at most one
        entry, recorded as the range test's metric; default accuracy for
        integer labels, none for float targets (``step_fn`` then returns
        ``(state, loss)``).
      **hyperparams: the factory's other arguments (e.g. ``momentum=0.9``).

    Returns:
      ``(step_fn, state)``. A batch is a pair ``(inputs, targets)``; both may
      be pytrees.

    Raises:
      ValueError: for an unknown kind of model, a bad optimizer or key, or an
        optimizer whose learning rate is not an injected number; when traced,
        for a ``metrics_fn`` with several entries.

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
    spec = build_spec(optimizer, None if ready else 0.0, hyperparams)
    state = _create_state(adapt(model), _as_arrays(example_input), spec, key)
    args.check_optimizer_state(state.opt_state, None)
    if is_scheduled(state.opt_state, "learning_rate"):
        raise ValueError(
            "`optimizer` must inject a numeric `learning_rate` for the range test "
            "to set; got a scheduled one."
        )
    v.check_callable("loss_fn", loss_fn, optional=True)
    v.check_callable("metrics_fn", metrics_fn, optional=True)
    loss_fn = loss_fn or _metrics.default_loss
    metrics_fn = metrics_fn or _metrics.default_metrics

    def step_fn(state: TrainState, batch: Any, lr: jax.Array):
        opt_state = set_hyperparam(state.opt_state, "learning_rate", lr)
        state = state.replace(opt_state=opt_state)
        state, loss, metrics = train_step(state, batch, loss_fn, metrics_fn)
        return (state, loss, *_one_metric(metrics))

    return step_fn, state


def _one_metric(metrics: dict) -> tuple:
    """The range test records one metric per step: ``()`` or ``(value,)``."""
    if len(metrics) > 1:
        raise ValueError(
            "`metrics_fn` must return at most one metric for the range test (it "
            f"records one per step); got {sorted(metrics)}."
        )
    return tuple(metrics.values())


@functools.partial(jax.jit, static_argnames=("loss_fn", "metrics_fn"))
def _evaluate_jit(state, eval_set, loss_fn, metrics_fn):
    return _evaluation.evaluate(state, eval_set, loss_fn, metrics_fn)


def evaluate(
    state: TrainState,
    x: Any,
    y: Any,
    *,
    batch_size: int = 1024,
    loss_fn: LossFn | None = None,
    metrics_fn: MetricsFn | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean loss and metrics of ``state`` on ``(x, y)`` in inference mode.

    Args:
      state: a :class:`TrainState` (one run).
      x, y: inputs and targets (arrays or pytrees of them, one leading
        example axis).
      batch_size: examples per compiled chunk (the remainder is one more,
        smaller chunk; every mean is over real examples).
      loss_fn: ``(outputs, targets) -> per-example losses``; default softmax
        cross-entropy with integer labels.
      metrics_fn: ``(outputs, (x, y)) -> {name: scalar}``; default accuracy
        for integer labels, none for float targets.

    Returns:
      ``(loss, metrics)``: a float32 scalar and ``{name: float32 scalar}``.

    Raises:
      ValueError: for a ``batch_size`` that is not an integer >= 1, ``x`` and
        ``y`` of different lengths, or integer labels ``y`` outside the
        model's outputs.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from clr_jax import flax as clr_flax
      >>> state = clr_flax.create_train_state(
      ...     nn.Dense(2), jnp.ones((1, 3)), key=jax.random.key(0), learning_rate=0.1)
      >>> x, y = jnp.zeros((5, 3)), jnp.zeros(5, int)  # zero inputs: equal logits
      >>> loss, metrics = clr_flax.evaluate(state, x, y)
      >>> round(float(loss), 4), float(metrics["accuracy"])
      (0.6931, 1.0)
    """
    batch_size = v.check_step_count("batch_size", batch_size)
    n = leading_size((x, y), "x and y")
    outputs = jax.eval_shape(
        lambda st, inputs: _evaluation.predict(
            st.apply_fn, st.params, st.batch_stats, inputs
        ),
        state,
        jax.tree.map(lambda a: jnp.asarray(a)[:1], x),
    )
    _metrics.check_labels(y, outputs, "the evaluated split", name="y")
    eval_set = _evaluation.chunk_eval_set((x, y), min(batch_size, n))
    return _evaluate_jit(
        state,
        eval_set,
        loss_fn or _metrics.default_loss,
        metrics_fn or _metrics.default_metrics,
    )


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
        _as_arrays(x),
        apply_fn=state.apply_fn,
    )
