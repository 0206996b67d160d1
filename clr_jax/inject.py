"""Scheduled optimizer hyperparameters (learning rate *and* momentum) in one line."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

__all__ = ["with_schedules"]


def _cast_like(new, old):
    return jax.tree.map(
        lambda n, o: n.astype(o.dtype) if hasattr(o, "dtype") else n, new, old
    )


def with_schedules(
    optimizer: Callable[..., optax.GradientTransformation],
    /,
    *,
    hyperparam_dtype=jnp.float32,
    **hyperparams,
) -> optax.GradientTransformationExtraArgs:
    """Builds ``optimizer`` with any of its numeric hyperparameters scheduled.

    A thin layer over ``optax.inject_hyperparams`` for cycling the learning
    rate and the momentum together (``momentum`` of ``optax.sgd``, ``b1`` of
    the Adam family). It fixes the dtype trap of low-precision training:
    ``inject_hyperparams`` casts hyperparameters to the params' dtype, and in
    bfloat16 a momentum of 0.999 becomes 1.0. Here hyperparameters stay in
    ``hyperparam_dtype`` (float32), the inner update is computed with them,
    and the updates and optimizer state are cast back to their own dtypes, so
    the state keeps its structure and dtypes across steps (a valid
    ``lax.scan`` carry).

    The current values are readable from ``state.hyperparams``, e.g. for
    logging ``state.hyperparams['learning_rate']``.

    Args:
      optimizer: an optax factory, e.g. ``optax.sgd`` or ``optax.adamw``.
      hyperparam_dtype: dtype in which hyperparameters are kept.
      **hyperparams: the factory's arguments; schedules (callables of the
        update count) are evaluated each update, numbers are kept as given.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      >>> import clr_jax, optax, jax.numpy as jnp
      >>> opt = clr_jax.with_schedules(
      ...     optax.sgd,
      ...     learning_rate=clr_jax.one_cycle(0.1, 1000),
      ...     momentum=clr_jax.one_cycle_momentum(1000))
      >>> state = opt.init(jnp.zeros(3, jnp.bfloat16))
      >>> round(float(state.hyperparams["momentum"]), 6)
      0.95
    """
    inner = optax.inject_hyperparams(optimizer, hyperparam_dtype=hyperparam_dtype)(
        **hyperparams
    )

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, new_state = inner.update(updates, state, params, **extra_args)
        return _cast_like(new_updates, updates), _cast_like(new_state, state)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)
