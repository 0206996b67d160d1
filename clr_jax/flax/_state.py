"""The train state of ``clr_jax.flax`` and its training step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from clr_jax.flax._adapters import Adapter
from clr_jax.flax._metrics import default_loss, default_metrics
from clr_jax.flax._optimizer import OptimizerSpec

LossFn = Callable[[Any, Any], jax.Array]
MetricsFn = Callable[[Any, Any], dict]


@struct.dataclass
class TrainState:
    """Parameters, optimizer state and the optimizer itself, as one pytree.

    ``apply_fn(params, batch_stats, x, train, dropout_key)`` returns
    ``(outputs, batch_stats)`` for Linen, NNX and pytree models alike;
    ``train=False`` is inference mode (running BatchNorm statistics, no
    dropout). Linen dropout draws ``fold_in(dropout_key, step)`` each step,
    so a run restarted from a saved state sees the same masks. NNX dropout
    draws from the model's own RNG stream, whose counter lives in
    ``batch_stats``.

    Unlike ``flax.training.train_state.TrainState``, the optimizer is not a
    static field: ``optimizer`` is an :class:`OptimizerSpec` whose numeric
    hyperparameters (numbers and the fields of schedule values) are leaves,
    so a compiled step taking the state does not recompile for a new
    learning rate, and states of several hyperparameter settings stack. The
    transformation is ``state.tx`` (rebuilt from the spec on access).

    Attributes:
      step: int32 update count.
      params: the trainable parameters (inexact arrays).
      opt_state: the optax state.
      optimizer: the :class:`OptimizerSpec`.
      batch_stats: every non-trainable variable (BatchNorm statistics, NNX
        RNG counters), or ``{}``/``None``.
      dropout_key: the key Linen dropout folds the step into.
      apply_fn: static.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    optimizer: OptimizerSpec
    batch_stats: Any = None
    dropout_key: jax.Array | None = None
    apply_fn: Callable = struct.field(pytree_node=False, default=None)

    @property
    def tx(self) -> optax.GradientTransformation:
        return self.optimizer.build()

    @classmethod
    def create(
        cls,
        *,
        apply_fn: Callable,
        params: Any,
        tx: optax.GradientTransformation | OptimizerSpec,
        **kwargs: Any,
    ) -> TrainState:
        """A state at step 0 with ``tx`` initialised on ``params``.

        ``tx`` may be a ready transformation (kept as a static part) or an
        :class:`OptimizerSpec`.
        """
        spec = tx if isinstance(tx, OptimizerSpec) else OptimizerSpec.of(ready=tx)
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=spec.build().init(params),
            optimizer=spec,
            apply_fn=apply_fn,
            **kwargs,
        )

    def apply_gradients(self, *, grads: Any, **changes: Any) -> TrainState:
        """One optimizer update from ``grads``; ``changes`` replace other fields."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(
            step=self.step + 1,
            params=optax.apply_updates(self.params, updates),
            opt_state=opt_state,
            **changes,
        )


def _init_variables(init: Callable, example_input: Any, key: jax.Array):
    return init(key, example_input)


# Random initialisation compiled once per model (op by op it costs a dispatch
# per random op, every call). The optimizer is not part of it. Only ``init``
# is static: it is equal across calls for equal models, the whole adapter
# (its ``rebuild``) is not.
_init_variables_jit = jax.jit(_init_variables, static_argnames=("init",))


def init_variables(adapter: Adapter, example_input: Any, key: jax.Array):
    """``(params, batch_stats)`` of ``adapter``'s model (a built NNX module
    hands over its weights, so nothing is compiled for it)."""
    init = _init_variables_jit if adapter.reinitialises else _init_variables
    return init(adapter.init, example_input, key)


def create_train_state(
    adapter: Adapter,
    example_input: Any,
    spec: OptimizerSpec,
    key: jax.Array,
    place: Callable[[Any], Any] = lambda params: params,
) -> TrainState:
    """Initialises ``adapter``'s model and the optimizer of ``spec``.

    ``place(params)`` puts the parameters where they live (their shardings)
    before the optimizer state is built from them, so that it follows.
    """
    init_key, dropout_key = jax.random.split(key)
    params, batch_stats = init_variables(adapter, example_input, init_key)
    return TrainState.create(
        apply_fn=adapter.apply,
        params=place(params),
        tx=spec,
        batch_stats=batch_stats,
        dropout_key=dropout_key,
    )


def loss_and_grads(
    state: TrainState, batch: tuple[Any, Any], loss_fn: LossFn, metrics_fn: MetricsFn
) -> tuple[jax.Array, dict, Any, Any]:
    """``(loss, metrics, grads, batch_stats)`` of one batch in training mode.

    ``loss_fn(outputs, targets)`` gives per-example losses (or their mean);
    their mean is differentiated. ``metrics_fn(outputs, batch)`` gives
    ``{name: scalar}``.
    """
    inputs, targets = batch
    dropout_key = jax.random.fold_in(state.dropout_key, state.step)

    def objective(params):
        outputs, stats = state.apply_fn(
            params, state.batch_stats, inputs, True, dropout_key
        )
        return jnp.mean(loss_fn(outputs, targets)), (outputs, stats)

    grad_fn = jax.value_and_grad(objective, has_aux=True)
    (loss, (outputs, stats)), grads = grad_fn(state.params)
    return loss, metrics_fn(outputs, batch), grads, stats


def train_step(
    state: TrainState,
    batch: tuple[Any, Any],
    loss_fn: LossFn = default_loss,
    metrics_fn: MetricsFn = default_metrics,
) -> tuple[TrainState, jax.Array, dict]:
    """One update in training mode: ``(new_state, loss, metrics)``."""
    loss, metrics, grads, stats = loss_and_grads(state, batch, loss_fn, metrics_fn)
    return state.apply_gradients(grads=grads, batch_stats=stats), loss, metrics
