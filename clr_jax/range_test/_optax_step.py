"""The training step of :func:`range_test`: ``loss_fn`` + any optax optimizer.

The optimizer is a factory taking ``learning_rate`` (built once with
:func:`clr_jax.with_schedules`), a ready transformation that injects its
learning rate (``optax.inject_hyperparams``, also nested in a chain), or an
``nnx.Optimizer`` (its transformation). Each step writes its rate into every
injected ``learning_rate`` of the optimizer state, so the one that reaches
the update is driven and the compiled sweep is the same for every rate.

Any pytree model: only the trainable leaves are differentiated and updated
(floating-point arrays; the ``nnx.Param`` values of an NNX module), every
other leaf passes through. Leaves that the forward pass changes in place (an
NNX module's BatchNorm statistics and RNG counters) follow those changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from clr_jax import _sharding
from clr_jax import _validation as v
from clr_jax._static import fn_key
from clr_jax._tree import (
    combine,
    is_array_like,
    leading_size,
    partition,
    partition_trainable,
    trainable_mask,
)
from clr_jax.inject import (
    MOMENTUM_NAMES,
    check_settable,
    get_hyperparam,
    has_hyperparam,
    set_hyperparam,
    with_schedules,
)
from clr_jax.range_test._describe import describe_optimizer
from clr_jax.range_test._driver import range_test_with_step, split_arrays
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
    optimizer: Any  # a factory taking learning_rate, or a ready transformation
    ready: bool
    injects: bool  # a factory whose transformation injects learning_rate itself
    has_aux: bool
    metric_fn: Callable | None
    hyperparam_names: tuple[str, ...]

    def _key(self):
        return (
            fn_key(self.loss_fn),
            fn_key(self.optimizer),
            self.ready,
            self.injects,
            self.has_aux,
            fn_key(self.metric_fn),
            self.hyperparam_names,
        )

    def __eq__(self, other):
        return isinstance(other, _OptaxStep) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def transform(self, **hyperparams) -> optax.GradientTransformation:
        # Built once per trace. The values given here only seed the state at
        # `init`; `update` reads every hyperparameter from the state.
        if self.ready:
            return self.optimizer
        values = {name: 0.0 for name in self.hyperparam_names} | hyperparams
        if self.injects:
            return self.optimizer(learning_rate=0.0, **values)
        return with_schedules(self.optimizer, learning_rate=0.0, **values)

    def init(self, params, hyperparams: Mapping[str, jax.Array]):
        trainable, _ = partition_trainable(params)
        if not self.ready:
            return self.transform(**hyperparams).init(trainable)
        opt_state = self.optimizer.init(trainable)
        for name, value in hyperparams.items():
            if not has_hyperparam(opt_state, name):
                raise ValueError(
                    f"`hyperparams` names {name!r}, which `optimizer` does not "
                    "inject; pass the factory instead, or inject it with "
                    "optax.inject_hyperparams."
                )
            opt_state = set_hyperparam(opt_state, name, value)
        return opt_state

    def loss_and_rest(self, trainable, rest, batch):
        """The loss, and the non-trainable arrays as the forward pass left them."""
        arrays, static = partition(rest, is_array_like)
        model = combine(trainable, arrays, static)
        out = self.loss_fn(model, batch)
        loss = out[0] if self.has_aux else out
        after = partition(partition_trainable(model)[1], is_array_like)[0]
        return loss, (after, static)

    def __call__(self, state: SweepState, batch, lr):
        opt_state = set_hyperparam(state.opt_state, "learning_rate", lr)
        trainable, rest = partition_trainable(state.params)
        grad_fn = jax.value_and_grad(self.loss_and_rest, has_aux=True)
        (loss, (arrays, static)), grads = grad_fn(trainable, rest, batch)
        updates, opt_state = self.transform().update(grads, opt_state, trainable)
        params = combine(optax.apply_updates(trainable, updates), arrays, static)
        new_state = SweepState(params, opt_state)
        if self.metric_fn is None:
            return new_state, loss
        return new_state, loss, self.metric_fn(state.params, batch)


@dataclasses.dataclass(frozen=True)
class _OptaxEvaluate:
    """``loss_fn`` (and ``metric_fn``) of a :class:`SweepState` on a batch."""

    step: _OptaxStep

    def __call__(self, state: SweepState, batch):
        out = self.step.loss_fn(state.params, batch)
        loss = out[0] if self.step.has_aux else out
        if self.step.metric_fn is None:
            return loss
        return loss, self.step.metric_fn(state.params, batch)


@functools.partial(
    jax.jit, static_argnames=("step", "static", "axes", "shardings", "fallback")
)
def _init_sweep_state(step, static, arrays, values, *, axes, shardings, fallback):
    """The initial :class:`SweepState`, one per sweep along ``axes``; its
    arrays and the optimizer state's parameter-shaped leaves are placed like
    ``shardings`` (one sweep's, per array leaf of the params)."""

    def init(arrays, values):
        params = combine(arrays, static.tree)
        opt_state = step.init(params, values)
        if shardings is None:
            return SweepState(arrays, opt_state)
        arrays = _sharding.constrain_leaves(arrays, shardings)
        mask = trainable_mask(arrays)
        trained = tuple(s for s, m in zip(shardings, mask, strict=True) if m)
        trainable = partition_trainable(params)[0]
        mirrored = _sharding.mirror_params(opt_state, trainable, trained, fallback)
        return SweepState(arrays, _sharding.constrain_leaves(opt_state, mirrored))

    if axes == (None, None):
        return init(arrays, values)
    return jax.vmap(init, in_axes=axes)(arrays, values)


def _initial_state(step, params, values, count, *, batched_params, mesh, sharding):
    """Places the params (``param_sharding``) and builds the sweep's state."""
    arrays, static = split_arrays(params)
    if not any(trainable_mask(arrays)):
        raise ValueError(
            "`params` must hold at least one floating-point array to train (an "
            f"NNX module: an nnx.Param); got {params!r:.100}."
        )
    if sharding is not None:
        wanted = _sharding.resolve_param_sharding(arrays, mesh, sharding)
        arrays = _sharding.place_leaves(arrays, wanted)
    if batched_params:
        sweeps = leading_size(arrays, "params", axis="sweep")
        if count is not None and count != sweeps:
            raise ValueError(
                f"every `hyperparams` entry must hold one value per sweep ({sweeps}, "
                f"the leading axis of the batched params); got {count}."
            )
    given = _sharding.leaf_shardings(arrays, mesh)
    per_sweep = (
        _sharding.with_leading_axis(given, add=False) if batched_params else given
    )
    on = mesh or _sharding.mesh_of(per_sweep)
    state = _init_sweep_state(
        step,
        static,
        arrays,
        values,
        axes=(0 if batched_params else None, None if count is None else 0),
        shardings=per_sweep,
        fallback=None if on is None else _sharding.replicated(on),
    )
    return SweepState(combine(state.params, static.tree), state.opt_state)


def _resolve_optimizer(optimizer) -> tuple[Any, bool]:
    """``(factory or transformation, ready)``: what drives the rate."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(optimizer, nnx.Optimizer):
        if optimizer.wrt is not nnx.Param:
            v.fail("optimizer", "an nnx.Optimizer with wrt=nnx.Param", optimizer.wrt)
        return optimizer.tx, True
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer, True
    v.check_callable("optimizer", optimizer)
    return optimizer, False


def _injects(factory, names, params) -> bool:
    """Whether ``factory(learning_rate=...)`` injects its rate itself
    (``optax.inject_hyperparams(optax.sgd)``, a :func:`clr_jax.with_schedules`
    partial); such a factory is used as it is, not wrapped again."""
    leaves, treedef = jax.tree.flatten(params)
    shapes = tuple((np.shape(x), jnp.result_type(x)) for x in leaves)
    key = (fn_key(factory), tuple(names), treedef, shapes)
    try:
        return _INJECTS[key]
    except (KeyError, TypeError):  # not seen, or unhashable
        pass
    answer = _probe_injects(factory, names, params)
    with contextlib.suppress(TypeError):
        _INJECTS[key] = answer
    return answer


_INJECTS: dict = {}  # (factory, names, params' structure) -> bool


def _probe_injects(factory, names, params) -> bool:
    try:
        tx = factory(learning_rate=0.0, **dict.fromkeys(names, 0.0))
    except TypeError as err:
        raise ValueError(
            "`optimizer` must be a factory taking `learning_rate` (and the names "
            f"of `hyperparams`), or a ready transformation; calling it failed: {err}"
        ) from err
    if not isinstance(tx, optax.GradientTransformation):
        return False
    abstract = jax.eval_shape(lambda p: tx.init(partition_trainable(p)[0]), params)
    return has_hyperparam(abstract, "learning_rate")


def _check_hyperparams(hyperparams) -> tuple[dict[str, Any], int | None]:
    """``(values, K)``: 1-D values run ``K`` sweeps; 0-d values (also traced,
    e.g. under ``jax.vmap``) set the one sweep's hyperparameters."""
    if hyperparams is None:
        return {}, None
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
        xp = jnp if v.is_traced(values) else np
        values = xp.asarray(values, np.float32)
        if values.ndim > 1 or values.size == 0:
            raise ValueError(
                f"`hyperparams[{name!r}]` must be a non-empty 1-D array (one value "
                f"per sweep) or a single value; got shape {values.shape}."
            )
        v.check_finite(f"hyperparams[{name!r}]", values)
        out[name] = values
        sizes.add(len(values) if values.ndim else None)
    if len(sizes) > 1:
        raise ValueError(
            "every `hyperparams` entry must hold the same number of values (one "
            f"per sweep, or a single value each); got {sorted(sizes, key=str)}."
        )
    return out, sizes.pop()


def range_test(
    loss_fn: Callable,
    params: Any,
    data: Any,
    *,
    batch_size: int | None = None,
    optimizer: Any = optax.sgd,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 400,
    mode: Literal["exponential", "linear"] = "exponential",
    key: jax.Array | None = None,
    beta: float = 0.98,
    diverge_threshold: float | None = 4.0,
    metric_fn: Callable | None = None,
    has_aux: bool = False,
    hyperparams: Mapping[str, Any] | None = None,
    batched: bool = False,
    batched_params: bool = False,
    progress: bool | None = None,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    data_axis: str | None = None,
    param_sharding: Any = None,
    val_data: Any = None,
    val_every: int | None = None,
    val_batch_size: int | None = None,
) -> RangeTestResult:
    r"""Smith's learning-rate range test, run on the device as one compiled loop.

    Trains ``params`` for ``num_steps`` steps of ``optimizer`` while the rate
    grows from ``start_lr`` to ``end_lr`` (:func:`clr_jax.lr_sweep`), and
    records the loss of every step (measured before its update), its
    bias-corrected EMA and, with ``metric_fn``, a metric such as accuracy.
    Each step writes its rate into the optimizer state's injected
    ``learning_rate``.

    Smoothing, divergence (``s_t - b_t > (diverge_threshold - 1) |b_t|``
    with ``s`` the smoothed and ``b`` the best smoothed loss, or any NaN/Inf),
    the frozen state after it, the data forms, caching, tracing and
    multi-device execution are as in :func:`range_test_with_step`, on which
    this is built. The caller's ``params`` are never modified or donated; the
    trained ones are in ``result.final_state.params``.

    ``params`` may be any pytree: an Equinox module, a Flax NNX module (its
    ``nnx.Param`` values are trained; BatchNorm statistics and RNG counters
    follow the forward pass), a dict of arrays. Only floating-point arrays
    are differentiated and updated; every other leaf passes through.

    Many sweeps in one compiled program (``jax.vmap``): pass a 1-D batch of
    ``K`` keys (``jax.random.split(key, K)``: ``K`` seeds), ``K`` stacked
    initialisations (``batched_params=True``), and/or
    ``hyperparams={'weight_decay': [...]}`` with ``K`` values per optimizer
    argument (Smith 2018 compares weight decays this way). They are zipped,
    sweep ``k`` using key ``k``, params ``k`` and value ``k``; a single key is
    shared (the same batches for every sweep). The result then has a leading
    ``K`` axis. The same sweeps one by one under ``jax.vmap`` give the same
    curves.

    Args:
      loss_fn: ``loss_fn(params, batch) -> loss`` (``(loss, aux)`` with
        ``has_aux=True``; ``aux`` is not recorded), a scalar.
      params: initial parameters, any pytree (see above).
      data: arrays with a leading example axis (sampled on the device),
        pre-batched arrays (``batched=True``), or a loader (any iterable of
        batches that is not an array pytree).
      batch_size: examples per step; required for sampled data.
      optimizer: a factory taking ``learning_rate`` and returning an optax
        transformation (``optax.sgd``, ``functools.partial(optax.sgd,
        momentum=0.9)``, ``optax.adamw``, ``optax.inject_hyperparams(optax.
        sgd)``, a :func:`clr_jax.with_schedules` partial); a ready
        transformation that injects ``learning_rate`` anywhere inside
        (``optax.chain(optax.clip_by_global_norm(1.0), optax.
        inject_hyperparams(optax.sgd)(learning_rate=0.0))``); or an
        ``nnx.Optimizer`` with ``wrt=nnx.Param`` (its transformation).
      start_lr: rate of the first step.
      end_lr: rate of the last step.
      num_steps: steps in the sweep, at least 2. The default, 400, is fine
        enough to read an optimizer with momentum (see ``'half_edge'``).
      mode: ``'exponential'`` or ``'linear'``.
      key: PRNG key, or a 1-D batch of keys (one sweep each).
      beta: EMA factor, in [0, 1).
      diverge_threshold: > 1, or ``None`` to stop only on NaN/Inf.
      metric_fn: ``metric_fn(params, batch) -> scalar``, recorded at the same
        params as the loss.
      has_aux: ``loss_fn`` returns ``(loss, aux)``.
      hyperparams: optimizer arguments, name -> 1-D values (one sweep each)
        or single values (0-d, also traced under ``jax.vmap``).
      batched: ``data`` is pre-batched (leading axis = steps).
      batched_params: ``params`` has a leading axis of ``K`` initialisations,
        one sweep each.
      progress: ``None`` (a bar when stderr is a terminal), ``True`` or ``False``.
      chunk_size: steps per compiled call (see :func:`range_test_with_step`).
      mesh: a ``jax.sharding.Mesh`` to shard each batch over, or ``None``.
      data_axis: the mesh axis that splits the batch.
      param_sharding: where to put the params (a ``Sharding`` or
        ``PartitionSpec``, a pytree prefix of them, or ``(path, leaf) ->
        PartitionSpec``); default: where they are. The optimizer state's
        parameter-shaped leaves follow the params.
      val_data: held-out arrays, evaluated with ``loss_fn`` (and
        ``metric_fn``) every ``val_every`` steps inside the compiled loop.
      val_every: steps between evaluations (see :func:`range_test_with_step`).
      val_batch_size: examples per evaluation batch (a divisor of their number).

    Returns:
      A :class:`RangeTestResult`; ``final_state`` is a :class:`SweepState`.

    Raises:
      ValueError: as :func:`range_test_with_step`, for non-callable
        functions, bad ``hyperparams``, params without a floating-point
        array, or an optimizer whose learning rate cannot be driven (none
        injected, or injected as a schedule).

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
      >>> keys = jax.random.split(jax.random.key(1), 4)
      >>> one_by_one = jax.jit(jax.vmap(lambda k: clr_jax.range_test(
      ...     loss_fn, jnp.float32(0.0), data, batch_size=32, start_lr=1e-4,
      ...     end_lr=100.0, num_steps=100, key=k, progress=False).losses))(keys)
      >>> together = clr_jax.range_test(loss_fn, jnp.float32(0.0), data,
      ...     batch_size=32, start_lr=1e-4, end_lr=100.0, num_steps=100, key=keys,
      ...     progress=False).losses
      >>> # The two compile differently: equal to rounding, which the blow-up
      >>> # of a long sweep can amplify.
      >>> bool(jnp.allclose(one_by_one, together, rtol=1e-5, equal_nan=True))
      True

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
      https://arxiv.org/abs/1506.01186.
      Smith, "A disciplined approach to neural network hyper-parameters: Part
      1", 2018, https://arxiv.org/abs/1803.09820.
    """
    v.check_callable("loss_fn", loss_fn)
    v.check_callable("metric_fn", metric_fn, optional=True)
    tx, ready = _resolve_optimizer(optimizer)
    values, count = _check_hyperparams(hyperparams)
    batched_params = v.check_bool("batched_params", batched_params)
    injects = not ready and _injects(tx, values, split_arrays(params)[0])
    step = _OptaxStep(
        loss_fn, tx, ready, injects, bool(has_aux), metric_fn, tuple(values)
    )
    state = _initial_state(
        step,
        params,
        values,
        count,
        batched_params=batched_params,
        mesh=mesh,
        sharding=param_sharding,
    )
    check_settable(state.opt_state, "learning_rate")
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
        batched_state=batched_params or count is not None,
        progress=progress,
        chunk_size=chunk_size,
        mesh=mesh,
        data_axis=data_axis,
        val_data=val_data,
        val_every=val_every,
        val_batch_size=val_batch_size,
        val_fn=None if val_data is None else _OptaxEvaluate(step),
    )
    swept = tuple(
        (name, tuple(np.atleast_1d(vals).tolist()))
        for name, vals in values.items()
        if not v.is_traced(vals)
    )
    config = result.config._replace(
        optimizer=describe_optimizer(optimizer, state.opt_state),
        hyperparams=swept,
        momentum=_gradient_decay(state.opt_state, values),
    )
    return result.replace(config=config)


def _gradient_decay(opt_state, swept: Mapping[str, Any]) -> float | None:
    """The optimizer's one concrete ``momentum`` (or Adam's ``b1``), if any.

    ``None`` when it has none, when it is traced, or when it is swept (then
    every sweep's value is in the config's ``hyperparams``).
    """
    for name in MOMENTUM_NAMES:
        if name in swept:
            return None
        value = get_hyperparam(opt_state, name)
        if value is None or v.is_traced(value):
            continue
        distinct = np.unique(np.asarray(value, np.float64))
        # Seven digits: the float32 value as it was written (0.9, not 0.89999998).
        return float(f"{distinct[0]:.7g}") if distinct.size == 1 else None
    return None
