"""The host driver of the range test: checks, layout, progress, the result.

:func:`range_test_with_step` checks its arguments, lays the sweep out in
chunks and blocks (:class:`._feed.Plan`), runs the compiled chunk of
:mod:`._engine` over them, and assembles the :class:`RangeTestResult`:
the host form (NumPy curves) for concrete inputs, the device form (arrays,
``diverged_step`` ``int32`` with ``-1`` for never) inside a user's trace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from clr_jax import _loader, _progress, _sharding, schedules
from clr_jax import _validation as v
from clr_jax._static import StaticFn
from clr_jax._tree import Static, combine, is_array_like, leading_size, partition
from clr_jax.range_test import _engine, _feed
from clr_jax.range_test._result import RangeTestConfig, RangeTestResult

# The most steps between two looks at divergence: a many-sweep loop stops
# within this many steps of its last divergence, a one-sweep loop within this
# many of its own; each look costs about one small step.
_BLOCK = 10


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def check_sweep_args(start_lr, end_lr, num_steps, mode, beta, diverge_threshold):
    """The sweep's own arguments; returns ``(num_steps, rate schedule)``.

    Concrete values are checked (rates must be finite in float32, the
    dtype the sweep runs in); traced ones are taken as they are.
    """
    v.check_choice("mode", mode, ("exponential", "linear"))
    (v.check_positive if mode == "exponential" else v.check_non_negative)(
        "start_lr", start_lr
    )
    v.check_positive("end_lr", end_lr)
    v.check_concrete("num_steps", num_steps, "it sets the length of the sweep")
    num_steps = v.check_step_count("num_steps", num_steps, minimum=2)
    if not v.is_traced((start_lr, end_lr)) and float(end_lr) <= float(start_lr):
        v.fail(
            "end_lr", f"> `start_lr` ({start_lr}: a range test sweeps upwards)", end_lr
        )
    v.check_interval("beta", beta, 0.0, 1.0, closed_low=True, closed_high=False)
    if diverge_threshold is not None:
        v.check_finite("diverge_threshold", diverge_threshold)
        if not v.is_traced(diverge_threshold) and float(diverge_threshold) <= 1.0:
            v.fail(
                "diverge_threshold",
                "> 1 (a multiple of the best loss) or None",
                diverge_threshold,
            )
    return num_steps, schedules.lr_sweep(start_lr, end_lr, num_steps, mode=mode)


def _check_rates(lrs, num_steps: int, start_lr, end_lr) -> None:
    """Every concrete rate is a finite float32 number: rates finite in float64
    may not be, and neither may ``end_lr / start_lr`` (1e30 / 1e-30)."""
    rates = v.concrete(lrs)
    if rates is None or np.all(np.isfinite(rates[:num_steps])):
        return
    ratio = float(end_lr) / float(start_lr) if float(start_lr) > 0 else np.inf
    rule = (
        "such that every rate of the sweep is finite in float32, the dtype it "
        f"runs in (end_lr / start_lr = {ratio:.3g} overflows it)"
    )
    v.fail("end_lr", rule, end_lr)


def _check_validation(val_data, val_every, val_fn, num_steps: int) -> int | None:
    """``val_every`` as an int (default ``num_steps // 20``), or ``None``."""
    if val_data is None:
        if val_every is not None:
            v.fail("val_every", "None without `val_data`", val_every)
        return None
    if _loader.is_loader(val_data):
        raise TypeError(
            "`val_data` must be arrays with a leading example axis (held on the "
            f"device and evaluated inside the sweep); got a loader {val_data!r:.60}."
        )
    if val_fn is None:
        raise ValueError(
            "`val_fn` must be given with `val_data`: (state, batch) -> loss or "
            "(loss, metric)."
        )
    if val_every is None:
        return max(num_steps // 20, 1)
    every = v.check_step_count("val_every", val_every)
    if every > num_steps:
        v.fail("val_every", f"<= num_steps ({num_steps})", every)
    return every


def _sweep_count(keys, state, batched_state: bool) -> int | None:
    from_keys = keys.shape[0] if keys.ndim == 1 else None
    if not batched_state:
        return from_keys
    from_state = leading_size(state, "state", axis="sweep")
    if from_keys is not None and from_keys != from_state:
        raise ValueError(
            f"`key` must hold one key per sweep ({from_state}, the leading axis of "
            f"the batched state) or be a single key; got {from_keys} keys."
        )
    return from_state


@jax.jit
def _fresh_array() -> jax.Array:
    return jnp.zeros((), jnp.int32)


def in_trace(*values) -> bool:
    """Inside ``jit``/``vmap``/``grad``: a value is traced, or a fresh array is
    (inside a ``jit`` trace every new array is a tracer)."""
    return v.is_traced(values) or isinstance(_fresh_array(), jax.core.Tracer)


def _bar_wanted(progress, traced: bool) -> bool:
    if not traced:
        return _progress.wanted(progress)
    _progress.check_progress(progress)
    if progress:
        raise ValueError(
            "`progress` must be False or None inside jax.jit or jax.vmap (a "
            "progress bar lives on the host); got True."
        )
    return False


# ---------------------------------------------------------------------------
# The state: arrays are carried, everything else is static
# ---------------------------------------------------------------------------


def _as_array(leaf):
    if isinstance(leaf, int | float) and not isinstance(leaf, bool):
        return jnp.asarray(np.asarray(leaf))
    return leaf


def split_arrays(tree: Any) -> tuple[Any, Static]:
    """``(arrays, static)``: the leaves a jit argument can hold (Python numbers
    become arrays) and the rest (functions, strings, ...) as a :class:`Static`."""
    arrays, rest = partition(jax.tree.map(_as_array, tree), is_array_like)
    return arrays, Static(rest)


def _changed_leaf(old: Any, new: Any) -> str:
    paths = {jax.tree_util.keystr(p) for p, _ in _paths(old) ^ _paths(new)}
    return min(paths) if paths else "the tree structure"


def _paths(tree: Any) -> set:
    from clr_jax._static import fn_key

    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {(p, fn_key(leaf)) for p, leaf in flat}


@dataclasses.dataclass(frozen=True)
class _OnArrays:
    """A user function called on the whole state: the carried arrays with the
    static leaves filled back in. Equal when its parts are (a jit key)."""

    fn: StaticFn
    static: Static

    def full(self, arrays):
        return combine(arrays, self.static.tree)


class _Step(_OnArrays):
    def __call__(self, arrays, batch, lr):
        out = self.fn(self.full(arrays), batch, lr)
        if not isinstance(out, tuple) or len(out) not in (2, 3):
            raise ValueError(
                "`step_fn` must return (state, loss) or (state, loss, metric); got "
                f"{type(out).__name__} {out!r:.80}."
            )
        new_arrays, rest = partition(out[0], is_array_like)
        if Static(rest) != self.static:
            raise ValueError(
                "`step_fn` must return the state's non-array leaves (functions, "
                "strings, ...) unchanged, and arrays where it got arrays; the "
                f"state changed at {_changed_leaf(self.static.tree, rest)}."
            )
        return (new_arrays, *out[1:])


class _Evaluate(_OnArrays):
    def __call__(self, arrays, batch):
        return self.fn(self.full(arrays), batch)


# ---------------------------------------------------------------------------
# Layout and placement
# ---------------------------------------------------------------------------


def _layout(chunk_size, num_steps: int, chunked: bool, val_every) -> tuple[int, int]:
    """``(chunk, block)``: steps per compiled call, and per look at divergence.

    A chunk is a whole number of blocks (of ``val_every`` steps with
    validation data), so a sweep pads fewer steps than it has blocks.
    """
    if chunk_size is None:
        chunk = max(num_steps // 20, 1) if chunked else num_steps
    else:
        chunk = v.check_step_count("chunk_size", chunk_size)
        if chunk > num_steps:
            v.fail("chunk_size", f"<= num_steps ({num_steps})", chunk)
    block = val_every or _block_size(chunk)
    return -(-chunk // block) * block, block


def _block_size(chunk: int) -> int:
    """About ``_BLOCK`` steps: of the sizes from half to twice that, the one
    that pads ``chunk`` least, then the nearest to it."""
    if chunk <= _BLOCK:
        return chunk

    def cost(b):
        return -(-chunk // b) * b - chunk, abs(b - _BLOCK)

    return min(range(_BLOCK // 2, 2 * _BLOCK + 1), key=cost)


def _shardings(arrays, mesh, num_sweeps, batched_state):
    """``(carry shardings, one sweep's)``: the state keeps its placement."""
    given = _sharding.leaf_shardings(arrays, mesh)
    if num_sweeps is None:
        return given, given
    if batched_state:
        return given, _sharding.with_leading_axis(given, add=False)
    return _sharding.with_leading_axis(given, add=True), given


class _Sweep(NamedTuple):
    """Everything the compiled chunks need, prepared on the host."""

    fns: _engine.Fns
    config: _engine.Config
    carry: _engine.Carry
    feed: _feed.Feed
    val: Any
    knobs: tuple
    lrs: jax.Array
    static: Static
    val_every: int | None


# ---------------------------------------------------------------------------
# Running the chunks and assembling the result
# ---------------------------------------------------------------------------


def _run_chunks(sweep: _Sweep, bar, look: bool):
    """Runs the compiled chunk over every chunk; returns the final carry and
    the outputs of the chunks that ran. With ``look`` (concrete values) the
    host follows divergence, to update the bar and stop early."""
    carry, parts, previous = sweep.carry, [], None
    c = sweep.config.chunk_size
    for i, source in enumerate(sweep.feed.sources):
        carry, outs, scores = _engine.run_chunk(
            sweep.fns,
            sweep.config,
            carry,
            sweep.feed.data,
            sweep.val,
            sweep.knobs,
            np.int32(i),
            sweep.lrs,
            source,
        )
        parts.append((outs, scores))
        if not look:
            continue
        # Look at the chunk before this one: it is done (or nearly) by now, so
        # the host waits little and the device stays busy.
        if previous is not None and _report(previous, bar):
            break
        previous = (carry.diverged_step, c)
    if previous is not None:
        _report(previous, bar)
    return carry, parts


def _report(previous, bar) -> bool:
    """Updates the bar for a finished chunk; True when every sweep has diverged."""
    diverged_step, size = previous
    diverged = np.asarray(diverged_step) >= 0  # waits for that chunk
    bar.update(size)
    return bool(np.all(diverged))


def _joined(parts: list, length: int, xp) -> Any:
    """Chunk outputs joined along the step axis, cut (or NaN-padded, for
    chunks skipped after divergence) to ``length``."""
    if parts[0] is None:
        return None
    arr = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=-1)
    arr = arr[..., :length]
    missing = length - arr.shape[-1]
    if missing:
        pad = xp.full((*arr.shape[:-1], missing), xp.nan, arr.dtype)
        arr = xp.concatenate([arr, pad], axis=-1)
    return arr


def _val_steps(num_steps: int, every: int) -> np.ndarray:
    ends = np.arange(every, num_steps + every, every)
    return (np.minimum(ends, num_steps) - 1).astype(np.int32)


def _assemble(sweep: _Sweep, carry, parts, traced: bool) -> dict[str, Any]:
    """The result's data fields: device arrays when traced, else NumPy."""
    xp = jnp if traced else np
    host = (lambda x: x) if traced else (lambda x: None if x is None else np.asarray(x))
    n, k = sweep.config.num_steps, sweep.config.num_sweeps
    lead = () if k is None else (k,)
    outs = [jax.tree.map(host, o) for o, _ in parts]
    fields = {
        name: _joined([getattr(o, f) for o in outs], n, xp)
        for name, f in zip(_CURVE_NAMES, _engine.StepOut._fields, strict=True)
    }
    lrs = xp.asarray(host(sweep.lrs))[:n]
    fields["lrs"] = xp.array(xp.broadcast_to(lrs, (*lead, n)))  # writeable
    if sweep.val_every is not None:
        scores = [jax.tree.map(host, s) for _, s in parts]
        steps = _val_steps(n, sweep.val_every)
        m = len(steps)
        fields["val_steps"] = xp.array(xp.broadcast_to(xp.asarray(steps), (*lead, m)))
        fields["val_losses"] = _joined([s.loss for s in scores], m, xp)
        fields["val_metrics"] = _joined([s.metric for s in scores], m, xp)
    fields["final_state"] = combine(carry.state, sweep.static.tree)
    fields["diverged_step"] = carry.diverged_step if traced else _host_step(carry)
    return fields


_CURVE_NAMES = ("losses", "smoothed_losses", "metrics", "smoothed_metrics")


def _host_step(carry) -> Any:
    steps = np.asarray(carry.diverged_step)
    if steps.ndim:
        return tuple(int(s) if s >= 0 else None for s in steps)
    return int(steps) if steps >= 0 else None


def _plain(value: Any) -> Any:
    """A concrete number as a Python scalar; ``None`` for a traced value."""
    if value is None or v.is_traced(value):
        return None
    return np.asarray(value).item()


def _versions() -> tuple[tuple[str, str], ...]:
    import clr_jax

    return (
        ("clr_jax", clr_jax.__version__),
        ("jax", jax.__version__),
        ("numpy", np.__version__),
        ("optax", optax.__version__),
    )


# ---------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------


def _plan(args: dict, checked: dict) -> _feed.Plan:
    traced, num_steps = checked["traced"], checked["num_steps"]
    chunked = checked["show_bar"] or checked["form"] is _feed.DataForm.LOADER
    chunk, block = _layout(
        None if traced else args["chunk_size"],
        num_steps,
        chunked and not traced,
        checked["val_every"],
    )
    return _feed.Plan(num_steps, chunk, block, args["mesh"], checked["axis"], traced)


def _rates_and_knobs(args: dict, checked: dict, plan: _feed.Plan):
    """Every step's rate (checked first: that wait is short) and the EMA and
    threshold factors (NumPy scalars when concrete: no eager dispatch)."""
    lrs = _engine.sweep_lrs(checked["schedule"], padded=plan.padded)
    _check_rates(lrs, plan.num_steps, args["start_lr"], args["end_lr"])
    threshold = args["diverge_threshold"]
    xp = jnp if plan.traced else np
    knobs = (
        xp.asarray(args["beta"], np.float32),
        xp.asarray(0.0 if threshold is None else threshold, np.float32),
    )
    return lrs, knobs


def _placed_state(state, args: dict, mesh):
    """``(arrays, static)`` of the state, the arrays placed by ``state_sharding``."""
    arrays, static = split_arrays(state)
    if args["state_sharding"] is not None:
        wanted = _sharding.resolve_param_sharding(arrays, mesh, args["state_sharding"])
        arrays = _sharding.place_leaves(arrays, wanted)
    return arrays, static


def _prepare(step_fn, state, data, args: dict, checked: dict) -> _Sweep:
    """Checks the data and the state and lays the sweep out."""
    plan = _plan(args, checked)
    lrs, knobs = _rates_and_knobs(args, checked, plan)
    mesh, batched_state = args["mesh"], args["batched_state"]
    arrays, static = _placed_state(state, args, mesh)
    num_sweeps = _sweep_count(checked["keys"], arrays, batched_state)
    feed = _feed.make_feed(
        data,
        form=checked["form"],
        batch_size=args["batch_size"],
        keys=checked["keys"],
        plan=plan,
    )
    val = None
    if checked["val_every"] is not None:
        val = _feed.validation_feed(
            args["val_data"], val_batch_size=args["val_batch_size"], plan=plan
        )
    carry_shardings, sweep_shardings = _shardings(
        arrays, mesh, num_sweeps, batched_state
    )
    config = _engine.Config(
        num_steps=plan.num_steps,
        chunk_size=plan.chunk,
        block=plan.block,
        form=checked["form"],
        check_threshold=args["diverge_threshold"] is not None,
        num_sweeps=num_sweeps,
        source_batched=feed.source_batched,
        batch_sharding=None
        if mesh is None
        else _sharding.batch_sharding(mesh, plan.axis),
        state_shardings=sweep_shardings,
    )
    val_fn = args["val_fn"]
    fns = _engine.Fns(
        _Step(StaticFn(step_fn), static),
        None if val_fn is None else _Evaluate(StaticFn(val_fn), static),
    )
    carry = _engine.initial_carry(
        arrays,
        num_sweeps=num_sweeps,
        broadcast=num_sweeps is not None and not batched_state,
        shardings=carry_shardings,
    )
    return _Sweep(
        fns, config, carry, feed, val, knobs, lrs, static, checked["val_every"]
    )


def _check_args(step_fn, state, data, args: dict) -> dict:
    """Every argument check that needs no data; returns the checked values."""
    v.check_callable("step_fn", step_fn)
    v.check_callable("val_fn", args["val_fn"], optional=True)
    batched = v.check_bool("batched", args["batched"])
    v.check_bool("batched_state", args["batched_state"])
    num_steps, schedule = check_sweep_args(
        args["start_lr"],
        args["end_lr"],
        args["num_steps"],
        args["mode"],
        args["beta"],
        args["diverge_threshold"],
    )
    key = args["key"]
    keys = jax.random.key(0) if key is None else v.check_key(key, batched=True)
    form = _feed.form_of(data, batched)
    val_every = _check_validation(
        args["val_data"], args["val_every"], args["val_fn"], num_steps
    )
    traced = in_trace(
        state,
        None if form is _feed.DataForm.LOADER else data,
        keys,
        args["start_lr"],
        args["end_lr"],
        args["beta"],
        args["diverge_threshold"],
        args["val_data"],
    )
    return {
        "num_steps": num_steps,
        "schedule": schedule,
        "axis": _sharding.resolve_data_axis(args["mesh"], args["data_axis"]),
        "keys": keys,
        "traced": traced,
        "show_bar": _bar_wanted(args["progress"], traced),
        "form": form,
        "val_every": val_every,
    }


def _record(args: dict, num_steps: int, num_sweeps) -> RangeTestConfig:
    return RangeTestConfig(
        start_lr=_plain(args["start_lr"]),
        end_lr=_plain(args["end_lr"]),
        num_steps=num_steps,
        mode=args["mode"],
        beta=_plain(args["beta"]),
        diverge_threshold=_plain(args["diverge_threshold"]),
        batch_size=_plain(args["batch_size"]),
        num_sweeps=num_sweeps,
        versions=_versions(),
    )


def range_test_with_step(
    step_fn: Callable,
    state: Any,
    data: Any,
    *,
    batch_size: int | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 400,
    mode: Literal["exponential", "linear"] = "exponential",
    key: jax.Array | None = None,
    beta: float = 0.98,
    diverge_threshold: float | None = 4.0,
    batched: bool = False,
    batched_state: bool = False,
    progress: bool | None = None,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    data_axis: str | None = None,
    state_sharding: Any = None,
    val_data: Any = None,
    val_every: int | None = None,
    val_batch_size: int | None = None,
    val_fn: Callable | None = None,
) -> RangeTestResult:
    r"""LR range test of a custom training step, compiled as one device loop.

    The lower-level entry point, for steps that carry more than params and an
    optimizer state: BatchNorm statistics, dropout RNG, a Flax ``TrainState``
    or a split NNX model. :func:`range_test` is built on it. How the sweep
    runs, what is cached, the data forms, tracing under ``jit``/``vmap`` and
    multi-device use are described in :mod:`clr_jax.range_test`.

    At step ``t`` (0-based) the rate ``lr_t`` follows
    :func:`clr_jax.lr_sweep`; the step returns the loss ``l_t`` measured before
    its update. The smoothed loss is the bias-corrected EMA

    .. math::

       e_t = \beta e_{t-1} + (1 - \beta) l_t, \quad e_{-1} = 0, \qquad
       s_t = e_t / (1 - \beta^{t+1})

    (``beta = 0.98`` as in fastai; torch-lr-finder's ``smooth_f`` is
    ``1 - beta``). With ``b_t = min(s_0..s_t)`` the best smoothed loss, step
    ``t`` *diverges* when

    .. math:: s_t - b_t > (\text{diverge\_threshold} - 1) \cdot |b_t|

    which is ``s_t > diverge_threshold * b_t`` for positive losses and stays
    meaningful for negative ones; or when ``l_t`` is NaN/Inf; or when the
    update would leave a non-finite value in the state. From the diverging
    step on the state is frozen (its update is dropped, so the returned
    state is the last finite one) and losses and metrics are NaN.

    Args:
      step_fn: ``step_fn(state, batch, lr) -> (state, loss)`` or
        ``(state, loss, metric)``, scalars ``loss``/``metric``; traced once.
      state: the initial training state, any pytree; never modified. Its
        arrays are carried and keep their shardings; its other leaves
        (functions, strings) are passed through unchanged.
      data: arrays with a leading example axis (sampled on the device with
        ``key``), pre-batched arrays (``batched=True``), or a loader: any
        iterable of batches that is not an array pytree (an iterator, a
        DataLoader-like, ``tf.data``-like or grain object).
      batch_size: examples per step; required for sampled data.
      start_lr: rate of the first step; positive for ``'exponential'``.
      end_lr: rate of the last step, > ``start_lr``.
      num_steps: steps in the sweep, at least 2. The default, 400, is fine
        enough to read an optimizer with momentum (see ``'half_edge'``).
      mode: ``'exponential'`` (fastai, torch-lr-finder) or ``'linear'``
        (Smith 2017).
      key: PRNG key for sampling; default ``jax.random.key(0)``. A 1-D batch
        of ``K`` keys runs ``K`` sweeps in one compiled ``vmap``.
      beta: EMA factor of the smoothed loss, in [0, 1).
      diverge_threshold: multiple of the best smoothed loss that counts as
        divergence, > 1; ``None`` never stops on it (NaN/Inf still does).
      batched: ``data`` is pre-batched (leading axis = steps).
      batched_state: ``state`` has a leading sweep axis: ``K`` states run
        as ``K`` sweeps (with a batch of ``K`` keys, or one shared key).
      progress: ``None`` shows a tqdm bar when stderr is a terminal, ``True``
        always (needs tqdm), ``False`` never; with a bar the sweep runs in
        chunks of ``chunk_size`` steps, one compiled function. Host-only:
        ``True`` is refused inside ``jit``/``vmap``.
      chunk_size: steps per compiled call; default ``max(num_steps // 20,
        1)`` with a bar or a loader, else the whole sweep in one call
        (always under a trace).
      mesh: a ``jax.sharding.Mesh`` for data parallelism, or ``None``.
      data_axis: the mesh axis that splits the batch (default ``'data'`` if
        the mesh has it, else its first axis).
      state_sharding: where to put the state's arrays: a ``Sharding`` or
        ``PartitionSpec`` (of ``mesh``'s axes), a pytree prefix of them, or
        ``(path, leaf) -> PartitionSpec``; default: where they are.
      val_data: held-out arrays with a leading example axis, evaluated with
        ``val_fn`` every ``val_every`` steps inside the same compiled loop.
      val_every: steps between evaluations; default ``max(num_steps // 20,
        1)``. The last step is always evaluated.
      val_batch_size: examples per evaluation batch, a divisor of the number
        of validation examples; default all of them in one batch.
      val_fn: ``val_fn(state, batch) -> loss`` or ``(loss, metric)``,
        required with ``val_data``.

    Returns:
      A :class:`RangeTestResult` (leading axis ``K`` for ``K`` sweeps) whose
      ``final_state`` is the state after the sweep: the host form for
      concrete inputs, the device form inside ``jit``/``vmap``.

    Raises:
      ValueError: for bad arguments (each names the argument, the rule and
        the value): non-positive or inverted rates, rates not finite in
        float32, ``num_steps < 2``, ``beta`` outside [0, 1),
        ``diverge_threshold <= 1``, a missing ``batch_size`` or one larger
        than the data or not divisible by the mesh axis, too few pre-batched
        steps, a loader that ends early or yields batches of other shapes,
        mismatched sweep counts, bad validation arguments, a step that
        returns non-scalars or changes the state's non-array leaves, or
        ``progress=True`` inside a trace.
      TypeError: for a loader inside ``jit``/``vmap``.

    Examples:
      >>> import jax, jax.numpy as jnp, clr_jax
      >>> def step(w, batch, lr):  # SGD on 0.5 * (w - x)**2
      ...     loss = 0.5 * jnp.mean((w - batch) ** 2)
      ...     return w - lr * (w - batch.mean()), loss
      >>> x = jax.random.normal(jax.random.key(0), (256,))
      >>> res = clr_jax.range_test_with_step(
      ...     step, jnp.float32(3.0), x, batch_size=16,
      ...     start_lr=1e-3, end_lr=10.0, num_steps=100, progress=False)
      >>> 2.0 < float(res.lrs[res.diverged_step]) < 5.0  # diverges past lr = 2
      True

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
      https://arxiv.org/abs/1506.01186.
    """
    args = dict(locals())
    checked = _check_args(step_fn, state, data, args)
    sweep = _prepare(step_fn, state, data, args, checked)
    traced, config = checked["traced"], sweep.config
    # Under a trace the sweep is one chunk and nothing waits on the host.
    bar = _progress.bar(
        checked["show_bar"], total=config.num_steps, desc="range test", unit="step"
    )
    try:
        carry, parts = _run_chunks(sweep, bar, look=not traced)
    finally:
        bar.close()
    fields = _assemble(sweep, carry, parts, traced)
    record = _record(args, config.num_steps, config.num_sweeps)
    return RangeTestResult(**fields, config=record)
