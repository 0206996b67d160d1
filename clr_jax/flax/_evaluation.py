"""Inference-mode evaluation: predictions and the chunked evaluation split.

The evaluation split is cut into equal chunks plus one smaller remainder, so
that every metric is a plain mean over real examples (no padding rows that a
user's ``metrics_fn`` would have to mask): each chunk's loss and metrics are
weighted by its number of examples.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clr_jax import _sharding


class EvalSet(NamedTuple):
    """``(inputs, targets)`` as ``chunks`` (leading axes ``[chunks, chunk]``)
    and the ``rest`` (leading axis the remainder), either may be ``None``."""

    chunks: Any
    rest: Any

    @property
    def size(self) -> int:
        count = 0
        if self.chunks is not None:
            shape = np.shape(jax.tree.leaves(self.chunks)[0])
            count += shape[0] * shape[1]
        if self.rest is not None:
            count += np.shape(jax.tree.leaves(self.rest)[0])[0]
        return count


def predict(apply_fn, params: Any, batch_stats: Any, x: Any) -> Any:
    """Inference-mode outputs (no dropout key is needed in inference mode)."""
    outputs, _ = apply_fn(params, batch_stats, x, False, None)
    return outputs


def mean_probabilities(probs: jax.Array, taken: jax.Array) -> jax.Array:
    """The softmax outputs of the snapshots ``taken``, averaged (axis 0).

    ``probs`` has a leading snapshot axis; slots not taken weigh nothing.
    """
    weights = taken.astype(probs.dtype).reshape((-1,) + (1,) * (probs.ndim - 1))
    return jnp.sum(probs * weights, axis=0) / jnp.maximum(jnp.sum(taken), 1)


def chunk_eval_set(data: tuple[Any, Any], chunk: int) -> EvalSet:
    """``data`` as whole chunks of ``chunk`` examples and the remainder (host side)."""
    n = np.shape(jax.tree.leaves(data)[0])[0]
    whole = n // chunk * chunk

    def split(a):
        a = np.asarray(a)
        return a[:whole].reshape(n // chunk, chunk, *a.shape[1:])

    chunks = jax.tree.map(split, data) if whole else None
    rest = jax.tree.map(lambda a: np.asarray(a)[whole:], data) if whole < n else None
    return EvalSet(chunks, rest)


def evaluate(state, eval_set: EvalSet, loss_fn, metrics_fn, batch_sharding=None):
    """``(loss, metrics)``: means over every example of ``eval_set``."""

    def measure(batch):
        inputs, targets = batch
        outputs = predict(state.apply_fn, state.params, state.batch_stats, inputs)
        loss = jnp.mean(loss_fn(outputs, targets)).astype(jnp.float32)
        metrics = metrics_fn(outputs, batch)
        count = jnp.float32(jax.tree.leaves(targets)[0].shape[0])
        return jax.tree.map(
            lambda m: count * jnp.asarray(m, jnp.float32), (loss, metrics)
        )

    def body(totals, batch):
        batch = (_sharding.constrain(batch[0], batch_sharding), batch[1])
        return jax.tree.map(jnp.add, totals, measure(batch)), None

    parts = []
    if eval_set.chunks is not None:
        first = jax.tree.map(lambda a: a[0], eval_set.chunks)
        zeros = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(measure, first)
        )
        parts.append(jax.lax.scan(body, zeros, eval_set.chunks)[0])
    if eval_set.rest is not None:
        parts.append(measure(eval_set.rest))
    totals = jax.tree.map(lambda *xs: sum(xs), *parts)
    return jax.tree.map(lambda t: t / eval_set.size, totals)
