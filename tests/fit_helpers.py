"""The tiny model and data the ``fit`` test modules share."""

from __future__ import annotations

import flax.linen as nn

from clr_jax.data import Dataset, load_digits


class Tiny(nn.Module):
    """An MLP 64-16-10: a few milliseconds an epoch, quick to compile."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(16)(x)))


def small_digits() -> Dataset:
    """Digits cut to 320 training examples: 5 batches of 64."""
    data = load_digits()
    return data._replace(x_train=data.x_train[:320], y_train=data.y_train[:320])
