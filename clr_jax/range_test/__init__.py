"""The learning-rate range test (Smith 2017), compiled end to end.

A range test trains for a few hundred steps while the learning rate grows
from tiny to huge, and records the loss at every step. The curve tells where
training starts to make progress and where it breaks down, which gives the
bounds of a cyclical schedule.

Modules, in the order data flows through them:

* ``_optax_step``: :func:`range_test`, ``loss_fn`` + an optax optimizer as a
  training step whose rate is injected each step;
* ``_driver``: :func:`range_test_with_step`, the host driver: checks,
  chunks, progress bar, the result;
* ``_feed``: the data forms (sampled on the device, pre-batched, a host
  iterator), one function each;
* ``_engine``: the compiled sweep, the only code that runs on the device;
* ``_result``: :class:`RangeTestResult`, the curves and the settings;
* ``_reading``: suggestions and Smith's bounds, read on the host;
* ``_io``: JSON and CSV files.

How the sweep runs. One sweep is one compiled ``lax.while_loop`` (the form a
``lax.scan`` lowers to) that also stops at divergence: batches are drawn
inside the loop from device-resident data, the loss is smoothed and checked
for divergence on the device, and nothing returns to the host per step. The
output buffers start as NaN and each step writes its own row, so the steps
after a divergence cost nothing. Many sweeps (``vmap`` over keys or
optimizer hyperparameters) run as one masked ``lax.scan``: under ``vmap`` a
``while_loop`` runs until every sweep stops and selects its whole carry,
output buffers included, at every step, which costs more than a per-step
mask. With a progress bar or a host iterator the sweep runs in chunks, each
one call of the same compiled function; a chunk is fetched while the
previous one runs, and once every sweep has diverged the remaining chunks
are not run at all.

Caching. The compiled sweep is keyed on the step function (by identity, or
by function and arguments for a ``functools.partial``), the static
configuration and the shapes: calling again with the same ones does not
recompile, even with other rates, ``beta``, threshold, key or data values.

Several devices. With ``mesh`` (a ``jax.sharding.Mesh``) each batch is split
along the data axis (``data_axis``, else ``'data'`` if the mesh has it, else
its first axis), and JAX's SPMD partitioner inserts the gradient all-reduce;
the curve equals the single-device one within float tolerance. The same code
runs on one host with several GPUs, on a TPU pod slice, and on several
hosts: call ``jax.distributed.initialize()`` first in every process, build
the mesh over ``jax.devices()``, and call the range test in every process
with the same arguments; an iterator then yields each process's own part of
the batch (assembled with ``jax.make_array_from_process_local_data``).

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
)

__all__ = [
    "BoundsReport",
    "RangeTestConfig",
    "RangeTestResult",
    "RangeTestWarning",
    "SweepState",
    "range_test",
    "range_test_with_step",
]
