"""A stable description of the optimizer a range test ran, for its record.

``repr`` of a function holds its memory address (``<function sgd at
0x7f...>``), which changes every run and says nothing about the settings.
The record describes instead:

* a function or class by its public qualified name: ``optax.sgd`` (the
  shortest imported module that exposes it under that name, else its own
  module);
* a ``functools.partial`` as a call with its bound arguments:
  ``optax.sgd(momentum=0.9)``;
* a wrapper made by another function (``functools.wraps``) as that function
  applied to the wrapped one: ``optax.inject_hyperparams(optax.sgd)``;
* a ready transformation (or ``nnx.Optimizer``) by its type and the
  hyperparameters injected in its state before the sweep, but the learning
  rate, which the sweep drives: ``optax.GradientTransformationExtraArgs(
  momentum=0.9)``.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import jax
import numpy as np

from clr_jax import _validation as v
from clr_jax.inject import _injected_states, get_hyperparam


def describe_optimizer(optimizer: Any, opt_state: Any = None) -> str:
    """``optimizer`` described without a memory address (see the module).

    Args:
      optimizer: what was passed to :func:`clr_jax.range_test`: a factory, a
        ``functools.partial`` of one, a ready transformation or an
        ``nnx.Optimizer``.
      opt_state: the optimizer state before the sweep; its injected
        hyperparameters describe a ready transformation.

    Returns:
      A string equal for equal settings in every run.

    Examples:
      >>> import functools, optax
      >>> describe_optimizer(functools.partial(optax.sgd, momentum=0.9))
      'optax.sgd(momentum=0.9)'
      >>> describe_optimizer(optax.inject_hyperparams(optax.adam))
      'optax.inject_hyperparams(optax.adam)'
    """
    if callable(optimizer) and not hasattr(optimizer, "update"):
        return _describe_callable(optimizer)
    injected = dict.fromkeys(
        name
        for state in _injected_states(opt_state)
        for name in state.hyperparams
        if name != "learning_rate"
    )
    values = {name: get_hyperparam(opt_state, name) for name in injected}
    return _call(_qualified(type(optimizer)), (), values)


def _describe_callable(fn: Any) -> str:
    if isinstance(fn, functools.partial):
        return _call(_describe_callable(fn.func), fn.args, fn.keywords)
    maker = _maker(fn)
    if maker is not None:
        return f"{maker}({_describe_callable(fn.__wrapped__)})"
    if hasattr(fn, "__qualname__"):
        return _qualified(fn)
    return _plain_repr(fn)  # a callable instance, such as a schedule


def _plain_repr(x: Any) -> str:
    """``repr(x)``, or its type's name where that holds an address."""
    text = repr(x)
    return _qualified(type(x)) if " at 0x" in text else text


def _maker(fn: Any) -> str | None:
    """The function that made the wrapper ``fn``, or ``None``."""
    code = getattr(fn, "__code__", None)
    if not hasattr(fn, "__wrapped__") or code is None:
        return None
    outer, local, _ = code.co_qualname.partition(".<locals>")
    if not local:
        return None
    module = fn.__globals__.get("__name__", "")
    return _public_name(module, outer, fn.__globals__.get(outer))


def _qualified(obj: Any) -> str:
    return _public_name(getattr(obj, "__module__", "") or "", obj.__qualname__, obj)


def _public_name(module: str, name: str, obj: Any) -> str:
    """``module.name`` by the shortest imported module that has ``obj`` as ``name``."""
    parts = module.split(".")
    for end in range(1, len(parts)):
        prefix = ".".join(parts[:end])
        if obj is not None and getattr(sys.modules.get(prefix), name, None) is obj:
            return f"{prefix}.{name}"
    return f"{module}.{name}" if module else name


def _call(name: str, args, kwargs) -> str:
    shown = [_value(a) for a in args]
    shown += [f"{k}={_value(x)}" for k, x in kwargs.items()]
    return f"{name}({', '.join(shown)})"


def _value(x: Any) -> str:
    """A hyperparameter or bound argument, without addresses or tracers."""
    if v.is_traced(x):
        return "traced"
    if callable(x):
        return _describe_callable(x)
    if isinstance(x, np.ndarray | np.generic | jax.Array):
        values = [f"{float(y):.6g}" for y in np.ravel(np.asarray(x))]
        return values[0] if np.ndim(x) == 0 else f"[{', '.join(values)}]"
    return _plain_repr(x)
