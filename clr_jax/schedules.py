r"""Cyclical learning-rate schedules as small frozen values (``optax.Schedule``\ s).

Count convention
================

Every schedule here maps ``count``, the number of updates already applied
(0 for the first update), to the value that update uses. That is exactly what
Optax passes to a schedule, and it equals PyTorch's value after ``count``
calls of ``scheduler.step()``. Counts are integers in [0, 2**31 - 1]:

* a concrete count (a Python int, a NumPy or JAX integer of any width, or an
  array of them) is widened to int32 first, so ``np.int8(0)`` is count 0;
* a concrete count past ``2**31 - 1`` raises ``ValueError``, under x64 too:
  a schedule covers 2**31 updates;
* a negative count gives the value at count 0, concrete or traced.
  ``optax.join_schedules`` evaluates every later piece at
  ``step - boundary < 0`` and then discards the value, so refusing negative
  counts would break it;
* a traced count is clipped into [0, 2**31 - 1] on the device (one
  ``max``, plus a ``min`` for 64-bit or unsigned dtypes);
* a float or bool count raises ``TypeError``.

Schedules as values
===================

Each constructor checks its arguments in Python and returns a frozen
:class:`Schedule`. It is callable ``count -> value`` (an ``optax.Schedule``)
and a JAX pytree: the numeric hyperparameters, any derived arrays, and a
nested clr_jax schedule are its children; the other settings (window names
and callables, modes, flags, foreign callables) are static. So a schedule is
an ordinary argument of a jitted function: ``jax.jit(f)(schedule, ...)``
compiles once for every value of its numeric hyperparameters, and a batch of
schedules stacked leaf by leaf (``jax.tree.map(lambda *x: jnp.stack(x), s1,
s2)``) runs under ``jax.vmap``. Unflattening (inside ``jit``, ``vmap``,
``tree.map``) does not re-run the checks, which look at concrete values only.

A new trace is needed when a static setting changes (``window``, ``mode``,
``scale_mode``, ``scale_fn``, ``anneal_strategy``, ``three_phase``, a foreign
bound schedule, the constructor), when a leaf changes dtype or weak type (a
Python float against a float32 array), and, for :func:`cosine_restarts`,
when the way cycle starts are found changes (``cycle_mult == 1``, a table,
floating point) or the table's length does. The table holds every cycle that
starts below 2**31, padded to a power of two from 64 to 4096 entries.

Called outside any trace, a schedule runs as one compiled program (a
module-level ``jax.jit`` taking it as an argument): it compiles once per
schedule structure and count shape, then each call is one dispatch. Inside a
trace (``jit``, ``vmap``, ``grad``, ``scan``) it is inlined. So callables
given to a schedule (windows, ``scale_fn``, bounds) must be traceable by JAX.

``repr`` reads like the call that built it, ``==`` and ``hash`` go by value
(traced leaves by identity), ``pickle`` uses the standard library (a lambda
or local function inside a schedule raises ``pickle.PicklingError`` saying
which argument holds it), and ``to_dict()`` / :func:`schedule_from_dict`
give JSON configs. ``replace(**changes)`` builds a checked copy.

Composition
===========

``base_lr`` and ``max_lr`` of the cyclical family, and ``max_lr`` of
:func:`one_cycle` and :func:`cosine_restarts`, also take a schedule
``count -> value``: a clr_jax schedule (nested as a pytree child) or any
other callable such as ``optax.cosine_decay_schedule(...)`` (static: a new
closure object is a new trace). The bound is evaluated at the same count:
``triangular(1e-3, optax.cosine_decay_schedule(6e-3, 10_000), 2000)`` is a
cycle whose peak decays.

What is checked
===============

Concrete values are checked at construction and raise ``ValueError`` (a bad
value) or ``TypeError`` (a bad type) naming the argument, the rule and the
value; traced values are never branched on. Hyperparameters must be a
number or a 0-d array, finite in the dtype they are computed in (float32
unless x64 is on) and inside their range *after* rounding to it. Callables
are checked on probes, once, eagerly:

* a ``window`` callable on every height the schedule can use, when
  ``step_size + step_size_down <= 2**16``; otherwise on the 4096 heights at
  each end of both halves of the cycle and every ``k``-th height between
  (about 2**16 per half). Output must lie in [0, 1]. Misbehaviour only
  between probed heights of a long cycle is not caught;
* ``scale_fn`` gets floats (the cycle number, or the count), on cycles
  1..4096 or counts 0..4096 and then a geometric grid up to 2**31 - 1, and
  must map them into [0, 1] (PyTorch's rule for ``CyclicLR``);
* a bound schedule on counts 0..4096 and a geometric grid up to
  2**31 - 1: finite and non-negative (and ``>= min_lr`` for
  :func:`cosine_restarts`). Values between the probed counts are not
  checked.

Design rules, each checked by the test suite:

* the position inside a cycle is integer arithmetic, so ``count = 2**31 - 1``
  is as exact as ``count = 7`` (a float32 phase is wrong past ``2**24``);
  so are the phase ends of :func:`one_cycle` and the cycle starts of
  :func:`cosine_restarts` for a concrete ``cycle_mult`` (host-computed
  leaves, so also when the schedule is a jit argument). A traced
  ``cycle_mult``, or one so close to 1 that over 4096 cycles start below
  2**31 (``cosine_restarts(0.1, 1, cycle_mult=1.000000001)``), places cycle
  starts in floating point instead: accurate while a cycle is long compared
  with the rounding of the count (``count * 2**-24`` in float32);
* the cost of one evaluation does not grow with the number of cycles;
* numeric hyperparameters may be JAX arrays, even tracers, so ``jax.vmap``
  over ``max_lr`` or an integer ``step_size`` compiles once;
* no integer-exponent power of a concrete count: eager calls compile once.
"""

from __future__ import annotations

import functools
import inspect
import math
import pickle
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clr_jax import _validation as v
from clr_jax._static import StaticFn

__all__ = [
    "Schedule",
    "cosine_restarts",
    "cyclical",
    "cyclical_momentum",
    "exp_range",
    "lr_sweep",
    "one_cycle",
    "one_cycle_momentum",
    "schedule_from_dict",
    "step_size_for",
    "triangular",
    "triangular2",
]

WindowName = Literal["triangular", "welch", "hann"]
Window = WindowName | Callable[[jax.Array], jax.Array]
Bound = Any  # a non-negative number, a 0-d array, or a schedule count -> value

_WINDOWS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "triangular": lambda h: h,
    "welch": lambda h: 1.0 - (1.0 - h) ** 2,
    "hann": lambda h: 0.5 - 0.5 * jnp.cos(jnp.pi * h),
}

_TABLE_MIN, _TABLE_MAX = 64, 4096  # restart-table lengths (powers of two)
_ALL_HEIGHTS = 2**16  # check every height of cycles up to this long
_EDGE = 4096  # heights checked at each end of a half-cycle
_DENSE = 4096  # cycles / counts probed one by one before the geometric grid


# ---------------------------------------------------------------------------
# Frozen pytree values
# ---------------------------------------------------------------------------


def _is_foreign(value: Any) -> bool:
    """A user's callable: static aux data, not a pytree child."""
    return callable(value) and not isinstance(value, _Frozen)


def _is_tracer(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _same_leaf(a: Any, b: Any) -> bool:
    if _is_tracer(a) or _is_tracer(b):
        return a is b
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _leaf_key(leaf: Any) -> Any:
    if _is_tracer(leaf):
        return ("traced", id(leaf))
    arr = np.asarray(leaf)
    return arr.shape, tuple(arr.ravel().tolist())


def _restore(cls: type, values: tuple) -> _Frozen:
    """Unpickles without re-running the checks (the values were checked)."""
    return cls._make(**dict(zip(cls._fields + cls._static_fields, values, strict=True)))


def _check_picklable(owner: _Frozen, name: str, fn: Callable) -> None:
    try:
        pickle.dumps(fn)
    except Exception as err:
        raise pickle.PicklingError(
            f"cannot pickle {owner!r}: its `{name}` ({_format(fn)}) cannot be "
            f"pickled by the standard library ({err}). Pass a module-level function "
            "(or a functools.partial of one) instead of a lambda or a local "
            "function."
        ) from err


class _Frozen:
    """An immutable pytree with value equality and standard pickling.

    ``_fields`` are children (numbers, arrays, nested values; a foreign
    callable in one of them moves to the static aux data), ``_static_fields``
    are aux data. ``_make`` sets the fields without any check: construction
    checks live in the public functions, and unflattening must not re-run
    them on tracers.
    """

    __slots__ = ("__weakref__",)  # jax.jit keeps weak references to callables
    _fields: ClassVar[tuple[str, ...]] = ()
    _static_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_with_keys(
            cls, cls._flatten_with_keys, cls._unflatten, cls._flatten
        )

    @classmethod
    def _make(cls, **values):
        obj = object.__new__(cls)
        for name in cls._fields + cls._static_fields:
            object.__setattr__(obj, name, values[name])
        return obj

    def _flatten(self):
        children, foreign = [], []
        for name in self._fields:
            value = getattr(self, name)
            children.append(None if _is_foreign(value) else value)
            foreign.append(StaticFn(value) if _is_foreign(value) else None)
        static = tuple(
            StaticFn(x) if callable(x) else x
            for x in (getattr(self, name) for name in self._static_fields)
        )
        return children, (static, tuple(foreign))

    def _flatten_with_keys(self):
        children, aux = self._flatten()
        keys = [jax.tree_util.GetAttrKey(name) for name in self._fields]
        return list(zip(keys, children, strict=True)), aux

    @classmethod
    def _unflatten(cls, aux, children):
        static, foreign = aux
        values = {
            name: child if fn is None else fn.fn
            for name, child, fn in zip(cls._fields, children, foreign, strict=True)
        }
        for name, x in zip(cls._static_fields, static, strict=True):
            values[name] = x.fn if isinstance(x, StaticFn) else x
        return cls._make(**values)

    def __setattr__(self, name, value):
        raise AttributeError(
            f"{type(self).__name__} is immutable; build a new one (`.replace(...)`)."
        )

    __delattr__ = __setattr__

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        leaves, tree = jax.tree.flatten(self)
        other_leaves, other_tree = jax.tree.flatten(other)
        return tree == other_tree and all(map(_same_leaf, leaves, other_leaves))

    def __hash__(self):
        leaves, tree = jax.tree.flatten(self)
        return hash((tree, tuple(map(_leaf_key, leaves))))

    def __reduce__(self):
        names = self._fields + self._static_fields
        values = tuple(getattr(self, name) for name in names)
        for name, value in zip(names, values, strict=True):
            if _is_foreign(value):
                _check_picklable(self, name, value)
        return _restore, (type(self), values)

    def __repr__(self):
        fields = ", ".join(
            f"{n}={_format(getattr(self, n))}"
            for n in self._fields + self._static_fields
        )
        return f"{type(self).__name__}({fields})"


class Schedule(_Frozen):
    """A learning-rate (or momentum) schedule: a frozen ``count -> value``.

    Every constructor of this module returns one. It is an ``optax.Schedule``
    (pass it wherever Optax takes one) and a pytree whose numeric
    hyperparameters are leaves; see the module docstring for the count
    convention, what is static, and when a new trace is needed.

    Examples:
      >>> import json, pickle, clr_jax
      >>> sched = clr_jax.triangular(1e-3, 6e-3, 2000)
      >>> sched
      triangular(base_lr=0.001, max_lr=0.006, step_size=2000)
      >>> sched == clr_jax.triangular(0.001, 0.006, step_size=2000)
      True
      >>> pickle.loads(pickle.dumps(sched)) == sched
      True
      >>> config = json.dumps(sched.to_dict())
      >>> clr_jax.schedule_from_dict(json.loads(config)) == sched
      True
      >>> sched.replace(max_lr=0.01)
      triangular(base_lr=0.001, max_lr=0.01, step_size=2000)
    """

    __slots__ = ()
    name: str  # the public constructor; a static field of every subclass

    def __call__(self, count) -> jax.Array:
        count = _as_count(count)
        if _is_tracer(count) or v.is_traced(self):
            return self._value(count)  # inside the caller's trace: inline
        return _evaluate(self, count)

    def _value(self, count: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _arguments(self) -> dict[str, Any]:
        """The public constructor's arguments, every one, in order."""
        raise NotImplementedError

    def __repr__(self):
        defaults = _defaults(self.name)
        shown = (
            f"{key}={_format(value)}"
            for key, value in self._arguments().items()
            if not _is_default(value, defaults[key])
        )
        return f"{self.name}({', '.join(shown)})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able config: ``{"schedule": name, **arguments}``.

        Raises:
          TypeError: when an argument is a callable other than a clr_jax
            schedule, a traced value, or a batch of values.
        """
        arguments = self._arguments().items()
        return {"schedule": self.name} | {k: _to_json(k, x) for k, x in arguments}

    def replace(self, **changes) -> Schedule:
        """The same call with some arguments changed, checked again."""
        return _CONSTRUCTORS[self.name](**(self._arguments() | changes))


@jax.jit
def _evaluate(schedule: Schedule, count: jax.Array) -> jax.Array:
    """An eager call as one compiled program, once per structure and shape."""
    return schedule._value(count)


def schedule_from_dict(config: Mapping[str, Any]) -> Schedule:
    """Builds the schedule described by ``config`` (from :meth:`Schedule.to_dict`).

    Args:
      config: ``{"schedule": name, **arguments}``; a nested config stands for
        a bound that is itself a schedule.

    Returns:
      A :class:`Schedule`, checked as its constructor checks it.

    Raises:
      TypeError: for a ``config`` that is not a mapping with a ``'schedule'``
        key, or an argument the constructor does not take.
      ValueError: for an unknown schedule name or a bad argument value.

    Examples:
      >>> import clr_jax
      >>> clr_jax.schedule_from_dict(
      ...     {"schedule": "one_cycle", "max_lr": 0.1, "total_steps": 1000})
      one_cycle(max_lr=0.1, total_steps=1000)
    """
    if not isinstance(config, Mapping) or "schedule" not in config:
        raise TypeError(
            "`config` must be a mapping with a 'schedule' key (from "
            f"Schedule.to_dict()); got {config!r}."
        )
    arguments = dict(config)
    name = arguments.pop("schedule")
    if name not in _CONSTRUCTORS:
        v.fail("config['schedule']", f"one of {tuple(_CONSTRUCTORS)}", name)
    for key, value in arguments.items():
        if isinstance(value, Mapping):
            arguments[key] = schedule_from_dict(value)
    return _CONSTRUCTORS[name](**arguments)


@functools.cache
def _defaults(name: str) -> dict[str, Any]:
    parameters = inspect.signature(_CONSTRUCTORS[name]).parameters.values()
    return {p.name: p.default for p in parameters}


def _is_default(value: Any, default: Any) -> bool:
    if default is inspect.Parameter.empty or callable(value) or _is_tracer(value):
        return False
    if default is None or isinstance(default, str | bool):
        return value is default or (type(value) is type(default) and value == default)
    return np.ndim(value) == 0 and bool(np.asarray(value) == default)


def _format(value: Any) -> str:
    """A value as it would be written in the call."""
    if isinstance(value, np.ndarray | np.generic | jax.Array) and not _is_tracer(value):
        arr = np.asarray(value)  # NumPy scalars too: 0.1, not np.float64(0.1)
        return str(arr[()]) if arr.ndim == 0 else np.array2string(arr, separator=", ")
    if _is_foreign(value):
        return getattr(value, "__qualname__", None) or repr(value)
    return repr(value)


def _to_json(key: str, value: Any) -> Any:
    if isinstance(value, Schedule):
        return value.to_dict()
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if _is_foreign(value):
        raise TypeError(
            f"`{key}` is the callable {_format(value)}, which a config cannot "
            "hold; only numbers and clr_jax schedules can be written."
        )
    if _is_tracer(value) or np.ndim(value) != 0:
        raise TypeError(
            f"`{key}` must be one concrete number to be written to a config; got "
            f"{_format(value)}."
        )
    return np.asarray(value).item()


# ---------------------------------------------------------------------------
# Counts and hyperparameters
# ---------------------------------------------------------------------------


def _check_count_dtype(dtype) -> None:
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(
            "`count` must be an integer (the number of updates applied); got "
            f"dtype {dtype}."
        )


def _check_count_max(counts: np.ndarray) -> None:
    if counts.size and counts.max() > v.INT32_MAX:
        v.fail("count", f"<= 2**31 - 1 ({v.INT32_MAX})", int(counts.max()))


def _as_count(count) -> jax.Array:
    """``count`` as int32 in [0, 2**31 - 1] (the module docstring's rules)."""
    if isinstance(count, jax.Array):
        _check_count_dtype(count.dtype)
        wide = count.dtype.itemsize > 4 or count.dtype == np.uint32
        if wide and not _is_tracer(count):
            _check_count_max(np.asarray(count))
        if count.dtype.itemsize < 4:
            count = count.astype(jnp.int32)
        elif count.dtype != jnp.int32:
            limits = np.asarray([0, v.INT32_MAX], count.dtype)
            return jnp.clip(count, limits[0], limits[1]).astype(jnp.int32)
        return jnp.maximum(count, 0)
    counts = np.asarray(count)
    _check_count_dtype(counts.dtype)
    _check_count_max(counts)
    return jnp.asarray(np.clip(counts, 0, v.INT32_MAX).astype(np.int32))


def _float_dtype(*values) -> np.dtype:
    """float32 (float64 under x64), or wider if a hyperparameter asks for it."""
    return jnp.promote_types(jnp.result_type(*values, float), jnp.float32)


def _in_dtype(value, dtype) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return np.asarray(value).astype(dtype)


def _real(name, value, low=None, high=None, *, open_low=False, open_high=False):
    """A real hyperparameter, finite and in range after rounding to its dtype.

    Returns the value (a Python int as a float, so that ``1`` and ``1.0`` give
    the same pytree leaf type); traced values come back unchecked.
    """
    v.check_scalar(name, value)
    if _is_tracer(value):
        return value
    dtype = _float_dtype(value)
    cast = _in_dtype(value, dtype)
    note = "" if cast == np.asarray(value) else f" ({value!r} is {cast} in {dtype})"
    if not np.isfinite(cast):
        v.fail(name, f"finite in {dtype}, the dtype it is computed in{note}", value)
    too_low = low is not None and (cast <= low if open_low else cast < low)
    too_high = high is not None and (cast >= high if open_high else cast > high)
    if too_low or too_high:
        v.fail(name, _range_rule(low, high, open_low, open_high) + note, value)
    return float(value) if isinstance(value, int) else value


def _range_rule(low, high, open_low, open_high) -> str:
    if high is None:
        if low == 0:
            return "positive" if open_low else "non-negative"
        return f"{'>' if open_low else '>='} {low}"
    return f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"


def _steps(name: str, value, minimum: int = 1):
    v.check_scalar(name, value)
    return v.check_step_count(name, value, minimum=minimum)


_PROBE_COUNTS = np.unique(
    np.concatenate(
        [np.arange(_DENSE + 1), np.geomspace(_DENSE, v.INT32_MAX, 256).astype(np.int64)]
    )
).astype(np.int32)


def _probe(name: str, fn: Callable, inputs: np.ndarray, described: str):
    """``fn`` on ``inputs`` as float64, or ``None`` when the output is traced."""
    try:
        out = fn(jnp.asarray(inputs))
        if _is_tracer(out) or v.is_traced(out):
            return None
        out = np.asarray(out, np.float64)
    except Exception as err:  # a broken callable deserves a clear message
        raise ValueError(
            f"`{name}` must accept an array of {described} and return numbers; "
            f"calling it raised {err!r}."
        ) from err
    if out.shape not in ((), inputs.shape):
        raise ValueError(
            f"`{name}` must return one value per input; got shape {out.shape} for "
            f"{described} of shape {inputs.shape}."
        )
    return np.broadcast_to(out, inputs.shape)


def _check_probed(name, out, inputs, low, high, described, at) -> None:
    """Every probed output finite and in [low, high]; else name the first."""
    if out is None:
        return
    bad = ~np.isfinite(out) | (out < low) | (out > high)
    if bad.any():
        rule = f"[{low:g}, {high:g}]" if high < np.inf else f"finite values >= {low:g}"
        raise ValueError(
            f"`{name}` must map {described} into {rule}; got {float(out[bad][0])!r} "
            f"at {at}={inputs[bad][0]!s}."
        )


def _bound(name: str, value, low=0.0, *, positive=False):
    """A rate that may also be a schedule ``count -> value`` (composition).

    ``low`` is a concrete floor: 0, or ``min_lr`` for cosine restarts.
    """
    if not callable(value):
        value = _real(name, value, 0.0, open_low=positive)
        if (
            low
            and not _is_tracer(value)
            and _in_dtype(value, _float_dtype(value)) < low
        ):
            v.fail(name, f">= min_lr ({low}), so that min_lr is a floor", value)
        return value
    out = _probe(name, value, _PROBE_COUNTS, "int32 counts")
    _check_probed(name, out, _PROBE_COUNTS, float(low), np.inf, "every count", "count")
    return value


def _at(bound, count: jax.Array):
    """A bound's value at ``count``: a number, or a schedule evaluated."""
    if isinstance(bound, Schedule):
        return bound._value(count)
    return jnp.asarray(bound(count)) if callable(bound) else bound


# ---------------------------------------------------------------------------
# The cyclical family (Smith 2017)
# ---------------------------------------------------------------------------


class _Halving(_Frozen):
    """``scale(cycle) = 2**-(cycle - 1)``: triangular2's amplitude."""

    __slots__ = ()

    def __call__(self, cycle: jax.Array) -> jax.Array:
        # A float exponent: a concrete integer one would retrace per cycle.
        return jnp.power(jnp.asarray(0.5, cycle.dtype), cycle - 1.0)


class _ExpDecay(_Frozen):
    """``scale(count) = gamma**count``, with ``log(gamma)`` taken in float64.

    float32(0.9999) alone is off by 1e-4 in its logarithm, which
    ``gamma**count`` amplifies; so the logarithm is a leaf of its own.
    """

    _fields = ("gamma", "log_gamma")
    __slots__ = _fields

    def __call__(self, count: jax.Array) -> jax.Array:
        return jnp.exp(count * jnp.asarray(self.log_gamma, count.dtype))


def _exp_decay(gamma) -> _ExpDecay:
    gamma = _real("gamma", gamma, 0.0, 1.0, open_low=True)
    log = jnp.log(gamma) if _is_tracer(gamma) else math.log(float(gamma))
    return _ExpDecay._make(gamma=gamma, log_gamma=log)


class _Cyclical(Schedule):
    _fields = ("base_lr", "max_lr", "step_size", "step_size_down", "scale_fn")
    _static_fields = ("window", "scale_mode", "name")
    __slots__ = _fields + _static_fields

    def _value(self, count):
        low, high = _at(self.base_lr, count), _at(self.max_lr, count)
        dtype = _float_dtype(low, high)
        cycle, h = _cycle_position(count, self.step_size, self.step_size_down, dtype)
        window = _WINDOWS[self.window] if isinstance(self.window, str) else self.window
        amplitude = (jnp.asarray(high, dtype) - low) * window(h)
        if self.scale_fn is not None:
            x = cycle if self.scale_mode == "cycle" else count
            amplitude = amplitude * self.scale_fn(x.astype(dtype))
        return jnp.asarray(low + amplitude, dtype)

    def _arguments(self):
        up, down = self.step_size, self.step_size_down
        same = _same_leaf(down, up)
        common = {"step_size": up, "step_size_down": None if same else down}
        common["window"] = self.window
        if self.name == "cyclical_momentum":
            mode, gamma = _scale_mode_name(self.scale_fn)
            bounds = {"base_momentum": self.max_lr, "max_momentum": self.base_lr}
            return bounds | common | {"mode": mode, "gamma": gamma}
        bounds = {"base_lr": self.base_lr, "max_lr": self.max_lr}
        if self.name == "exp_range":
            return bounds | {"step_size": up, "gamma": self.scale_fn.gamma} | common
        if self.name == "cyclical":
            scale = {"scale_fn": self.scale_fn, "scale_mode": self.scale_mode}
            return bounds | common | scale
        return bounds | common


def _scale_mode_name(scale_fn) -> tuple[str, Any]:
    if isinstance(scale_fn, _ExpDecay):
        return "exp_range", scale_fn.gamma
    return ("triangular2" if isinstance(scale_fn, _Halving) else "triangular"), 1.0


def _cycle_position(count, step_up, step_down, dtype):
    """Returns ``(cycle, h)``: the 1-based cycle and the height in [0, 1].

    ``h`` rises linearly from 0 to 1 over ``step_up`` updates and falls back
    over ``step_down``. All arithmetic before the final division is integer.
    """
    total = step_up + step_down
    cycle_index = count // total
    pos = count - cycle_index * total
    rising = pos <= step_up
    h = jnp.where(
        rising,
        pos.astype(dtype) / jnp.asarray(step_up, dtype),
        (total - pos).astype(dtype) / jnp.asarray(step_down, dtype),
    )
    return cycle_index + 1, h


def _half_cycle_heights(steps, dtype) -> np.ndarray:
    """The heights ``k / steps`` one half of a cycle uses, or a dense sample."""
    if _is_tracer(steps):
        return np.linspace(0.0, 1.0, _ALL_HEIGHTS + 1, dtype=dtype)
    if steps <= _ALL_HEIGHTS:
        k = np.arange(steps + 1)
    else:
        edges = np.r_[0:_EDGE, steps - _EDGE : steps + 1]
        k = np.union1d(edges, np.arange(0, steps + 1, steps // _ALL_HEIGHTS))
    return k.astype(dtype) / np.asarray(steps, dtype)


def _check_window(window, step_up, step_down) -> None:
    if isinstance(window, str) or not callable(window):
        v.check_choice("window", window, tuple(_WINDOWS))
        return
    dtype = _float_dtype()
    heights = np.union1d(
        _half_cycle_heights(step_up, dtype), _half_cycle_heights(step_down, dtype)
    )
    out = _probe("window", window, heights, "heights in [0, 1]")
    _check_probed("window", out, heights, 0.0, 1.0, "heights in [0, 1]", "h")


def _check_scale_fn(scale_fn, scale_mode) -> None:
    if isinstance(scale_fn, _Halving | _ExpDecay):
        return
    v.check_callable("scale_fn", scale_fn)
    first = 1 if scale_mode == "cycle" else 0
    inputs = np.maximum(_PROBE_COUNTS, first).astype(_float_dtype())
    at = "cycle" if scale_mode == "cycle" else "count"
    what = f"{at} numbers (floats)"
    out = _probe("scale_fn", scale_fn, inputs, what)
    _check_probed("scale_fn", out, inputs, 0.0, 1.0, what, at)


def _cyclical(name, base_lr, max_lr, step_size, step_size_down, window, scale, mode):
    """The general cyclical value; every public cyclical constructor calls it."""
    base_lr, max_lr = _bound("base_lr", base_lr), _bound("max_lr", max_lr)
    step_up = _steps("step_size", step_size)
    step_down = (
        step_up if step_size_down is None else _steps("step_size_down", step_size_down)
    )
    if not v.is_traced((step_up, step_down)) and step_up + step_down > v.INT32_MAX:
        raise ValueError(
            "`step_size` + `step_size_down` must be <= 2**31 - 1 (one cycle "
            f"must fit in int32); got {step_up} + {step_down}."
        )
    _check_window(window, step_up, step_down)
    v.check_choice("scale_mode", mode, ("cycle", "iterations"))
    if scale is not None:
        _check_scale_fn(scale, mode)
    return _Cyclical._make(
        base_lr=base_lr,
        max_lr=max_lr,
        step_size=step_up,
        step_size_down=step_down,
        scale_fn=scale,
        window=window,
        scale_mode=mode,
        name=name,
    )


def cyclical(
    base_lr: Bound,
    max_lr: Bound,
    step_size,
    *,
    step_size_down=None,
    window: Window = "triangular",
    scale_fn: Callable[[jax.Array], jax.Array] | None = None,
    scale_mode: Literal["cycle", "iterations"] = "cycle",
) -> Schedule:
    r"""General cyclical learning rate (Smith, 2017).

    The rate moves between ``base_lr`` and ``max_lr``: it rises for
    ``step_size`` updates, falls for ``step_size_down`` updates, and repeats.
    With ``c`` the 1-based cycle, ``p`` the position inside the cycle and
    ``h`` the height along the rise or fall,

    .. math::

       h = p / s_{up} \text{ if } p \le s_{up}
           \text{ else } (s_{up} + s_{down} - p) / s_{down}

       lr = base(t) + (max(t) - base(t)) \cdot w(h) \cdot scale\_fn(x)

    where ``w`` is the window, ``x`` is ``c`` (``scale_mode='cycle'``) or
    ``count`` (``'iterations'``), and ``base(t)``, ``max(t)`` are the bounds,
    constant or schedules evaluated at the same count. ``base_lr > max_lr``
    gives the inverted wave (see :func:`cyclical_momentum`). Counts follow
    the module's count convention; this equals PyTorch
    ``torch.optim.lr_scheduler.CyclicLR(scale_fn=..., scale_mode=...)``.

    Args:
      base_lr: lower bound, the value at ``count = 0``: a non-negative
        number or a schedule ``count -> value`` (composition).
      max_lr: upper bound, reached at ``count = step_size``; same types.
      step_size: updates in the rising half-cycle, a positive integer.
      step_size_down: updates in the falling half; defaults to ``step_size``.
      window: ``'triangular'`` (linear), ``'welch'`` (parabolic,
        ``1 - (1 - h)**2``), ``'hann'`` (sinusoidal, ``(1 - cos(pi h)) / 2``),
        or a callable mapping an array of heights in [0, 1] into [0, 1].
      scale_fn: amplitude scale, mapping the cycle number or the count (as
        floats) into [0, 1]; ``None`` means 1 (constant amplitude).
      scale_mode: what ``scale_fn`` receives, ``'cycle'`` or ``'iterations'``.

    Returns:
      A :class:`Schedule`.

    Raises:
      ValueError: for a negative or non-finite bound, a non-positive or
        non-integer step size, a cycle longer than ``2**31 - 1``, an unknown
        ``window`` or ``scale_mode``, or a callable failing its probe (see the
        module docstring).
      TypeError: for a hyperparameter that is not a number or a 0-d array.

    Examples:
      >>> import clr_jax
      >>> sched = clr_jax.cyclical(0.001, 0.006, 4, window="hann")
      >>> [round(float(sched(t)), 6) for t in range(0, 9, 2)]
      [0.001, 0.0035, 0.006, 0.0035, 0.001]

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
      https://arxiv.org/abs/1506.01186.
    """
    return _cyclical(
        "cyclical", base_lr, max_lr, step_size, step_size_down, window, scale_fn,
        scale_mode,
    )  # fmt: skip


def triangular(
    base_lr: Bound,
    max_lr: Bound,
    step_size,
    *,
    step_size_down=None,
    window: Window = "triangular",
) -> Schedule:
    r"""Cyclical rate with constant amplitude (Smith's ``triangular`` policy).

    .. math:: lr = base(t) + (max(t) - base(t)) \cdot w(h)

    with ``h`` the height along the current rise or fall (see
    :func:`cyclical`). Counts follow the module's count convention; this
    equals PyTorch ``CyclicLR(mode='triangular')``. A bound may be a
    schedule: ``triangular(1e-3, optax.cosine_decay_schedule(6e-3, 10_000),
    2000)`` is a cycle whose peak decays.

    Args:
      base_lr: lower bound, the value at ``count = 0`` (a number or a
        schedule).
      max_lr: upper bound, reached at ``count = step_size`` (a number or a
        schedule).
      step_size: updates per half-cycle.
      step_size_down: updates in the falling half; defaults to ``step_size``.
      window: ``'triangular'``, ``'welch'``, ``'hann'`` or a callable.

    Returns:
      A :class:`Schedule`.

    Raises:
      ValueError, TypeError: as :func:`cyclical`.

    Examples:
      >>> import clr_jax, optax
      >>> sched = clr_jax.triangular(0.001, 0.006, step_size=2000)
      >>> [round(float(sched(t)), 6) for t in (0, 1000, 2000, 3000, 4000)]
      [0.001, 0.0035, 0.006, 0.0035, 0.001]
      >>> opt = optax.sgd(sched)  # the whole integration
      >>> decaying = clr_jax.triangular(
      ...     0.001, optax.cosine_decay_schedule(0.006, 10_000), 2000)
      >>> [round(float(decaying(t)), 6) for t in (2000, 6000)]
      [0.005427, 0.002073]

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
      https://arxiv.org/abs/1506.01186.
    """
    return _cyclical(
        "triangular", base_lr, max_lr, step_size, step_size_down, window, None,
        "cycle",
    )  # fmt: skip


def triangular2(
    base_lr: Bound,
    max_lr: Bound,
    step_size,
    *,
    step_size_down=None,
    window: Window = "triangular",
) -> Schedule:
    r"""Cyclical rate whose amplitude halves every cycle (``triangular2``).

    .. math:: lr = base(t) + (max(t) - base(t)) \cdot w(h) / 2^{c - 1}

    with ``c`` the 1-based cycle number. Counts follow the module's count
    convention; this equals PyTorch ``CyclicLR(mode='triangular2')``.

    Args:
      base_lr: lower bound (a number or a schedule).
      max_lr: peak of the first cycle (a number or a schedule).
      step_size: updates per half-cycle.
      step_size_down: updates in the falling half; defaults to ``step_size``.
      window: ``'triangular'``, ``'welch'``, ``'hann'`` or a callable.

    Returns:
      A :class:`Schedule`.

    Raises:
      ValueError, TypeError: as :func:`cyclical`.

    Examples:
      >>> import clr_jax
      >>> sched = clr_jax.triangular2(0.0, 1.0, step_size=10)
      >>> [float(sched(t)) for t in (10, 30, 50)]
      [1.0, 0.5, 0.25]

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
      https://arxiv.org/abs/1506.01186.
    """
    return _cyclical(
        "triangular2", base_lr, max_lr, step_size, step_size_down, window,
        _Halving._make(), "cycle",
    )  # fmt: skip


def exp_range(
    base_lr: Bound,
    max_lr: Bound,
    step_size,
    gamma,
    *,
    step_size_down=None,
    window: Window = "triangular",
) -> Schedule:
    r"""Cyclical rate whose amplitude decays as ``gamma**count`` (``exp_range``).

    .. math:: lr = base(t) + (max(t) - base(t)) \cdot w(h) \cdot \gamma^{count}

    Only the amplitude decays; ``base_lr`` stays. ``count`` is the total
    number of updates, as in PyTorch and TF-Addons. Counts follow the
    module's count convention; this equals PyTorch
    ``CyclicLR(mode='exp_range')``.

    Args:
      base_lr: lower bound (a number or a schedule).
      max_lr: upper bound before decay (a number or a schedule).
      step_size: updates per half-cycle.
      gamma: decay per update, in (0, 1].
      step_size_down: updates in the falling half; defaults to ``step_size``.
      window: ``'triangular'``, ``'welch'``, ``'hann'`` or a callable.

    Returns:
      A :class:`Schedule`.

    Raises:
      ValueError, TypeError: as :func:`cyclical`, and for ``gamma`` outside
        (0, 1] in the dtype used.

    Examples:
      >>> import clr_jax
      >>> sched = clr_jax.exp_range(0.0, 1.0, step_size=10, gamma=0.9)
      >>> round(float(sched(10)), 6)  # 0.9**10
      0.348678

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
      https://arxiv.org/abs/1506.01186.
    """
    return _cyclical(
        "exp_range", base_lr, max_lr, step_size, step_size_down, window,
        _exp_decay(gamma), "iterations",
    )  # fmt: skip


def cyclical_momentum(
    base_momentum,
    max_momentum,
    step_size,
    *,
    step_size_down=None,
    window: Window = "triangular",
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
    gamma=1.0,
) -> Schedule:
    r"""Momentum that cycles opposite to a cyclical learning rate.

    Momentum is ``max_momentum`` where the paired learning rate is at its
    lowest and ``base_momentum`` at its peak (Smith, 2018), with the same
    amplitude scale as the rate's ``mode``:

    .. math:: m = max\_m - (max\_m - base\_m) \cdot w(h) \cdot scale

    where ``scale`` is 1 (``'triangular'``), ``2^{-(c - 1)}``
    (``'triangular2'``) or ``\gamma^{count}`` (``'exp_range'``). Pair it with
    the rate built with the same ``step_size``/``step_size_down``/``window``/
    ``mode``. Counts follow the module's count convention; this equals the
    momentum of PyTorch ``CyclicLR(mode=..., gamma=..., cycle_momentum=True)``
    in each of the three modes.

    Args:
      base_momentum: momentum at the learning-rate peak, in [0, 1].
      max_momentum: momentum at the learning-rate minimum, in [0, 1].
      step_size: updates per half-cycle.
      step_size_down: updates in the falling half; defaults to ``step_size``.
      window: ``'triangular'``, ``'welch'``, ``'hann'`` or a callable.
      mode: the amplitude scale, as the paired rate's policy.
      gamma: decay per update for ``mode='exp_range'``, in (0, 1]; must stay 1
        in the other modes.

    Returns:
      A :class:`Schedule` of momentum values.

    Raises:
      ValueError, TypeError: as :func:`cyclical`, for momenta outside [0, 1],
        an unknown ``mode``, or a ``gamma`` that the mode does not use.

    Examples:
      >>> import clr_jax
      >>> mom = clr_jax.cyclical_momentum(0.85, 0.95, step_size=100)
      >>> [round(float(mom(t)), 6) for t in (0, 100, 200)]
      [0.95, 0.85, 0.95]
      >>> mom2 = clr_jax.cyclical_momentum(0.85, 0.95, 100, mode="triangular2")
      >>> round(float(mom2(300)), 6)  # second peak: half the dip
      0.9

    References:
      Smith, "A disciplined approach to neural network hyper-parameters: Part
      1", 2018, https://arxiv.org/abs/1803.09820.
    """
    base_momentum = _real("base_momentum", base_momentum, 0.0, 1.0)
    max_momentum = _real("max_momentum", max_momentum, 0.0, 1.0)
    v.check_choice("mode", mode, ("triangular", "triangular2", "exp_range"))
    if mode == "exp_range":
        scale, scale_mode = _exp_decay(gamma), "iterations"
    else:
        gamma = _real("gamma", gamma, 0.0, 1.0, open_low=True)
        if not _is_tracer(gamma) and gamma != 1.0:
            v.fail("gamma", "1.0 unless mode='exp_range' (only it decays)", gamma)
        scale = _Halving._make() if mode == "triangular2" else None
        scale_mode = "cycle"
    return _cyclical(
        "cyclical_momentum", max_momentum, base_momentum, step_size, step_size_down,
        window, scale, scale_mode,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# Cosine annealing with warm restarts (SGDR)
# ---------------------------------------------------------------------------


class _EqualCycles(_Frozen):
    """``cycle_mult == 1``: an integer modulus, exact for every count."""

    __slots__ = ()

    def locate(self, count, cycle_steps, dtype):
        index = count // cycle_steps
        pos = (count - index * cycle_steps).astype(dtype)
        return index.astype(dtype), pos, jnp.asarray(cycle_steps, dtype)


class _StartTable(_Frozen):
    """Exact starts of every cycle that begins below 2**31, found by search.

    Cycle ``i`` starts at ``S_i``; a count ``c`` is in cycle ``i`` iff
    ``ceil(S_i) <= c < ceil(S_{i+1})``, and its position is
    ``(c - floor(S_i)) - frac(S_i)``: integer arithmetic first. The arrays
    are padded to a power of two; ``last`` is the last real cycle.
    """

    _fields = ("thresholds", "floors", "offsets", "lengths", "last")
    __slots__ = _fields

    def locate(self, count, cycle_steps, dtype):
        index = jnp.searchsorted(self.thresholds, count, side="right") - 1
        index = jnp.minimum(index, self.last)
        pos = (count - jnp.asarray(self.floors)[index]).astype(dtype)
        pos = pos - jnp.asarray(self.offsets, dtype)[index]
        return index.astype(dtype), pos, jnp.asarray(self.lengths, dtype)[index]


class _GeometricStarts(_Frozen):
    """Cycle starts ``T0 (m**n - 1) / (m - 1)`` in floating point.

    For traced ``cycle_steps``/``cycle_mult``, and for multipliers so close to
    1 that the table would exceed 4096 cycles. ``m - 1`` and ``log(m)`` are
    leaves computed in float64 when concrete, so ``m = 1 + 1e-9`` is not
    rounded to 1. A position is accurate while a cycle is long compared with
    the float rounding of the count (``count * 2**-24`` in float32).
    """

    _fields = ("mult_minus_1", "log_mult")
    __slots__ = _fields

    def locate(self, count, cycle_steps, dtype):
        c, t0 = count.astype(dtype), jnp.asarray(cycle_steps, dtype)
        m1 = jnp.asarray(self.mult_minus_1, dtype)
        geometric = m1 != 0.0
        m1 = jnp.where(geometric, m1, 1.0)
        log_m = jnp.where(geometric, jnp.asarray(self.log_mult, dtype), math.log(2))

        def start(n):
            return jnp.where(geometric, t0 * jnp.expm1(n * log_m) / m1, t0 * n)

        guess = jnp.where(
            geometric, jnp.floor(jnp.log1p(c * m1 / t0) / log_m), jnp.floor(c / t0)
        )
        # One correction either way absorbs the rounding of the log; the few-ulp
        # slack puts an integer count that sits on a rounded start in the new cycle.
        slack = 1.0 - 8.0 * jnp.finfo(dtype).eps
        guess = jnp.where(c < start(guess) * slack, guess - 1.0, guess)
        guess = jnp.where(c >= start(guess + 1.0) * slack, guess + 1.0, guess)
        length = jnp.where(geometric, t0 * jnp.exp(guess * log_m), t0)
        return guess, jnp.maximum(c - start(guess), 0.0), length


def _start_table(cycle_steps: int, cycle_mult: float) -> _StartTable | None:
    """The table for concrete arguments, or ``None`` past 4096 cycles.

    Lengths are ``T0 * m * m * ...`` (repeated products) and starts their
    running sums, in float64: exact integers for an integer ``m``.
    """
    cycles = math.log1p(v.INT32_MAX * (cycle_mult - 1.0) / cycle_steps)
    cycles = math.floor(cycles / math.log(cycle_mult)) + 2
    if cycles > _TABLE_MAX:
        return None
    factors = np.full(cycles + 1, cycle_mult)
    factors[0] = cycle_steps
    lengths = np.cumprod(factors)
    starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    keep = starts <= v.INT32_MAX
    starts, lengths = starts[keep], lengths[keep]
    size = max(_TABLE_MIN, 1 << (len(starts) - 1).bit_length())

    def padded(x, dtype, fill=None):
        pad = x[-1] if fill is None else fill
        return np.concatenate([x, np.full(size - len(x), pad)]).astype(dtype)

    floors = np.floor(starts)
    return _StartTable._make(
        thresholds=padded(np.ceil(starts), np.int32, fill=v.INT32_MAX),
        floors=padded(floors, np.int32),
        offsets=padded(starts - floors, np.float64),
        lengths=padded(lengths, np.float64),
        last=len(starts) - 1,
    )


def _restart_starts(cycle_steps, cycle_mult) -> _Frozen:
    """How cycle starts are found: a modulus, a table, or floating point."""
    if not _is_tracer(cycle_mult) and float(cycle_mult) == 1.0:
        return _EqualCycles._make()
    if not v.is_traced((cycle_steps, cycle_mult)):
        table = _start_table(int(cycle_steps), float(cycle_mult))
        if table is not None:
            return table
        mult_minus_1 = float(cycle_mult) - 1.0
        return _GeometricStarts._make(
            mult_minus_1=mult_minus_1, log_mult=math.log1p(mult_minus_1)
        )
    return _GeometricStarts._make(
        mult_minus_1=cycle_mult - 1.0, log_mult=jnp.log(jnp.asarray(cycle_mult, float))
    )


class _CosineRestarts(Schedule):
    _fields = ("max_lr", "cycle_steps", "min_lr", "cycle_mult", "decay", "starts")
    _static_fields = ("name",)
    __slots__ = _fields + _static_fields

    def _value(self, count):
        peak = _at(self.max_lr, count)
        dtype = _float_dtype(peak, self.min_lr, self.decay, self.cycle_mult)
        index, pos, length = self.starts.locate(count, self.cycle_steps, dtype)
        decay = jnp.asarray(self.decay, dtype) ** index  # a float exponent
        amplitude = (jnp.asarray(peak, dtype) - self.min_lr) * decay
        # (1 + cos(pi x)) / 2 as cos^2(pi x / 2): accurate as the cycle ends.
        cosine = jnp.cos(0.5 * jnp.pi * pos / length) ** 2
        return jnp.asarray(self.min_lr + amplitude * cosine, dtype)

    def _arguments(self):
        names = ("max_lr", "cycle_steps", "min_lr", "cycle_mult", "decay")
        return {name: getattr(self, name) for name in names}


def cosine_restarts(
    max_lr: Bound, cycle_steps, *, min_lr=0.0, cycle_mult=1.0, decay=1.0
) -> Schedule:
    r"""Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017).

    Cycle ``i`` (0-based) lasts ``T_i = cycle_steps * cycle_mult**i`` updates;
    its amplitude above the floor ``min_lr`` is ``(max_lr - min_lr) *
    decay**i``. Inside it, with ``t`` updates since its start,

    .. math::

       lr = min\_lr + (max(t) - min\_lr) \, decay^i \, (1 + \cos(\pi t / T_i)) / 2

    so ``min_lr`` is a real floor: every value lies in ``[min_lr, max_lr]``.
    Non-integer ``cycle_mult`` places cycle ``i`` at the real-valued start
    ``cycle_steps * (cycle_mult**i - 1) / (cycle_mult - 1)``. One evaluation
    costs the same whatever the number of cycles (a modulus, or a binary
    search in a table of starts), unlike ``optax.sgdr_schedule``.

    Counts follow the module's count convention. For integer ``cycle_mult``
    and ``decay = 1`` this equals PyTorch ``CosineAnnealingWarmRestarts(T_0=
    cycle_steps, T_mult=cycle_mult, eta_min=min_lr)``. Keras
    ``CosineDecayRestarts(initial_learning_rate, first_decay_steps, t_mul,
    m_mul, alpha)`` is ``cosine_restarts(initial_learning_rate,
    first_decay_steps, cycle_mult=t_mul, decay=m_mul,
    min_lr=alpha * initial_learning_rate)``.

    Args:
      max_lr: peak of the first cycle: a number or a schedule, ``>= min_lr``.
      cycle_steps: length of the first cycle, a positive integer.
      min_lr: the floor, non-negative.
      cycle_mult: growth factor of cycle lengths, ``>= 1``.
      decay: factor applied to the amplitude at every restart, in (0, 1].

    Returns:
      A :class:`Schedule`.

    Raises:
      ValueError: for a negative or non-finite rate, ``max_lr < min_lr``, a
        non-positive or non-integer ``cycle_steps``, ``cycle_mult < 1`` or
        ``decay`` outside (0, 1].
      TypeError: for a hyperparameter that is not a number or a 0-d array.

    Examples:
      >>> import clr_jax
      >>> sched = clr_jax.cosine_restarts(1.0, 10, cycle_mult=2)
      >>> [round(float(sched(t)), 6) for t in (0, 5, 10, 20, 30)]
      [1.0, 0.5, 1.0, 0.5, 1.0]
      >>> floored = clr_jax.cosine_restarts(0.1, 7, min_lr=0.01, decay=0.5)
      >>> [round(float(floored(t)), 6) for t in (0, 7, 14, 56)]
      [0.1, 0.055, 0.0325, 0.010352]

    References:
      Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
      Restarts", ICLR 2017, https://arxiv.org/abs/1608.03983.
    """
    min_lr = _real("min_lr", min_lr, 0.0)
    max_lr = _bound("max_lr", max_lr, 0.0 if _is_tracer(min_lr) else min_lr)
    cycle_steps = _steps("cycle_steps", cycle_steps)
    cycle_mult = _real("cycle_mult", cycle_mult, 1.0)
    decay = _real("decay", decay, 0.0, 1.0, open_low=True)
    return _CosineRestarts._make(
        max_lr=max_lr,
        cycle_steps=cycle_steps,
        min_lr=min_lr,
        cycle_mult=cycle_mult,
        decay=decay,
        starts=_restart_starts(cycle_steps, cycle_mult),
        name="cosine_restarts",
    )


# ---------------------------------------------------------------------------
# One-cycle (Smith 2018) and its momentum partner
# ---------------------------------------------------------------------------


class _Phases(NamedTuple):
    """OneCycleLR's phase ends ``pct*T - 1, [2 pct T - 2,] T - 1``, split.

    ``phase_ends`` are the whole parts (int32) and ``phase_offsets`` the
    fractions in [0, 1), so a count is compared with an end in integers.
    """

    total_steps: Any
    pct_start: Any
    three_phase: bool
    phase_ends: Any
    phase_offsets: Any


def _phase_ends(total, pct, three_phase):
    if v.is_traced((total, pct)):  # floating point; exact when concrete
        warm = jnp.asarray(pct, _float_dtype(pct)) * total
        ends = [warm - 1.0, 2.0 * warm - 2.0][: 2 if three_phase else 1]
        ends = jnp.stack([*ends, jnp.asarray(total - 1.0, warm.dtype)])
        whole = jnp.floor(ends)
        return whole.astype(jnp.int32), ends - whole
    warm = Fraction(float(pct)) * int(total)
    ends = [*[warm - 1, 2 * warm - 2][: 2 if three_phase else 1], Fraction(total - 1)]
    whole = [math.floor(end) for end in ends]
    offsets = [float(end - w) for end, w in zip(ends, whole, strict=True)]
    return np.asarray(whole, np.int32), np.asarray(offsets, np.float64)


def _check_phases(total_steps, pct_start, anneal_strategy, three_phase) -> _Phases:
    total = _steps("total_steps", total_steps)
    pct = _real("pct_start", pct_start, 0.0, 1.0, open_low=True, open_high=True)
    v.check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
    three_phase = v.check_bool("three_phase", three_phase)
    if not v.is_traced((total, pct)):
        warmup = Fraction(float(pct)) * total
        if warmup <= 1:
            raise ValueError(
                "`pct_start` * `total_steps` must be > 1 so that the warm-up "
                f"phase lasts at least one update; got {pct_start} * {total} "
                f"= {float(warmup)}."
            )
        if three_phase and total - 2 * warmup + 1 <= 0:
            raise ValueError(
                "with `three_phase=True`, `pct_start` must leave room for the "
                f"final annihilation phase (pct_start < 0.5 + 1/(2 total_steps)); "
                f"got pct_start={pct_start}, total_steps={total}."
            )
    return _Phases(total, pct, three_phase, *_phase_ends(total, pct, three_phase))


def _anneal(values, count, phases, anneal_strategy, dtype):
    """Piecewise anneal through ``values`` between the phase ends."""
    ends, offsets = phases.phase_ends, jnp.asarray(phases.phase_offsets, dtype)
    step = jnp.minimum(count, phases.total_steps - 1)  # past the end: hold

    def phase(k):
        start, start_offset = (0, 0.0) if k == 0 else (ends[k - 1], offsets[k - 1])
        elapsed = (step - start).astype(dtype) - start_offset
        length = jnp.asarray(ends[k] - start, dtype) + (offsets[k] - start_offset)
        pct = elapsed / length
        if anneal_strategy == "cos":
            # cos^2 / sin^2 weights: no cancellation near either end.
            to_end = jnp.sin(0.5 * jnp.pi * pct) ** 2
            to_start = jnp.cos(0.5 * jnp.pi * pct) ** 2
        else:
            to_end, to_start = pct, 1.0 - pct
        return to_start * values[k] + to_end * values[k + 1]

    # PyTorch takes the first phase whose end is >= step, else the last.
    value = phase(len(values) - 2)
    for k in reversed(range(len(values) - 2)):
        value = jnp.where(step <= ends[k], phase(k), value)
    return jnp.asarray(value, dtype)


_PHASE_FIELDS = ("total_steps", "pct_start", "phase_ends", "phase_offsets")
_PHASE_STATIC = ("anneal_strategy", "three_phase", "name")


class _OneCycle(Schedule):
    _fields = ("max_lr", "div_factor", "final_div_factor", *_PHASE_FIELDS)
    _static_fields = _PHASE_STATIC
    __slots__ = _fields + _static_fields

    def _value(self, count):
        peak = _at(self.max_lr, count)
        dtype = _float_dtype(peak, self.pct_start, self.div_factor)
        initial = jnp.asarray(peak, dtype) / self.div_factor
        final = initial / self.final_div_factor
        values = [initial, peak, initial, final] if self.three_phase else [
            initial, peak, final
        ]  # fmt: skip
        return _anneal(values, count, self, self.anneal_strategy, dtype)

    def _arguments(self):
        names = ("max_lr", "total_steps", "pct_start", "anneal_strategy")
        names += ("div_factor", "final_div_factor", "three_phase")
        return {name: getattr(self, name) for name in names}


class _OneCycleMomentum(Schedule):
    _fields = ("base_momentum", "max_momentum", *_PHASE_FIELDS)
    _static_fields = _PHASE_STATIC
    __slots__ = _fields + _static_fields

    def _value(self, count):
        low, high = self.base_momentum, self.max_momentum
        dtype = _float_dtype(low, high, self.pct_start)
        values = [high, low, high, high] if self.three_phase else [high, low, high]
        return _anneal(values, count, self, self.anneal_strategy, dtype)

    def _arguments(self):
        names = ("total_steps", "base_momentum", "max_momentum", "pct_start")
        return {name: getattr(self, name) for name in names} | {
            "anneal_strategy": self.anneal_strategy,
            "three_phase": self.three_phase,
        }


def _check_peak_ratios(max_lr, div_factor, final_div_factor) -> None:
    """``max_lr / div_factor`` (the start) and the end must be finite floats."""
    if callable(max_lr) or v.is_traced((max_lr, div_factor, final_div_factor)):
        return
    dtype = _float_dtype(max_lr, div_factor, final_div_factor)
    with np.errstate(over="ignore", under="ignore"):
        initial = _in_dtype(max_lr, dtype) / _in_dtype(div_factor, dtype)
        final = initial / _in_dtype(final_div_factor, dtype)
    checks = (("div_factor", div_factor, initial),)
    checks += (("final_div_factor", final_div_factor, final),)
    for name, factor, rate in checks:
        if not np.isfinite(rate):
            rule = f"large enough that the rates stay finite in {dtype} ({rate} here)"
            v.fail(name, rule, factor)


def one_cycle(
    max_lr: Bound,
    total_steps,
    *,
    pct_start=0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    div_factor=25.0,
    final_div_factor=1e4,
    three_phase: bool = False,
) -> Schedule:
    r"""Smith's 1cycle policy with PyTorch ``OneCycleLR`` semantics.

    The rate warms up from ``initial = max_lr / div_factor`` to ``max_lr``
    over the first ``pct_start * total_steps - 1`` updates, then anneals to
    ``initial / final_div_factor`` at update ``total_steps - 1``. With
    ``three_phase=True`` it first returns symmetrically to ``initial`` and
    only then anneals to the minimum. Each phase interpolates with

    .. math::

       \text{cos: } end + (start - end)(1 + \cos(\pi p)) / 2, \qquad
       \text{linear: } start + (end - start) p

    where ``p`` is the fraction of the phase elapsed; phase ends are compared
    with the count in integer arithmetic. A schedule ``max_lr`` scales the
    whole curve: ``lr(t) = max_lr(t) * u(t)`` with ``u`` the one-cycle of
    peak 1. Counts follow the module's count convention; this equals PyTorch
    ``OneCycleLR`` after ``count`` calls of ``step()``. Counts past
    ``total_steps - 1`` hold the final value (PyTorch raises there).

    Args:
      max_lr: peak learning rate, positive (or a non-negative schedule).
      total_steps: number of updates in the cycle, a positive integer.
      pct_start: fraction of the cycle spent warming up, in (0, 1).
      anneal_strategy: ``'cos'`` or ``'linear'``.
      div_factor: ``max_lr / initial_lr``, positive.
      final_div_factor: ``initial_lr / min_lr``, positive.
      three_phase: use the symmetric three-phase variant (a bool).

    Returns:
      A :class:`Schedule`.

    Raises:
      ValueError: for a non-positive or non-finite rate or factor, rates that
        overflow the dtype, bad ``total_steps``/``pct_start``, a warm-up
        shorter than one update, or an unknown ``anneal_strategy``.
      TypeError: for a hyperparameter that is not a number or a 0-d array.

    Examples:
      >>> import clr_jax
      >>> sched = clr_jax.one_cycle(0.1, total_steps=100)
      >>> [round(float(sched(t)), 6) for t in (0, 29, 99)]
      [0.004, 0.1, 0.0]

    References:
      Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks
      Using Large Learning Rates", 2017, https://arxiv.org/abs/1708.07120.
    """
    max_lr = _bound("max_lr", max_lr, positive=True)
    div_factor = _real("div_factor", div_factor, 0.0, open_low=True)
    final_div_factor = _real("final_div_factor", final_div_factor, 0.0, open_low=True)
    _check_peak_ratios(max_lr, div_factor, final_div_factor)
    phases = _check_phases(total_steps, pct_start, anneal_strategy, three_phase)
    return _OneCycle._make(
        max_lr=max_lr,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        anneal_strategy=anneal_strategy,
        name="one_cycle",
        **phases._asdict(),
    )


def one_cycle_momentum(
    total_steps,
    *,
    base_momentum=0.85,
    max_momentum=0.95,
    pct_start=0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    three_phase: bool = False,
) -> Schedule:
    r"""The momentum partner of :func:`one_cycle` (``OneCycleLR(cycle_momentum)``).

    Momentum falls from ``max_momentum`` to ``base_momentum`` while the rate
    warms up, and rises back to ``max_momentum`` while it anneals (three-phase:
    back up during the second phase, then held at ``max_momentum``), using the
    same phase ends and interpolation as :func:`one_cycle`:

    .. math:: m = max\_m + (base\_m - max\_m) \, a(t)

    with ``a`` the anneal weight of :func:`one_cycle`'s warm-up phase (and its
    mirror afterwards). Counts follow the module's count convention; this
    equals PyTorch ``OneCycleLR``'s momentum after ``count`` calls of
    ``step()``.

    Args:
      total_steps: number of updates in the cycle.
      base_momentum: momentum at the learning-rate peak, in [0, 1].
      max_momentum: momentum at the start and end, in [0, 1].
      pct_start: fraction of the cycle spent warming up, in (0, 1).
      anneal_strategy: ``'cos'`` or ``'linear'``.
      three_phase: use the symmetric three-phase variant (a bool).

    Returns:
      A :class:`Schedule` of momentum values.

    Raises:
      ValueError, TypeError: as :func:`one_cycle`, and for momenta outside
        [0, 1].

    Examples:
      >>> import clr_jax
      >>> mom = clr_jax.one_cycle_momentum(100)
      >>> [round(float(mom(t)), 6) for t in (0, 29, 99)]
      [0.95, 0.85, 0.95]

    References:
      Smith, "A disciplined approach to neural network hyper-parameters: Part
      1", 2018, https://arxiv.org/abs/1803.09820.
    """
    base_momentum = _real("base_momentum", base_momentum, 0.0, 1.0)
    max_momentum = _real("max_momentum", max_momentum, 0.0, 1.0)
    phases = _check_phases(total_steps, pct_start, anneal_strategy, three_phase)
    return _OneCycleMomentum._make(
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        anneal_strategy=anneal_strategy,
        name="one_cycle_momentum",
        **phases._asdict(),
    )


# ---------------------------------------------------------------------------
# Range-test ramp and Smith's step-size rule
# ---------------------------------------------------------------------------


class _LrSweep(Schedule):
    _fields = ("start_lr", "end_lr", "num_steps")
    _static_fields = ("mode", "name")
    __slots__ = _fields + _static_fields

    def _value(self, count):
        dtype = _float_dtype(self.start_lr, self.end_lr)
        last = self.num_steps - 1
        t = jnp.minimum(count, last)
        frac = t.astype(dtype) / jnp.asarray(last, dtype)
        start = jnp.asarray(self.start_lr, dtype)
        end = jnp.asarray(self.end_lr, dtype)
        if self.mode == "exponential":
            # log(end) - log(start): end / start itself may overflow.
            value = start * jnp.exp(frac * (jnp.log(end) - jnp.log(start)))
        else:
            value = start + (end - start) * frac
        return jnp.where(t == last, end, value).astype(dtype)

    def _arguments(self):
        names = ("start_lr", "end_lr", "num_steps", "mode")
        return {name: getattr(self, name) for name in names}


def lr_sweep(
    start_lr,
    end_lr,
    num_steps,
    *,
    mode: Literal["exponential", "linear"] = "exponential",
) -> Schedule:
    r"""The learning-rate ramp of a range test.

    .. math::

       \text{exponential: } lr = start \cdot (end / start)^{t / (n - 1)},
       \qquad \text{linear: } lr = start + (end - start) \, t / (n - 1)

    with ``t = min(count, n - 1)``: the ramp starts at ``start_lr`` on the
    first update, reaches ``end_lr`` exactly at ``count == num_steps - 1`` and
    holds it afterwards. Counts follow the module's count convention; the
    PyTorch equivalents are torch-lr-finder's ``ExponentialLR``/``LinearLR``
    steps of ``LRFinder.range_test(step_mode=...)``.

    Args:
      start_lr: rate of the first update; for ``'exponential'`` a positive
        normal float in the dtype used (``>= 1.18e-38`` in float32), for
        ``'linear'`` non-negative.
      end_lr: rate of the last update, same rule.
      num_steps: number of updates in the sweep, at least 2.
      mode: ``'exponential'`` (fastai, torch-lr-finder) or ``'linear'``
        (Smith's paper).

    Returns:
      A :class:`Schedule`.

    Raises:
      ValueError: for ``num_steps < 2``, an unknown ``mode``, a non-finite
        or negative rate, or a rate that is not a positive normal float in
        exponential mode.
      TypeError: for a hyperparameter that is not a number or a 0-d array.

    Examples:
      >>> import clr_jax
      >>> sweep = clr_jax.lr_sweep(1e-4, 1.0, num_steps=5)
      >>> [round(float(sweep(t)), 6) for t in range(5)]
      [0.0001, 0.001, 0.01, 0.1, 1.0]
    """
    v.check_choice("mode", mode, ("exponential", "linear"))
    rates = {"start_lr": start_lr, "end_lr": end_lr}
    for name, value in rates.items():
        if mode == "linear":
            rates[name] = _real(name, value, 0.0)
            continue
        rates[name] = _real(name, value, 0.0, open_low=True)
        tiny = np.finfo(_float_dtype(value)).tiny
        if not _is_tracer(value) and _in_dtype(value, _float_dtype(value)) < tiny:
            rule = f"a normal float (>= {tiny}) in exponential mode (a finite log)"
            v.fail(name, rule, value)
    num_steps = _steps("num_steps", num_steps, minimum=2)
    return _LrSweep._make(**rates, num_steps=num_steps, mode=mode, name="lr_sweep")


def step_size_for(
    num_examples: int, batch_size: int, *, epochs: float = 4, drop_last: bool = False
) -> int:
    """Smith's rule for the half-cycle length: a few epochs of updates.

    ``step_size = round(epochs * iterations_per_epoch)``, with
    ``iterations_per_epoch = ceil(num_examples / batch_size)`` (``floor`` when
    ``drop_last``). Smith recommends ``epochs`` between 2 and 10; the default 4
    sits inside that range.

    Args:
      num_examples: training-set size, a positive integer.
      batch_size: examples per update, a positive integer.
      epochs: epochs per half-cycle, positive.
      drop_last: whether the last partial batch of an epoch is dropped (a
        bool).

    Returns:
      The half-cycle length in updates, a Python int ``>= 1``.

    Raises:
      ValueError: for non-positive or non-integer sizes, ``epochs <= 0``, a
        ``drop_last`` that is not a bool, or ``drop_last`` with
        ``batch_size > num_examples``.
      TypeError: for a size or ``epochs`` that is not a number.

    Examples:
      >>> import clr_jax
      >>> clr_jax.step_size_for(50_000, 100, epochs=4)  # CIFAR-10, Smith's setup
      2000
    """
    n = _steps("num_examples", num_examples)
    b = _steps("batch_size", batch_size)
    v.check_scalar("epochs", epochs)
    v.check_positive("epochs", epochs)
    drop_last = v.check_bool("drop_last", drop_last)
    per_epoch = n // b if drop_last else math.ceil(n / b)
    if per_epoch == 0:
        raise ValueError(
            "`batch_size` must be <= `num_examples` when `drop_last=True`; got "
            f"batch_size={b}, num_examples={n}."
        )
    return max(1, round(float(epochs) * per_epoch))


_CONSTRUCTORS: dict[str, Callable[..., Schedule]] = {
    "cyclical": cyclical,
    "triangular": triangular,
    "triangular2": triangular2,
    "exp_range": exp_range,
    "cyclical_momentum": cyclical_momentum,
    "cosine_restarts": cosine_restarts,
    "one_cycle": one_cycle,
    "one_cycle_momentum": one_cycle_momentum,
    "lr_sweep": lr_sweep,
}
