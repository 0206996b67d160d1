"""The host driver of the range test: checks, chunks, progress, the result.

:func:`range_test_with_step` checks its arguments, lays the sweep out in
chunks (:mod:`._feed`), runs the compiled chunk of :mod:`._engine` over
them, and assembles the :class:`RangeTestResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from clr_jax import _progress, _sharding
from clr_jax import _validation as v
from clr_jax._static import StaticFn
from clr_jax._tree import leading_size
from clr_jax.range_test import _engine, _feed
from clr_jax.range_test._result import RangeTestConfig, RangeTestResult


def check_sweep_args(start_lr, end_lr, num_steps, mode, beta, diverge_threshold):
    """The sweep's own arguments; returns ``num_steps`` as an int."""
    v.check_choice("mode", mode, ("exponential", "linear"))
    (v.check_positive if mode == "exponential" else v.check_non_negative)(
        "start_lr", start_lr
    )
    v.check_positive("end_lr", end_lr)
    num_steps = v.check_step_count("num_steps", num_steps, minimum=2)
    if float(end_lr) <= float(start_lr):
        v.fail(
            "end_lr", f"> `start_lr` ({start_lr}: a range test sweeps upwards)", end_lr
        )
    v.check_interval("beta", beta, 0.0, 1.0, closed_low=True, closed_high=False)
    if diverge_threshold is not None:
        v.check_finite("diverge_threshold", diverge_threshold)
        if float(diverge_threshold) <= 1.0:
            v.fail(
                "diverge_threshold",
                "> 1 (a multiple of the best loss) or None",
                diverge_threshold,
            )
    return num_steps


def _chunk_size(chunk_size, num_steps: int, chunked: bool) -> int:
    if chunk_size is None:
        return max(num_steps // 20, 1) if chunked else num_steps
    size = v.check_step_count("chunk_size", chunk_size)
    if size > num_steps:
        v.fail("chunk_size", f"<= num_steps ({num_steps})", size)
    return size


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


def _drive(step_fn, state, feed, config, *, knobs, lrs, bar, broadcast):
    """Runs the compiled chunk over every chunk; returns the final carry and outputs."""
    c = config.chunk_size
    carry = _engine.initial_carry(
        state, num_sweeps=config.num_sweeps, broadcast=broadcast
    )
    stop_early = len(lrs) > c
    outputs, previous = [], None
    for i, source in enumerate(feed.sources):
        carry, out = _engine.run_chunk(
            step_fn, config, carry, feed.data, knobs, np.int32(i), lrs, source
        )
        outputs.append(out)
        # Look at the chunk before this one: it is done (or nearly) by now, so
        # the host waits little and the device stays busy.
        if previous is not None and _report(previous, bar) and stop_early:
            break
        previous = (carry.diverged_step, c)
    if previous is not None:
        _report(previous, bar)
    return carry, outputs


def _report(previous, bar) -> bool:
    """Updates the bar for a finished chunk; True when every sweep has diverged."""
    diverged_step, size = previous
    diverged = np.asarray(diverged_step) >= 0  # waits for that chunk
    bar.update(size)
    return bool(np.all(diverged))


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


def _collect(
    carry: _engine.Carry, outputs, lrs_all, num_steps: int, config: RangeTestConfig
) -> RangeTestResult:
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

    fields = _engine.StepOut(
        *(curve([getattr(o, f) for o in outputs]) for f in _engine.StepOut._fields)
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
        config,
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
    progress: bool | None = None,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    data_axis: str | None = None,
) -> RangeTestResult:
    r"""LR range test of a custom training step, compiled as one device loop.

    The lower-level entry point, for steps that carry more than params and an
    optimizer state: BatchNorm statistics, dropout RNG, a Flax ``TrainState``
    or a split NNX model. :func:`range_test` is built on it. How the sweep
    runs (one ``while_loop`` per sweep, a masked ``scan`` for many), what is
    cached, the data forms and multi-device use are described in
    :mod:`clr_jax.range_test`.

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
      state: the initial training state, any pytree; never modified.
      data: arrays with a leading example axis (sampled on the device with
        ``key``), pre-batched arrays (``batched=True``), or an iterator of
        batches (``iter(loader)``).
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
      progress: ``None`` shows a tqdm bar when stderr is a terminal, ``True``
        always (needs tqdm), ``False`` never; with a bar the sweep runs in
        chunks of ``chunk_size`` steps, one compiled function.
      chunk_size: steps per compiled call; default ``max(num_steps // 20, 1)``
        with a bar or an iterator, else ``num_steps`` (a single call).
      mesh: a ``jax.sharding.Mesh`` for data parallelism, or ``None``.
      data_axis: the mesh axis that splits the batch (default ``'data'`` if
        the mesh has it, else its first axis).

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
    v.check_callable("step_fn", step_fn)
    num_steps = check_sweep_args(
        start_lr, end_lr, num_steps, mode, beta, diverge_threshold
    )
    axis = _sharding.resolve_data_axis(mesh, data_axis)
    keys = jax.random.key(0) if key is None else v.check_key(key, batched=True)
    num_sweeps = _sweep_count(keys, state, batched_state)
    show_bar = _progress.wanted(progress)
    form = _feed.form_of(data, batched)
    chunked = show_bar or form is _feed.DataForm.ITERATOR
    plan = _feed.Plan(
        num_steps, _chunk_size(chunk_size, num_steps, chunked), mesh, axis
    )
    feed = _feed.make_feed(data, form=form, batch_size=batch_size, keys=keys, plan=plan)
    config = _engine.Config(
        num_steps=num_steps,
        chunk_size=plan.chunk,
        form=form,
        check_threshold=diverge_threshold is not None,
        num_sweeps=num_sweeps,
        source_batched=feed.source_batched,
        mesh=mesh,
        data_axis=axis,
    )
    lrs = _engine.sweep_lrs(
        np.float32(start_lr),
        np.float32(end_lr),
        num_steps=num_steps,
        padded=plan.padded,
        mode=mode,
    )
    threshold = 0.0 if diverge_threshold is None else diverge_threshold
    knobs = (np.float32(beta), np.float32(threshold))
    if mesh is not None:
        state = jax.device_put(state, _sharding.replicated(mesh))
    bar = _progress.bar(show_bar, total=num_steps, desc="range test", unit="step")
    try:
        carry, outputs = _drive(
            StaticFn(step_fn),
            state,
            feed,
            config,
            knobs=knobs,
            lrs=lrs,
            bar=bar,
            broadcast=num_sweeps is not None and not batched_state,
        )
    finally:
        bar.close()
    record = RangeTestConfig(
        start_lr=_plain(start_lr),
        end_lr=_plain(end_lr),
        num_steps=num_steps,
        mode=mode,
        beta=_plain(beta),
        diverge_threshold=_plain(diverge_threshold),
        batch_size=_plain(batch_size),
        num_sweeps=num_sweeps,
        versions=_versions(),
    )
    return _collect(carry, outputs, lrs, num_steps, record)
