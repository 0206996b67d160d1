"""The learning-rate range test (Smith 2017), compiled end to end.

A range test trains for a few hundred steps while the learning rate grows
from tiny to huge, and records the loss at every step. The curve tells where
training starts to make progress and where it breaks down, which gives the
bounds of a cyclical schedule.

Here the whole sweep is one compiled loop (a ``lax.while_loop``, the form a
``lax.scan`` lowers to, that also stops at divergence; a few calls of it,
one chunk each, when a progress bar or a host iterator asks for it): batches
are drawn inside the loop from device-resident data, the loss is smoothed and checked
for divergence on the device, and nothing returns to the host per step.
``jax.vmap`` runs many sweeps (seeds, weight decays) in one program, and a
``jax.sharding.Mesh`` spreads each batch over devices.

Suggestions (:meth:`RangeTestResult.suggest`, :meth:`RangeTestResult.bounds`)
are computed afterwards on the host with NumPy.

References:
  Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
  https://arxiv.org/abs/1506.01186.
  Smith, "A disciplined approach to neural network hyper-parameters: Part 1",
  2018, https://arxiv.org/abs/1803.09820.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from clr_jax import _validation as v
from clr_jax import schedules
from clr_jax.data import batch_indices, num_examples, take
from clr_jax.inject import set_hyperparam, with_schedules
from clr_jax.range_result import BoundsReport, RangeTestResult, RangeTestWarning

__all__ = [
    "BoundsReport",
    "RangeTestResult",
    "RangeTestWarning",
    "SweepState",
    "range_test",
    "range_test_with_step",
]


class SweepState(NamedTuple):
    """The training state :func:`range_test` carries: params and optimizer state."""

    params: Any
    opt_state: Any


# ---------------------------------------------------------------------------
# The compiled sweep
# ---------------------------------------------------------------------------


class _StaticFn:
    """A user function as a static jit argument, equal when its parts are equal.

    ``functools.partial(optax.sgd, momentum=0.9)`` built twice gives two
    partial objects that compare unequal; keying them by their parts lets
    repeated calls reuse the compiled sweep. Unhashable callables fall back to
    their identity.
    """

    def __init__(self, fn: Callable):
        self.fn = fn
        self.key = _fn_key(fn)

    def __call__(self, *args):
        return self.fn(*args)

    def __eq__(self, other):
        return isinstance(other, _StaticFn) and self.key == other.key

    def __hash__(self):
        return hash(self.key)


def _fn_key(fn) -> Any:
    if isinstance(fn, functools.partial):
        key = (
            "partial",
            _fn_key(fn.func),
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


class _Config(NamedTuple):
    """Static configuration of the compiled chunk (part of the compile key)."""

    num_steps: int
    chunk_size: int
    sampled: bool  # batches gathered from data by index (else given per step)
    whole_source: bool  # the source covers every step (else one chunk of them)
    check_threshold: bool
    num_sweeps: int | None
    source_batched: bool  # per-sweep batch indices (one key per sweep)
    mesh: Mesh | None
    data_axis: str | None


class _Carry(NamedTuple):
    state: Any
    ema_loss: jax.Array
    best: jax.Array
    ema_metric: jax.Array
    diverged_step: jax.Array  # int32, -1 until divergence


class _StepOut(NamedTuple):
    loss: jax.Array
    smoothed_loss: jax.Array
    metric: jax.Array | None
    smoothed_metric: jax.Array | None


def _call_step(step_fn, state, batch, lr):
    """Runs the user's step and checks what it returns."""
    out = step_fn(state, batch, lr)
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise ValueError(
            "`step_fn` must return (state, loss) or (state, loss, metric); got "
            f"{type(out).__name__} {out!r:.80}."
        )
    new_state, loss, *metric = out
    for name, value in (("loss", loss), *(("metric", m) for m in metric)):
        if jnp.shape(value) != ():
            raise ValueError(
                f"`step_fn` must return a scalar {name}; got shape {jnp.shape(value)}."
            )
    return new_state, loss, (metric[0] if metric else None)


def _all_finite(tree) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _shard_batch(batch, config: _Config):
    if config.mesh is None:
        return batch
    sharding = NamedSharding(config.mesh, P(config.data_axis))
    return jax.tree.map(lambda x: lax.with_sharding_constraint(x, sharding), batch)


def _ema(ema, value, beta, correction):
    ema = beta * ema + (1.0 - beta) * value
    return ema, ema / correction


def _sweep_step(step_fn, config: _Config, data, knobs, carry: _Carry, xs, frozen=None):
    """One training step of the sweep, with smoothing and the divergence check.

    ``frozen`` (a boolean scalar, or ``None`` for never) discards the step:
    the carry comes back unchanged and the outputs are NaN.
    """
    step, lr, source = xs
    beta, threshold = knobs
    batch = _shard_batch(take(data, source) if config.sampled else source, config)
    new_state, loss, metric = _call_step(step_fn, carry.state, batch, lr)
    loss = loss.astype(jnp.float32)
    correction = 1.0 - beta ** (step + 1).astype(jnp.float32)
    ema_loss, smoothed = _ema(carry.ema_loss, loss, beta, correction)
    best = jnp.minimum(carry.best, smoothed)
    diverged = ~jnp.isfinite(loss) | ~_all_finite(new_state)
    if config.check_threshold:
        diverged |= smoothed - best > (threshold - 1.0) * jnp.abs(best)
    ema_metric, smoothed_metric = carry.ema_metric, None
    if metric is not None:
        metric = metric.astype(jnp.float32)
        ema_metric, smoothed_metric = _ema(carry.ema_metric, metric, beta, correction)
    new_carry = _Carry(
        new_state, ema_loss, best, ema_metric, jnp.where(diverged, step, -1)
    )
    out = _StepOut(loss, smoothed, metric, smoothed_metric)
    # Freeze at the last finite state: the diverging update is dropped.
    keep_state = diverged
    if frozen is not None:
        keep_state = diverged | frozen
        new_carry = jax.tree.map(
            lambda old, new: jnp.where(frozen, old, new),
            carry._replace(state=None),
            new_carry._replace(state=None),
        )
        out = jax.tree.map(lambda v: jnp.where(frozen, jnp.nan, v), out)
    state = jax.tree.map(
        lambda old, new: lax.select(keep_state, old, new), carry.state, new_state
    )
    return new_carry._replace(state=state), out


def _sweep_chunk(step_fn, config: _Config, data, knobs, carry: _Carry, xs):
    """The chunk's steps as a ``while_loop`` that stops at divergence.

    Outputs start as NaN and each step writes its own row, so the steps after
    a divergence (and the padding past ``num_steps``) cost nothing: no
    per-step ``lax.cond``, whose price on CPU is about 5% of a small step.
    """
    steps = xs[0]
    size = steps.shape[0]
    body = functools.partial(_sweep_step, step_fn, config, data, knobs)

    def row(i):
        return jax.tree.map(
            lambda x: lax.dynamic_index_in_dim(x, i, keepdims=False), xs
        )

    shapes = jax.eval_shape(body, carry, row(0))[1]
    outputs = jax.tree.map(
        lambda s: jnp.full((size, *s.shape), jnp.nan, s.dtype), shapes
    )

    def running(loop):
        i, carry, _ = loop
        return (i < size) & (carry.diverged_step < 0) & (steps[i] < config.num_steps)

    def advance(loop):
        i, carry, outputs = loop
        carry, out = body(carry, row(i))
        outputs = jax.tree.map(lambda buf, v: buf.at[i].set(v), outputs, out)
        return i + 1, carry, outputs

    _, carry, outputs = lax.while_loop(running, advance, (0, carry, outputs))
    return carry, outputs


def _masked_sweep_chunk(step_fn, config: _Config, data, knobs, carry: _Carry, xs):
    """The chunk as a ``scan`` whose frozen steps are computed and discarded.

    For many sweeps under ``vmap``: there a ``while_loop`` runs until every
    sweep stops and selects its whole carry, output buffers included, at
    every step, which costs more than this per-step mask.
    """

    def step(carry, xs):
        frozen = (carry.diverged_step >= 0) | (xs[0] >= config.num_steps)
        return _sweep_step(step_fn, config, data, knobs, carry, xs, frozen)

    return lax.scan(step, carry, xs)


@functools.partial(jax.jit, static_argnames=("step_fn", "config"))
def _run_chunk(step_fn, config: _Config, carry, data, knobs, index, lrs, source):
    """Chunk ``index`` (``config.chunk_size`` steps) of the sweep as one loop.

    ``lrs`` holds every step's rate; ``source`` every step's batch indices or
    batches (sliced here, so the host dispatches nothing per chunk), or, for
    a host iterator, only this chunk's batches.
    """
    size = config.chunk_size
    start = index * size
    steps = start + jnp.arange(size, dtype=jnp.int32)
    lrs = lax.dynamic_slice_in_dim(lrs, start, size)
    if config.whole_source:
        axis = 1 if config.source_batched else 0
        source = jax.tree.map(
            lambda x: lax.dynamic_slice_in_dim(x, start, size, axis), source
        )

    chunk = _sweep_chunk if config.num_sweeps is None else _masked_sweep_chunk

    def one_sweep(carry, source):
        return chunk(step_fn, config, data, knobs, carry, (steps, lrs, source))

    if config.num_sweeps is None:
        return one_sweep(carry, source)
    in_axes = (0, 0 if config.source_batched else None)
    return jax.vmap(one_sweep, in_axes=in_axes)(carry, source)


@functools.partial(jax.jit, static_argnames=("num_steps", "padded", "mode"))
def _sweep_lrs(start_lr, end_lr, *, num_steps, padded, mode):
    """The sweep's rates, padded by repeating the last one to ``padded`` steps."""
    sweep = schedules.lr_sweep(start_lr, end_lr, num_steps, mode=mode)
    return sweep(jnp.arange(padded, dtype=jnp.int32))


@functools.partial(
    jax.jit, static_argnames=("n", "batch_size", "num_steps", "padded", "batched")
)
def _sample_plan(keys, *, n, batch_size, num_steps, padded, batched):
    """``batch_indices(key, n, batch_size, num_steps)`` (per key when batched),
    padded to ``padded`` steps."""

    def plan(key):
        return _pad_steps(batch_indices(key, n, batch_size, num_steps), padded)

    return jax.vmap(plan)(keys) if batched else plan(keys)


@functools.partial(jax.jit, static_argnames=("padded",))
def _pad_steps(x, padded):
    """Pads the leading (step) axis to ``padded`` by repeating the last step;
    the padding steps of the last chunk are never run."""
    return jnp.concatenate([x, jnp.repeat(x[-1:], padded - x.shape[0], 0)])


@functools.partial(jax.jit, static_argnames=("num_sweeps", "broadcast"))
def _initial_carry(state, *, num_sweeps, broadcast) -> _Carry:
    if broadcast:  # one initial state shared by every sweep
        state = jax.tree.map(
            lambda x: jnp.broadcast_to(x, (num_sweeps, *x.shape)), state
        )
    shape = () if num_sweeps is None else (num_sweeps,)
    zeros = jnp.zeros(shape, jnp.float32)
    return _Carry(
        state,
        zeros,
        jnp.full(shape, jnp.inf, jnp.float32),
        zeros,
        jnp.full(shape, -1, jnp.int32),
    )


# ---------------------------------------------------------------------------
# Host driver
# ---------------------------------------------------------------------------


def _as_keys(key) -> jax.Array:
    if key is None:
        return jax.random.key(0)
    key = jnp.asarray(key)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
            raise ValueError(
                "`key` must be a PRNG key (jax.random.key) or a batch of keys; "
                f"got dtype {key.dtype}, shape {key.shape}."
            )
        key = jax.random.wrap_key_data(key)
    if key.ndim > 1:
        raise ValueError(
            "`key` must be one key or a 1-D batch of keys (one per sweep); got "
            f"shape {key.shape}."
        )
    return key


def _leading_size(tree, name: str) -> int:
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(tree)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"every array in `{name}` must have the same leading sweep axis; got "
            f"{sorted(sizes, key=str)}."
        )
    return sizes.pop()


def _resolve_axis(mesh: Mesh | None, data_axis: str | None) -> str | None:
    if mesh is None:
        return None
    if not isinstance(mesh, Mesh):
        raise ValueError(f"`mesh` must be a jax.sharding.Mesh or None; got {mesh!r}.")
    names = tuple(mesh.axis_names)
    if data_axis is None:
        return "data" if "data" in names else names[0]
    v.check_choice("data_axis", data_axis, names)
    return data_axis


def _check_batch_split(batch_size: int, mesh: Mesh | None, axis: str | None) -> None:
    if mesh is None:
        return
    devices = mesh.shape[axis]
    if batch_size % devices:
        raise ValueError(
            f"`batch_size` must be divisible by the {devices} devices of mesh "
            f"axis {axis!r}; got {batch_size}."
        )


def _check_sweep_args(start_lr, end_lr, num_steps, mode, beta, diverge_threshold):
    v.check_choice("mode", mode, ("exponential", "linear"))
    (v.check_positive if mode == "exponential" else v.check_non_negative)(
        "start_lr", start_lr
    )
    v.check_positive("end_lr", end_lr)
    num_steps = v.check_step_count("num_steps", num_steps, minimum=2)
    if float(end_lr) <= float(start_lr):
        raise ValueError(
            f"`end_lr` must be > `start_lr` ({start_lr}: a range test sweeps "
            f"upwards); got {end_lr}."
        )
    v.check_interval("beta", beta, 0.0, 1.0, closed_low=True, closed_high=False)
    if diverge_threshold is not None:
        v.check_finite("diverge_threshold", diverge_threshold)
        if float(diverge_threshold) <= 1.0:
            raise ValueError(
                "`diverge_threshold` must be > 1 (a multiple of the best loss) or "
                f"None; got {diverge_threshold!r}."
            )
    return num_steps


def _chunk_size(chunk_size, num_steps: int, chunked: bool) -> int:
    if chunk_size is None:
        return max(num_steps // 20, 1) if chunked else num_steps
    size = v.check_step_count("chunk_size", chunk_size)
    if size > num_steps:
        raise ValueError(
            f"`chunk_size` must be <= num_steps ({num_steps}); got {size}."
        )
    return size


def _tqdm():
    """tqdm's class, or ``None`` when it is not installed (no bar then)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class _Chunks(NamedTuple):
    """What the driver feeds the compiled chunk, one entry per chunk."""

    config: _Config
    data: Any
    sources: Iterator[Any]


def _stack_batches(batches: list, total: int, sharding) -> Any:
    """``total`` stacked batches (the last one repeated as padding), on device."""
    batches = batches + [batches[-1]] * (total - len(batches))
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches)
    if sharding is None:
        return jax.device_put(stacked)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), stacked
    )


def _iterator_sources(data: Iterator, num_steps: int, chunk: int, sharding):
    """Pulls ``chunk`` batches at a time from a host iterator."""
    for start in range(0, num_steps, chunk):
        want = min(chunk, num_steps - start)
        batches = []
        for batch in data:
            batches.append(batch)
            if len(batches) == want:
                break
        if len(batches) < want:
            raise ValueError(
                f"`data` iterator ran out after {start + len(batches)} batches; "
                f"num_steps is {num_steps}."
            )
        yield _stack_batches(batches, chunk, sharding)


def _plan_chunks(
    data,
    *,
    batch_size,
    batched,
    num_steps,
    chunk,
    keys,
    num_sweeps,
    mesh,
    axis,
    check_threshold,
) -> _Chunks:
    """Validates ``data`` and lays out the per-chunk inputs of the scan."""
    num_chunks = -(-num_steps // chunk)
    config = functools.partial(
        _Config,
        num_steps=num_steps,
        chunk_size=chunk,
        check_threshold=check_threshold,
        num_sweeps=num_sweeps,
        mesh=mesh,
        data_axis=axis,
    )
    per_step = None if mesh is None else NamedSharding(mesh, P(None, axis))
    if isinstance(data, Iterator):
        if batch_size is not None:
            _check_batch_split(batch_size, mesh, axis)
        sources = _iterator_sources(data, num_steps, chunk, per_step)
        return _Chunks(
            config(sampled=False, whole_source=False, source_batched=False),
            None,
            sources,
        )
    if not jax.tree.leaves(data):
        raise ValueError(f"`data` must hold at least one array; got {data!r}.")
    if batched:
        steps_given = num_examples(data)
        if steps_given < num_steps:
            raise ValueError(
                f"`num_steps` must be <= the {steps_given} pre-batched steps in "
                f"`data` (batched=True); got {num_steps}."
            )
        given = {np.shape(x)[1] for x in jax.tree.leaves(data) if np.ndim(x) > 1}
        if batch_size is not None and given != {batch_size}:
            raise ValueError(
                f"`batch_size` must match the pre-batched data's batch axis {given}; "
                f"got {batch_size}."
            )
        if mesh is not None:
            _check_batch_split(given.pop(), mesh, axis)

        stacked = jax.tree.map(
            lambda x: _pad_steps(x[:num_steps], padded=num_chunks * chunk),
            jax.device_put(data, per_step),
        )
        sources = itertools.repeat(stacked, num_chunks)
        return _Chunks(
            config(sampled=False, whole_source=True, source_batched=False),
            None,
            sources,
        )
    if batch_size is None:
        raise ValueError(
            "`batch_size` must be given for data sampled on device; got None."
        )
    n = num_examples(data)
    v.check_step_count("batch_size", batch_size)
    if batch_size > n:
        raise ValueError(
            f"`batch_size` must be <= the number of examples ({n}); got {batch_size}."
        )
    _check_batch_split(batch_size, mesh, axis)
    replicated = None if mesh is None else NamedSharding(mesh, P())
    data = jax.device_put(data, replicated)
    batched_keys = keys.ndim == 1
    plan = _sample_plan(
        keys,
        n=n,
        batch_size=batch_size,
        num_steps=num_steps,
        padded=num_chunks * chunk,
        batched=batched_keys,
    )
    return _Chunks(
        config(sampled=True, whole_source=True, source_batched=batched_keys),
        data,
        itertools.repeat(plan, num_chunks),
    )


def _drive(step_fn, state, chunks: _Chunks, *, knobs, lrs, bar, broadcast):
    """Runs the compiled chunk over every chunk; returns the final carry and outputs."""
    config = chunks.config
    c = config.chunk_size
    carry = _initial_carry(state, num_sweeps=config.num_sweeps, broadcast=broadcast)
    stop_early = len(lrs) > c
    outputs, previous = [], None
    for i, source in enumerate(chunks.sources):
        carry, out = _run_chunk(
            step_fn, config, carry, chunks.data, knobs, np.int32(i), lrs, source
        )
        outputs.append(out)
        # Look at the chunk before this one: it is done (or nearly) by now, so
        # the host waits little and the device stays busy.
        if previous is not None and _report(previous, bar) and stop_early:
            break
        previous = (carry.diverged_step, c)
    if previous is not None and bar is not None:
        _report(previous, bar)
    return carry, outputs


def _report(previous, bar) -> bool:
    """Updates the bar for a finished chunk; True when every sweep has diverged."""
    diverged_step, size = previous
    diverged = np.asarray(diverged_step) >= 0  # waits for that chunk
    if bar is not None:
        bar.update(size)
    return bool(np.all(diverged))


def _collect(carry: _Carry, outputs, lrs_all, num_steps: int) -> RangeTestResult:
    """The host form of the result: NumPy curves, ``None`` for no divergence."""

    def curve(parts):
        if parts[0] is None:
            return None
        arr = np.concatenate([np.asarray(p) for p in parts], axis=-1)[..., :num_steps]
        missing = num_steps - arr.shape[-1]  # chunks skipped after divergence
        if missing:
            pad = np.full((*arr.shape[:-1], missing), np.nan, arr.dtype)
            arr = np.concatenate([arr, pad], axis=-1)
        return arr

    fields = _StepOut(
        *(curve([getattr(o, f) for o in outputs]) for f in _StepOut._fields)
    )
    steps = np.asarray(carry.diverged_step)
    lrs = np.asarray(lrs_all).reshape(-1)[:num_steps]
    if steps.ndim:
        lrs = np.broadcast_to(lrs, (len(steps), num_steps)).copy()
        diverged = tuple(int(s) if s >= 0 else None for s in steps)
    else:
        diverged = int(steps) if steps >= 0 else None
    return RangeTestResult(
        lrs,
        fields.loss,
        fields.smoothed_loss,
        fields.metric,
        fields.smoothed_metric,
        diverged,
        carry.state,
    )


def range_test_with_step(
    step_fn: Callable,
    state: Any,
    data: Any,
    *,
    batch_size: int | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: Literal["exponential", "linear"] = "exponential",
    key: jax.Array | None = None,
    beta: float = 0.98,
    diverge_threshold: float | None = 4.0,
    batched: bool = False,
    batched_state: bool = False,
    progress: bool = True,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    data_axis: str | None = None,
) -> RangeTestResult:
    r"""LR range test of a custom training step, compiled as one device loop.

    The lower-level entry point, for steps that carry more than params and an
    optimizer state: BatchNorm statistics, dropout RNG, a Flax ``TrainState``
    or a split NNX model. :func:`range_test` is built on it.

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
    update would leave a non-finite value in the state. The check runs from
    the first step: the bias-corrected EMA is an honest average from the
    start and a blow-up there is real, so there is no warm-up. From the
    diverging step on the state is frozen (its update is dropped, so the
    returned state is the last finite one) and losses and metrics are NaN.
    One sweep runs as a ``lax.while_loop`` that stops at the divergence, so
    the frozen steps cost nothing (their outputs are pre-filled NaN). Many
    sweeps (``vmap``) run as one masked ``lax.scan``: a diverged sweep's
    steps are computed and discarded until every sweep has diverged (with a
    progress bar or a host iterator the remaining chunks are then not run at
    all).

    Data comes in three forms:

    * arrays (a pytree, leading axis = examples), kept on the device and
      sampled inside the scan with ``key``: shuffled epochs, without
      replacement within an epoch (:func:`clr_jax.data.batch_indices`);
    * ``batched=True``: arrays whose leading axis is the step and second the
      batch (at least ``num_steps`` steps);
    * a Python iterator of batches (pass ``iter(loader)``), consumed
      ``chunk_size`` steps at a time, each chunk one call of the same
      compiled scan; a chunk is fetched while the previous one runs.

    The compiled sweep is cached on ``step_fn`` (by identity, or by function
    and arguments for a ``functools.partial``), the static configuration and
    the shapes: calling again with the same ones does not recompile, even
    with other rates, ``beta``, threshold, key or data values.

    Several devices: pass ``mesh`` (a ``jax.sharding.Mesh``). Each batch is
    sharded along ``data_axis`` (default ``'data'`` if the mesh has it, else
    its first axis), the state and the sampled data are replicated, and
    JAX's SPMD partitioner inserts the gradient all-reduce; the curve equals
    the single-device one within float tolerance. The same code runs on one
    host with several GPUs, on a TPU pod slice, and on several hosts: call
    ``jax.distributed.initialize()`` first in every process, build the mesh
    over ``jax.devices()``, and call this function in every process with the
    same arguments; an iterator then yields each process's own part of the
    batch (assembled with ``jax.make_array_from_process_local_data``).

    Args:
      step_fn: ``step_fn(state, batch, lr) -> (state, loss)`` or
        ``(state, loss, metric)``, scalars ``loss``/``metric``; traced once.
      state: the initial training state, any pytree; never modified.
      data: arrays, pre-batched arrays, or an iterator of batches (see above).
      batch_size: examples per step; required for sampled data.
      start_lr: rate of the first step; positive for ``'exponential'``.
      end_lr: rate of the last step, > ``start_lr``.
      num_steps: steps in the sweep, at least 2.
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
      progress: show a tqdm bar (skipped silently without tqdm); the scan
        then runs in chunks of ``chunk_size`` steps, one compiled function.
      chunk_size: steps per compiled call; default ``max(num_steps // 20, 1)``
        with a bar or an iterator, else ``num_steps`` (a single call).
      mesh: a ``jax.sharding.Mesh`` for data parallelism, or ``None``.
      data_axis: the mesh axis that splits the batch.

    Returns:
      A :class:`RangeTestResult` (host form; leading axis ``K`` for ``K``
      sweeps) whose ``final_state`` is the state after the sweep.

    Raises:
      ValueError: for bad arguments (each names the argument, the rule and
        the value): non-positive or inverted rates, ``num_steps < 2``,
        ``beta`` outside [0, 1), ``diverge_threshold <= 1``, a missing
        ``batch_size`` or one larger than the data or not divisible by the
        mesh axis, too few pre-batched steps, an exhausted iterator,
        mismatched sweep counts, or a step that returns non-scalars.

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
    if not callable(step_fn):
        raise ValueError(f"`step_fn` must be callable; got {step_fn!r}.")
    num_steps = _check_sweep_args(
        start_lr, end_lr, num_steps, mode, beta, diverge_threshold
    )
    axis = _resolve_axis(mesh, data_axis)
    keys = _as_keys(key)
    num_sweeps = _sweep_count(keys, state, batched_state)
    tqdm = _tqdm() if progress else None
    iterator = isinstance(data, Iterator)
    chunk = _chunk_size(chunk_size, num_steps, tqdm is not None or iterator)
    chunks = _plan_chunks(
        data,
        batch_size=batch_size,
        batched=batched,
        num_steps=num_steps,
        chunk=chunk,
        keys=keys,
        num_sweeps=num_sweeps,
        mesh=mesh,
        axis=axis,
        check_threshold=diverge_threshold is not None,
    )
    num_chunks = -(-num_steps // chunk)
    lrs = _sweep_lrs(
        np.float32(start_lr),
        np.float32(end_lr),
        num_steps=num_steps,
        padded=num_chunks * chunk,
        mode=mode,
    )
    threshold = 0.0 if diverge_threshold is None else diverge_threshold
    knobs = (np.float32(beta), np.float32(threshold))
    if mesh is not None:
        state = jax.device_put(state, NamedSharding(mesh, P()))
    bar = None
    if tqdm is not None:
        bar = tqdm(total=num_steps, desc="range test", unit="step", leave=False)
    try:
        carry, outputs = _drive(
            _StaticFn(step_fn),
            state,
            chunks,
            knobs=knobs,
            lrs=lrs,
            bar=bar,
            broadcast=num_sweeps is not None and not batched_state,
        )
    finally:
        if bar is not None:
            bar.close()
    return _collect(carry, outputs, lrs, num_steps)


def _sweep_count(keys, state, batched_state: bool) -> int | None:
    from_keys = keys.shape[0] if keys.ndim == 1 else None
    if not batched_state:
        return from_keys
    from_state = _leading_size(state, "state")
    if from_keys is not None and from_keys != from_state:
        raise ValueError(
            f"`key` must hold one key per sweep ({from_state}, the leading axis of "
            f"the batched state) or be a single key; got {from_keys} keys."
        )
    return from_state


# ---------------------------------------------------------------------------
# loss_fn + optimizer -> step_fn
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class _OptaxStep:
    """The training step of :func:`range_test`: a gradient step of any optax
    optimizer, the rate injected through ``optax.inject_hyperparams``.

    Equal (hence one compiled sweep) when built from equal parts.
    """

    loss_fn: Callable
    optimizer: Callable
    has_aux: bool
    metric_fn: Callable | None
    hyperparam_names: tuple[str, ...]

    def _key(self):
        return (
            _fn_key(self.loss_fn),
            _fn_key(self.optimizer),
            self.has_aux,
            _fn_key(self.metric_fn),
            self.hyperparam_names,
        )

    def __eq__(self, other):
        return isinstance(other, _OptaxStep) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def transform(self, **hyperparams) -> optax.GradientTransformationExtraArgs:
        # Built once per trace. The values given here only seed the state at
        # `init`; `update` reads every hyperparameter from the state.
        values = {name: 0.0 for name in self.hyperparam_names} | hyperparams
        return with_schedules(self.optimizer, learning_rate=0.0, **values)

    def init(self, params, hyperparams: Mapping[str, jax.Array]) -> SweepState:
        return SweepState(params, self.transform(**hyperparams).init(params))

    def __call__(self, state: SweepState, batch, lr):
        opt_state = set_hyperparam(state.opt_state, "learning_rate", lr)
        grad_fn = jax.value_and_grad(self.loss_fn, has_aux=self.has_aux)
        loss, grads = grad_fn(state.params, batch)
        loss = loss[0] if self.has_aux else loss
        updates, opt_state = self.transform().update(grads, opt_state, state.params)
        new_state = SweepState(optax.apply_updates(state.params, updates), opt_state)
        if self.metric_fn is None:
            return new_state, loss
        return new_state, loss, self.metric_fn(state.params, batch)


@functools.partial(jax.jit, static_argnames=("step",))
def _init_sweep_state(step: _OptaxStep, params, hyperparams):
    if not hyperparams:
        return step.init(params, {})
    return jax.vmap(step.init, in_axes=(None, 0))(params, hyperparams)


def _check_hyperparams(hyperparams) -> dict[str, np.ndarray]:
    if hyperparams is None:
        return {}
    if not isinstance(hyperparams, Mapping):
        raise ValueError(
            "`hyperparams` must be a mapping of optimizer argument names to 1-D "
            f"arrays of values (one per sweep); got {hyperparams!r}."
        )
    out, sizes = {}, set()
    for name, values in hyperparams.items():
        if name == "learning_rate":
            raise ValueError(
                "`hyperparams` must not set 'learning_rate' (the sweep sets it); "
                f"got {values!r}."
            )
        values = np.asarray(values, np.float32)
        if values.ndim != 1 or len(values) == 0:
            raise ValueError(
                f"`hyperparams[{name!r}]` must be a non-empty 1-D array (one value "
                f"per sweep); got shape {values.shape}."
            )
        v.check_finite(f"hyperparams[{name!r}]", values)
        out[name] = values
        sizes.add(len(values))
    if len(sizes) > 1:
        raise ValueError(
            "every `hyperparams` entry must hold the same number of values (one "
            f"per sweep); got lengths {sorted(sizes)}."
        )
    return out


def range_test(
    loss_fn: Callable,
    params: Any,
    data: Any,
    *,
    batch_size: int | None = None,
    optimizer: Callable[..., optax.GradientTransformation] = optax.sgd,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: Literal["exponential", "linear"] = "exponential",
    key: jax.Array | None = None,
    beta: float = 0.98,
    diverge_threshold: float | None = 4.0,
    metric_fn: Callable | None = None,
    has_aux: bool = False,
    hyperparams: Mapping[str, Any] | None = None,
    batched: bool = False,
    progress: bool = True,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    data_axis: str | None = None,
) -> RangeTestResult:
    r"""Smith's learning-rate range test, run on the device as one compiled loop.

    Trains ``params`` for ``num_steps`` steps of ``optimizer`` while the rate
    grows from ``start_lr`` to ``end_lr`` (:func:`clr_jax.lr_sweep`), and
    records the loss of every step (measured before its update), its
    bias-corrected EMA and, with ``metric_fn``, a metric such as accuracy.
    The optimizer is built once with ``optax.inject_hyperparams`` and the
    rate is written into ``state.hyperparams['learning_rate']`` each step.

    Smoothing, divergence (``s_t - b_t > (diverge_threshold - 1) |b_t|``
    with ``s`` the smoothed and ``b`` the best smoothed loss, or any NaN/Inf),
    the frozen state after it, the data forms, caching and multi-device
    execution are as in :func:`range_test_with_step`, on which this is built.
    The caller's ``params`` are never modified or donated; the trained ones
    are in ``result.final_state.params``.

    Many sweeps in one compiled program (``jax.vmap``): pass a 1-D batch of
    ``K`` keys (``jax.random.split(key, K)``: ``K`` seeds), and/or
    ``hyperparams={'weight_decay': [...]}`` with ``K`` values per optimizer
    argument (Smith 2018 compares weight decays this way). Keys and values
    are zipped, sweep ``k`` using key ``k`` and value ``k``; a single key is
    shared (the same batches for every value). The result then has a leading
    ``K`` axis and plots as a band.

    Args:
      loss_fn: ``loss_fn(params, batch) -> loss`` (``(loss, aux)`` with
        ``has_aux=True``; ``aux`` is not recorded), a scalar.
      params: initial parameters, any pytree.
      data: arrays with a leading example axis (sampled on the device),
        pre-batched arrays (``batched=True``), or an iterator of batches.
      batch_size: examples per step; required for sampled data.
      optimizer: a factory taking ``learning_rate`` and returning an optax
        transformation: ``optax.sgd``,
        ``functools.partial(optax.sgd, momentum=0.9)``, ``optax.adamw``, ...
      start_lr: rate of the first step.
      end_lr: rate of the last step.
      num_steps: steps in the sweep, at least 2.
      mode: ``'exponential'`` or ``'linear'``.
      key: PRNG key, or a 1-D batch of keys (one sweep each).
      beta: EMA factor, in [0, 1).
      diverge_threshold: > 1, or ``None`` to stop only on NaN/Inf.
      metric_fn: ``metric_fn(params, batch) -> scalar``, recorded at the same
        params as the loss.
      has_aux: ``loss_fn`` returns ``(loss, aux)``.
      hyperparams: optimizer arguments swept alongside, name -> 1-D values.
      batched: ``data`` is pre-batched (leading axis = steps).
      progress: show a tqdm bar (silently skipped without tqdm).
      chunk_size: steps per compiled call (see :func:`range_test_with_step`).
      mesh: a ``jax.sharding.Mesh`` to shard each batch over, or ``None``.
      data_axis: the mesh axis that splits the batch.

    Returns:
      A :class:`RangeTestResult`; ``final_state`` is a :class:`SweepState`.

    Raises:
      ValueError: as :func:`range_test_with_step`, and for non-callable
        functions or bad ``hyperparams``.

    Examples:
      >>> import jax, jax.numpy as jnp, clr_jax
      >>> x = jnp.linspace(-1.0, 1.0, 256)
      >>> noise = jax.random.normal(jax.random.key(0), (256,))
      >>> data = (x, 3.0 * x + 0.1 * noise)
      >>> def loss_fn(w, batch):
      ...     xb, yb = batch
      ...     return jnp.mean((w * xb - yb) ** 2)
      >>> res = clr_jax.range_test(loss_fn, jnp.float32(0.0), data, batch_size=32,
      ...                          start_lr=1e-4, end_lr=100.0, progress=False)
      >>> res.diverged_step is not None
      True
      >>> base_lr, max_lr = res.bounds()
      >>> bool(base_lr < max_lr < float(res.lrs[res.diverged_step]))
      True

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
      https://arxiv.org/abs/1506.01186.
      Smith, "A disciplined approach to neural network hyper-parameters: Part
      1", 2018, https://arxiv.org/abs/1803.09820.
    """
    for name, fn in (("loss_fn", loss_fn), ("optimizer", optimizer)):
        if not callable(fn):
            raise ValueError(f"`{name}` must be callable; got {fn!r}.")
    if metric_fn is not None and not callable(metric_fn):
        raise ValueError(f"`metric_fn` must be callable or None; got {metric_fn!r}.")
    values = _check_hyperparams(hyperparams)
    step = _OptaxStep(loss_fn, optimizer, bool(has_aux), metric_fn, tuple(values))
    state = _init_sweep_state(step, params, values)
    return range_test_with_step(
        step,
        state,
        data,
        batch_size=batch_size,
        start_lr=start_lr,
        end_lr=end_lr,
        num_steps=num_steps,
        mode=mode,
        key=key,
        beta=beta,
        diverge_threshold=diverge_threshold,
        batched=batched,
        batched_state=bool(values),
        progress=progress,
        chunk_size=chunk_size,
        mesh=mesh,
        data_axis=data_axis,
    )
