"""Data parallelism over a ``jax.sharding.Mesh``: one rule for every entry point.

The range test and ``fit`` split each batch along one mesh axis, the *data
axis*: the one named by ``data_axis``, else ``'data'`` when the mesh has it,
else the mesh's first axis. Everything else keeps the placement it arrives
with; JAX's SPMD partitioner inserts the gradient all-reduce.

Keeping a placement (FSDP, tensor parallelism): a leaf that arrives with a
``NamedSharding`` keeps it through the compiled loop (a sharding constraint
on every step's state), ``param_sharding=`` places parameters on request,
and an optimizer state's parameter-shaped leaves follow the parameters
(:func:`mirror_params`). Everything else is replicated over the mesh.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
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


# ---------------------------------------------------------------------------
# Keeping the state's placement: model-sharded leaves stay sharded
# ---------------------------------------------------------------------------


def _on_auto(sharding: NamedSharding) -> NamedSharding:
    return NamedSharding(auto_axes(sharding.mesh), sharding.spec)


def leaf_shardings(tree: Any, mesh: Mesh | None) -> tuple | None:
    """The placement to keep for each leaf of ``tree`` (``jax.tree.leaves`` order).

    A leaf that arrives with a ``NamedSharding`` keeps it; any other leaf is
    replicated over ``mesh`` (``None``: left where it is). ``None`` overall
    when there is nothing to keep, or when ``tree`` is traced (inside a
    user's ``jit`` the placement is the user's program's).
    """
    leaves = jax.tree.leaves(tree)
    if v.is_traced(leaves):
        return None
    fallback = None if mesh is None else replicated(mesh)
    out = tuple(
        _on_auto(s) if isinstance(s, NamedSharding) else fallback
        for s in (getattr(leaf, "sharding", None) for leaf in leaves)
    )
    return None if all(s is None for s in out) else out


def with_leading_axis(shardings: tuple | None, add: bool) -> tuple | None:
    """Each sharding with an unsplit leading (sweep) axis added, or removed."""
    if shardings is None:
        return None

    def change(s):
        if s is None:
            return None
        spec = (None, *s.spec) if add else tuple(s.spec)[1:]
        return NamedSharding(s.mesh, PartitionSpec(*spec))

    return tuple(change(s) for s in shardings)


def constrain_leaves(tree: Any, shardings: tuple | None) -> Any:
    """``with_sharding_constraint`` leaf by leaf (``None`` entries are free)."""
    if shardings is None:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [
        x if s is None else jax.lax.with_sharding_constraint(x, s)
        for x, s in zip(leaves, shardings, strict=True)
    ]
    return jax.tree.unflatten(treedef, leaves)


def place_leaves(tree: Any, shardings: tuple | None) -> Any:
    """``tree`` put on its shardings: ``device_put`` when concrete, a sharding
    constraint when traced."""
    if shardings is None:
        return tree
    if v.is_traced(tree):
        return constrain_leaves(tree, shardings)
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [
        x if s is None else jax.device_put(x, s)
        for x, s in zip(leaves, shardings, strict=True)
    ]
    return jax.tree.unflatten(treedef, leaves)


def resolve_param_sharding(params: Any, mesh: Mesh | None, param_sharding: Any):
    """The sharding of each leaf of ``params`` asked for by ``param_sharding``.

    ``param_sharding`` is a ``Sharding`` or ``PartitionSpec`` for every leaf,
    a pytree prefix of ``params`` holding them, or a function
    ``(path, leaf) -> PartitionSpec``; a ``PartitionSpec`` is of ``mesh``'s
    axes and ``None`` means replicated.

    Raises:
      ValueError: naming ``param_sharding`` for a spec without a mesh or a
        tree that does not fit ``params``.
    """

    def sharding(spec, path):
        if isinstance(spec, jax.sharding.Sharding):
            return _on_auto(spec) if isinstance(spec, NamedSharding) else spec
        if mesh is None:
            v.fail("param_sharding", "a Sharding, or a PartitionSpec with a mesh", spec)
        if spec is not None and not isinstance(spec, PartitionSpec):
            v.fail("param_sharding", f"a PartitionSpec or Sharding at {path}", spec)
        return NamedSharding(auto_axes(mesh), spec or PartitionSpec())

    def is_spec(x):
        return x is None or isinstance(x, PartitionSpec | jax.sharding.Sharding)

    with_path = [
        (jax.tree_util.keystr(p), x)
        for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    if callable(param_sharding) and not is_spec(param_sharding):
        return tuple(sharding(param_sharding(p, x), p) for p, x in with_path)
    try:
        boxes = jax.tree.map(
            lambda s, sub: jax.tree.map(lambda _: _Box(s), sub),
            param_sharding,
            params,
            is_leaf=is_spec,
        )
    except ValueError as err:
        v.fail("param_sharding", "a pytree prefix of the params", str(err))
    return tuple(
        sharding(box.spec, p)
        for box, (p, _) in zip(jax.tree.leaves(boxes), with_path, strict=True)
    )


class _Box:
    """A spec as one opaque pytree leaf (a PartitionSpec may be a tuple)."""

    def __init__(self, spec):
        self.spec = spec


def mirror_params(
    opt_state: Any, params: Any, param_shardings: tuple, fallback: Any
) -> tuple:
    """Shardings for an optimizer state that follow the params' shardings.

    Every sub-tree of ``opt_state`` shaped like ``params`` (momentum, Adam's
    moments, ...) takes ``param_shardings``; every other leaf ``fallback``.
    """
    treedef = jax.tree.structure(params)
    param_shapes = [np.shape(x) for x in jax.tree.leaves(params)]

    def like_params(node):
        if jax.tree.structure(node) != treedef:
            return False
        return [np.shape(x) for x in jax.tree.leaves(node)] == param_shapes

    out = []
    for node in jax.tree.leaves(opt_state, is_leaf=like_params):
        out += param_shardings if like_params(node) else [fallback]
    return tuple(out)


def mesh_of(shardings: tuple | None) -> Mesh | None:
    """The mesh of the first ``NamedSharding`` in ``shardings``, if any."""
    for s in shardings or ():
        if isinstance(s, NamedSharding):
            return s.mesh
    return None
