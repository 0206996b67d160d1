"""The learning-rate range test (Smith 2017), compiled end to end.

A range test trains for a few hundred steps while the learning rate grows
from tiny to huge, and records the loss at every step. The curve tells where
training starts to make progress and where it breaks down, which gives the
bounds of a cyclical schedule.

Modules, in the order data flows through them:

* ``_optax_step``: :func:`range_test`, ``loss_fn`` + an optax optimizer as a
  training step whose rate is injected each step;
* ``_driver``: :func:`range_test_with_step`, the host driver: checks, the
  layout in chunks and blocks, progress bar, the result (host or device
  form);
* ``_feed``: the data forms (sampled on the device, pre-batched, a host
  loader), one function each, and the validation batches;
* ``_engine``: the compiled sweep, the only code that runs on the device;
* ``_result``: :class:`RangeTestResult`, the curves and the settings;
* ``_smoothing``: the lag-free curve the readings use, and its noise;
* ``_peer_rules``: fastai's and torch-lr-finder's rules, and the curves they
  read;
* ``_reading``: suggestions and Smith's bounds, read on the host;
* ``_describe``: the optimizer's description in the record;
* ``_io``: JSON and CSV files.

How the sweep runs. A sweep is one compiled ``lax.while_loop`` over *blocks*
of about ten steps; a block is a ``lax.scan`` of masked steps (``vmap``-ed
over sweeps for many). Batches are drawn inside the loop from
device-resident data, the loss is smoothed and checked for divergence on the
device, and nothing returns to the host per step. A diverged sweep is
frozen: its later steps are computed and discarded, and the loop stops at
the end of the block in which its last sweep diverged, so one sweep stops
within a block of its divergence and many sweeps within a block of the last
one. Output buffers start as NaN and each block writes its rows. With a
progress bar or a loader the sweep runs in chunks of whole blocks, each one
call of the same compiled function; a chunk is fetched while the previous
one runs, and once every sweep has diverged the remaining chunks are not run.

Why blocks. A ``while_loop`` per step stops exactly, but under ``vmap`` (many
sweeps, or a user's ``jax.vmap`` over the range test) it selects its whole
carry, output buffers included, at every step; a masked ``scan`` costs a
select of the state per step but never stops early. Blocks keep the cheap
mask and look at divergence every block: the many-sweep loop stops within a
block of the last divergence, and under a user's ``vmap`` the carry is
selected once per block. On a 2-core CPU a vmapped sweep costs about what
the sweeps one after another cost (batched matrix products are no cheaper
per FLOP there; ``benchmarks/range_test.py``); on accelerators the batch
fills the device.

A JAX function. With array data (sampled or pre-batched) and no progress
bar, :func:`range_test` and :func:`range_test_with_step` trace under
``jax.jit`` and ``jax.vmap`` (over keys, params, optimizer hyperparameters,
``start_lr``/``end_lr``) and inside a user's jitted program. Under a trace
they return the device form of :class:`RangeTestResult`: curves as arrays and
``diverged_step`` an ``int32`` array with ``-1`` for "never"; called on
concrete values they return the host form (NumPy curves, ``diverged_step``
an ``int`` or ``None``). ``jax.vmap`` over keys gives the curves the built-in
``key=`` batching gives. Checks look at concrete values only; traced ones are
taken as they are. Loaders and progress bars are host-only and refused under
a trace with a message that names the traceable form.

Caching. The compiled sweep is keyed on the step function (by identity, or
by function and arguments for a ``functools.partial``), the static
configuration and the shapes: the rates enter as a schedule value (a pytree
argument) and ``beta``, the threshold, the key and the data as arrays, so new
values of any of them never recompile.

Any pytree model. The state's arrays are carried; its other leaves
(functions, strings) are static and passed through. :func:`range_test`
differentiates and updates only the trainable leaves (floating-point arrays,
Equinox's filter convention, without importing Equinox; in a Flax NNX module
only ``nnx.Param`` values, NNX being looked for only when flax is already
imported); every other leaf passes through, and leaves the forward pass
changes in place (NNX BatchNorm statistics, RNG counters) follow those
changes. For ``nnx.Optimizer`` users: pass the module as ``params`` and the
``nnx.Optimizer`` (or its transformation, or the factory) as ``optimizer``;
then train with ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` at the rate read.

Any optimizer. Each step writes its rate into every injected
``learning_rate`` of the optimizer state (:func:`clr_jax.inject.
set_hyperparam` finds them inside ``optax.chain``, nested
``inject_hyperparams``, :func:`clr_jax.with_schedules`), so the innermost one,
which reaches the update, is driven. A factory that injects its rate itself
is used as it is; a plain factory is wrapped with
:func:`clr_jax.with_schedules`; a ready transformation must inject its rate.
When no rate can be driven (none injected, or one recomputed by a schedule)
a ``ValueError`` comes before the sweep, never a flat curve.

Validation data. ``val_data`` (arrays) is evaluated with ``val_fn`` (for
:func:`range_test`: ``loss_fn`` and ``metric_fn``) after every
``val_every``-th step and after the last, in the same compiled loop: a block
is then ``val_every`` steps and the evaluation closes it, so there is no
per-step branch. The mean over equal validation batches fills
``val_steps``/``val_losses``/``val_metrics`` (NaN from the divergence on).

Several devices. With ``mesh`` (a ``jax.sharding.Mesh``) each batch is split
along the data axis (:func:`clr_jax._sharding.resolve_data_axis`: ``data_axis``,
else ``'data'`` if the mesh has it, else its first axis); JAX's SPMD
partitioner inserts the gradient all-reduce. Params and optimizer states keep
the shardings they arrive with (a model-sharded leaf stays sharded: a
sharding constraint on every step's state), or those of ``param_sharding``
(``state_sharding`` for :func:`range_test_with_step`), and an optimizer
state's parameter-shaped leaves follow the params; everything else is
replicated. The curve equals the single-device one within float tolerance.

Several hosts. Call ``jax.distributed.initialize()`` in every process first,
build the mesh over the global ``jax.devices()``, and call the range test in
every process with the same arguments. Sampled or pre-batched data must be
the same NumPy arrays in every process; a loader yields each process's own
part of every global batch (its rows along the data axis), which the range
test assembles with ``jax.make_array_from_process_local_data``. Tested with
two CPU processes on one machine (``jax_cpu_collectives_implementation=
'gloo'``).

References:
  Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
  https://arxiv.org/abs/1506.01186.
  Smith, "A disciplined approach to neural network hyper-parameters: Part 1",
  2018, https://arxiv.org/abs/1803.09820.
"""

from clr_jax.range_test._driver import range_test_with_step
from clr_jax.range_test._optax_step import SweepState, range_test
from clr_jax.range_test._result import (
    BoundsReport,
    RangeTestConfig,
    RangeTestResult,
    RangeTestWarning,
    Reading,
)

__all__ = [
    "BoundsReport",
    "RangeTestConfig",
    "RangeTestResult",
    "RangeTestWarning",
    "Reading",
    "SweepState",
    "range_test",
    "range_test_with_step",
]
