"""Settings for the whole suite: strict JAX (equinox/diffrax style), and
compiling made cheap, since most of the suite's time is XLA compiling tiny
programs on the CPU."""

import os
import tempfile
from pathlib import Path

# Before JAX starts its backend: the CPU compiler's cheapest settings. The
# tests check results, not XLA's optimisations, and every comparison in them
# runs under the same flags.
_FAST_COMPILE = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# One compiled-program cache for every test worker: tests that build the same
# program (the CLI's commands, the examples) compile it once.
jax.config.update(
    "jax_compilation_cache_dir", str(Path(tempfile.gettempdir()) / "clr_jax_tests_xla")
)
