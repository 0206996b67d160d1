"""The forms of ``fit``'s data: arrays on the device, or a host loader.

* Arrays: a :class:`clr_jax.data.Dataset`, ``(x_train, y_train, x_test,
  y_test)`` or ``(x_train, y_train)`` (no evaluation split). Inputs and
  targets may be pytrees (a dict or tuple of arrays) sharing one leading
  example axis. They go to the device once; batches are drawn inside the
  compiled epoch.
* A loader: anything :func:`clr_jax._loader.is_loader` calls one (an
  iterable that is not an array pytree, re-iterated with ``iter()`` each
  epoch; a one-shot iterator, for one epoch), or a function ``epoch ->
  iterable``. Its batches are ``(inputs, targets)`` pairs, streamed to the
  device a chunk at a time (:mod:`._streaming`).

Evaluation data, when there is any, is arrays: the test split of a
Dataset, or ``eval_data=(x, y)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from clr_jax import _loader
from clr_jax import _validation as v
from clr_jax._tree import leading_size


class Arrays(NamedTuple):
    """Device-resident training data ``(inputs, targets)``."""

    train: tuple[Any, Any]
    num_examples: int


class Loader:
    """A host loader of ``(inputs, targets)`` batches.

    ``first`` is its first batch (it fixes the batch shapes and initialises
    the model), read from the first epoch's iterator, which is then used for
    that epoch: the loader is not iterated once more just to look (a
    shuffling loader would draw an extra order). ``length`` is its batches
    per epoch when it has a ``len()``.
    """

    def __init__(self, source: Any, start_epoch: int):
        self.source = source
        self.one_shot = isinstance(source, Iterator)
        self.by_epoch = callable(source) and not _loader.is_loader(source)
        iterator = self._fresh(start_epoch)
        first = next(iterator, None)
        if first is None:
            v.fail("data", "a loader that yields at least one batch", "no batches")
        if not isinstance(first, tuple | list) or len(first) != 2:
            v.fail(
                "data",
                "a loader of (inputs, targets) pairs",
                f"a {type(first).__name__}",
            )
        self.first = tuple(first)
        leading_size(self.first, "data")
        self._pending = (start_epoch, itertools.chain([first], iterator))
        has_len = hasattr(source, "__len__") and not self.one_shot
        self.length = len(source) if has_len else None

    def _fresh(self, epoch: int) -> Iterator:
        if self.one_shot:
            return self.source
        if self.by_epoch:
            return iter(self.source(epoch))
        return iter(self.source)

    def epoch(self, epoch: int) -> Iterator:
        """The iterator of epoch ``epoch``'s batches."""
        if self._pending is not None:
            pending_epoch, iterator = self._pending
            self._pending = None
            if pending_epoch == epoch or not self.by_epoch:
                return iterator
        return self._fresh(epoch)


class Data(NamedTuple):
    train: Arrays | Loader
    eval: tuple[Any, Any] | None

    @property
    def streamed(self) -> bool:
        return isinstance(self.train, Loader)

    def example_inputs(self) -> Any:
        """One example's worth of inputs (leading axis 1), to initialise a model."""
        inputs = self.train.first[0] if self.streamed else self.train.train[0]
        return jax.tree.map(lambda a: np.asarray(a)[:1], inputs)

    def example_batch(self) -> tuple[Any, Any]:
        """A small batch ``(inputs, targets)`` with the training data's dtypes."""
        batch = self.train.first if self.streamed else self.train.train
        return jax.tree.map(lambda a: np.asarray(a)[:2], batch)


def split_data(data: Any, eval_data: Any, start_epoch: int) -> Data:
    """The :class:`Data` of ``fit``'s ``data`` and ``eval_data``.

    Raises:
      ValueError: naming ``data`` or ``eval_data`` for a form it cannot read,
        splits whose inputs and targets differ in length, a 0-d leaf, two
        evaluation splits, or a loader that yields nothing or no pairs.
    """
    if _loader.is_loader(data) or (callable(data) and not isinstance(data, tuple)):
        train, test = _loader_data(data, start_epoch), None
    elif isinstance(data, tuple) and len(data) in (2, 4, 5):
        train = _arrays("data", data[:2])
        test = _pair("data", data[2:4]) if len(data) >= 4 else None
    else:
        raise ValueError(
            "`data` must be a clr_jax.data.Dataset, a tuple (x_train, y_train, "
            "x_test, y_test) or (x_train, y_train), a loader of (inputs, targets) "
            f"batches or a function epoch -> loader; got {type(data).__name__}."
        )
    if eval_data is not None:
        if test is not None:
            v.fail("eval_data", "None when `data` has a test split", "a second split")
        test = _pair("eval_data", eval_data)
    return Data(train, test)


def _pair(name: str, pair: Any) -> tuple[Any, Any]:
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        v.fail(name, "a pair (inputs, targets) of arrays", type(pair).__name__)
    inputs, targets = pair
    leading_size((inputs, targets), name)
    return inputs, targets


def _arrays(name: str, pair: Any) -> Arrays:
    inputs, targets = _pair(name, pair)
    n = leading_size((inputs, targets), name)
    if n == 0:
        v.fail(name, "a non-empty training split", "0 examples")
    return Arrays((inputs, targets), n)


def _loader_data(source: Any, start_epoch: int) -> Loader:
    return Loader(source, start_epoch)


def check_one_shot(data: Data, epochs_to_run: int) -> None:
    """A one-shot iterator feeds one epoch only."""
    if data.streamed and data.train.one_shot and epochs_to_run > 1:
        v.fail(
            "data",
            "an iterable (re-iterated each epoch) or a function epoch -> iterable "
            f"for {epochs_to_run} epochs; an iterator can be read once",
            "an iterator",
        )


def batch_size_of(data: Data, batch_size: Any) -> int:
    """``batch_size``, checked against the data (a loader's is its own)."""
    if not data.streamed:
        if batch_size is None:
            v.fail("batch_size", "given for array data (an integer >= 1)", None)
        return v.check_batch_size(batch_size, data.train.num_examples)
    given = leading_size(data.train.first, "data", axis="batch")
    if batch_size is not None and v.check_step_count("batch_size", batch_size) != given:
        v.fail("batch_size", f"None or the loader's batch size ({given})", batch_size)
    return given


def updates_per_epoch(data: Data, batch_size: int) -> int | None:
    """Updates in one epoch (``None`` for a loader without ``len()``)."""
    if data.streamed:
        return data.train.length
    return data.train.num_examples // batch_size
