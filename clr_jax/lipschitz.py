r"""The Lipschitz adaptive learning rate (Yedida & Saha, 2019; "LipschitzLR").

The learning rate is the inverse of a Lipschitz constant of the loss,
``lr = 1 / K``, where ``K`` bounds the gradient of the loss with respect to
the last layer's weights:

.. math:: K = c_{loss} \cdot K_z + \lambda \max\|w\|

``K_z`` is the size of the penultimate activations (the inputs of the last
layer), measured on the training set with the current weights; ``c_loss``
depends on the loss and the batch size ``m``; ``lambda max||w||`` is the
term an L2 penalty adds.

Three layers, split so that a training loop can compose them:

* formulas, pure ``jnp`` and traceable (``jit``/``vmap`` over ``k_z``,
  ``max_weight_norm``, ``weight_decay``, ...): :func:`lipschitz_constant`,
  :func:`lipschitz_lr`;
* estimators, each one compiled ``lax.scan`` over the training set in
  consecutive ``batch_size`` chunks: :func:`penultimate_norm` (``K_z``),
  :func:`output_target_norms` (``K_a`` and ``||y||`` for MSE) and
  :func:`max_weight_norm`;
* the optimizers of the authors' code, pure optax: :func:`adamo` (dampened
  momentum) and :func:`with_inverse_time_decay` (Keras' ``decay=``).

The per-epoch policy that puts these together inside ``fit`` is
:func:`clr_jax.flax.lipschitz_policy`.

Provenance: the softmax cross-entropy, binary cross-entropy and MSE
constants, the L2 term, and ``K_z`` as the largest Frobenius norm over
training chunks come from the paper and its authors' practical algorithm.
The MAE constant and the chunked estimator of ``K_a``/``||y||`` are derived
here by the same recipe; the paper has neither.

References:
  Yedida, Saha, "A novel adaptive learning rate scheduler for deep neural
  networks" (later "LipschitzLR: Using theoretically computed adaptive
  learning rates for fast convergence"), 2019,
  https://arxiv.org/abs/1902.07399.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from clr_jax import _validation as v
from clr_jax._tree import leading_size

__all__ = [
    "LOSSES",
    "OutputTargetNorms",
    "adamo",
    "lipschitz_constant",
    "lipschitz_lr",
    "max_weight_norm",
    "output_target_norms",
    "penultimate_norm",
    "with_inverse_time_decay",
]

Loss = Literal["softmax_ce", "binary_ce", "mse", "mae"]

#: The losses :func:`lipschitz_constant` knows.
LOSSES: tuple[str, ...] = ("softmax_ce", "binary_ce", "mse", "mae")


# ---------------------------------------------------------------------------
# Formulas
# ---------------------------------------------------------------------------


def _check_unused(loss: str, name: str, value: Any, *, allow_two: bool = False) -> None:
    """An argument that ``loss`` does not use must be ``None`` (or 2, if allowed)."""
    if value is None:
        return
    arr = v.concrete(value)
    if allow_two and arr is not None and arr.shape == () and arr == 2:
        return
    allowed = "None or 2" if allow_two else "None"
    raise ValueError(
        f"`{name}` is not used with loss={loss!r} and must be {allowed}; got {value!r}."
    )


def lipschitz_constant(
    k_z,
    *,
    loss: Loss,
    batch_size,
    num_classes=None,
    weight_decay=0.0,
    max_weight_norm=0.0,
    output_norm=None,
    target_norm=None,
) -> jax.Array:
    r"""Lipschitz constant ``K`` of the loss, as Yedida & Saha compute it.

    .. math::

       K = c \cdot K_z + \lambda \max\|w\|, \qquad
       c = \begin{cases}
         \frac{k - 1}{k\,m} & \text{softmax\_ce (paper)} \\
         \frac{1}{2m} & \text{binary\_ce (paper)} \\
         \frac{K_a + \|y\|}{m} & \text{mse (paper, v4 sign)} \\
         \frac{1}{m} & \text{mae (derived, not in the paper)}
       \end{cases}

    with ``m = batch_size``, ``k = num_classes``, ``K_a = output_norm`` and
    ``||y|| = target_norm``. For a network trained on mini-batches ``m`` is
    the mini-batch size, as the paper insists; for a classical model trained
    by full-batch gradient descent it is the training-set size (and ``K_z``
    is the Frobenius norm of the whole data matrix).

    The MSE form uses ``K_a + ||y||`` as in the paper's final (v4) version;
    v1-v3 printed ``K_a - ||y||``, a sign slip. The MAE form,
    ``|dE/da| = 1/m``, follows the paper's recipe but is derived here.
    The paper's constants are kept as printed: ``(k-1)/k`` and ``1/2`` are
    the loss slopes at a uniform prediction, not their suprema, so for
    softmax and binary cross-entropy ``K`` is not a worst-case bound (it is
    about ``sqrt(m)`` below one).

    Pure ``jnp``: every numeric argument may be a JAX array or a tracer, so
    the function works under ``jit`` and ``vmap``. Only concrete values are
    checked.

    Args:
      k_z: penultimate-activation norm ``K_z`` (see :func:`penultimate_norm`),
        ``>= 0``.
      loss: one of ``'softmax_ce'``, ``'binary_ce'``, ``'mse'``, ``'mae'``.
      batch_size: ``m``, the number of examples the loss averages over, ``> 0``.
      num_classes: ``k >= 2``; required for ``'softmax_ce'`` (``None`` or 2
        is accepted for ``'binary_ce'``).
      weight_decay: ``lambda`` of the L2 term, ``>= 0``.
      max_weight_norm: bound on the weight norm, ``>= 0`` (see
        :func:`max_weight_norm`).
      output_norm: ``K_a``, bound on the 2-norm of the network's outputs over
        a batch; required for ``'mse'`` only.
      target_norm: ``||y||``, the 2-norm of the targets of a batch; required
        for ``'mse'`` only.

    Returns:
      ``K`` as a float array (float32 unless x64 is on), broadcast over the
      arguments' shapes.

    Raises:
      ValueError: for an unknown ``loss``; a missing ``num_classes`` (softmax)
        or ``output_norm``/``target_norm`` (mse), or one given to a loss that
        does not use it; ``num_classes < 2``; ``batch_size <= 0``; a negative
        ``k_z``, norm or ``weight_decay``; non-finite values.

    Examples:
      The paper's ResNet20/CIFAR-10 "Fixed" run:

      >>> import clr_jax
      >>> k = clr_jax.lipschitz_constant(
      ...     206.695, loss="softmax_ce", batch_size=128, num_classes=10,
      ...     weight_decay=1e-3, max_weight_norm=43.257)
      >>> round(float(k), 4)
      1.4966
      >>> round(float(clr_jax.lipschitz_constant(64.0, loss="binary_ce",
      ...                                        batch_size=32)), 4)
      1.0

    References:
      Yedida, Saha, "A novel adaptive learning rate scheduler for deep
      neural networks" / "LipschitzLR", 2019,
      https://arxiv.org/abs/1902.07399.
    """
    v.check_choice("loss", loss, LOSSES)
    v.check_non_negative("k_z", k_z)
    v.check_positive("batch_size", batch_size)
    v.check_non_negative("weight_decay", weight_decay)
    v.check_non_negative("max_weight_norm", max_weight_norm)

    if loss == "softmax_ce":
        if num_classes is None:
            raise ValueError(
                "`num_classes` is required for loss='softmax_ce'; got None."
            )
        num_classes = v.check_step_count("num_classes", num_classes, minimum=2)
    elif loss == "binary_ce":
        _check_unused(loss, "num_classes", num_classes, allow_two=True)
    else:
        _check_unused(loss, "num_classes", num_classes)

    if loss == "mse":
        for name, value in (("output_norm", output_norm), ("target_norm", target_norm)):
            if value is None:
                raise ValueError(
                    f"`{name}` is required for loss='mse' (K_a and ||y||, see "
                    f"output_target_norms); got None."
                )
            v.check_non_negative(name, value)
    else:
        _check_unused(loss, "output_norm", output_norm)
        _check_unused(loss, "target_norm", target_norm)

    dtype = jnp.promote_types(
        jnp.result_type(k_z, batch_size, weight_decay, max_weight_norm, float),
        jnp.float32,
    )
    k_z = jnp.asarray(k_z, dtype)
    m = jnp.asarray(batch_size, dtype)
    if loss == "softmax_ce":
        k = jnp.asarray(num_classes, dtype)
        slope = (k - 1.0) / (k * m)
    elif loss == "binary_ce":
        slope = 1.0 / (2.0 * m)
    elif loss == "mse":
        slope = (jnp.asarray(output_norm, dtype) + jnp.asarray(target_norm, dtype)) / m
    else:  # mae
        slope = 1.0 / m
    l2 = jnp.asarray(weight_decay, dtype) * jnp.asarray(max_weight_norm, dtype)
    return slope * k_z + l2


def lipschitz_lr(
    k_z,
    *,
    loss: Loss,
    batch_size,
    num_classes=None,
    weight_decay=0.0,
    max_weight_norm=0.0,
    output_norm=None,
    target_norm=None,
) -> jax.Array:
    r"""The Lipschitz adaptive learning rate ``1 / K``.

    .. math:: lr = 1 / K

    with ``K`` from :func:`lipschitz_constant` (same arguments, same
    checks). The paper recomputes it before every epoch and applies it with
    no clipping, floor or warm-up; a ``K`` of 0 (all-zero features and no
    L2 term) gives ``inf``.

    Args:
      k_z: penultimate-activation norm ``K_z``.
      loss: ``'softmax_ce'``, ``'binary_ce'``, ``'mse'`` or ``'mae'``.
      batch_size: ``m``.
      num_classes: ``k`` (softmax).
      weight_decay: ``lambda``.
      max_weight_norm: bound on the weight norm.
      output_norm: ``K_a`` (mse).
      target_norm: ``||y||`` (mse).

    Returns:
      The learning rate as a float array.

    Raises:
      ValueError: as :func:`lipschitz_constant`.

    Examples:
      >>> import clr_jax
      >>> lr = clr_jax.lipschitz_lr(
      ...     206.695, loss="softmax_ce", batch_size=128, num_classes=10,
      ...     weight_decay=1e-3, max_weight_norm=43.257)
      >>> round(float(lr), 4)  # the paper reports 0.668
      0.6682
      >>> round(float(clr_jax.lipschitz_lr(108.4, loss="softmax_ce",
      ...                                  batch_size=256, num_classes=10)), 3)
      2.624

    References:
      Yedida, Saha, "A novel adaptive learning rate scheduler for deep
      neural networks" / "LipschitzLR", 2019,
      https://arxiv.org/abs/1902.07399.
    """
    return 1.0 / lipschitz_constant(
        k_z,
        loss=loss,
        batch_size=batch_size,
        num_classes=num_classes,
        weight_decay=weight_decay,
        max_weight_norm=max_weight_norm,
        output_norm=output_norm,
        target_norm=target_norm,
    )


# ---------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------


def _sum_squares(tree: Any) -> jax.Array:
    total = jnp.zeros((), jnp.float32)
    for leaf in jax.tree.leaves(tree):
        leaf = jnp.asarray(leaf)
        leaf = leaf.astype(jnp.promote_types(leaf.dtype, jnp.float32))
        total = total + jnp.sum(jnp.square(leaf))
    return total


def _mask_rows(tree: Any, keep: jax.Array) -> Any:
    """Zeroes the rows (leading axis) of every leaf where ``keep`` is False."""

    def mask(leaf):
        leaf = jnp.asarray(leaf)
        shaped = keep.reshape(keep.shape + (1,) * (leaf.ndim - 1))
        return jnp.where(shaped, leaf, jnp.zeros((), leaf.dtype))

    return jax.tree.map(mask, tree)


@functools.partial(jax.jit, static_argnames=("fn", "batch_size"))
def _max_chunk_norms(fn, params, xs, ys, *, batch_size):
    """Max over consecutive chunks of ``||fn(params, x_b)||_F`` and ``||y_b||_F``.

    One ``lax.scan``. Chunk ``i`` covers rows ``[i*B, min((i+1)*B, n))``. The
    last partial chunk is read as the final ``B`` rows of the data (a
    window that overlaps the previous chunk, so no copy or padding of the
    data is needed) and the rows that belong to the previous chunk are
    zeroed in ``fn``'s output, which leaves exactly the partial chunk's norm.
    """
    n = jax.tree.leaves(xs)[0].shape[0]
    chunk = min(batch_size, n)
    num_chunks = -(-n // chunk)

    def body(best, i):
        first = i * chunk
        start = jnp.minimum(first, n - chunk)
        keep = start + jnp.arange(chunk) >= first

        def window(leaf):
            return jax.lax.dynamic_slice_in_dim(leaf, start, chunk, axis=0)

        out = fn(params, jax.tree.map(window, xs))
        y = jax.tree.map(window, ys)
        norms = jnp.stack(
            [
                jnp.sqrt(_sum_squares(_mask_rows(out, keep))),
                jnp.sqrt(_sum_squares(_mask_rows(y, keep))),
            ]
        )
        return jnp.maximum(best, norms.astype(best.dtype)), None

    best, _ = jax.lax.scan(
        body, jnp.zeros((2,), jnp.float32), jnp.arange(num_chunks, dtype=jnp.int32)
    )
    return best[0], best[1]


def _check_estimator_args(fn_name: str, fn: Any, data: Any, batch_size: Any) -> int:
    v.check_callable(fn_name, fn)
    batch_size = v.check_step_count("batch_size", batch_size)
    if leading_size(data, "data") == 0:
        v.fail("data", "at least one example", "0 examples")
    return batch_size


def penultimate_norm(
    feature_fn: Callable[[Any, Any], Any], params: Any, data: Any, *, batch_size: int
) -> jax.Array:
    r"""``K_z``: the largest Frobenius norm of the penultimate activations.

    .. math:: K_z = \max_b \|A_b\|_F, \qquad A_b = \mathrm{feature\_fn}(params, X_b)

    over the consecutive chunks ``X_b`` of ``batch_size`` rows of ``data``,
    in order and unshuffled, the last partial chunk included: the authors'
    practical algorithm (the whole chunk's norm, not a per-example maximum
    and not a spectral norm). Use the un-augmented training set and a
    ``feature_fn`` that runs the model in inference mode (running BatchNorm
    statistics, no dropout), returning the inputs of the last layer.

    One compiled ``lax.scan`` over the chunks. ``feature_fn`` is a static
    argument of a cached ``jax.jit``: repeated calls with the *same* function
    object and the same shapes do not recompile (pass a module-level function
    or keep one closure, not a fresh ``lambda`` per call). It also works
    inside a caller's ``jit`` with traced ``params``.

    ``feature_fn`` must act row by row (example ``i`` of the output depends
    only on example ``i`` of the input), as an inference-mode model does:
    the last partial chunk is computed as a full-size window whose extra
    rows are zeroed at the output.

    Args:
      feature_fn: ``(params, x_chunk) -> features`` with a leading example
        axis (any trailing shape, or a pytree of such arrays: the norm is
        taken over all of it).
      params: whatever ``feature_fn`` takes (e.g. Flax ``{'params': ...,
        'batch_stats': ...}``).
      data: the inputs, an array or pytree of arrays with a common leading
        example axis.
      batch_size: the chunk size, the training batch size ``B`` (a Python
        int, ``>= 1``; larger than the data means one chunk).

    Returns:
      ``K_z`` as a float32 scalar.

    Raises:
      ValueError: for a non-callable ``feature_fn``, ``batch_size`` not an
        integer ``>= 1``, or ``data`` without examples or with mismatched
        leading axes.

    Examples:
      >>> import jax.numpy as jnp, clr_jax
      >>> def features(params, x):
      ...     return x * params
      >>> x = jnp.array([[3.0], [4.0], [0.0], [1.0], [12.0]])
      >>> # chunks [3, 4], [0, 1] and the partial [12]: norms 5, 1, 12
      >>> float(clr_jax.penultimate_norm(features, 1.0, x, batch_size=2))
      12.0

    References:
      Yedida, Saha, "A novel adaptive learning rate scheduler for deep
      neural networks" / "LipschitzLR", 2019,
      https://arxiv.org/abs/1902.07399.
    """
    batch_size = _check_estimator_args("feature_fn", feature_fn, data, batch_size)
    k_z, _ = _max_chunk_norms(feature_fn, params, data, None, batch_size=batch_size)
    return k_z


class OutputTargetNorms(NamedTuple):
    """``K_a`` and ``||y||`` for the MSE constant (see :func:`output_target_norms`)."""

    output_norm: jax.Array
    target_norm: jax.Array


def output_target_norms(
    predict_fn: Callable[[Any, Any], Any],
    params: Any,
    data: Any,
    targets: Any,
    *,
    batch_size: int,
) -> OutputTargetNorms:
    r"""``K_a`` and ``||y||`` for MSE: largest 2-norms of outputs and targets.

    .. math::

       K_a = \max_b \|\hat y_b\|_2, \qquad \|y\| = \max_b \|y_b\|_2

    over the same consecutive ``batch_size`` chunks as
    :func:`penultimate_norm` (the norm of a chunk's whole output vector or,
    for several outputs, matrix). Derived, not from the paper: the paper
    defines ``K_a`` as a bound on ``||a||`` and suggests the 2-norm, but
    never estimated it (its authors ran no network regression). With ``m``
    the chunk size the resulting bound
    ``(K_a + ||y||) K_z / m`` holds for the last layer's gradient on every
    full chunk at the current weights, because
    ``||A^T (a - y)|| / m <= ||A||_F (||a|| + ||y||) / m``.

    One compiled ``lax.scan``, cached like :func:`penultimate_norm`.

    Args:
      predict_fn: ``(params, x_chunk) -> outputs``, the model in inference
        mode.
      params: whatever ``predict_fn`` takes.
      data: the inputs (leading example axis).
      targets: the targets, same number of examples.
      batch_size: the chunk size ``B``.

    Returns:
      An :class:`OutputTargetNorms` ``(output_norm, target_norm)``; pass it
      on as ``lipschitz_lr(..., **norms._asdict())``.

    Raises:
      ValueError: as :func:`penultimate_norm`, also for ``targets`` whose
        length differs from ``data``'s.

    Examples:
      >>> import jax.numpy as jnp, clr_jax
      >>> def predict(w, x):
      ...     return x @ w
      >>> x = jnp.array([[3.0], [4.0], [1.0]])
      >>> y = jnp.array([[0.0], [0.0], [2.0]])
      >>> norms = clr_jax.output_target_norms(predict, jnp.ones((1, 1)), x, y,
      ...                                     batch_size=2)
      >>> [float(n) for n in norms]
      [5.0, 2.0]

    References:
      Yedida, Saha, "A novel adaptive learning rate scheduler for deep
      neural networks" / "LipschitzLR", 2019,
      https://arxiv.org/abs/1902.07399.
    """
    batch_size = _check_estimator_args(
        "predict_fn", predict_fn, (data, targets), batch_size
    )
    out, y = _max_chunk_norms(predict_fn, params, data, targets, batch_size=batch_size)
    return OutputTargetNorms(out, y)


@jax.jit
def max_weight_norm(tree: Any) -> jax.Array:
    r"""The largest L2 (Frobenius) norm of any single leaf of ``tree``.

    .. math:: \max\|w\| = \max_{v \in \mathrm{leaves}} \|\mathrm{vec}(v)\|_2

    As the authors' code computes it: per variable (kernel, bias, BatchNorm
    scale and offset, and the BatchNorm running statistics too), not the
    global norm. Pass every collection, e.g. ``{'params': ...,
    'batch_stats': ...}``. An empty tree gives 0.

    Args:
      tree: a pytree of arrays.

    Returns:
      A float32 scalar (wider if a leaf is).

    Examples:
      >>> import jax.numpy as jnp, clr_jax
      >>> tree = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.array([3.0])}
      >>> float(clr_jax.max_weight_norm(tree))
      4.0

    References:
      Yedida, Saha, "A novel adaptive learning rate scheduler for deep
      neural networks" / "LipschitzLR", 2019,
      https://arxiv.org/abs/1902.07399.
    """
    norms = [jnp.sqrt(_sum_squares(leaf)) for leaf in jax.tree.leaves(tree)]
    if not norms:
        return jnp.zeros((), jnp.float32)
    return functools.reduce(jnp.maximum, norms)


# ---------------------------------------------------------------------------
# Optimizers of the authors' code (pure optax)
# ---------------------------------------------------------------------------


def adamo(learning_rate, momentum: float = 0.9) -> optax.GradientTransformation:
    r"""SGD with dampened momentum, as the authors' "AdaMo" optimizer.

    .. math:: v \leftarrow \beta v + (1 - \beta) g, \qquad w \leftarrow w - lr\,v

    (an EMA of the gradients without bias correction, unlike ``optax.sgd``'s
    heavy-ball ``v <- beta v + g``).

    Args:
      learning_rate: a number or schedule.
      momentum: ``beta`` in [0, 1).

    Returns:
      An ``optax.GradientTransformation``.
    """
    v.check_interval("momentum", momentum, 0.0, 1.0, closed_low=True, closed_high=False)
    return optax.chain(
        optax.ema(momentum, debias=False), optax.scale_by_learning_rate(learning_rate)
    )


def with_inverse_time_decay(optimizer: Callable[..., Any], decay: float):
    r"""``optimizer`` with Keras' per-update inverse-time decay on top.

    .. math:: lr_t = lr / (1 + d \cdot t)

    with ``t`` the update count, which is what Keras' ``SGD(decay=d)`` does and
    what the Lipschitz paper's code ran with (its "WD" column). The injected
    ``learning_rate`` (and ``fit``'s logged LR) stays the undecayed ``1 / K``.

    Args:
      optimizer: an optax factory taking ``learning_rate``.
      decay: ``d >= 0``.

    Returns:
      A factory with the same arguments.
    """
    v.check_non_negative("decay", decay)

    def factory(learning_rate, **hyperparams):
        return optax.chain(
            optimizer(learning_rate=learning_rate, **hyperparams),
            optax.scale_by_schedule(lambda t: 1.0 / (1.0 + decay * t)),
        )

    # optax.inject_hyperparams binds arguments by the factory's signature.
    factory.__signature__ = inspect.signature(optimizer)
    return factory
