"""Host data loaders: anything iterable that is not an array pytree.

One set of rules for every entry point that takes a loader (the range test,
``fit``): a loader is iterated with ``iter()`` (an iterator is used as it
is), batches are stacked a chunk at a time, a batch whose shapes differ
from the first one is refused with its index and the fix, and a loader that
ends early says after how many batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np


def is_loader(data: Any) -> bool:
    """True for an iterator, or an iterable that is not an array pytree.

    A DataLoader-like object, a ``tf.data``-like dataset or a grain loader is
    a loader; arrays, and containers of them (tuples, lists, dicts, named
    tuples, any registered pytree), are data.
    """
    if isinstance(data, Iterator):
        return True
    if isinstance(data, jax.Array | np.ndarray | str | bytes):
        return False
    leaves = jax.tree.leaves(data)
    is_leaf = len(leaves) == 1 and leaves[0] is data  # not a pytree container
    return is_leaf and isinstance(data, Iterable)


def stack(batches: list, *, first_index: int) -> Any:
    """The batches stacked along a new leading (step) axis, as NumPy arrays.

    Raises:
      ValueError: naming the batch (counted from ``first_index``) whose
        structure or shapes differ from the first batch's.
    """
    reference = _shapes(batches[0])
    for offset, batch in enumerate(batches[1:], start=1):
        shapes = _shapes(batch)
        if shapes != reference:
            raise ValueError(
                f"`data` batch {first_index + offset} has shapes {shapes}, but "
                f"batch {first_index} has {reference}; every batch must have the "
                "same shapes (drop the last partial batch: drop_last=True)."
            )
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches)


def _shapes(batch: Any) -> Any:
    return jax.tree.map(np.shape, batch)
