"""clr_jax: cyclical learning rates and everything around them, for JAX and Optax.

Schedules are small frozen ``optax.Schedule`` values (``count -> value``,
where ``count`` is the number of updates already applied; pytrees, so they
can be jit arguments)::

    optimizer = optax.sgd(clr_jax.triangular(1e-3, 6e-3, step_size=2000))
"""

from clr_jax import data
from clr_jax.inject import get_hyperparam, set_hyperparam, with_schedules
from clr_jax.lipschitz import (
    OutputTargetNorms,
    lipschitz_constant,
    lipschitz_lr,
    max_weight_norm,
    output_target_norms,
    penultimate_norm,
)
from clr_jax.range_test import (
    BoundsReport,
    RangeTestConfig,
    RangeTestResult,
    RangeTestWarning,
    Reading,
    SweepState,
    range_test,
    range_test_with_step,
)
from clr_jax.schedules import (
    Schedule,
    cosine_restarts,
    cyclical,
    cyclical_momentum,
    exp_range,
    lr_sweep,
    one_cycle,
    one_cycle_momentum,
    schedule_from_dict,
    step_size_for,
    triangular,
    triangular2,
)

__version__ = "0.1.0"

__all__ = [
    "BoundsReport",
    "OutputTargetNorms",
    "RangeTestConfig",
    "RangeTestResult",
    "RangeTestWarning",
    "Reading",
    "Schedule",
    "SweepState",
    "__version__",
    "cosine_restarts",
    "cyclical",
    "cyclical_momentum",
    "data",
    "exp_range",
    "get_hyperparam",
    "lipschitz_constant",
    "lipschitz_lr",
    "lr_sweep",
    "max_weight_norm",
    "one_cycle",
    "one_cycle_momentum",
    "output_target_norms",
    "penultimate_norm",
    "range_test",
    "range_test_with_step",
    "schedule_from_dict",
    "set_hyperparam",
    "step_size_for",
    "triangular",
    "triangular2",
    "with_schedules",
]
