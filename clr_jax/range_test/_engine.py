"""The compiled sweep: the only code of the range test that runs on the device.

A chunk of the sweep is one ``lax.while_loop`` over blocks of steps that
stops once every sweep has diverged; a block is a ``lax.scan`` of masked
steps (``vmap``-ed for many sweeps). Every step trains, smooths the loss,
checks for divergence and freezes the state from the diverging step on; see
the package docstring for why it is laid out this way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding

from clr_jax import _sharding
from clr_jax._tree import all_finite
from clr_jax.data import take
from clr_jax.range_test._feed import DataForm


class Config(NamedTuple):
    """Static configuration of the compiled chunk (part of the compile key)."""

    num_steps: int
    chunk_size: int
    block: int  # steps between two looks at divergence (and evaluations)
    form: DataForm
    check_threshold: bool
    num_sweeps: int | None
    source_batched: bool  # per-sweep batch indices (one key per sweep)
    batch_sharding: NamedSharding | None
    state_shardings: tuple | None  # one sweep's, leaf by leaf


class Fns(NamedTuple):
    """The user's functions (hashable: static in the compile key)."""

    step: Callable  # (state, batch, lr) -> (state, loss[, metric])
    evaluate: Callable | None  # (state, batch) -> loss or (loss, metric)


class Carry(NamedTuple):
    state: Any
    ema_loss: jax.Array
    best: jax.Array
    ema_metric: jax.Array
    diverged_step: jax.Array  # int32, -1 until divergence


class StepOut(NamedTuple):
    loss: jax.Array
    smoothed_loss: jax.Array
    metric: jax.Array | None
    smoothed_metric: jax.Array | None


class ValOut(NamedTuple):
    loss: jax.Array
    metric: jax.Array | None


def _scalars(out, what: str) -> tuple[jax.Array, jax.Array | None]:
    """``loss`` or ``(loss, metric)`` as float32 scalars, checked."""
    loss, *metric = out if isinstance(out, tuple) else (out,)
    if len(metric) > 1:
        raise ValueError(f"`{what}` must return a loss and at most one metric.")
    for name, value in (("loss", loss), *(("metric", m) for m in metric)):
        if jnp.shape(value) != ():
            raise ValueError(
                f"`{what}` must return a scalar {name}; got shape {jnp.shape(value)}."
            )
    as_f32 = [jnp.asarray(x).astype(jnp.float32) for x in (loss, *metric)]
    return as_f32[0], (as_f32[1] if metric else None)


def _call_step(step_fn, state, batch, lr):
    """Runs the user's step (its tuple is checked by the driver's wrapper)."""
    new_state, *scalars = step_fn(state, batch, lr)
    return (new_state, *_scalars(tuple(scalars), "step_fn"))


def _ema(ema, value, beta, correction):
    ema = beta * ema + (1.0 - beta) * value
    return ema, ema / correction


def _sweep_step(fns: Fns, config: Config, data, knobs, carry: Carry, xs):
    """One masked training step: smoothing, the divergence check, the freeze.

    A frozen step (after divergence, or padding past ``num_steps``) is
    computed and discarded: the carry comes back unchanged and the outputs
    are NaN. The state is frozen at the last finite one: the diverging
    update is dropped.
    """
    step, lr, source = xs
    beta, threshold = knobs
    frozen = (carry.diverged_step >= 0) | (step >= config.num_steps)
    batch = take(data, source) if config.form is DataForm.SAMPLED else source
    batch = _sharding.constrain(batch, config.batch_sharding)
    new_state, loss, metric = _call_step(fns.step, carry.state, batch, lr)
    new_state = _sharding.constrain_leaves(new_state, config.state_shardings)
    correction = 1.0 - beta ** (step + 1).astype(jnp.float32)
    ema_loss, smoothed = _ema(carry.ema_loss, loss, beta, correction)
    best = jnp.minimum(carry.best, smoothed)
    diverged = ~jnp.isfinite(loss) | ~all_finite(new_state)
    if config.check_threshold:
        diverged |= smoothed - best > (threshold - 1.0) * jnp.abs(best)
    ema_metric, smoothed_metric = carry.ema_metric, None
    if metric is not None:
        ema_metric, smoothed_metric = _ema(carry.ema_metric, metric, beta, correction)
    scalars = (ema_loss, best, ema_metric, jnp.where(diverged, step, -1))
    old = (carry.ema_loss, carry.best, carry.ema_metric, carry.diverged_step)
    scalars = [jnp.where(frozen, o, n) for o, n in zip(old, scalars, strict=True)]
    keep = diverged | frozen
    state = jax.tree.map(lambda o, n: lax.select(keep, o, n), carry.state, new_state)
    out = StepOut(loss, smoothed, metric, smoothed_metric)
    out = jax.tree.map(lambda x: jnp.where(frozen, jnp.nan, x), out)
    return Carry(state, *scalars), out


def _evaluate(fns: Fns, config: Config, state, val) -> ValOut:
    """The mean loss (and metric) of ``state`` over the validation batches."""

    def score(batch):
        batch = _sharding.constrain(batch, config.batch_sharding)
        return ValOut(*_scalars(fns.evaluate(state, batch), "val_fn"))

    return jax.tree.map(lambda x: jnp.mean(x, axis=0), lax.map(score, val))


def _block(fns: Fns, config: Config, data, val, knobs, carry: Carry, xs):
    """One sweep's block: masked steps, then the evaluation on ``val``."""
    step = functools.partial(_sweep_step, fns, config, data, knobs)
    carry, out = lax.scan(step, carry, xs)
    if val is None:
        return carry, out, None
    scores = _evaluate(fns, config, carry.state, val)
    scores = jax.tree.map(
        lambda x: jnp.where(carry.diverged_step >= 0, jnp.nan, x), scores
    )
    return carry, out, scores


def _nan_buffers(shapes, length: int, axis: int):
    def buffer(s):
        shape = (*s.shape[:axis], length, *s.shape[axis + 1 :])
        return jnp.full(shape, jnp.nan, s.dtype)

    return jax.tree.map(buffer, shapes)


@functools.partial(jax.jit, static_argnames=("fns", "config"))
def run_chunk(fns: Fns, config: Config, carry, data, val, knobs, index, lrs, source):
    """Chunk ``index`` (``config.chunk_size`` steps) of the sweep as one loop.

    ``lrs`` holds every step's rate; ``source`` every step's batch indices or
    batches (sliced here, so the host dispatches nothing per chunk), or, for
    a loader, only this chunk's batches. Returns the carry, the chunk's step
    outputs and its evaluations (one per block; ``None`` without ``val``).
    """
    size, block = config.chunk_size, config.block
    many = config.num_sweeps is not None
    start = index * size
    src_axis = 1 if config.source_batched else 0
    if config.form is not DataForm.LOADER:
        source = jax.tree.map(
            lambda x: lax.dynamic_slice_in_dim(x, start, size, src_axis), source
        )
    sweep = functools.partial(_block, fns, config, data, val, knobs)
    if many:
        per_sweep = 0 if config.source_batched else None
        sweep = jax.vmap(sweep, in_axes=(0, (None, None, per_sweep)))

    def xs_of(b):
        offset = b * block
        steps = start + offset + jnp.arange(block, dtype=jnp.int32)
        src = jax.tree.map(
            lambda x: lax.dynamic_slice_in_dim(x, offset, block, src_axis), source
        )
        return steps, lax.dynamic_slice_in_dim(lrs, start + offset, block), src

    shapes = jax.eval_shape(sweep, carry, xs_of(0))
    axis = 1 if many else 0
    outs = _nan_buffers(shapes[1], size, axis)
    scores = _nan_buffers(shapes[2], size // block, axis)

    def running(loop):
        b, carry, *_ = loop
        first = start + b * block
        return (
            (b < size // block)
            & (first < config.num_steps)
            & jnp.any(carry.diverged_step < 0)
        )

    def advance(loop):
        b, carry, outs, scores = loop
        carry, out, score = sweep(carry, xs_of(b))
        outs = jax.tree.map(
            lambda buf, x: lax.dynamic_update_slice_in_dim(buf, x, b * block, axis),
            outs,
            out,
        )
        scores = jax.tree.map(
            lambda buf, x: lax.dynamic_update_index_in_dim(buf, x, b, axis),
            scores,
            score,
        )
        return b + 1, carry, outs, scores

    loop = (jnp.int32(0), carry, outs, scores)
    _, carry, outs, scores = lax.while_loop(running, advance, loop)
    return carry, outs, scores


@functools.partial(jax.jit, static_argnames=("padded",))
def sweep_lrs(schedule, *, padded):
    """The sweep's rates (a ``lr_sweep`` schedule, a pytree argument, so other
    rates reuse the compiled function), held at the last one to ``padded``."""
    return schedule(jnp.arange(padded, dtype=jnp.int32))


@functools.partial(jax.jit, static_argnames=("num_sweeps", "broadcast", "shardings"))
def initial_carry(state, *, num_sweeps, broadcast, shardings) -> Carry:
    if broadcast:  # one initial state shared by every sweep
        state = jax.tree.map(
            lambda x: jnp.broadcast_to(x, (num_sweeps, *x.shape)), state
        )
    state = _sharding.constrain_leaves(state, shardings)
    shape = () if num_sweeps is None else (num_sweeps,)
    zeros = jnp.zeros(shape, jnp.float32)
    return Carry(
        state,
        zeros,
        jnp.full(shape, jnp.inf, jnp.float32),
        zeros,
        jnp.full(shape, -1, jnp.int32),
    )
