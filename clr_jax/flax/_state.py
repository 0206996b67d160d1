"""The train state of ``clr_jax.flax`` and its training step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from clr_jax.flax._adapters import Adapter
from clr_jax.flax._evaluation import accuracy

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


class TrainState(train_state.TrainState):
    """Flax ``TrainState`` plus the non-parameter variables and a dropout key.

    ``apply_fn(params, batch_stats, x, train, dropout_key)`` returns
    ``(logits, batch_stats)`` for Linen and NNX models alike; ``train=False``
    is inference mode (running BatchNorm statistics, no dropout). Linen
    dropout draws ``fold_in(dropout_key, step)`` each step, so a run restarted
    from a saved state sees the same masks. NNX dropout draws from the
    model's own RNG stream, whose counter lives in ``batch_stats``.
    """

    batch_stats: Any = None
    dropout_key: jax.Array | None = None


def create_train_state(
    adapter: Adapter, example_input: Any, tx: optax.GradientTransformation, key
) -> TrainState:
    """Initialises ``adapter``'s model and ``tx`` (traceable, so vmappable)."""
    init_key, dropout_key = jax.random.split(key)
    params, batch_stats = adapter.init(init_key, example_input)
    state = TrainState.create(
        apply_fn=adapter.apply,
        params=params,
        tx=tx,
        batch_stats=batch_stats,
        dropout_key=dropout_key,
    )
    # An int32 step keeps the scan carry's type fixed from the first update.
    return state.replace(step=jnp.zeros((), jnp.int32))


# Random initialisation compiled once per model and optimizer (op by op it
# costs a dispatch per random op, every call).
create_train_state_jit = jax.jit(create_train_state, static_argnames=("adapter", "tx"))


def loss_and_grads(
    state: TrainState, batch: tuple[Any, jax.Array], loss_fn: LossFn
) -> tuple[jax.Array, jax.Array, Any, Any]:
    """``(loss, accuracy, grads, batch_stats)`` of one batch in training mode.

    ``loss_fn(logits, labels)`` gives per-example losses; their mean is
    differentiated.
    """
    inputs, labels = batch
    dropout_key = jax.random.fold_in(state.dropout_key, state.step)

    def objective(params):
        logits, stats = state.apply_fn(
            params, state.batch_stats, inputs, True, dropout_key
        )
        return jnp.mean(loss_fn(logits, labels)), (logits, stats)

    grad_fn = jax.value_and_grad(objective, has_aux=True)
    (loss, (logits, stats)), grads = grad_fn(state.params)
    return loss, accuracy(logits, labels), grads, stats


def train_step(
    state: TrainState, batch: tuple[Any, jax.Array], loss_fn: LossFn
) -> tuple[TrainState, jax.Array, jax.Array]:
    """One update in training mode: ``(new_state, loss, accuracy)``."""
    loss, acc, grads, stats = loss_and_grads(state, batch, loss_fn)
    return state.apply_gradients(grads=grads, batch_stats=stats), loss, acc
