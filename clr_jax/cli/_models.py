"""The data sets and models of the ``clr-jax`` experiments, and their range test.

Two data sets, each with an MLP and a CNN (:data:`DATASETS`):
scikit-learn's bundled 8x8 digits with small models of our own, and MNIST-1D
with the models of its paper (Greydanus & Kobak 2020). Also the optimizers
the command line offers, and the range test of such a model with an
accuracy metric. Imports flax, so the commands import it inside their
functions.

References:
  Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", 2020,
  https://arxiv.org/abs/2011.14439; the models follow the authors' code
  (``notebooks/models.py`` of https://github.com/greydanus/mnist1d).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import clr_jax
from clr_jax.data import Dataset, load_digits, load_mnist1d
from clr_jax.flax import accuracy, create_train_state

__all__ = [
    "DATASETS",
    "OPTIMIZERS",
    "DataSpec",
    "DigitsCNN",
    "DigitsMLP",
    "Mnist1dCNN",
    "Mnist1dMLP",
    "ModelSpec",
    "OptimizerSpec",
    "feature_fn",
    "model_range_test",
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

    The convolutions are ``nn.Conv(..., padding='SAME')``'s, computed as
    :class:`_PatchConv`. ``features_only=True`` returns the pooled features
    before the classifier.
    """

    @nn.compact
    def __call__(self, x, features_only: bool = False):
        # SAME padding of 8x8 inputs: (1, 1) at stride 1, (0, 1) at stride 2.
        layers = ((16, (1, 1), (1, 1)), (32, (2, 2), (0, 1)))
        for i, (channels, strides, pad) in enumerate(layers):
            conv = _PatchConv(channels, (3, 3), strides, (pad, pad), name=f"Conv_{i}")
            x = nn.relu(conv(x))
        features = jnp.mean(x, axis=(1, 2))
        return features if features_only else nn.Dense(10)(features)


class Mnist1dMLP(nn.Module):
    """The MNIST-1D paper's MLP: 40 inputs, two ReLU layers of 100 units (the
    second one residual, ``h + relu(W h + b)``, as in the authors' code), 10
    logits; 15,210 parameters.

    ``features_only=True`` returns the inputs of the last layer.
    """

    hidden: int = 100

    @nn.compact
    def __call__(self, x, features_only: bool = False):
        x = x.reshape(x.shape[0], -1)
        h = nn.relu(nn.Dense(self.hidden)(x))
        h = h + nn.relu(nn.Dense(self.hidden)(h))
        return h if features_only else nn.Dense(10)(h)


class _PatchConv(nn.Module):
    """``nn.Conv(features, kernel, strides, padding)`` on ``[n, *spatial,
    channels]``, with the same parameters, as one matrix product of the
    strided slices of the input (one slice per kernel tap).

    The same function, several times faster on CPU for these small layers:
    XLA's CPU convolution is slow inside a compiled loop, more so under
    ``vmap`` over runs.
    """

    features: int
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]

    @nn.compact
    def __call__(self, x):
        shape = (*self.kernel, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        x = jnp.pad(x, ((0, 0), *self.padding, (0, 0)))
        sizes = [
            (n - k) // s + 1
            for n, k, s in zip(x.shape[1:-1], self.kernel, self.strides, strict=True)
        ]
        taps = [
            x[(slice(None), *self._window(offsets, sizes), slice(None))]
            for offsets in itertools.product(*(range(k) for k in self.kernel))
        ]
        patches = jnp.concatenate(taps, axis=-1)  # [n, *sizes, taps * channels]
        out = patches @ kernel.reshape(-1, self.features)
        return out + bias.reshape((1,) * (out.ndim - 1) + (-1,))

    def _window(self, offsets, sizes) -> list[slice]:
        """The input positions that kernel tap ``offsets`` meets, per axis."""
        return [
            slice(o, o + s * (n - 1) + 1, s)
            for o, s, n in zip(offsets, self.strides, sizes, strict=True)
        ]


class Mnist1dCNN(nn.Module):
    """The MNIST-1D paper's CNN: three 1-D convolutions of 25 channels
    (kernels 5, 3, 3, stride 2, padding 1, ReLU; length 40 -> 19 -> 10 -> 5),
    flattened (125 features) into a linear classifier; 5,210 parameters.

    Takes ``float32[n, 40]`` sequences; ``features_only=True`` returns the
    flattened convolution features.
    """

    channels: int = 25

    @nn.compact
    def __call__(self, x, features_only: bool = False):
        x = x.reshape(x.shape[0], -1, 1)  # one input channel
        for i, kernel in enumerate((5, 3, 3)):
            # Named as nn.Conv's: the same parameters from the same key.
            conv = _PatchConv(
                self.channels, (kernel,), (2,), ((1, 1),), name=f"Conv_{i}"
            )
            x = nn.relu(conv(x))
        features = x.reshape(x.shape[0], -1)
        return features if features_only else nn.Dense(10)(features)


class ModelSpec(NamedTuple):
    """A model of the command line: its Flax module and a label for reports."""

    build: Callable[[], nn.Module]
    label: str


class DataSpec(NamedTuple):
    """A data set of the command line.

    Attributes:
      title: its name in titles (``'digits'``, ``'MNIST-1D'``).
      source: where it comes from and how it is split, for the records.
      unit: what an example is, plural (``'images'``).
      load: ``model name -> Dataset``, shaped for that model.
      models: ``name -> ModelSpec``, the names of ``--model``.
    """

    title: str
    source: str
    unit: str
    load: Callable[[str], Dataset]
    models: dict[str, ModelSpec]


DATASETS: dict[str, DataSpec] = {
    "digits": DataSpec(
        "digits",
        "scikit-learn digits 8x8, stratified 75/25 split (seed 0)",
        "images",
        lambda model: load_digits(image=model == "cnn"),
        {
            "mlp": ModelSpec(DigitsMLP, "MLP 64-64-10 (ReLU)"),
            "cnn": ModelSpec(DigitsCNN, "CNN conv16-conv32/2-avgpool-10"),
        },
    ),
    "mnist1d": DataSpec(
        "MNIST-1D",
        "MNIST-1D (mnist1d make_dataset defaults, seed 42): first 4000 train / "
        "last 1000 test",
        "sequences",
        lambda model: load_mnist1d(),
        {
            "mlp": ModelSpec(Mnist1dMLP, "MLP 40-100-100-10 (ReLU, residual)"),
            "cnn": ModelSpec(Mnist1dCNN, "CNN conv25/2 x3 (k 5,3,3)-flatten-10 (ReLU)"),
        },
    ),
}
"""The data sets of ``--data`` and their models (``--model``)."""


@functools.cache
def feature_fn(data: str, model: str) -> Callable[[Any, jax.Array], jax.Array]:
    """``(variables, x) -> penultimate activations`` of a model of :data:`DATASETS`.

    Cached, so that every call for one model returns the same function and
    compiled code that depends on it is reused.
    """
    net = DATASETS[data].models[model].build()
    return lambda variables, x: net.apply(variables, x, features_only=True)


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


def model_range_test(
    data_name: str,
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
    """Smith's range test of a model of :data:`DATASETS`, recording mini-batch
    accuracy.

    Args:
      data_name: a key of :data:`DATASETS`.
      model: a key of its models.
      optimizer: a key of :data:`OPTIMIZERS`.
      data: the split (``DATASETS[data_name].load(model)``).
      start_lr, end_lr: the exponential sweep's first and last rate.
      num_steps: updates in the sweep.
      batch_size: examples per update.
      seed: seed of the initialisation and of the batch order.
      progress: show a progress bar.

    Returns:
      The :class:`clr_jax.RangeTestResult`, with accuracy as its metric.
    """
    net = DATASETS[data_name].models[model].build()
    init_key, data_key = jax.random.split(jax.random.key(seed))
    # Initialised as fit initialises: the same compiled program serves both.
    state = create_train_state(
        net, data.x_train[:1], key=init_key, optimizer=optax.sgd, learning_rate=0.0
    )
    params = {"params": state.params}

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
