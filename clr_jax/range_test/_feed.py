"""How data reaches the compiled sweep: one function per data form.

* :attr:`DataForm.SAMPLED`: arrays with a leading example axis, kept on the
  device; the sweep gathers each batch by index (the indices of every step
  are drawn once, up front, from the key).
* :attr:`DataForm.BATCHED`: arrays whose leading axis is the step and the
  second the batch; the sweep slices its steps.
* :attr:`DataForm.ITERATOR`: a host iterator of batches, stacked on the host
  one chunk at a time; each chunk is one call of the compiled sweep.

Each form gives a :class:`Feed`: the device-resident data (sampled form
only) and one source per chunk, in order.
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

from clr_jax import _sharding
from clr_jax import _validation as v
from clr_jax._tree import leading_size
from clr_jax.data import batch_indices


class DataForm(enum.Enum):
    SAMPLED = "sampled"
    BATCHED = "batched"
    ITERATOR = "iterator"


class Feed(NamedTuple):
    """What the driver hands the compiled sweep."""

    form: DataForm
    data: Any  # the examples on the device (SAMPLED), else None
    sources: Iterator[Any]  # one per chunk: batch indices, batches or a chunk
    source_batched: bool  # per-sweep batch indices (a batch of keys)


class Plan(NamedTuple):
    """The sweep's layout in chunks and its placement."""

    num_steps: int
    chunk: int
    mesh: Mesh | None
    axis: str | None

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


def form_of(data: Any, batched: bool) -> DataForm:
    if isinstance(data, Iterator):
        return DataForm.ITERATOR
    return DataForm.BATCHED if batched else DataForm.SAMPLED


def make_feed(data, *, form: DataForm, batch_size, keys, plan: Plan) -> Feed:
    """The :class:`Feed` of ``data`` in ``form``, after checking it."""
    if form is DataForm.ITERATOR:
        return iterator_feed(data, batch_size=batch_size, plan=plan)
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
    batch_size = v.check_batch_size(batch_size, n)
    _check_split(batch_size, plan)
    replicated = None if plan.mesh is None else _sharding.replicated(plan.mesh)
    data = jax.device_put(data, replicated)
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
    return Feed(DataForm.SAMPLED, data, sources, batched_keys)


def batched_feed(data, *, batch_size, plan: Plan) -> Feed:
    """Pre-batched arrays ``[steps, batch, ...]``, sliced inside the sweep."""
    steps_given = leading_size(data, "data", axis="step")
    if steps_given < plan.num_steps:
        raise ValueError(
            f"`num_steps` must be <= the {steps_given} pre-batched steps in "
            f"`data` (batched=True); got {plan.num_steps}."
        )
    given = {np.shape(x)[1] for x in jax.tree.leaves(data) if np.ndim(x) > 1}
    if batch_size is not None and given != {batch_size}:
        raise ValueError(
            f"`batch_size` must match the pre-batched data's batch axis {given}; "
            f"got {batch_size}."
        )
    if plan.mesh is not None:
        _check_split(given.pop(), plan)
    stacked = jax.tree.map(
        lambda x: _pad_steps(x[: plan.num_steps], padded=plan.padded),
        jax.device_put(data, plan.per_step_sharding()),
    )
    sources = itertools.repeat(stacked, plan.num_chunks)
    return Feed(DataForm.BATCHED, None, sources, False)


def iterator_feed(data: Iterator, *, batch_size, plan: Plan) -> Feed:
    """A host iterator, pulled one chunk of batches at a time."""
    if batch_size is not None:
        _check_split(batch_size, plan)
    sources = _iterator_chunks(data, plan)
    return Feed(DataForm.ITERATOR, None, sources, False)


def _iterator_chunks(data: Iterator, plan: Plan):
    """Pulls ``plan.chunk`` batches at a time from a host iterator."""
    sharding = plan.per_step_sharding()
    for start in range(0, plan.num_steps, plan.chunk):
        want = min(plan.chunk, plan.num_steps - start)
        batches = list(itertools.islice(data, want))
        if len(batches) < want:
            raise ValueError(
                f"`data` iterator ran out after {start + len(batches)} batches; "
                f"num_steps is {plan.num_steps}."
            )
        yield _stack_batches(batches, plan.chunk, sharding)


def _stack_batches(batches: list, total: int, sharding) -> Any:
    """``total`` stacked batches (the last one repeated as padding), on device."""
    batches = batches + [batches[-1]] * (total - len(batches))
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches)
    if sharding is None:
        return jax.device_put(stacked)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), stacked
    )


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
    the padding steps of the last chunk are never run."""
    return jnp.concatenate([x, jnp.repeat(x[-1:], padded - x.shape[0], 0)])
