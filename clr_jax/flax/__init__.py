"""Training with cyclical learning rates: Flax (Linen, NNX) and pytree models.

* :func:`fit`: a training loop. One compiled ``lax.scan`` per epoch over
  device-resident data (or compiled chunks streamed from a loader),
  evaluation each epoch, a history of the learning rate, momentum, loss and
  metrics of every update, ``jax.vmap`` over seeds and over a grid of
  learning rates, snapshot ensembles, sharded meshes, per-epoch callbacks,
  orbax checkpoints and a per-epoch learning-rate policy hook
  (:func:`lipschitz_policy`, the Lipschitz adaptive rate, is one).
* :func:`range_test_step`: a model as the ``step_fn(state, batch, lr) ->
  (state, loss[, metric])`` that :func:`clr_jax.range_test_with_step`
  sweeps, with BatchNorm statistics and dropout handled.
* :func:`create_train_state`, :func:`evaluate`,
  :func:`ensemble_probabilities`: the single steps around them.
* Callbacks: :class:`EarlyStopping`, :class:`JsonLinesLogger`,
  :class:`ProgressBar`, and :data:`STOP`, which a callback returns to end
  training.

Models come in four forms: a ``flax.linen.Module``; a built
``flax.nnx.Module`` (updated in place after ``fit``, NNX's convention); a
factory ``rngs -> nnx.Module`` (an NNX module class taking ``rngs`` first
is one), which lets every seed initialise its own weights; or a callable
pytree holding arrays (an Equinox module), whose inexact-array leaves are
trained and every other leaf passed through (:func:`per_example` maps a
per-example model over the batch). ``FitResult.model`` is the trained
model (see ``_adapters``).

Design notes
------------

*No recompilation.* :class:`TrainState` keeps the optimizer as an
``OptimizerSpec`` (``_optimizer``): the optax factory is static, while the
hyperparameters (numbers, and the numeric fields of schedule values) are
pytree leaves, so they enter the compiled epoch as arguments and the
transformation is rebuilt inside the trace. The user's ``loss_fn``,
``metrics_fn`` and ``lr_policy`` go in the same way: their numeric leaves
as arguments (a :func:`lipschitz_policy` with another ``weight_decay``
reuses the program), the rest as a static key (``_programs``). Any
non-numeric leaf (an optax closure, a flag) is static and compared by
identity.

*Runs.* A run is one seed of one grid point. ``seeds`` stacks a seed axis;
a learning-rate grid (``learning_rate=[s1, ..., sK]``, schedules of one
structure, or one schedule whose leaves carry a leading K axis) stacks a K
axis before it; the compiled work is vmapped over both (``_programs``).
Every run of a grid starts from the weights of its seed, so run ``k`` equals
a single ``fit`` with ``learning_rate=sk``.

*Data.* Arrays live on the device and batches are drawn inside the scan
(``_data``); a loader (an iterable, re-iterated each epoch, or a function
``epoch -> iterable``) is stacked and put on the device a chunk at a time
by the shared loader rules (``_streaming``, :mod:`clr_jax._loader`). Inputs
and targets may be pytrees. Evaluation is optional and exact: whole chunks
plus one remainder chunk, no padded rows (``_evaluation``).

*Any task.* ``loss_fn(outputs, targets)`` and ``metrics_fn(outputs,
batch) -> {name: scalar}`` (``_metrics``): accuracy for integer labels by
default (checked against the number of outputs), nothing for float
targets; every metric is kept per update and per epoch in the
:class:`History`.

*Shardings.* Only the batch is split over the data axis
(:func:`clr_jax._sharding.resolve_data_axis`); parameters and optimizer
states keep their shardings or take ``param_sharding``'s, pinned from epoch
to epoch (``_placement``).

*Host driver.* ``_setup`` checks the arguments and builds the initial
carry, ``_loop`` runs the epochs and reads results back only when a
callback or a due checkpoint needs them, ``_fit`` assembles the
:class:`FitResult`. Checkpoints (``_checkpoint``) are orbax
``CheckpointManager`` saves of the whole carry plus the history, the key
and a fingerprint of the carry; resuming continues bit for bit. A resumed
state's epoch is read from its step (``start_epoch`` is only checked).

Modules: ``_adapters`` (models as pure functions), ``_optimizer`` (the
optimizer as a value, grids), ``_state`` (the train state and its step),
``_metrics`` (losses, metrics, label checks), ``_epoch`` (the compiled
work of one run), ``_programs`` (the jitted, vmapped programs),
``_evaluation`` and ``_snapshots`` (inference and snapshot ensembles),
``_data`` and ``_streaming`` (data forms, loaders), ``_placement``
(shardings), ``_setup``, ``_loop``, ``_fit`` (the host driver),
``_callbacks``, ``_checkpoint``, ``_history``, ``_results_io`` and
``_plot`` (results), ``_steps`` (the public one-step tools),
``_policies`` (per-epoch learning-rate policies).

This is the only subpackage that imports flax: use ``from clr_jax import
flax as clr_flax``.
"""

from clr_jax.flax._adapters import PerExample, per_example
from clr_jax.flax._callbacks import (
    STOP,
    EarlyStopping,
    JsonLinesLogger,
    ProgressBar,
    Stop,
)
from clr_jax.flax._fit import fit
from clr_jax.flax._history import FitResult, History
from clr_jax.flax._metrics import accuracy, default_metrics
from clr_jax.flax._optimizer import OptimizerSpec
from clr_jax.flax._policies import LipschitzPolicy, lipschitz_policy
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
    "STOP",
    "EarlyStopping",
    "FitResult",
    "History",
    "JsonLinesLogger",
    "LipschitzPolicy",
    "OptimizerSpec",
    "PerExample",
    "ProgressBar",
    "SnapshotEnsemble",
    "Stop",
    "TrainState",
    "accuracy",
    "adamo",
    "create_train_state",
    "default_metrics",
    "ensemble_probabilities",
    "evaluate",
    "fit",
    "lipschitz_policy",
    "per_example",
    "range_test_step",
    "with_inverse_time_decay",
]
