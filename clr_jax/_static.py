"""User functions as static arguments of ``jax.jit``, equal when their parts are.

``functools.partial(optax.sgd, momentum=0.9)`` built twice gives two partial
objects that compare unequal, so keying a compiled function on the object
would recompile on every call. :func:`fn_key` keys a partial by its function
and arguments instead; anything unhashable falls back to its identity.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def fn_key(fn: Any) -> Any:
    """A hashable key equal for equal functions (partials compared by parts)."""
    if isinstance(fn, functools.partial):
        key = (
            "partial",
            fn_key(fn.func),
            fn.args,
            tuple(sorted(fn.keywords.items())),
        )
    else:
        key = fn
    try:
        hash(key)
    except TypeError:
        return ("id", id(fn))
    return key


class StaticFn:
    """``fn`` wrapped so that its jit cache key is :func:`fn_key`."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.key = fn_key(fn)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __eq__(self, other):
        return isinstance(other, StaticFn) and self.key == other.key

    def __hash__(self):
        return hash(self.key)
