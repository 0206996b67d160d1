"""The models of the ``clr-jax`` experiments: digits models, optimizers, range test.

Small Flax models for scikit-learn's bundled 8x8 digits, the optimizers the
command line offers, and the range test of such a model with an accuracy
metric. Imports flax, so the commands import it inside their functions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import clr_jax
from clr_jax.data import Dataset, load_digits
from clr_jax.flax import accuracy

__all__ = [
    "MODELS",
    "OPTIMIZERS",
    "DigitsCNN",
    "DigitsMLP",
    "OptimizerSpec",
    "digits_range_test",
    "feature_fn",
    "load_digits_for",
]


class DigitsMLP(nn.Module):
    """64 inputs, one ReLU hidden layer, 10 logits.

    ``features_only=True`` returns the penultimate activations (the inputs of
    the last layer), as the Lipschitz learning rate needs.
    """

    hidden: int = 64

    @nn.compact
    def __call__(self, x, features_only: bool = False):
        x = x.reshape(x.shape[0], -1)
        features = nn.relu(nn.Dense(self.hidden)(x))
        return features if features_only else nn.Dense(10)(features)


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions (16 and 32 channels, the second strided), global
    average pooling and a linear classifier, for ``float32[n, 8, 8, 1]``.

    ``features_only=True`` returns the pooled features before the classifier.
    """

    @nn.compact
    def __call__(self, x, features_only: bool = False):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.relu(nn.Conv(32, (3, 3), strides=2)(x))
        features = jnp.mean(x, axis=(1, 2))
        return features if features_only else nn.Dense(10)(features)


@functools.cache
def feature_fn(model: str) -> Callable[[Any, jax.Array], jax.Array]:
    """``(variables, x) -> penultimate activations`` of a :data:`MODELS` entry.

    Cached, so that every call for one model returns the same function and
    compiled code that depends on it is reused.
    """
    net = MODELS[model][0]()
    return lambda variables, x: net.apply(variables, x, features_only=True)


MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "mlp": (DigitsMLP, "MLP 64-64-10 (ReLU)"),
    "cnn": (DigitsCNN, "CNN conv16-conv32/2-avgpool-10"),
}


class OptimizerSpec(NamedTuple):
    """An optax factory, its fixed hyperparameters and a label for reports."""

    factory: Callable[..., optax.GradientTransformation]
    hyperparams: dict[str, float]
    label: str

    def with_fixed_hyperparams(self) -> Callable[..., optax.GradientTransformation]:
        """The factory with its hyperparameters bound, taking ``learning_rate``."""
        return functools.partial(self.factory, **self.hyperparams)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(optax.sgd, {}, "SGD"),
    "momentum": OptimizerSpec(optax.sgd, {"momentum": 0.9}, "SGD, momentum 0.9"),
    "adam": OptimizerSpec(optax.adam, {}, "Adam"),
    "adamw": OptimizerSpec(optax.adamw, {"weight_decay": 1e-4}, "AdamW, wd 1e-4"),
}


def load_digits_for(model: str) -> Dataset:
    """The digits split shaped for ``model``: images for the CNN, vectors else.

    Args:
      model: a key of :data:`MODELS`.

    Returns:
      The :class:`clr_jax.data.Dataset` (1347 train / 450 test examples).
    """
    return load_digits(image=model == "cnn")


def digits_range_test(
    model: str,
    optimizer: str,
    data: Dataset,
    *,
    start_lr: float,
    end_lr: float,
    num_steps: int,
    batch_size: int,
    seed: int,
    progress: bool = True,
) -> clr_jax.RangeTestResult:
    """Smith's range test of a digits model, recording mini-batch accuracy.

    Args:
      model: a key of :data:`MODELS`.
      optimizer: a key of :data:`OPTIMIZERS`.
      data: the digits split (:func:`load_digits_for`).
      start_lr, end_lr: the exponential sweep's first and last rate.
      num_steps: updates in the sweep.
      batch_size: examples per update.
      seed: seed of the initialisation and of the batch order.
      progress: show a progress bar.

    Returns:
      The :class:`clr_jax.RangeTestResult`, with accuracy as its metric.
    """
    net = MODELS[model][0]()
    init_key, data_key = jax.random.split(jax.random.key(seed))
    params = net.init(init_key, jnp.asarray(data.x_train[:1]))

    def loss_fn(params: Any, batch) -> jax.Array:
        x, y = batch
        logits = net.apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def accuracy_fn(params: Any, batch) -> jax.Array:
        x, y = batch
        return accuracy(net.apply(params, x), y)

    return clr_jax.range_test(
        loss_fn,
        params,
        (jnp.asarray(data.x_train), jnp.asarray(data.y_train)),
        batch_size=batch_size,
        optimizer=OPTIMIZERS[optimizer].with_fixed_hyperparams(),
        start_lr=start_lr,
        end_lr=end_lr,
        num_steps=num_steps,
        key=data_key,
        metric_fn=accuracy_fn,
        progress=progress,
    )
