"""Per-epoch learning-rate policies of ``fit``: the Lipschitz adaptive rate.

Yedida & Saha's practical algorithm: before every epoch, with the weights as
they stand, measure ``K_z`` (largest Frobenius norm of the penultimate
activations over consecutive training chunks, inference mode) and
``max||w||`` (largest per-variable norm), and train the epoch at ``1 / K``.
Everything runs inside ``fit``'s compiled epoch: no host round-trip and no
recompilation between epochs. The policy is a pytree value: its numeric
settings (``weight_decay``, ``first_epoch_lr``, ``k_momentum``, ``scale``)
are leaves, which ``fit`` passes to the compiled epoch as arguments, so new
values reuse the compiled program; ``feature_fn``, ``loss``, ``num_classes``
and ``batch_size`` (which fixes the chunking) are static.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from clr_jax import _validation as v
from clr_jax.inject import get_hyperparam
from clr_jax.lipschitz import (
    lipschitz_constant,
    max_weight_norm,
    penultimate_norm,
)

FeatureFn = Callable[[dict[str, Any], jax.Array], jax.Array]


def lipschitz_policy(
    feature_fn: FeatureFn,
    *,
    num_classes: int,
    batch_size: int,
    loss: str = "softmax_ce",
    weight_decay: float = 0.0,
    first_epoch_lr: float | None = None,
    k_momentum: float | None = None,
    scale: float = 1.0,
) -> LipschitzPolicy:
    r"""An ``lr_policy`` for :func:`clr_jax.flax.fit`: ``lr = 1 / K`` per epoch.

    Before each epoch ``e``, from the current weights,

    .. math::

       K_e = \frac{k - 1}{k\,B} K_z + \lambda \max\|w\|, \qquad lr_e = 1 / K_e

    (``'softmax_ce'``; other losses as :func:`clr_jax.lipschitz_constant`),
    with ``K_z`` from :func:`clr_jax.penultimate_norm` over the training set
    in chunks of ``batch_size`` and ``max||w||`` from
    :func:`clr_jax.max_weight_norm` over params and batch statistics (the
    authors' code includes BatchNorm statistics).

    The momentum variant (the paper's "AdaMo", ``k_momentum=0.9``) smooths
    ``K`` over epochs, ``K <- beta K + (1 - beta) K_e``; the previous ``K`` is
    read back from the learning rate the optimizer holds, and after a
    ``first_epoch_lr`` of ``x`` the authors' code starts the average at
    ``K = x``, which is kept here. Pair it with
    :func:`clr_jax.lipschitz.adamo` for their dampened momentum. For the
    inverse-time decay the authors' Keras code applied on top (``decay=`` of
    Keras SGD), wrap the optimizer with
    :func:`clr_jax.lipschitz.with_inverse_time_decay`; it is off by default.

    Args:
      feature_fn: ``(variables, x) -> features``: the inputs of the last
        layer in inference mode, with ``variables = {'params': ...,
        'batch_stats': ...}``, e.g. ``lambda v, x: model.apply(v, x,
        train=False, method=Model.features)`` for Linen. Keep one function
        object across calls so the estimator is compiled once.
      num_classes: ``k`` (softmax cross-entropy).
      batch_size: ``B``, the training batch size (the paper's ``m``).
      loss: ``'softmax_ce'`` or ``'binary_ce'``.
      weight_decay: ``lambda`` of the L2 term in ``K`` (the paper's "WD").
      first_epoch_lr: learning rate of epoch 0 instead of ``1 / K`` (the
        authors set it by hand for AdaMo and RMSprop; ``None`` is faithful for
        plain SGD).
      k_momentum: ``beta`` of the EMA of ``K``; ``None`` for plain SGD.
      scale: multiplies ``1 / K`` (not ``first_epoch_lr``). With
        ``optax.sgd(momentum=b)``, ``scale = 1 - b`` gives exactly the
        authors' dampened momentum at rate ``1 / K``.

    Returns:
      A :class:`LipschitzPolicy`, ``policy(state, epoch, (x_train, y_train))
      -> (lr, log)`` where ``log`` holds ``k_z``, ``max_weight_norm``, ``k``
      and ``lr`` for the epoch log. Its numeric settings are pytree leaves, so
      ``fit`` with another ``weight_decay`` or ``scale`` does not recompile.

    Raises:
      ValueError: for a non-callable ``feature_fn``, a bad ``num_classes``,
        ``batch_size``, ``weight_decay``, ``first_epoch_lr`` or
        ``k_momentum``, or an unsupported ``loss``.

    References:
      Yedida, Saha, "A novel adaptive learning rate scheduler for deep neural
      networks" / "LipschitzLR", 2019, https://arxiv.org/abs/1902.07399.
    """
    v.check_callable("feature_fn", feature_fn)
    v.check_choice("loss", loss, ("softmax_ce", "binary_ce"))
    batch_size = v.check_step_count("batch_size", batch_size)
    num_classes = v.check_step_count("num_classes", num_classes, minimum=2)
    v.check_non_negative("weight_decay", weight_decay)
    if first_epoch_lr is not None:
        v.check_positive("first_epoch_lr", first_epoch_lr)
    v.check_positive("scale", scale)
    if k_momentum is not None:
        v.check_interval(
            "k_momentum", k_momentum, 0.0, 1.0, closed_low=True, closed_high=False
        )
    return LipschitzPolicy(
        feature_fn=feature_fn,
        num_classes=num_classes,
        batch_size=batch_size,
        loss=loss,
        weight_decay=weight_decay,
        first_epoch_lr=first_epoch_lr,
        k_momentum=k_momentum,
        scale=scale,
    )


_STATIC = ("feature_fn", "num_classes", "batch_size", "loss")
_NUMERIC = ("weight_decay", "first_epoch_lr", "k_momentum", "scale")


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=list(_NUMERIC),
    meta_fields=list(_STATIC),
)
@dataclasses.dataclass(frozen=True)
class LipschitzPolicy:
    """The value :func:`lipschitz_policy` returns: ``policy(state, epoch,
    (x_train, y_train)) -> (lr, log)``, a pytree whose numeric settings are
    leaves (``None`` ones are absent)."""

    feature_fn: FeatureFn
    num_classes: int
    batch_size: int
    loss: str
    weight_decay: Any
    first_epoch_lr: Any
    k_momentum: Any
    scale: Any

    def __call__(self, state, epoch, train):
        x_train, _ = train
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        k_z = penultimate_norm(
            self.feature_fn, variables, x_train, batch_size=self.batch_size
        )
        w_norm = max_weight_norm(variables)
        k = lipschitz_constant(
            k_z,
            loss=self.loss,
            batch_size=self.batch_size,
            num_classes=self.num_classes if self.loss == "softmax_ce" else None,
            weight_decay=self.weight_decay,
            max_weight_norm=w_norm,
        )
        if self.k_momentum is not None:
            k = self._smoothed(k, state, epoch)
        lr = self.scale / k
        if self.first_epoch_lr is not None:
            first = jnp.asarray(self.first_epoch_lr, lr.dtype)
            lr = jnp.where(epoch == 0, first, lr)
        log = {"k_z": k_z, "max_weight_norm": w_norm, "k": k, "lr": lr}
        return lr, log

    def _smoothed(self, k, state, epoch):
        """``beta K_prev + (1 - beta) K_e``, ``K_prev`` read back from the rate
        the optimizer holds (the hand-set first rate after epoch 0)."""
        held_lr = get_hyperparam(state.opt_state, "learning_rate")
        previous = self.scale / jnp.asarray(held_lr, k.dtype)
        if self.first_epoch_lr is not None:
            previous = jnp.where(epoch == 1, self.first_epoch_lr, previous)
        beta = self.k_momentum
        return jnp.where(epoch == 0, k, beta * previous + (1 - beta) * k)
