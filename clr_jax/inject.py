"""Scheduled optimizer hyperparameters (learning rate *and* momentum) in one line.

Also the accessors that read and write an injected hyperparameter inside any
optimizer state (``get_hyperparam``/``set_hyperparam``): the range test sets
its learning rate per step with them, and the training loop its per-epoch
adaptive rate. They find injections wherever they are nested (inside
``optax.chain``, or ``optax.inject_hyperparams`` of a factory that injects
again, as :func:`with_schedules` does); of nested ones only the innermost
reaches the update, so that is the one read, and every one is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

# The names optax gives the decay of an optimizer's average of gradients:
# ``momentum`` (sgd, rmsprop, ...) and ``b1`` (the Adam family), in the order
# they are looked up.
MOMENTUM_NAMES = ("momentum", "b1")

__all__ = [
    "check_settable",
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
    """Every injected state, outer ones before those nested in their inner state."""
    found = []
    for node in jax.tree.leaves(opt_state, is_leaf=_is_injected):
        if _is_injected(node):
            found += [node, *_injected_states(node.inner_state)]
    return found


def _owners(opt_state: Any, name: str) -> list[Any]:
    """The injected states that drive ``name``, in tree order.

    When injections nest (``inject_hyperparams`` of a factory that injects
    again, such as :func:`with_schedules`), only the innermost value reaches
    the update: the outer one is passed to the inner factory, which reads
    its own state instead.
    """
    holders = [s for s in _injected_states(opt_state) if name in s.hyperparams]
    return [
        s
        for s in holders
        if not any(name in t.hyperparams for t in _injected_states(s.inner_state))
    ]


def has_hyperparam(opt_state: Any, name: str) -> bool:
    """Whether ``opt_state`` holds an injected hyperparameter ``name``."""
    return bool(_owners(opt_state, name))


def is_scheduled(opt_state: Any, name: str) -> bool:
    """Whether injected hyperparameter ``name`` is recomputed by a schedule
    (in the injection that reaches the update)."""
    return any(
        name in getattr(owner, "hyperparams_states", {})
        for owner in _owners(opt_state, name)
    )


def get_hyperparam(opt_state: Any, name: str, default: Any = None) -> Any:
    """The value of injected hyperparameter ``name``: the first one (in tree
    order) that reaches the update."""
    owners = _owners(opt_state, name)
    return owners[0].hyperparams[name] if owners else default


def set_hyperparam(opt_state: Any, name: str, value: Any) -> Any:
    """``opt_state`` with every injected hyperparameter ``name`` set to ``value``.

    Nested injections are found wherever they are (inside ``optax.chain``,
    ``optax.inject_hyperparams`` of a factory that injects again,
    :func:`with_schedules`), and all of them are set, so the one that reaches
    the update is too. The value keeps the stored dtype and shape, so a
    compiled step that calls this never recompiles.

    Raises:
      ValueError: when ``opt_state`` holds no injected ``name``.
    """
    if not has_hyperparam(opt_state, name):
        raise ValueError(
            f"the optimizer state has no injected hyperparameter `{name}`; build "
            "the optimizer with optax.inject_hyperparams or clr_jax.with_schedules."
        )
    return _set_everywhere(opt_state, name, value)


def _set_everywhere(tree: Any, name: str, value: Any) -> Any:
    def replace(node):
        if not _is_injected(node):
            return node
        node = node._replace(inner_state=_set_everywhere(node.inner_state, name, value))
        if name not in node.hyperparams:
            return node
        old = node.hyperparams[name]
        new = jnp.asarray(value, old.dtype).reshape(old.shape)
        return node._replace(hyperparams={**node.hyperparams, name: new})

    return jax.tree.map(replace, tree, is_leaf=_is_injected)


def check_settable(opt_state: Any, name: str, argument: str = "optimizer") -> None:
    """Setting ``name`` with :func:`set_hyperparam` changes the update.

    Raises:
      ValueError: naming ``argument`` when no injected ``name`` reaches the
        update, or when the one that does is recomputed by a schedule (which
        would overwrite the value set).
    """
    if not has_hyperparam(opt_state, name):
        raise ValueError(
            f"`{argument}` must let the range test drive its `{name}`, but no "
            f"injected `{name}` was found in its state. Pass a factory taking "
            f"`{name}` (optax.sgd, functools.partial(optax.adamw, weight_decay="
            "1e-4)), or build it with optax.inject_hyperparams(optax.sgd)"
            f"({name}=0.0)."
        )
    if is_scheduled(opt_state, name):
        raise ValueError(
            f"`{argument}` must inject `{name}` as a number for the range test to "
            f"set, but its `{name}` is a schedule, which would overwrite every "
            "value set. Build it with a number instead."
        )
