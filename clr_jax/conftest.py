"""Doctest settings: the same strict JAX configuration as the test suite."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
