"""Pytree helpers shared by the range test, the Lipschitz estimators and ``fit``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def all_finite(tree: Any) -> jax.Array:
    """True when every floating-point element of ``tree`` is finite."""
    checks = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def leading_size(tree: Any, name: str, axis: str = "example") -> int:
    """The leading-axis length shared by every array leaf of ``tree``.

    Raises:
      ValueError: naming ``name`` when ``tree`` holds no array, when a leaf
        has no leading axis (a scalar), or when the lengths differ.
    """
    paths_and_leaves = jax.tree_util.tree_leaves_with_path(tree)
    if not paths_and_leaves:
        raise ValueError(f"`{name}` must hold at least one array; got {tree!r}.")
    sizes = {}
    for path, leaf in paths_and_leaves:
        where = f"{name}{jax.tree_util.keystr(path)}"
        if np.ndim(leaf) == 0:
            raise ValueError(
                f"every array in `{name}` must have a leading ({axis}) axis; got a "
                f"scalar at {where}."
            )
        sizes.setdefault(np.shape(leaf)[0], where)
    if len(sizes) != 1:
        listed = ", ".join(f"{size} at {where}" for size, where in sizes.items())
        raise ValueError(
            f"every array in `{name}` must have the same leading ({axis}) axis; got "
            f"{listed}."
        )
    return next(iter(sizes))


def stack(trees: list) -> Any:
    """The trees stacked leaf by leaf along a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
