"""Flax (Linen and NNX) training with cyclical learning rates.

* :func:`fit`: a training loop. One compiled ``lax.scan`` per epoch over
  device-resident data, evaluation on the test split each epoch, a history
  of the learning rate, momentum and loss of every update, ``jax.vmap``
  over seeds, snapshot ensembles, data-parallel meshes, and a per-epoch
  learning-rate policy hook (:func:`lipschitz_policy`, the Lipschitz
  adaptive rate, is one).
* :func:`range_test_step`: a Flax model as the ``step_fn(state, batch, lr)
  -> (state, loss, accuracy)`` that :func:`clr_jax.range_test_with_step`
  sweeps, with BatchNorm statistics and dropout handled.
* :func:`create_train_state`, :func:`evaluate`,
  :func:`ensemble_probabilities`: the single steps around them.

Models come in three forms: a ``flax.linen.Module``; a built
``flax.nnx.Module``; or a factory ``rngs -> nnx.Module`` (an NNX module
class taking ``rngs`` first is one), which lets every seed initialise its
own weights (see ``_adapters``).

Modules: ``_adapters`` (models as pure functions), ``_state`` (the train
state and its step), ``_epoch`` (the compiled epoch), ``_evaluation`` and
``_snapshots`` (inference and snapshot ensembles), ``_history`` (what
``fit`` returns), ``_args`` (its argument checks), ``_fit`` (the host
driver), ``_steps`` (the public one-step tools), ``_policies`` (per-epoch
learning-rate policies).

This is the only subpackage that imports flax: use ``from clr_jax import
flax as clr_flax``.
"""

from clr_jax.flax._evaluation import accuracy
from clr_jax.flax._fit import fit
from clr_jax.flax._history import FitResult, History
from clr_jax.flax._policies import lipschitz_policy
from clr_jax.flax._snapshots import SnapshotEnsemble
from clr_jax.flax._state import TrainState
from clr_jax.flax._steps import (
    create_train_state,
    ensemble_probabilities,
    evaluate,
    range_test_step,
)
from clr_jax.lipschitz import adamo, with_inverse_time_decay

__all__ = [
    "FitResult",
    "History",
    "SnapshotEnsemble",
    "TrainState",
    "accuracy",
    "adamo",
    "create_train_state",
    "ensemble_probabilities",
    "evaluate",
    "fit",
    "lipschitz_policy",
    "range_test_step",
    "with_inverse_time_decay",
]
