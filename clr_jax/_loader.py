"""Host data loaders: anything iterable that is not an array pytree.

One set of rules for every entry point that takes a loader (the range test,
``fit``'s streaming path): a loader is iterated with ``iter()`` (an iterator
is used as it is), batches are pulled and stacked a chunk at a time, a batch
whose shapes differ from the first one is refused with its index and the fix,
and a loader that ends early says after how many batches.

A DataLoader-like object (``torch.utils.data.DataLoader``), a
``tf.data``-like dataset (``ds.as_numpy_iterator()`` or the dataset itself
when it yields NumPy-convertible values) and a grain loader are all loaders:
each has ``__iter__`` and is not a pytree of arrays. Nothing here imports
them.
"""

from __future__ import annotations

import itertools
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
    if not isinstance(data, Iterable):
        return False
    try:  # a registered pytree container (without flattening a generator)
        jax.tree_util.flatten_one_level(data)
    except ValueError:
        return True
    return False


def shapes(batch: Any) -> Any:
    """The batch's structure with every leaf replaced by its shape."""
    return jax.tree.map(np.shape, batch)


def stack(
    batches: list, *, first_index: int, reference: tuple[int, Any] | None = None
) -> Any:
    """The batches stacked along a new leading (step) axis, as NumPy arrays.

    Args:
      batches: batches of one structure and the same shapes.
      first_index: the index of ``batches[0]`` in the loader, for errors.
      reference: ``(index, shapes(batch))`` of a batch every one must match
        (the loader's first batch); default ``batches[0]``.

    Raises:
      ValueError: naming the batch (its index in the loader) whose structure
        or shapes differ from the reference batch's, and the fix.
    """
    index, expected = reference or (first_index, shapes(batches[0]))
    for offset, batch in enumerate(batches):
        found = shapes(batch)
        if found != expected:
            raise ValueError(
                f"`data` batch {first_index + offset} has shapes {found}, but "
                f"batch {index} has {expected}; every batch must have the "
                "same shapes (drop the last partial batch: drop_last=True)."
            )
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches)


def pull(iterator: Iterator, count: int, *, taken: int, needed: int) -> list:
    """The next ``count`` batches of ``iterator``.

    Args:
      iterator: the loader's iterator (``iter(loader)``).
      count: how many batches to pull.
      taken: how many batches were pulled before, for the error.
      needed: how many batches the whole run needs, for the error.

    Raises:
      ValueError: when the loader ends before ``count`` batches, saying after
        how many batches it ended.
    """
    batches = list(itertools.islice(iterator, count))
    if len(batches) < count:
        raise ValueError(
            f"`data` loader ended after {taken + len(batches)} batches, but "
            f"{needed} are needed (num_steps); give a longer loader or fewer steps."
        )
    return batches


def to_device(stacked: Any, sharding: Any = None) -> Any:
    """Stacked host batches on the device, or split by ``sharding``.

    With a sharding each process passes its own part of the global batch
    (``jax.make_array_from_process_local_data``): on one host that is the
    whole batch, on several hosts each host's loader yields its share.
    """
    if sharding is None:
        return jax.device_put(stacked)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), stacked
    )
