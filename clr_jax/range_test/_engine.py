"""The compiled sweep: the only code of the range test that runs on the device.

One chunk of the sweep is one ``lax.while_loop`` (one sweep) or one masked
``lax.scan`` (many sweeps under ``vmap``); see the package docstring for why.
Every step trains, smooths the loss, checks for divergence and freezes the
state from the diverging step on.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh

from clr_jax import _sharding, schedules
from clr_jax._tree import all_finite
from clr_jax.data import take
from clr_jax.range_test._feed import DataForm


class Config(NamedTuple):
    """Static configuration of the compiled chunk (part of the compile key)."""

    num_steps: int
    chunk_size: int
    form: DataForm
    check_threshold: bool
    num_sweeps: int | None
    source_batched: bool  # per-sweep batch indices (one key per sweep)
    mesh: Mesh | None
    data_axis: str | None


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


def _shard_batch(batch, config: Config):
    if config.mesh is None:
        return batch
    sharding = _sharding.batch_sharding(config.mesh, config.data_axis)
    return _sharding.constrain(batch, sharding)


def _ema(ema, value, beta, correction):
    ema = beta * ema + (1.0 - beta) * value
    return ema, ema / correction


def _sweep_step(step_fn, config: Config, data, knobs, carry: Carry, xs, frozen=None):
    """One training step of the sweep, with smoothing and the divergence check.

    ``frozen`` (a boolean scalar, or ``None`` for never) discards the step:
    the carry comes back unchanged and the outputs are NaN.
    """
    step, lr, source = xs
    beta, threshold = knobs
    batch = take(data, source) if config.form is DataForm.SAMPLED else source
    new_state, loss, metric = _call_step(
        step_fn, carry.state, _shard_batch(batch, config), lr
    )
    loss = loss.astype(jnp.float32)
    correction = 1.0 - beta ** (step + 1).astype(jnp.float32)
    ema_loss, smoothed = _ema(carry.ema_loss, loss, beta, correction)
    best = jnp.minimum(carry.best, smoothed)
    diverged = ~jnp.isfinite(loss) | ~all_finite(new_state)
    if config.check_threshold:
        diverged |= smoothed - best > (threshold - 1.0) * jnp.abs(best)
    ema_metric, smoothed_metric = carry.ema_metric, None
    if metric is not None:
        metric = metric.astype(jnp.float32)
        ema_metric, smoothed_metric = _ema(carry.ema_metric, metric, beta, correction)
    new_carry = Carry(
        new_state, ema_loss, best, ema_metric, jnp.where(diverged, step, -1)
    )
    out = StepOut(loss, smoothed, metric, smoothed_metric)
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


def _sweep_chunk(step_fn, config: Config, data, knobs, carry: Carry, xs):
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


def _masked_sweep_chunk(step_fn, config: Config, data, knobs, carry: Carry, xs):
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
def run_chunk(step_fn, config: Config, carry, data, knobs, index, lrs, source):
    """Chunk ``index`` (``config.chunk_size`` steps) of the sweep as one loop.

    ``lrs`` holds every step's rate; ``source`` every step's batch indices or
    batches (sliced here, so the host dispatches nothing per chunk), or, for
    a host iterator, only this chunk's batches.
    """
    size = config.chunk_size
    start = index * size
    steps = start + jnp.arange(size, dtype=jnp.int32)
    lrs = lax.dynamic_slice_in_dim(lrs, start, size)
    if config.form is not DataForm.ITERATOR:
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
def sweep_lrs(start_lr, end_lr, *, num_steps, padded, mode):
    """The sweep's rates, padded by repeating the last one to ``padded`` steps."""
    sweep = schedules.lr_sweep(start_lr, end_lr, num_steps, mode=mode)
    return sweep(jnp.arange(padded, dtype=jnp.int32))


@functools.partial(jax.jit, static_argnames=("num_sweeps", "broadcast"))
def initial_carry(state, *, num_sweeps, broadcast) -> Carry:
    if broadcast:  # one initial state shared by every sweep
        state = jax.tree.map(
            lambda x: jnp.broadcast_to(x, (num_sweeps, *x.shape)), state
        )
    shape = () if num_sweeps is None else (num_sweeps,)
    zeros = jnp.zeros(shape, jnp.float32)
    return Carry(
        state,
        zeros,
        jnp.full(shape, jnp.inf, jnp.float32),
        zeros,
        jnp.full(shape, -1, jnp.int32),
    )
