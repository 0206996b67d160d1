"""Bundled-dataset loading and on-device batching.

Batches are drawn *inside* compiled loops: a training or range-test scan
takes an ``int32[steps, batch_size]`` index array made here once, and
gathers each batch from device-resident data with :func:`take`. Sampling is
without replacement within an epoch (one permutation per epoch, never one
per step); the last partial batch of an epoch is dropped so that every batch
has the same shape.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clr_jax import _validation as v

__all__ = [
    "Dataset",
    "batch_indices",
    "epoch_indices",
    "load_digits",
    "num_examples",
    "take",
]


class Dataset(NamedTuple):
    """A train/test split of arrays, leading axis = examples."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def load_digits(
    *, test_fraction: float = 0.25, seed: int = 0, image: bool = False
) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes; no download).

    Pixels are scaled from 0..16 to [0, 1]. The split is stratified by class
    and fixed by ``seed``.

    Args:
      test_fraction: share of each class held out for testing, in (0, 1).
      seed: seed of the split.
      image: ``True`` gives ``float32[n, 8, 8, 1]`` images (for CNNs),
        ``False`` flat ``float32[n, 64]`` vectors (for MLPs).

    Returns:
      A :class:`Dataset` with int32 labels.

    Raises:
      ImportError: when scikit-learn is not installed.
      ValueError: for ``test_fraction`` outside (0, 1).
    """
    v.check_interval(
        "test_fraction", test_fraction, 0.0, 1.0, closed_low=False, closed_high=False
    )
    try:
        from sklearn import datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits needs scikit-learn: pip install 'clr-jax[examples]'"
        ) from err
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    x = x[..., None] if image else x.reshape(len(x), -1)
    y = digits.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test[members[: round(test_fraction * len(members))]] = True
    return Dataset(x[~test], y[~test], x[test], y[test], int(y.max()) + 1)


def num_examples(data: Any) -> int:
    """The common leading dimension of every leaf of ``data``."""
    sizes = {np.shape(leaf)[0] for leaf in jax.tree.leaves(data)}
    if len(sizes) != 1:
        raise ValueError(
            "every array in `data` must have the same leading (example) axis; "
            f"got {sorted(sizes)}."
        )
    return sizes.pop()


def epoch_indices(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """One shuffled epoch as ``int32[num_examples // batch_size, batch_size]``."""
    per_epoch = _batches_per_epoch(num_examples, batch_size)
    perm = jax.random.permutation(key, num_examples)[: per_epoch * batch_size]
    return perm.reshape(per_epoch, batch_size).astype(jnp.int32)


def batch_indices(
    key: jax.Array, num_examples: int, batch_size: int, num_steps: int
) -> jax.Array:
    """Indices of ``num_steps`` batches, shuffled epoch after epoch.

    Returns ``int32[num_steps, batch_size]``: consecutive epochs, each a fresh
    permutation of the examples with the last partial batch dropped.

    Examples:
      >>> import jax
      >>> idx = batch_indices(jax.random.key(0), 10, 4, num_steps=5)
      >>> idx.shape
      (5, 4)
      >>> len(set(idx[:2].ravel().tolist()))  # no repeat within an epoch
      8
    """
    per_epoch = _batches_per_epoch(num_examples, batch_size)
    epochs = -(-num_steps // per_epoch)
    keys = jax.random.split(key, epochs)
    idx = jax.vmap(lambda k: epoch_indices(k, num_examples, batch_size))(keys)
    return idx.reshape(-1, batch_size)[:num_steps]


def take(data: Any, idx: jax.Array) -> Any:
    """Gathers examples ``idx`` from every leaf of ``data``."""
    return jax.tree.map(lambda leaf: jnp.take(leaf, idx, axis=0), data)


def _batches_per_epoch(num_examples: int, batch_size: int) -> int:
    v.check_step_count("batch_size", batch_size)
    if batch_size > num_examples:
        raise ValueError(
            f"`batch_size` must be <= the number of examples ({num_examples}); "
            f"got {batch_size}."
        )
    return num_examples // batch_size
