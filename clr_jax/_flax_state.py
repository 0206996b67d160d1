"""Flax models behind one functional interface, the train state and its step.

A Linen module, an NNX module and an NNX factory all become the same pair of
pure functions (:class:`Adapter`), so the training loop and the range-test
step are written once:

* ``init(key, x) -> (params, batch_stats)``;
* ``apply(params, batch_stats, x, train, dropout_key) -> (logits, batch_stats)``.

``batch_stats`` is everything that is not a trainable parameter: the Linen
``batch_stats`` collection, or for NNX every non-``Param`` variable
(BatchNorm statistics and the RNG stream counters of dropout).

``clr_jax.flax`` and its private ``clr_jax._flax_*`` helpers are the only
modules that import flax.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import nnx
from flax.training import train_state

__all__ = [
    "Adapter",
    "TrainState",
    "accuracy",
    "adapt",
    "all_finite",
    "create_train_state",
    "create_train_state_jit",
    "loss_and_grads",
    "train_step",
]

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


class Adapter(NamedTuple):
    """A Flax model as pure ``init`` and ``apply`` functions.

    Both are hashable callables, equal when their models are: they are
    static in jit's cache key (``apply`` as a TrainState field), so equal
    models reuse compiled programs across ``fit`` calls.
    """

    init: Callable[[jax.Array, jax.Array], tuple[Any, Any]]
    apply: Callable[..., tuple[jax.Array, Any]]
    reinitialises: bool  # False when ``init`` ignores its key (a built NNX module)


class TrainState(train_state.TrainState):
    """Flax ``TrainState`` plus the non-parameter variables and a dropout key.

    ``apply_fn(params, batch_stats, x, train, dropout_key)`` returns
    ``(logits, batch_stats)`` for Linen and NNX models alike; ``train=False``
    is inference mode (running BatchNorm statistics, no dropout). Linen
    dropout draws ``fold_in(dropout_key, step)`` each step, so a run restarted
    from a saved state sees the same masks. NNX dropout draws from the
    model's own RNG stream, whose counter lives in ``batch_stats``.
    """

    batch_stats: Any = None
    dropout_key: jax.Array | None = None


# ---------------------------------------------------------------------------
# Model adapters
# ---------------------------------------------------------------------------


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


def _nnx_adapter(model: nnx.Module | Callable[[nnx.Rngs], nnx.Module]) -> Adapter:
    built = isinstance(model, nnx.Module)
    template = model if built else nnx.eval_shape(lambda: _build(model, 0))
    apply = _NnxApply(_nnx_graphdef(template, True), _nnx_graphdef(template, False))
    init = _NnxCurrent(model) if built else _NnxInit(model)
    return Adapter(init, apply, reinitialises=not built)


def adapt(model: Any) -> Adapter:
    """The :class:`Adapter` of a Linen module, NNX module or NNX factory.

    Raises:
      ValueError: for anything else.
    """
    if isinstance(model, nn.Module):
        return Adapter(_LinenInit(model), _LinenApply(model), reinitialises=True)
    nnx_class = isinstance(model, type) and issubclass(model, nnx.Module)
    if isinstance(model, nnx.Module) or nnx_class or _is_plain_callable(model):
        return _nnx_adapter(model)
    raise ValueError(
        "`model` must be a flax.linen.Module instance, a flax.nnx.Module or a "
        f"function `rngs -> nnx.Module`; got {model!r}."
    )


def _is_plain_callable(model: Any) -> bool:
    """A callable that may be an NNX factory (not a class, not an optimizer)."""
    return callable(model) and not isinstance(
        model, type | optax.GradientTransformation
    )


# ---------------------------------------------------------------------------
# State and step
# ---------------------------------------------------------------------------


def create_train_state(
    adapter: Adapter, example_input: Any, tx: optax.GradientTransformation, key
) -> TrainState:
    """Initialises ``adapter``'s model and ``tx`` (traceable, so vmappable)."""
    init_key, dropout_key = jax.random.split(key)
    params, batch_stats = adapter.init(init_key, example_input)
    state = TrainState.create(
        apply_fn=adapter.apply,
        params=params,
        tx=tx,
        batch_stats=batch_stats,
        dropout_key=dropout_key,
    )
    # An int32 step keeps the scan carry's type fixed from the first update.
    return state.replace(step=jnp.zeros((), jnp.int32))


# Random initialisation compiled once per model and optimizer (op by op it
# costs a dispatch per random op, every call).
create_train_state_jit = jax.jit(create_train_state, static_argnames=("adapter", "tx"))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Share of examples whose arg-max logit is the label."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def loss_and_grads(
    state: TrainState, batch: tuple[Any, jax.Array], loss_fn: LossFn
) -> tuple[jax.Array, jax.Array, Any, Any]:
    """``(loss, accuracy, grads, batch_stats)`` of one batch in training mode.

    ``loss_fn(logits, labels)`` gives per-example losses; their mean is
    differentiated.
    """
    inputs, labels = batch
    dropout_key = jax.random.fold_in(state.dropout_key, state.step)

    def objective(params):
        logits, stats = state.apply_fn(
            params, state.batch_stats, inputs, True, dropout_key
        )
        return jnp.mean(loss_fn(logits, labels)), (logits, stats)

    grad_fn = jax.value_and_grad(objective, has_aux=True)
    (loss, (logits, stats)), grads = grad_fn(state.params)
    return loss, accuracy(logits, labels), grads, stats


def train_step(
    state: TrainState, batch: tuple[Any, jax.Array], loss_fn: LossFn
) -> tuple[TrainState, jax.Array, jax.Array]:
    """One update in training mode: ``(new_state, loss, accuracy)``."""
    loss, acc, grads, stats = loss_and_grads(state, batch, loss_fn)
    return state.apply_gradients(grads=grads, batch_stats=stats), loss, acc


def all_finite(tree: Any) -> jax.Array:
    """True when every float element of ``tree`` is finite."""
    checks = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)
