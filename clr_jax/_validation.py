"""Argument checks shared by every public factory.

Each check looks at *concrete* values only (Python numbers, NumPy arrays and
concrete JAX arrays) and raises ``ValueError`` naming the argument, the rule
and the offending value. Traced values pass through untouched: branching on
them is impossible under ``jit``/``vmap`` and would break those users.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

INT32_MAX = 2**31 - 1


def is_traced(value: Any) -> bool:
    """True when ``value`` is (or holds) a JAX tracer."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def concrete(value: Any) -> np.ndarray | None:
    """The value as a NumPy array, or ``None`` when it is traced."""
    if is_traced(value):
        return None
    return np.asarray(value)


def _fail(name: str, rule: str, value: Any) -> None:
    raise ValueError(f"`{name}` must be {rule}; got {value!r}.")


def check_finite(name: str, value: Any) -> None:
    """Every element of ``value`` is a finite real number."""
    arr = concrete(value)
    if arr is None:
        return
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        _fail(name, "a real number", value)
    if not np.all(np.isfinite(arr)):
        _fail(name, "finite", value)


def check_non_negative(name: str, value: Any) -> None:
    """Finite and ``>= 0``."""
    check_finite(name, value)
    arr = concrete(value)
    if arr is not None and np.any(arr < 0):
        _fail(name, "non-negative", value)


def check_positive(name: str, value: Any) -> None:
    """Finite and ``> 0``."""
    check_finite(name, value)
    arr = concrete(value)
    if arr is not None and np.any(arr <= 0):
        _fail(name, "positive", value)


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
        _fail(name, f"in {bounds}", value)


def check_step_count(name: str, value: Any, *, minimum: int = 1) -> Any:
    """An integer number of steps, ``>= minimum`` and within int32.

    Concrete values come back as Python ints (or int NumPy arrays), so that
    integral floats such as ``2000.0`` are accepted. Traced values must have
    an integer dtype: a float tracer cannot be checked for integrality.
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
        _fail(name, "an integer", value)
    if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
        _fail(name, "an integer", value)
    if np.any(arr < minimum):
        _fail(name, f"an integer >= {minimum}", value)
    if np.any(arr > INT32_MAX):
        _fail(name, f"an integer <= 2**31 - 1 ({INT32_MAX})", value)
    ints = arr.astype(np.int64)
    return int(ints) if ints.ndim == 0 else ints


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        _fail(name, f"one of {choices}", value)
