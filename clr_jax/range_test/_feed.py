"""How data reaches the compiled sweep: one function per data form.

* :attr:`DataForm.SAMPLED`: arrays with a leading example axis, kept on the
  device; the sweep gathers each batch by index (the indices of every step
  are drawn once, up front, from the key).
* :attr:`DataForm.BATCHED`: arrays whose leading axis is the step and the
  second the batch; the sweep slices its steps.
* :attr:`DataForm.LOADER`: a host loader (anything :func:`clr_jax._loader.
  is_loader` calls one: an iterator, a DataLoader-like, ``tf.data``-like or
  grain object), stacked on the host one chunk at a time by the shared
  loader rules; each chunk is one call of the compiled sweep.

Each form gives a :class:`Feed`: the device-resident data (sampled form
only) and one source per chunk, in order. The array forms trace (inside a
user's ``jit`` or ``vmap``); the loader form is host-only. Validation data
(:func:`validation_feed`) is always arrays, split into equal batches once.
"""

from __future__ import annotations

import enum
import functools
import itertools
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from clr_jax import _loader, _sharding
from clr_jax import _validation as v
from clr_jax._tree import leading_size
from clr_jax.data import batch_indices


class DataForm(enum.Enum):
    SAMPLED = "sampled"
    BATCHED = "batched"
    LOADER = "loader"


class Feed(NamedTuple):
    """What the driver hands the compiled sweep."""

    form: DataForm
    data: Any  # the examples on the device (SAMPLED), else None
    sources: Iterator[Any]  # one per chunk: batch indices, batches or a chunk
    source_batched: bool  # per-sweep batch indices (a batch of keys)


class Plan(NamedTuple):
    """The sweep's layout in chunks and blocks, and its placement.

    A chunk is one compiled call; a block is the stretch of steps between
    two looks at divergence (and two evaluations on validation data) inside
    it. Every chunk is a whole number of blocks.
    """

    num_steps: int
    chunk: int
    block: int
    mesh: Mesh | None
    axis: str | None
    traced: bool  # inside a user's jit/vmap: nothing is placed by hand

    @property
    def num_chunks(self) -> int:
        return -(-self.num_steps // self.chunk)

    @property
    def padded(self) -> int:
        return self.num_chunks * self.chunk

    def per_step_sharding(self) -> NamedSharding | None:
        """Stacked batches ``[steps, batch, ...]``, split along the batch."""
        if self.mesh is None:
            return None
        return NamedSharding(_sharding.auto_axes(self.mesh), P(None, self.axis))

    def put(self, tree: Any, sharding: Any) -> Any:
        """``tree`` on ``sharding``; left to the user's program when traced."""
        if self.traced or sharding is None:
            return tree
        return jax.device_put(tree, sharding)

    def replicate(self, tree: Any) -> Any:
        if self.mesh is None:
            return tree
        return self.put(tree, _sharding.replicated(self.mesh))


def form_of(data: Any, batched: bool) -> DataForm:
    if _loader.is_loader(data):
        return DataForm.LOADER
    return DataForm.BATCHED if batched else DataForm.SAMPLED


def make_feed(data, *, form: DataForm, batch_size, keys, plan: Plan) -> Feed:
    """The :class:`Feed` of ``data`` in ``form``, after checking it."""
    if form is DataForm.LOADER:
        return loader_feed(data, batch_size=batch_size, plan=plan)
    if form is DataForm.BATCHED:
        return batched_feed(data, batch_size=batch_size, plan=plan)
    return sampled_feed(data, batch_size=batch_size, keys=keys, plan=plan)


def _check_split(batch_size: int, plan: Plan) -> None:
    shards = _sharding.data_shards(plan.mesh, plan.axis)
    v.check_divisible("batch_size", batch_size, shards)


def sampled_feed(data, *, batch_size, keys, plan: Plan) -> Feed:
    """Examples on the device, batches drawn by index inside the sweep."""
    if batch_size is None:
        raise ValueError(
            "`batch_size` must be given for data sampled on device; got None."
        )
    n = leading_size(data, "data")
    v.check_concrete("batch_size", batch_size, "it sets the shape of a batch")
    batch_size = v.check_batch_size(batch_size, n)
    _check_split(batch_size, plan)
    batched_keys = keys.ndim == 1
    indices = _sample_plan(
        keys,
        n=n,
        batch_size=batch_size,
        num_steps=plan.num_steps,
        padded=plan.padded,
        batched=batched_keys,
    )
    sources = itertools.repeat(indices, plan.num_chunks)
    return Feed(DataForm.SAMPLED, plan.replicate(data), sources, batched_keys)


def batched_feed(data, *, batch_size, plan: Plan) -> Feed:
    """Pre-batched arrays ``[steps, batch, ...]``, sliced inside the sweep."""
    steps_given = leading_size(data, "data", axis="step")
    if steps_given < plan.num_steps:
        raise ValueError(
            f"`num_steps` must be <= the {steps_given} pre-batched steps in "
            f"`data` (batched=True); got {plan.num_steps}."
        )
    given = {np.shape(x)[1] for x in jax.tree.leaves(data) if np.ndim(x) > 1}
    if batch_size is not None:
        batch_size = v.check_step_count("batch_size", batch_size)
        if given != {batch_size}:
            raise ValueError(
                "`batch_size` must match the pre-batched data's batch axis "
                f"{given}; got {batch_size}."
            )
    if plan.mesh is not None:
        _check_split(given.pop(), plan)
    stacked = jax.tree.map(
        lambda x: _pad_steps(x[: plan.num_steps], padded=plan.padded),
        plan.put(data, plan.per_step_sharding()),
    )
    sources = itertools.repeat(stacked, plan.num_chunks)
    return Feed(DataForm.BATCHED, None, sources, False)


def loader_feed(data, *, batch_size, plan: Plan) -> Feed:
    """A host loader, pulled one chunk of batches at a time."""
    if plan.traced:
        raise TypeError(
            "a host loader or iterator cannot be read inside jax.jit or jax.vmap; "
            "pass arrays instead: examples sampled on the device (batch_size=, "
            "key=) or pre-batched steps (batched=True)."
        )
    if batch_size is not None:
        _check_split(v.check_step_count("batch_size", batch_size), plan)
    sources = _loader_chunks(iter(data), plan)
    return Feed(DataForm.LOADER, None, sources, False)


def _loader_chunks(iterator: Iterator, plan: Plan):
    """Pulls ``plan.chunk`` batches at a time (the last chunk padded by
    repeating its last batch; its padding steps are masked: never recorded)."""
    sharding = plan.per_step_sharding()
    reference = None
    for start in range(0, plan.num_steps, plan.chunk):
        want = min(plan.chunk, plan.num_steps - start)
        batches = _loader.pull(iterator, want, taken=start, needed=plan.num_steps)
        reference = reference or (0, _loader.shapes(batches[0]))
        padding = [batches[-1]] * (plan.chunk - want)
        stacked = _loader.stack(
            batches + padding, first_index=start, reference=reference
        )
        yield _loader.to_device(stacked, sharding)


def validation_feed(val_data, *, val_batch_size, plan: Plan) -> Any:
    """Validation examples as equal batches ``[batches, batch, ...]``.

    Raises:
      ValueError: naming ``val_data`` or ``val_batch_size`` for data without a
        leading example axis, a batch larger than the data, one that does not
        split it evenly, or a batch that does not split over the mesh.
    """
    n = leading_size(val_data, "val_data")
    size = (
        n
        if val_batch_size is None
        else v.check_step_count("val_batch_size", val_batch_size)
    )
    if size > n or n % size:
        v.fail(
            "val_batch_size",
            f"a divisor of the {n} validation examples (trim `val_data` to a "
            "multiple of it, or pass another size)",
            val_batch_size,
        )
    shards = _sharding.data_shards(plan.mesh, plan.axis)
    v.check_divisible("val_batch_size", size, shards)
    batches = jax.tree.map(lambda x: x.reshape(n // size, size, *x.shape[1:]), val_data)
    return plan.replicate(batches)


@functools.partial(
    jax.jit, static_argnames=("n", "batch_size", "num_steps", "padded", "batched")
)
def _sample_plan(keys, *, n, batch_size, num_steps, padded, batched):
    """``batch_indices(key, n, batch_size, num_steps)`` (per key when batched),
    padded to ``padded`` steps."""

    def plan(key):
        return _pad_steps(batch_indices(key, n, batch_size, num_steps), padded)

    return jax.vmap(plan)(keys) if batched else plan(keys)


@functools.partial(jax.jit, static_argnames=("padded",))
def _pad_steps(x, padded):
    """Pads the leading (step) axis to ``padded`` by repeating the last step;
    padding steps are masked: they change nothing and are never recorded."""
    return jnp.concatenate([x, jnp.repeat(x[-1:], padded - x.shape[0], 0)])
