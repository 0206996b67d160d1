"""Streaming a loader to the device in chunks, as the range test's iterator path.

Each epoch takes a fresh iterator from the loader and pulls ``chunk``
batches at a time; they are stacked on the host (:func:`clr_jax._loader.stack`,
the shared rule: a batch whose shapes differ is refused with its index and
the fix) and put on the device, split along the mesh's data axis. The
compiled chunk runs while the host stacks the next one (JAX dispatch is
asynchronous). An epoch's last chunk may be shorter: it is a program of its
own size, so no step is ever padding.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from clr_jax import _loader


def epoch_chunks(
    loader,
    epoch: int,
    *,
    chunk: int,
    sharding: Any,
    check: Callable[[Any], None],
) -> Iterator[Any]:
    """The stacked chunks of epoch ``epoch`` of a :class:`._data.Loader`, on
    the device.

    ``check(targets)`` looks at each chunk's (host) targets.

    Raises:
      ValueError: naming ``data`` for a batch that is not an ``(inputs,
        targets)`` pair, shapes that differ from the loader's first batch, or
        an epoch without batches.
    """
    reference = (0, _loader.shapes(loader.first))
    iterator = loader.epoch(epoch)
    index = 0
    while True:
        batches = [
            _pair(b, index + i, epoch) for i, b in enumerate(_take(iterator, chunk))
        ]
        if not batches:
            break
        stacked = _loader.stack(batches, first_index=index, reference=reference)
        check(stacked[1])
        yield _loader.to_device(stacked, sharding)
        index += len(batches)
        if len(batches) < chunk:
            break
    if index == 0:
        raise ValueError(
            f"`data` loader must yield batches every epoch; epoch {epoch} had none "
            "(a one-shot iterator is read once: pass an iterable or a function "
            "epoch -> iterable)."
        )


def _take(iterator: Iterator, count: int) -> list:
    return list(itertools.islice(iterator, count))


def _pair(batch: Any, index: int, epoch: int) -> tuple:
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise ValueError(
            f"`data` loader batches must be (inputs, targets) pairs; batch {index} "
            f"of epoch {epoch} is a {type(batch).__name__}."
        )
    return tuple(batch)
