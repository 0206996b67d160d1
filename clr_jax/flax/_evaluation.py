"""Inference-mode evaluation: accuracy, predictions, the chunked test split."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clr_jax import _sharding


class EvalSet(NamedTuple):
    """The test split in equal chunks; ``weight`` is 0 on padding rows."""

    inputs: Any
    labels: jax.Array
    weight: jax.Array


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Share of examples whose arg-max logit (or probability) is the label."""
    return jnp.mean(correct(logits, labels))


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where the arg-max of ``logits`` is the label, else 0.0."""
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def predict(apply_fn, params: Any, batch_stats: Any, x: Any) -> jax.Array:
    """Inference-mode logits (no dropout key is needed in inference mode)."""
    logits, _ = apply_fn(params, batch_stats, x, False, None)
    return logits


def mean_probabilities(probs: jax.Array, taken: jax.Array) -> jax.Array:
    """The softmax outputs of the snapshots ``taken``, averaged (axis 0).

    ``probs`` has a leading snapshot axis; slots not taken weigh nothing.
    """
    weights = taken.astype(probs.dtype).reshape((-1,) + (1,) * (probs.ndim - 1))
    return jnp.sum(probs * weights, axis=0) / jnp.maximum(jnp.sum(taken), 1)


def chunk_test_set(x: Any, y: Any, chunk: int) -> EvalSet:
    """Pads the test split to whole chunks of ``chunk`` rows (host side, once)."""
    n = len(y)
    num_chunks = -(-n // chunk)
    pad = num_chunks * chunk - n

    def split(a):
        a = np.asarray(a)
        a = np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
        return a.reshape(num_chunks, chunk, *a.shape[1:])

    weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return EvalSet(split(x), split(y), weight.reshape(num_chunks, chunk))


def evaluate(state, test: EvalSet, loss_fn, batch_sharding=None):
    """Mean loss and accuracy of ``state`` over the (chunked, padded) test split."""

    def body(totals, chunk):
        x, y, w = chunk
        x = _sharding.constrain(x, batch_sharding)
        logits = predict(state.apply_fn, state.params, state.batch_stats, x)
        losses = loss_fn(logits, y).astype(jnp.float32)
        sums = jnp.stack([jnp.sum(losses * w), jnp.sum(correct(logits, y) * w)])
        return totals + sums, None

    totals, _ = jax.lax.scan(body, jnp.zeros((2,), jnp.float32), tuple(test))
    means = totals / jnp.sum(test.weight)
    return means[0], means[1]
