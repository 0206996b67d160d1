"""Data parallelism over a ``jax.sharding.Mesh``: one rule for every entry point.

The range test and ``fit`` split each batch along one mesh axis, the *data
axis*: the one named by ``data_axis``, else ``'data'`` when the mesh has it,
else the mesh's first axis. Everything else keeps the placement it arrives
with; JAX's SPMD partitioner inserts the gradient all-reduce.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from clr_jax import _validation as v


def resolve_data_axis(mesh: Mesh | None, data_axis: str | None) -> str | None:
    """The mesh axis that splits the batch (``None`` without a mesh).

    Raises:
      ValueError: for a ``mesh`` that is not a ``Mesh`` or an unknown axis.
    """
    if mesh is None:
        if data_axis is not None:
            v.fail("data_axis", "None without a mesh", data_axis)
        return None
    if not isinstance(mesh, Mesh):
        v.fail("mesh", "a jax.sharding.Mesh or None", mesh)
    names = tuple(mesh.axis_names)
    if data_axis is None:
        return "data" if "data" in names else names[0]
    v.check_choice("data_axis", data_axis, names)
    return data_axis


def auto_axes(mesh: Mesh) -> Mesh:
    """The same mesh with every axis in Auto mode.

    ``jax.make_mesh`` gives Explicit axes, which ``with_sharding_constraint``
    does not accept; in Auto mode the partitioner places the rest itself.
    """
    auto = (jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
    return Mesh(mesh.devices, mesh.axis_names, axis_types=auto)


def batch_sharding(mesh: Mesh, axis: str) -> NamedSharding:
    """Leading (example) axis split over ``axis``, the rest replicated."""
    return NamedSharding(auto_axes(mesh), PartitionSpec(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(auto_axes(mesh), PartitionSpec())


def constrain(tree: Any, sharding: Any) -> Any:
    """``with_sharding_constraint`` on every leaf; the identity for ``None``."""
    if sharding is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, sharding)


def data_shards(mesh: Mesh | None, axis: str | None) -> int:
    """The number of devices along the data axis (1 without a mesh)."""
    return 1 if mesh is None else mesh.shape[axis]
