"""Argument checks shared by every public function, one copy each.

Each check looks at *concrete* values only (Python numbers, NumPy arrays and
concrete JAX arrays) and raises ``ValueError`` naming the argument, the rule
and the offending value.
Traced values pass through untouched: branching on them is impossible under
``jit``/``vmap`` and would break those users.

:func:`warn` is here too: a warning about the user's input points at the
user's own line, wherever inside the package it was raised.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

INT32_MAX = 2**31 - 1

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def is_traced(value: Any) -> bool:
    """True when ``value`` is (or holds) a JAX tracer."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def concrete(value: Any) -> np.ndarray | None:
    """The value as a NumPy array, or ``None`` when it is traced."""
    if is_traced(value):
        return None
    return np.asarray(value)


def fail(name: str, rule: str, value: Any) -> None:
    """Raises the package's standard ``ValueError`` for argument ``name``."""
    raise ValueError(f"`{name}` must be {rule}; got {value!r}.")


def check_finite(name: str, value: Any) -> None:
    """Every element of ``value`` is a finite real number."""
    arr = concrete(value)
    if arr is None:
        return
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        fail(name, "a real number", value)
    if not np.all(np.isfinite(arr)):
        fail(name, "finite", value)


def check_non_negative(name: str, value: Any) -> None:
    """Finite and ``>= 0``."""
    check_finite(name, value)
    arr = concrete(value)
    if arr is not None and np.any(arr < 0):
        fail(name, "non-negative", value)


def check_positive(name: str, value: Any) -> None:
    """Finite and ``> 0``."""
    check_finite(name, value)
    arr = concrete(value)
    if arr is not None and np.any(arr <= 0):
        fail(name, "positive", value)


def check_interval(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    closed_low: bool,
    closed_high: bool,
) -> None:
    """Finite and inside the given interval."""
    check_finite(name, value)
    arr = concrete(value)
    if arr is None:
        return
    lo_ok = arr >= low if closed_low else arr > low
    hi_ok = arr <= high if closed_high else arr < high
    if not np.all(lo_ok & hi_ok):
        bounds = (
            f"{'[' if closed_low else '('}{low}, {high}{']' if closed_high else ')'}"
        )
        fail(name, f"in {bounds}", value)


def check_step_count(name: str, value: Any, *, minimum: int = 1) -> Any:
    """An integer number of steps, ``>= minimum`` and within int32.

    Concrete values come back as Python ints (or int NumPy arrays), so that
    integral floats such as ``2000.0`` are accepted everywhere. Traced values
    must have an integer dtype: a float tracer cannot be checked for
    integrality.
    """
    if is_traced(value):
        dtype = value.dtype
        if not np.issubdtype(dtype, np.integer):
            raise TypeError(
                f"`{name}` must have an integer dtype when traced; got {dtype}."
            )
        return value
    arr = np.asarray(value)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        fail(name, "an integer", value)
    if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
        fail(name, "an integer", value)
    if np.any(arr < minimum):
        fail(name, f"an integer >= {minimum}", value)
    if np.any(arr > INT32_MAX):
        fail(name, f"an integer <= 2**31 - 1 ({INT32_MAX})", value)
    ints = arr.astype(np.int64)
    return int(ints) if ints.ndim == 0 else ints


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        fail(name, f"one of {choices}", value)


def check_callable(name: str, value: Any, *, optional: bool = False) -> None:
    """``value`` is callable (or ``None`` when ``optional``)."""
    if value is None and optional:
        return
    if not callable(value):
        fail(name, "callable or None" if optional else "callable", value)


def check_batch_size(batch_size: Any, num_examples: int) -> int:
    """A positive integer no larger than the ``num_examples`` it draws from."""
    batch_size = check_step_count("batch_size", batch_size)
    if batch_size > num_examples:
        fail("batch_size", f"<= the number of examples ({num_examples})", batch_size)
    return batch_size


def check_divisible(name: str, size: int, shards: int) -> None:
    """``size`` splits evenly over ``shards`` devices of a mesh's data axis."""
    if size % shards:
        fail(name, f"a multiple of the {shards} devices of the mesh's data axis", size)


def check_key(key: Any, *, batched: bool = False) -> jax.Array:
    """A typed PRNG key (a raw ``uint32[2]`` key is wrapped); with ``batched``
    also a 1-D batch of keys, one per sweep or seed."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        typed = key
    elif (
        isinstance(key, jax.Array | np.ndarray)
        and key.dtype == np.uint32
        and key.shape[-1:] == (2,)
    ):
        typed = jax.random.wrap_key_data(jnp.asarray(key))
    else:
        fail("key", "a PRNG key (jax.random.key)", key)
    allowed = (0, 1) if batched else (0,)
    if typed.ndim not in allowed:
        rule = "one key or a 1-D batch of keys" if batched else "a single PRNG key"
        fail("key", rule, f"keys of shape {typed.shape}")
    return typed


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool`` (``"False"`` or ``0`` are refused, not read as truth)."""
    if not isinstance(value, bool | np.bool_):
        fail(name, "True or False", value)
    return bool(value)


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` pointing at the first frame outside this package."""
    frame, level = sys._getframe(1), 2  # level 2 is warn's caller
    while frame is not None and _inside_package(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def _inside_package(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)


def check_scalar(name: str, value: Any) -> None:
    """One real number: a Python number or a 0-d array, concrete or traced.

    A bool, a string, a list or a complex number raises ``TypeError``; an
    array with a shape (an empty one included) raises ``ValueError``.
    """
    numeric = isinstance(value, int | float | np.generic | np.ndarray | jax.Array)
    dtype = getattr(value, "dtype", None) if numeric else None
    if numeric and dtype is None:  # a Python number
        dtype = np.asarray(value).dtype
    real = dtype is not None and (
        jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
    )
    if not real or isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a real number (a Python number or a 0-d array); got "
            f"{value!r} of type {type(value).__name__}."
        )
    if np.ndim(value) != 0:
        raise ValueError(
            f"`{name}` must be a single number (a 0-d array); got an array of shape "
            f"{np.shape(value)}. For many values, build one schedule per value and "
            "stack them leaf by leaf, or jax.vmap over the value."
        )


def check_concrete(name: str, value: Any, why: str) -> None:
    """``value`` is not traced (it decides a shape or the program's layout).

    Raises:
      TypeError: naming ``name`` and ``why`` for a traced value.
    """
    if is_traced(value):
        raise TypeError(
            f"`{name}` must be a concrete Python number inside jax.jit or jax.vmap "
            f"({why}); got a traced value. Pass it as a static argument."
        )
