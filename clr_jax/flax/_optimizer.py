"""The optimizer of a train state as a value: a factory and its hyperparameters.

An :class:`OptimizerSpec` is what :class:`~clr_jax.flax.TrainState` keeps in
place of a built ``optax.GradientTransformation``. It is a pytree: the
numeric leaves of the hyperparameters (numbers, and the numeric fields of
schedule values) are its children; the factory, the tree structure and any
other leaf (a foreign optax closure, a flag) are static. So a compiled
training step takes the hyperparameters as *arguments*: a new ``max_lr`` or
step size reuses the compiled program, and ``jax.vmap`` over stacked specs
trains a grid of learning rates in one program. The transformation itself
is rebuilt with :func:`clr_jax.with_schedules` wherever it is needed (inside
the trace); building it costs nothing at run time.

A ready ``GradientTransformation`` (e.g. ``optax.inject_hyperparams(...)``)
is kept whole, as a static part compared by identity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clr_jax import _validation as v
from clr_jax._static import fn_key
from clr_jax._tree import is_array_like, stack
from clr_jax.inject import with_schedules


class _StaticPart:
    """The static side of a spec, hashable and equal by value (functions by
    identity, partials by their parts): the factory or ready transformation,
    the hyperparameters' tree structure, which leaves are numeric (and their
    key paths), and the other leaves."""

    def __init__(self, factory, ready, treedef, mask, paths, static_leaves):
        self.factory, self.ready, self.treedef = factory, ready, treedef
        self.mask, self.paths, self.static_leaves = mask, paths, static_leaves
        self._key = (
            fn_key(factory),
            fn_key(ready),
            treedef,
            mask,
            tuple(fn_key(leaf) for leaf in static_leaves),
        )

    def __eq__(self, other):
        return isinstance(other, _StaticPart) and self._key == other._key

    def __hash__(self):
        return hash(self._key)


@jax.tree_util.register_pytree_with_keys_class
class OptimizerSpec:
    """An optax factory and its hyperparameters, or a ready transformation.

    Build one with :meth:`of` (or :func:`build_spec`). Which leaves are
    numeric (children) is decided once, at construction, so a tree mapped
    over the spec (shardings, shapes) keeps its structure.

    Attributes:
      factory: an optax factory taking ``learning_rate`` (``optax.sgd``), or
        ``None`` for a ready transformation.
      hyperparams: ``{name: number | schedule}``, the factory's arguments.
      ready: a ready ``GradientTransformation``, or ``None``.
    """

    def __init__(self, static: _StaticPart, numeric: list):
        self._static, self._numeric = static, list(numeric)

    @classmethod
    def of(
        cls,
        factory: Callable | None = None,
        hyperparams: dict | None = None,
        ready: Any = None,
    ) -> OptimizerSpec:
        """A spec whose numbers (plain ones and those inside schedule values)
        are JAX arrays, so that they are leaves with a fixed dtype wherever
        the spec goes."""
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(
            dict(hyperparams or {})
        )
        mask = tuple(is_array_like(leaf) for _, leaf in with_paths)
        paths = tuple(
            jax.tree_util.GetAttrKey("hyperparams" + jax.tree_util.keystr(p))
            for (p, _), numeric in zip(with_paths, mask, strict=True)
            if numeric
        )
        numeric = [_as_leaf(x) for (_, x), n in zip(with_paths, mask, strict=True) if n]
        static = [x for (_, x), n in zip(with_paths, mask, strict=True) if not n]
        return cls(_StaticPart(factory, ready, treedef, mask, paths, static), numeric)

    @property
    def factory(self) -> Callable | None:
        return self._static.factory

    @property
    def ready(self) -> Any:
        return self._static.ready

    @property
    def hyperparams(self) -> dict:
        numeric, static = iter(self._numeric), iter(self._static.static_leaves)
        leaves = [next(numeric) if n else next(static) for n in self._static.mask]
        return jax.tree.unflatten(self._static.treedef, leaves)

    def build(self) -> optax.GradientTransformation:
        """The transformation (with every hyperparameter injected)."""
        if self.ready is not None:
            return self.ready
        return with_schedules(self.factory, **self.hyperparams)

    def tree_flatten_with_keys(self):
        return list(zip(self._static.paths, self._numeric, strict=True)), self._static

    @classmethod
    def tree_unflatten(cls, static: _StaticPart, numeric):
        return cls(static, numeric)

    def __repr__(self) -> str:
        if self.ready is not None:
            return f"OptimizerSpec(ready={self.ready!r})"
        name = getattr(self.factory, "__name__", repr(self.factory))
        return f"OptimizerSpec({name}, {self.hyperparams!r})"


def _as_leaf(value: Any) -> Any:
    if isinstance(value, jax.core.Tracer):
        return value
    return jnp.asarray(value)


def build_spec(optimizer: Any, learning_rate: Any, hyperparams: dict) -> OptimizerSpec:
    """The spec of ``fit``'s ``optimizer``/``learning_rate``/``**hyperparams``.

    Raises:
      ValueError: for a ready transformation with hyperparameters, a factory
        without a learning rate, or a negative numeric learning rate.
    """
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None or hyperparams:
            raise ValueError(
                "`learning_rate` and other hyperparameters must be left out when "
                "`optimizer` is a ready GradientTransformation; got "
                f"{ {'learning_rate': learning_rate, **hyperparams}!r}."
            )
        return OptimizerSpec.of(ready=optimizer)
    if not callable(optimizer):
        v.fail(
            "optimizer",
            "an optax factory (e.g. optax.sgd) or a GradientTransformation",
            optimizer,
        )
    if learning_rate is None:
        raise ValueError(
            "`learning_rate` must be given (a number or a schedule) with an "
            f"optimizer factory; got {learning_rate!r}."
        )
    if not callable(learning_rate):
        v.check_non_negative("learning_rate", learning_rate)
    return OptimizerSpec.of(optimizer, {"learning_rate": learning_rate, **hyperparams})


# ---------------------------------------------------------------------------
# Grids: K hyperparameter settings trained in one program
# ---------------------------------------------------------------------------


def grid_members(hyperparams: dict) -> list[dict] | None:
    """The K settings of a grid, or ``None`` for a single run.

    A hyperparameter given as a list (or tuple) holds one value per run; every
    list must have the same length K, and the other hyperparameters are shared.
    A value whose numeric leaves carry a leading axis (an array of rates, or
    one schedule built from arrays) is a grid along that axis, scalar leaves
    being shared.

    Raises:
      ValueError: naming the hyperparameter, for an empty list, lists of
        different lengths or leading axes that disagree.
    """
    sizes = {}
    for name, value in hyperparams.items():
        size = _grid_size(name, value)
        if size is not None:
            sizes[name] = size
    if not sizes:
        return None
    if len(set(sizes.values())) != 1:
        v.fail(
            next(iter(sizes)),
            "a grid of the same length as the other grids "
            f"({', '.join(f'{k}: {n}' for k, n in sizes.items())})",
            hyperparams[next(iter(sizes))],
        )
    k = next(iter(sizes.values()))
    return [
        {name: _member(value, i, name in sizes) for name, value in hyperparams.items()}
        for i in range(k)
    ]


def _grid_size(name: str, value: Any) -> int | None:
    if isinstance(value, list | tuple):
        if not value:
            v.fail(name, "a non-empty list of values (one per run of the grid)", value)
        return len(value)
    sizes = {
        np.shape(x)[0]
        for x in jax.tree.leaves(value)
        if is_array_like(x) and np.ndim(x) >= 1
    }
    if len(sizes) > 1:
        v.fail(
            name,
            "leaves sharing one leading (grid) axis",
            f"axes of sizes {sorted(sizes)}",
        )
    return sizes.pop() if sizes else None


def _member(value: Any, i: int, gridded: bool) -> Any:
    if not gridded:
        return value
    if isinstance(value, list | tuple):
        return value[i]
    return jax.tree.map(
        lambda x: x[i] if is_array_like(x) and np.ndim(x) >= 1 else x, value
    )


def stack_specs(
    specs: list[OptimizerSpec], name: str = "learning_rate"
) -> OptimizerSpec:
    """The grid's specs as one spec whose leaves carry a leading K axis.

    Raises:
      ValueError: naming ``name`` when the members differ in structure (a
        different kind of schedule or a static setting), which one program
        cannot hold.
    """
    first = jax.tree.structure(specs[0])
    for i, spec in enumerate(specs[1:], start=1):
        if jax.tree.structure(spec) != first:
            raise ValueError(
                f"`{name}` grid runs must share one structure (the same kind of "
                "schedule and static settings; only numbers may differ, and "
                "schedules must be pytree values, not closures); run "
                f"{i} differs from run 0: {spec!r} vs {specs[0]!r}."
            )
    return stack(list(specs))
