"""Models behind one functional interface (:class:`Adapter`).

A Linen module, a built NNX module, an NNX factory and any callable pytree
model (an Equinox module, say) all become the same pair of pure functions,
so the training loop and the range-test step are written once:

* ``init(key, x) -> (params, batch_stats)``;
* ``apply(params, batch_stats, x, train, dropout_key) -> (logits, batch_stats)``.

``batch_stats`` is everything that is not a trainable parameter: the Linen
``batch_stats`` collection, or for NNX every non-``Param`` variable
(BatchNorm statistics and the RNG stream counters of dropout). Linen modules
switch between training and inference through a ``train`` argument of
``__call__`` (or ``deterministic=not train``) when they have one; NNX
modules through ``deterministic`` and ``use_running_average`` attributes
(``nnx.view``), as ``nnx.Dropout`` and ``nnx.BatchNorm`` use them.

A pytree model follows Equinox's filter convention, without importing
Equinox: its inexact-array leaves are the parameters (differentiated and
updated), every other leaf (activation functions, integers, integer arrays)
is static and passed through unchanged. It is called on a whole batch,
``model(inputs)``, in both modes; wrap a per-example model (Equinox's
convention) with :func:`per_example`.

After training, :func:`trained_model` gives the model holding the trained
state: a built NNX module is updated in place (NNX's convention, as
``nnx.Optimizer.update`` does), an NNX factory's module and a pytree model
are rebuilt with the trained leaves.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax
from flax import linen as nn
from flax import nnx

from clr_jax import _validation as v
from clr_jax._tree import Static, combine, is_inexact_array, partition


class Adapter(NamedTuple):
    """A Flax model as pure ``init`` and ``apply`` functions.

    Both are hashable callables, equal when their models are: they are
    static in jit's cache key (``apply`` as a TrainState field), so equal
    models reuse compiled programs across ``fit`` calls.
    """

    init: Callable[[jax.Array, jax.Array], tuple[Any, Any]]
    apply: Callable[..., tuple[jax.Array, Any]]
    reinitialises: bool  # False when ``init`` ignores its key (a built model)
    rebuild: Callable[[Any, Any], Any] | None = None  # (params, stats) -> model


def _linen_mode(module: nn.Module, train: bool) -> dict[str, bool]:
    """How to switch a Linen module between training and inference."""
    names = inspect.signature(module.__call__).parameters
    if "train" in names:
        return {"train": train}
    if "deterministic" in names:
        return {"deterministic": not train}
    return {}


@dataclasses.dataclass(frozen=True)
class _LinenApply:
    module: nn.Module

    def __call__(self, params, batch_stats, x, train, dropout_key):
        variables = {"params": params, "batch_stats": batch_stats}
        mode = _linen_mode(self.module, train)
        if not train:
            return self.module.apply(variables, x, **mode), batch_stats
        logits, updated = self.module.apply(
            variables, x, **mode, rngs={"dropout": dropout_key}, mutable=["batch_stats"]
        )
        return logits, updated.get("batch_stats", batch_stats)


@dataclasses.dataclass(frozen=True)
class _LinenInit:
    module: nn.Module

    def __call__(self, key, x):
        params_key, dropout_key = jax.random.split(key)
        rngs = {"params": params_key, "dropout": dropout_key}
        variables = self.module.init(rngs, x, **_linen_mode(self.module, False))
        return variables["params"], variables.get("batch_stats", {})


@dataclasses.dataclass(frozen=True)
class _NnxApply:
    train_def: Any  # graph definitions, in training and in inference mode
    eval_def: Any

    def __call__(self, params, batch_stats, x, train, dropout_key):
        del dropout_key  # NNX dropout uses the stream stored in batch_stats
        # Fresh Variable objects at the current trace level: NNX refuses to
        # mutate (BatchNorm statistics) variables created under another trace.
        params, batch_stats = jax.tree.map(lambda a: a, (params, batch_stats))
        graphdef = self.train_def if train else self.eval_def
        instance = nnx.merge(graphdef, params, batch_stats)
        logits = instance(x)
        if not train:
            return logits, batch_stats
        return logits, nnx.split(instance, nnx.Param, ...)[2]


def _nnx_graphdef(module: nnx.Module, train: bool) -> Any:
    view = nnx.view(
        module,
        deterministic=not train,
        use_running_average=not train,
        raise_if_not_found=False,
    )
    return nnx.split(view, nnx.Param, ...)[0]


def _build(factory: Callable[[nnx.Rngs], Any], *keys, **streams) -> nnx.Module:
    instance = factory(nnx.Rngs(*keys, **streams))
    if not isinstance(instance, nnx.Module):
        raise ValueError(
            "`model` must be a flax.linen.Module, a flax.nnx.Module or a function "
            f"`rngs -> nnx.Module`; the function returned {type(instance).__name__}."
        )
    return instance


@dataclasses.dataclass(frozen=True)
class _NnxInit:
    factory: Callable[[nnx.Rngs], nnx.Module]  # compared by identity

    def __call__(self, key, x):
        del x
        params_key, dropout_key = jax.random.split(key)
        instance = _build(self.factory, params_key, dropout=dropout_key)
        return nnx.split(instance, nnx.Param, ...)[1:]


@dataclasses.dataclass(frozen=True, eq=False)  # a mutable module: by identity
class _NnxCurrent:
    module: nnx.Module

    def __call__(self, key, x):
        del key, x  # the module's current weights
        return nnx.split(self.module, nnx.Param, ...)[1:]


@dataclasses.dataclass(frozen=True, eq=False)
class _NnxRebuild:
    """A module holding given variables: the built module itself, updated in
    place, or a fresh one of the factory's graph."""

    module: nnx.Module | None
    graphdef: Any

    def __call__(self, params, batch_stats):
        if self.module is not None:
            nnx.update(self.module, params, batch_stats)
            return self.module
        return nnx.merge(self.graphdef, params, batch_stats)


def _nnx_adapter(model: nnx.Module | Callable[[nnx.Rngs], nnx.Module]) -> Adapter:
    built = isinstance(model, nnx.Module)
    template = model if built else nnx.eval_shape(lambda: _build(model, 0))
    apply = _NnxApply(_nnx_graphdef(template, True), _nnx_graphdef(template, False))
    init = _NnxCurrent(model) if built else _NnxInit(model)
    rebuild = _NnxRebuild(model if built else None, nnx.graphdef(template))
    return Adapter(init, apply, reinitialises=not built, rebuild=rebuild)


# -- pytree models (Equinox's filter convention) -----------------------------


@dataclasses.dataclass(frozen=True)
class _PytreeApply:
    static: Static  # the non-parameter leaves, compared by value or identity

    def __call__(self, params, batch_stats, x, train, dropout_key):
        del train, dropout_key
        return combine(params, self.static.tree)(x), batch_stats


@dataclasses.dataclass(frozen=True, eq=False)
class _PytreeInit:
    model: Any

    def __call__(self, key, x):
        del key, x
        return partition(self.model, is_inexact_array)[0], {}


@dataclasses.dataclass(frozen=True, eq=False)
class _PytreeRebuild:
    static: Static

    def __call__(self, params, batch_stats):
        del batch_stats
        return combine(params, self.static.tree)


def _pytree_adapter(model: Any) -> Adapter:
    static = Static(partition(model, is_inexact_array)[1])
    return Adapter(
        _PytreeInit(model), _PytreeApply(static), False, _PytreeRebuild(static)
    )


def _is_pytree_model(model: Any) -> bool:
    """A callable pytree holding at least one inexact array (an Equinox module)."""
    leaves = jax.tree.leaves(model)
    return callable(model) and any(is_inexact_array(leaf) for leaf in leaves)


@jax.tree_util.register_pytree_node_class
class PerExample:
    """A per-example model called on a batch: ``jax.vmap(model)(inputs)``.

    The model stays a pytree child, so its parameters are found and trained.
    """

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, inputs: Any) -> Any:
        return jax.vmap(self.model)(inputs)

    def tree_flatten(self):
        return (self.model,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        return cls(*children)

    def __repr__(self) -> str:
        return f"per_example({self.model!r})"


def per_example(model: Any) -> PerExample:
    """Wraps a model of one example (Equinox's convention) to take batches.

    Args:
      model: a callable pytree, e.g. an ``equinox.nn.MLP``.

    Returns:
      A pytree model whose call maps ``model`` over the leading batch axis;
      its ``.model`` is the wrapped model (after training, the trained one).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> class Scale:  # a tiny pytree model of one example
      ...     def __init__(self, w): self.w = w
      ...     def __call__(self, x): return self.w * x.sum()
      >>> jax.tree_util.register_pytree_node(
      ...     Scale, lambda m: ((m.w,), None), lambda _, c: Scale(*c))
      >>> per_example(Scale(jnp.float32(2.0)))(jnp.ones((3, 4))).tolist()
      [8.0, 8.0, 8.0]
    """
    return PerExample(model)


def adapt(model: Any) -> Adapter:
    """The :class:`Adapter` of a Linen module, NNX module or factory, or pytree model.

    Raises:
      ValueError: for anything else.
    """
    if isinstance(model, nn.Module):
        return Adapter(_LinenInit(model), _LinenApply(model), reinitialises=True)
    nnx_class = isinstance(model, type) and issubclass(model, nnx.Module)
    if isinstance(model, nnx.Module) or nnx_class:
        return _nnx_adapter(model)
    if _is_pytree_model(model):
        return _pytree_adapter(model)
    if _is_plain_callable(model):
        return _nnx_adapter(model)
    v.fail(
        "model",
        "a flax.linen.Module instance, a flax.nnx.Module, a function "
        "`rngs -> nnx.Module` or a callable pytree of arrays (an Equinox module)",
        model,
    )


def trained_model(adapter: Adapter, state: Any) -> Any:
    """The model holding ``state``'s variables (``None`` for Linen, whose
    variables live in the state only)."""
    if adapter.rebuild is None:
        return None
    return adapter.rebuild(state.params, state.batch_stats)


def _is_plain_callable(model: Any) -> bool:
    """A callable that may be an NNX factory (not a class, not an optimizer)."""
    return callable(model) and not isinstance(
        model, type | optax.GradientTransformation
    )
