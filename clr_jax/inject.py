"""Scheduled optimizer hyperparameters (learning rate *and* momentum) in one line.

Also the accessors that read and write an injected hyperparameter inside any
optimizer state (``get_hyperparam``/``set_hyperparam``): the range test sets
its learning rate per step with them, and the training loop its per-epoch
adaptive rate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "get_hyperparam",
    "has_hyperparam",
    "is_scheduled",
    "set_hyperparam",
    "with_schedules",
]


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


# ---------------------------------------------------------------------------
# Reading and writing injected hyperparameters inside an optimizer state
# ---------------------------------------------------------------------------


_INJECTED = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


def _is_injected(node: Any) -> bool:
    return isinstance(node, _INJECTED)


def _injected_states(opt_state: Any) -> list[Any]:
    leaves = jax.tree.leaves(opt_state, is_leaf=_is_injected)
    return [leaf for leaf in leaves if _is_injected(leaf)]


def _owner(opt_state: Any, name: str) -> Any | None:
    """The first injected state (in tree order) holding hyperparameter ``name``."""
    for state in _injected_states(opt_state):
        if name in state.hyperparams:
            return state
    return None


def has_hyperparam(opt_state: Any, name: str) -> bool:
    """Whether ``opt_state`` holds an injected hyperparameter ``name``."""
    return _owner(opt_state, name) is not None


def is_scheduled(opt_state: Any, name: str) -> bool:
    """Whether injected hyperparameter ``name`` is recomputed by a schedule."""
    owner = _owner(opt_state, name)
    return owner is not None and name in getattr(owner, "hyperparams_states", {})


def get_hyperparam(opt_state: Any, name: str, default: Any = None) -> Any:
    """The value of injected hyperparameter ``name`` (the first one found)."""
    owner = _owner(opt_state, name)
    return default if owner is None else owner.hyperparams[name]


def set_hyperparam(opt_state: Any, name: str, value: Any) -> Any:
    """``opt_state`` with injected hyperparameter ``name`` set to ``value``.

    The value keeps the stored dtype and shape, so a compiled step that calls
    this never recompiles.
    """
    owner = _owner(opt_state, name)
    if owner is None:
        raise ValueError(
            f"the optimizer state has no injected hyperparameter `{name}`; build "
            "the optimizer with optax.inject_hyperparams or clr_jax.with_schedules."
        )
    old = owner.hyperparams[name]
    new = jnp.asarray(value, old.dtype).reshape(old.shape)

    def replace(node):
        if node is owner:
            return node._replace(hyperparams={**node.hyperparams, name: new})
        return node

    return jax.tree.map(replace, opt_state, is_leaf=_is_injected)
