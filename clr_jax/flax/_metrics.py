"""Losses and metrics of any task, and the checks of integer labels.

A task is a ``loss_fn(outputs, targets) -> per-example losses`` and a
``metrics_fn(outputs, batch) -> {name: scalar}`` (``batch`` the pair
``(inputs, targets)``). The defaults suit classification with integer labels
(softmax cross-entropy, accuracy); float targets get no default loss (pass
one, e.g. ``optax.squared_error``) and no metric.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

default_loss = optax.softmax_cross_entropy_with_integer_labels


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where the arg-max of ``logits`` is the label, else 0.0."""
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Share of examples whose arg-max logit (or probability) is the label."""
    return jnp.mean(correct(logits, labels))


def is_classification(outputs: Any, targets: Any) -> bool:
    """Integer targets with one more (class) axis in the outputs."""
    if not isinstance(targets, jax.Array | np.ndarray) or not hasattr(outputs, "ndim"):
        return False
    integer = jnp.issubdtype(targets.dtype, jnp.integer)
    return bool(integer and outputs.ndim == targets.ndim + 1)


def default_metrics(outputs: Any, batch: tuple[Any, Any]) -> dict[str, jax.Array]:
    """``{'accuracy': ...}`` for integer labels, ``{}`` for anything else.

    Examples:
      >>> import jax.numpy as jnp
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
      >>> float(default_metrics(logits, (None, jnp.array([0, 0])))["accuracy"])
      0.5
      >>> default_metrics(jnp.zeros(2), (None, jnp.zeros(2)))
      {}
    """
    _, targets = batch
    if is_classification(outputs, targets):
        return {"accuracy": accuracy(outputs, targets)}
    return {}


def check_task(loss_fn: Any, targets: Any, outputs: Any) -> None:
    """The default loss needs integer labels (float targets need a loss).

    ``targets`` and ``outputs`` may be abstract (shapes and dtypes only).

    Raises:
      ValueError: naming ``loss_fn`` for float targets without a loss, or
        ``data`` for integer labels whose outputs have no class axis.
    """
    if loss_fn is not None:
        return
    leaves = jax.tree.leaves(targets)
    if len(leaves) != 1 or not jnp.issubdtype(leaves[0].dtype, jnp.integer):
        dtypes = [str(leaf.dtype) for leaf in leaves]
        raise ValueError(
            "`loss_fn` must be given for targets that are not integer class "
            "labels (the default is softmax cross-entropy with integer labels); "
            f"got targets of dtype {dtypes}. For regression pass e.g. "
            "loss_fn=optax.squared_error."
        )
    if getattr(outputs, "ndim", None) != leaves[0].ndim + 1:
        raise ValueError(
            "`data` integer labels need model outputs with one more (class) axis "
            f"for the default loss; got labels of shape {leaves[0].shape[1:]} per "
            f"example and outputs of shape {getattr(outputs, 'shape', '?')[1:]}."
        )


def check_labels(targets: Any, outputs: Any, where: str, name: str = "data") -> None:
    """Concrete integer labels lie in ``[0, number of outputs)``.

    Raises:
      ValueError: naming ``name``, the split (``where``) and the offending
        range, when a label is negative or not below the number of outputs.
    """
    if not isinstance(targets, np.ndarray | jax.Array) or not hasattr(outputs, "shape"):
        return
    if not np.issubdtype(targets.dtype, np.integer) or targets.size == 0:
        return
    if outputs.ndim != targets.ndim + 1:
        return
    num_classes = outputs.shape[-1]
    low, high = int(np.min(targets)), int(np.max(targets))
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"`{name}` labels must lie in [0, {num_classes}) (the model has "
            f"{num_classes} outputs); got labels from {low} to {high} in {where}."
        )
