"""Strict JAX settings for the whole suite (equinox/diffrax style)."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
