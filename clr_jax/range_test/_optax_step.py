"""The training step of :func:`range_test`: ``loss_fn`` + any optax optimizer.

The optimizer is built with :func:`clr_jax.with_schedules` and the step
writes its rate into the injected ``learning_rate`` of the optimizer state,
so the compiled sweep is the same for every rate.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from clr_jax import _validation as v
from clr_jax._static import fn_key
from clr_jax.inject import set_hyperparam, with_schedules
from clr_jax.range_test._driver import range_test_with_step
from clr_jax.range_test._result import RangeTestResult


class SweepState(NamedTuple):
    """The training state :func:`range_test` carries: params and optimizer state."""

    params: Any
    opt_state: Any


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
            fn_key(self.loss_fn),
            fn_key(self.optimizer),
            self.has_aux,
            fn_key(self.metric_fn),
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
    progress: bool | None = None,
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
      progress: ``None`` (a bar when stderr is a terminal), ``True`` or ``False``.
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
    v.check_callable("loss_fn", loss_fn)
    v.check_callable("optimizer", optimizer)
    v.check_callable("metric_fn", metric_fn, optional=True)
    values = _check_hyperparams(hyperparams)
    step = _OptaxStep(loss_fn, optimizer, bool(has_aux), metric_fn, tuple(values))
    state = _init_sweep_state(step, params, values)
    result = range_test_with_step(
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
    swept = tuple((name, tuple(vals.tolist())) for name, vals in values.items())
    config = result.config._replace(optimizer=repr(optimizer), hyperparams=swept)
    return result.replace(config=config)
