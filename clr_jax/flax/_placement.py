"""Where ``fit`` keeps its arrays on a mesh: only the batch is split over data.

The data axis is :func:`clr_jax._sharding.resolve_data_axis`'s (the one
rule shared with the range test). Each batch is split along it; parameters
keep the shardings they arrive with (an ``initial_state``'s), or take those
of ``param_sharding`` at initialisation, and the optimizer state is built
from the placed parameters, so its parameter-shaped leaves follow them.
Every other array of the carry is replicated. The carry's shardings are
pinned inside the compiled epoch, so they are the same from epoch to epoch
(part of jit's cache key) and a model-sharded leaf stays sharded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from clr_jax import _sharding
from clr_jax import _validation as v
from clr_jax.flax._epoch import NO_PLACEMENT, Placement


def data_layout(mesh, data_axis, batch_size: int) -> tuple[str | None, int]:
    """``(data axis, number of data shards)``; the batch must split evenly."""
    axis = _sharding.resolve_data_axis(mesh, data_axis)
    shards = _sharding.data_shards(mesh, axis)
    v.check_divisible("batch_size", batch_size, shards)
    return axis, shards


def chunk_sharding(mesh: Mesh | None, axis: str | None) -> NamedSharding | None:
    """Stacked streamed batches ``[steps, batch, ...]``, split along the batch."""
    if mesh is None:
        return None
    return NamedSharding(_sharding.auto_axes(mesh), PartitionSpec(None, axis))


def param_placer(mesh: Mesh | None, param_sharding: Any) -> Callable[[Any], Any]:
    """``params -> params`` placed by ``param_sharding``.

    ``param_sharding`` is read by :func:`clr_jax._sharding.resolve_param_sharding`
    (the range test's rule): a ``PartitionSpec`` (of ``mesh``'s axes) or
    sharding for every leaf, a pytree prefix of the params holding them, or
    a function ``(path, leaf) -> PartitionSpec``; ``None`` leaves the
    parameters to be replicated over the mesh.

    Raises:
      ValueError: naming ``param_sharding`` for a spec without a mesh or a
        tree that does not fit the parameters.
    """
    if param_sharding is None:
        return lambda params: params

    def place(params):
        shardings = _sharding.resolve_param_sharding(params, mesh, param_sharding)
        return _sharding.place_leaves(params, shardings)

    return place


def place_carry(
    carry: Any, mesh: Mesh | None, axis: str | None
) -> tuple[Any, Placement]:
    """The carry on the device(s) and the :class:`Placement` of the run: a
    leaf with a ``NamedSharding`` keeps it, any other is replicated."""
    if mesh is None:
        return jax.device_put(carry), NO_PLACEMENT
    shardings = _sharding.leaf_shardings(carry, mesh)
    carry = _sharding.place_leaves(carry, shardings)
    return carry, Placement(_sharding.batch_sharding(mesh, axis), shardings)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """``tree`` on the device, on every device of ``mesh``."""
    return jax.device_put(tree, None if mesh is None else _sharding.replicated(mesh))
