"""clr_jax: cyclical learning rates and everything around them, for JAX and Optax.

Schedules are pure ``optax.Schedule`` functions (``count -> value``, where
``count`` is the number of updates already applied)::

    optimizer = optax.sgd(clr_jax.triangular(1e-3, 6e-3, step_size=2000))
"""

from clr_jax.inject import with_schedules
from clr_jax.schedules import (
    cosine_restarts,
    cyclical,
    cyclical_momentum,
    exp_range,
    lr_sweep,
    one_cycle,
    one_cycle_momentum,
    step_size_for,
    triangular,
    triangular2,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "cosine_restarts",
    "cyclical",
    "cyclical_momentum",
    "exp_range",
    "lr_sweep",
    "one_cycle",
    "one_cycle_momentum",
    "step_size_for",
    "triangular",
    "triangular2",
    "with_schedules",
]
