"""Smith's experiment: policies against a tuned fixed rate.

The engine behind ``clr-jax compare`` and ``clr-jax demo``: plain values in,
plain data out (it parses no flag and prints nothing). Every policy of
:data:`POLICIES` trains the same model over several seeds (the same keys
for every policy, so seed ``i`` starts from the same weights and sees the
same batches) and is scored by Smith's Table 1 metric: the first iteration
at which its seed-mean test accuracy reaches the fixed-rate baseline's final
seed-mean accuracy. The baseline is the best of a small grid of fixed rates
inside the range test's bounds, as a user with the range test would choose
it. :func:`cost_of_tuning` adds what each way of choosing the rate costs
in all: the grid's full runs against one range test and one run.

One compiled program trains them all: every fixed rate and every policy
with a schedule becomes a table of its learning rate at each update
(:class:`RateTable`, a schedule value), so that runs of different kinds
share one pytree structure and go to :func:`clr_jax.flax.fit` as one grid
(``learning_rate=[t1, ..., tK]``, times ``seeds``). Only an adaptive policy
(a per-epoch ``lr_policy`` hook) trains in a program of its own, and so do
the policies built from the grid's best rate (``step_decay``), once the
grid has trained.

Flax, matplotlib and scikit-learn are imported inside the functions.

References:
  Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
  https://arxiv.org/abs/1506.01186.
"""

from __future__ import annotations

import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import clr_jax

__all__ = [
    "POLICIES",
    "PolicyContext",
    "PolicySpec",
    "RateTable",
    "Setup",
    "Sweep",
    "cost_of_tuning",
    "iterations_to_reach",
    "run_comparison",
]

# Two seed-mean accuracies closer than this are equal: far below one test
# example (1/450), far above float32 rounding of the per-seed accuracies.
_SAME_ACCURACY = 1e-6
# exp_range: the amplitude decays to this fraction by the end of training
# (Smith's CIFAR-10 run, gamma = 0.99994 over 70k iterations, ends near 1.5%).
_EXP_RANGE_FINAL_AMPLITUDE = 0.01
# step_decay: the rate falls tenfold at these fractions of the run (the
# ResNet recipe, He et al. 2016, in proportion).
_STEP_DECAY_AT = (0.5, 0.75)
BASELINE = "fixed"
# What a policy's values come from (``PolicySpec.tuning``): the range test's
# bounds, the fixed-rate grid's best rate, or nothing.
RANGE_TEST, GRID, UNTUNED = "range test", "fixed-rate grid", "none"


# ---------------------------------------------------------------------------
# The policy registry: name -> how to build its schedule
# ---------------------------------------------------------------------------


class PolicyContext(NamedTuple):
    """What a policy is built from.

    Attributes:
      base_lr, max_lr: the range test's bounds (``RangeTestResult.bounds``).
      step_size: the half-cycle in updates, from :func:`clr_jax.step_size_for`
        (Smith: 2 to 10 epochs).
      total_steps: the updates of the whole training run.
      batch_size: examples per update.
      num_classes: the number of classes.
      momentum: the optimizer's (heavy-ball) momentum, 0 without.
      feature_fn: ``(variables, x) -> penultimate activations`` of the model.
      fixed_lr: the best rate of the fixed-rate grid once the grid has
        trained; ``None`` before.
    """

    base_lr: float
    max_lr: float
    step_size: int
    total_steps: int
    batch_size: int
    num_classes: int
    momentum: float
    feature_fn: Callable
    fixed_lr: float | None


class PolicySpec(NamedTuple):
    """How :func:`clr_jax.flax.fit` trains one policy.

    Attributes:
      learning_rate: a number or an ``optax.Schedule``.
      description: the schedule in a few words, for the report.
      snapshot_every: the cycle length, to take snapshots at the rate's
        minima for a snapshot ensemble; ``None`` for no ensemble.
      lr_policy: ``fit``'s per-epoch hook (adaptive rules); ``learning_rate``
        is then the initial number.
      tuning: what its values come from, for :func:`cost_of_tuning`:
        :data:`RANGE_TEST` (the bounds), :data:`GRID` (the grid's best fixed
        rate) or :data:`UNTUNED`.
    """

    learning_rate: Any
    description: str
    snapshot_every: int | None = None
    lr_policy: Callable | None = None
    tuning: str = RANGE_TEST


def _bounds_text(c: PolicyContext) -> str:
    return f"{c.base_lr:.3g} to {c.max_lr:.3g}"


def _cyclic(factory: Callable, label: str, **kwargs) -> Callable:
    """A constant-cycle policy between the bounds, snapshotted at each minimum."""

    def build(c: PolicyContext) -> PolicySpec:
        schedule = factory(c.base_lr, c.max_lr, c.step_size, **kwargs)
        text = f"{label} {_bounds_text(c)}, step {c.step_size}"
        return PolicySpec(schedule, text, snapshot_every=2 * c.step_size)

    return build


def _exp_range(c: PolicyContext) -> PolicySpec:
    gamma = _EXP_RANGE_FINAL_AMPLITUDE ** (1.0 / c.total_steps)
    schedule = clr_jax.exp_range(c.base_lr, c.max_lr, c.step_size, gamma)
    text = f"exp_range {_bounds_text(c)}, step {c.step_size}, gamma {gamma:.6f}"
    return PolicySpec(schedule, text, snapshot_every=2 * c.step_size)


def _one_cycle(c: PolicyContext) -> PolicySpec:
    # Smith's 1cycle starts at the lower bound: div_factor = max / base.
    schedule = clr_jax.one_cycle(
        c.max_lr, c.total_steps, div_factor=c.max_lr / c.base_lr
    )
    return PolicySpec(schedule, f"1cycle {_bounds_text(c)}, {c.total_steps} steps")


def _cosine_restarts(c: PolicyContext) -> PolicySpec:
    cycle = 2 * c.step_size  # the same cycle length as the triangular family
    schedule = clr_jax.cosine_restarts(c.max_lr, cycle, min_lr=c.base_lr)
    text = f"SGDR {c.max_lr:.3g} to {c.base_lr:.3g}, cycle {cycle}"
    return PolicySpec(schedule, text, snapshot_every=cycle)


def _cosine_decay(c: PolicyContext) -> PolicySpec:
    # Loshchilov & Hutter's cosine without restarts: max_lr down to 0, once.
    schedule = optax.cosine_decay_schedule(c.max_lr, c.total_steps)
    return PolicySpec(schedule, f"cosine {c.max_lr:.3g} to 0, {c.total_steps} steps")


def _step_decay(c: PolicyContext) -> PolicySpec | None:
    """The tuned fixed rate, divided by 10 at 50% and 75% of the run: the
    usual hand-made schedule, so built from the grid's best rate (once known)."""
    if c.fixed_lr is None:
        return None
    drops: dict[int, float] = {}
    for fraction in _STEP_DECAY_AT:  # a very short run may merge the two drops
        at = int(fraction * c.total_steps)
        drops[at] = drops.get(at, 1.0) * 0.1
    schedule = optax.piecewise_constant_schedule(c.fixed_lr, drops)
    text = f"fixed {c.fixed_lr:.3g} (grid's best) /10 at " + ", ".join(map(str, drops))
    return PolicySpec(schedule, text, tuning=GRID)


def _lipschitz(c: PolicyContext) -> PolicySpec:
    from clr_jax.flax import lipschitz_policy

    # Heavy-ball momentum b with rate (1 - b)/K is the authors' dampened
    # momentum ("AdaMo") with rate 1/K, so K's EMA (beta 0.9) comes with it.
    dampened = c.momentum > 0
    policy = lipschitz_policy(
        c.feature_fn,
        num_classes=c.num_classes,
        batch_size=c.batch_size,
        k_momentum=0.9 if dampened else None,
        scale=1.0 - c.momentum,
    )
    text = "Lipschitz 1/K per epoch" + (" (AdaMo form)" if dampened else "")
    return PolicySpec(0.0, text, lr_policy=policy, tuning=UNTUNED)


POLICIES: dict[str, Callable[[PolicyContext], PolicySpec]] = {
    "triangular": _cyclic(clr_jax.triangular, "triangular"),
    "triangular2": _cyclic(clr_jax.triangular2, "triangular2"),
    "exp_range": _exp_range,
    "one_cycle": _one_cycle,
    "cosine_restarts": _cosine_restarts,
    "welch": _cyclic(clr_jax.triangular, "Welch window", window="welch"),
    "hann": _cyclic(clr_jax.triangular, "Hann window", window="hann"),
    "cosine_decay": _cosine_decay,
    "step_decay": _step_decay,
    "lipschitz": _lipschitz,
}
"""Every policy ``clr-jax compare`` runs: name -> ``PolicyContext -> PolicySpec``.

Adding a policy is one entry; an adaptive one returns a ``PolicySpec`` with an
``lr_policy`` (see :func:`clr_jax.flax.fit`). One built from the grid's best
fixed rate returns ``None`` while ``PolicyContext.fixed_lr`` is ``None``: it
is built, and trained, once the grid has trained.
"""


# ---------------------------------------------------------------------------
# One experiment: the setup, the range test, training and its summary
# ---------------------------------------------------------------------------


class Setup(NamedTuple):
    """What every run of one comparison shares (``data_name`` and ``model``
    are keys of ``cli._models.DATASETS``)."""

    data_name: str
    model: str
    optimizer: str
    data: Any  # clr_jax.data.Dataset
    batch_size: int
    epochs: int
    seeds: int
    seed: int
    progress: bool

    @property
    def steps_per_epoch(self) -> int:
        # fit drops the last partial batch of every epoch.
        return len(self.data.y_train) // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


class Sweep(NamedTuple):
    """The range test's exponential sweep."""

    start_lr: float
    end_lr: float
    num_steps: int


def make_setup(
    data_name: str,
    model: str,
    optimizer: str,
    *,
    batch_size: int,
    epochs: int = 1,
    seeds: int = 1,
    seed: int = 0,
    progress: bool | None = None,
) -> Setup:
    """The shared settings of one experiment, with its data set loaded."""
    from clr_jax import _validation as v
    from clr_jax.cli._models import DATASETS

    data = DATASETS[data_name].load(model)
    v.check_batch_size(batch_size, len(data.y_train))
    return Setup(
        data_name, model, optimizer, data, batch_size, epochs, seeds, seed, progress
    )


def run_range_test(setup: Setup, sweep: Sweep):
    """The range test of the setup's model, accuracy recorded per mini-batch."""
    from clr_jax.cli._models import model_range_test

    return model_range_test(
        setup.data_name,
        setup.model,
        setup.optimizer,
        setup.data,
        start_lr=sweep.start_lr,
        end_lr=sweep.end_lr,
        num_steps=sweep.num_steps,
        batch_size=setup.batch_size,
        seed=setup.seed,
        progress=setup.progress,
    )


def range_test_summary(result, sweep: Sweep) -> dict[str, Any]:
    """Suggestions, bounds, the blow-up and every note of the reading, as data."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", clr_jax.RangeTestWarning)
        reading = result.read()
        peers = result.peer_suggestions()
    step, blow_up = result.diverged_step, reading.blow_up
    report = reading.bounds
    notes = [*reading.notes, *(str(w.message) for w in caught)]
    return {
        "start_lr": sweep.start_lr,
        "end_lr": sweep.end_lr,
        "num_steps": sweep.num_steps,
        "diverged_step": step,
        "diverged_lr": None if step is None else float(result.lrs[step]),
        "blow_up_step": blow_up,
        "blow_up_lr": None if blow_up is None else float(result.lrs[blow_up]),
        "blow_up_reason": reading.blow_up_reason,
        "suggestions": {k: _finite_or_none(v) for k, v in reading.suggestions.items()},
        "peer_suggestions": {k: _finite_or_none(v) for k, v in peers.items()},
        "bounds": [_finite_or_none(report.base_lr), _finite_or_none(report.max_lr)],
        "bounds_source": report.source,
        "bounds_reason": report.reason,
        "notes": list(dict.fromkeys(notes)),
    }


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _require_bounds(summary: dict) -> tuple[float, float]:
    base_lr, max_lr = summary["bounds"]
    if base_lr is None or max_lr is None:
        raise ValueError(
            "the range test must show a clear improvement to give bounds; got "
            f"none ({summary['bounds_reason']}). Widen the sweep (start_lr, "
            "end_lr) or add steps."
        )
    return base_lr, max_lr


class RateTable(NamedTuple):
    """A learning rate for every update, as a schedule value:
    ``count -> rates[count]`` (counts past the end read the last rate).

    What puts runs of different kinds into one grid of
    :func:`clr_jax.flax.fit`: a fixed rate and any schedule, tabulated over
    the run's updates, share one pytree structure (one float32 leaf of
    length ``total_steps``), so a new value or a new kind of policy reuses
    the compiled program.

    Examples:
      >>> import clr_jax
      >>> table = RateTable.of(clr_jax.triangular(0.1, 0.5, 2), 4)
      >>> [round(float(table(t)), 3) for t in range(5)]
      [0.1, 0.3, 0.5, 0.3, 0.3]
    """

    rates: Any

    @classmethod
    def of(cls, learning_rate: Any, total_steps: int) -> RateTable:
        """The table of a number or a ``count -> rate`` schedule."""
        if not callable(learning_rate):
            return cls(np.full(total_steps, learning_rate, np.float32))
        rates = learning_rate(jnp.arange(total_steps, dtype=jnp.int32))
        return cls(np.asarray(jax.device_get(rates), np.float32))

    def __call__(self, count):
        rates = jnp.asarray(self.rates)
        return rates[jnp.clip(count, 0, rates.shape[-1] - 1)]


def _fit(setup: Setup, learning_rate: Any, **kwargs):
    """``fit`` of the setup's model over ``setup.seeds`` seeds.

    Every call uses the same key, hence the same initial weights and batch
    order for seed ``i`` in every run (and every grid member): the
    comparison is paired.
    """
    from clr_jax import flax as clr_flax
    from clr_jax.cli._models import DATASETS, OPTIMIZERS

    optimizer = OPTIMIZERS[setup.optimizer]
    return clr_flax.fit(
        DATASETS[setup.data_name].models[setup.model].build(),
        setup.data,
        epochs=setup.epochs,
        batch_size=setup.batch_size,
        key=jax.random.key(setup.seed),
        optimizer=optimizer.factory,
        learning_rate=learning_rate,
        seeds=setup.seeds,
        progress=setup.progress,
        **kwargs,
        **optimizer.hyperparams,
    )


class _RunArrays(NamedTuple):
    """One run's results, seed axis first."""

    test_accuracy: np.ndarray  # [seeds, epochs]
    learning_rate: np.ndarray  # [seeds, steps]
    nonfinite_step: np.ndarray  # [seeds]
    ensemble_accuracy: np.ndarray | None  # [seeds]
    policy_log: Any


def _run_arrays(fit_result, member: int | None, ensemble: bool) -> _RunArrays:
    """Run ``member`` of a grid's results (``None``: a ``fit`` without grid)."""

    def pick(values):
        values = np.asarray(values, np.float64)
        return values if member is None else values[member]

    history = fit_result.history
    log = history.policy_log
    scores = fit_result.snapshots
    return _RunArrays(
        pick(history.test_accuracy),
        pick(history.learning_rate),
        pick(history.nonfinite_step),
        pick(scores.ensemble_accuracy) if ensemble and scores is not None else None,
        None if not log else {name: pick(values) for name, values in log.items()},
    )


def _train_program(setup: Setup, specs: dict[str, PolicySpec], period) -> dict:
    """Trains ``specs`` as one program; ``{name: _RunArrays}``.

    Runs with a schedule train as one grid of rate tables, snapshotted every
    ``period`` updates (ensembles kept for the runs that asked); an adaptive
    run trains alone.
    """
    first, spec = next(iter(specs.items()))
    if spec.lr_policy is not None:
        result = _fit(
            setup,
            spec.learning_rate,
            snapshot_every=spec.snapshot_every,
            lr_policy=spec.lr_policy,
        )
        return {first: _run_arrays(result, None, spec.snapshot_every is not None)}
    tables = [RateTable.of(s.learning_rate, setup.total_steps) for s in specs.values()]
    result = _fit(setup, tables, snapshot_every=period)
    return {
        name: _run_arrays(result, k, s.snapshot_every is not None)
        for k, (name, s) in enumerate(specs.items())
    }


def _seed_std(a: np.ndarray) -> np.ndarray:
    """Standard deviation over seeds (axis 0, ddof=1); zero for one seed."""
    if a.shape[0] < 2:
        return np.zeros(a.shape[1:])
    return np.std(a, axis=0, ddof=1)


def _summarise_run(spec: PolicySpec, arrays: _RunArrays) -> dict[str, Any]:
    """The per-seed and seed-mean test accuracies of one run, JSON-ready."""
    accuracy = arrays.test_accuracy  # [seeds, epochs]
    run = {
        "schedule": spec.description,
        "tuning": spec.tuning,
        "test_accuracy_per_seed": accuracy.tolist(),
        "mean_test_accuracy": accuracy.mean(axis=0).tolist(),
        "std_test_accuracy": _seed_std(accuracy).tolist(),
        "final_mean": float(accuracy[:, -1].mean()),
        "final_std": float(_seed_std(accuracy[:, -1:])[0]),
        "halted_seeds": int(np.sum(arrays.nonfinite_step >= 0)),
        "ensemble_per_seed": None,
        "ensemble_mean": None,
        "ensemble_std": None,
    }
    if arrays.ensemble_accuracy is not None:
        ensemble = arrays.ensemble_accuracy
        run["ensemble_per_seed"] = ensemble.tolist()
        run["ensemble_mean"] = float(ensemble.mean())
        run["ensemble_std"] = float(_seed_std(ensemble[:, None])[0])
    if arrays.policy_log:  # an adaptive policy's per-epoch log, seed-mean
        run["policy_log"] = {
            name: values.mean(axis=0).tolist()
            for name, values in arrays.policy_log.items()
        }
    return run


def iterations_to_reach(
    mean_accuracy: Sequence[float], target: float, steps_per_epoch: int
) -> int | None:
    """Smith's Table 1 metric: the iterations needed to reach ``target``.

    The first iteration, among the ends of epochs (``(e + 1) *
    steps_per_epoch`` for epoch ``e``, counted from 0), at which the
    seed-mean test accuracy is ``>= target``.

    Args:
      mean_accuracy: seed-mean test accuracy after each epoch.
      target: the accuracy to reach (the baseline's final seed-mean one).
      steps_per_epoch: updates per epoch.

    Returns:
      The iteration, or ``None`` when ``target`` is never reached.

    Examples:
      >>> iterations_to_reach([0.5, 0.9, 0.95, 0.94], 0.94, steps_per_epoch=10)
      30
      >>> iterations_to_reach([0.5, 0.9], 0.95, steps_per_epoch=10) is None
      True
    """
    hits = np.flatnonzero(np.asarray(mean_accuracy) >= target - _SAME_ACCURACY)
    return None if hits.size == 0 else int(hits[0] + 1) * steps_per_epoch


def _score_runs(runs: dict[str, dict], target: float, steps_per_epoch: int) -> None:
    """Adds the iterations to ``target`` and the speed-up to every run."""
    base_iters = iterations_to_reach(
        runs[BASELINE]["mean_test_accuracy"], target, steps_per_epoch
    )
    for run in runs.values():
        iters = iterations_to_reach(run["mean_test_accuracy"], target, steps_per_epoch)
        run["iterations_to_target"] = iters
        run["speedup"] = None if iters is None else base_iters / iters
        per_seed = [
            iterations_to_reach(acc, target, steps_per_epoch)
            for acc in run["test_accuracy_per_seed"]
        ]
        run["seeds_reaching_target"] = sum(i is not None for i in per_seed)


# ---------------------------------------------------------------------------
# The cost of tuning: the grid's full runs against a range test and one run
# ---------------------------------------------------------------------------


def _nested_grid_sizes(size: int) -> list[int]:
    """The sizes of the geometric grids inside one of ``size`` rates: every
    ``k``-th rate of it is the grid of ``(size - 1) / k + 1`` rates between
    the same bounds (every other rate of 9 is the grid of 5)."""
    nested = [g for g in (5, 9) if g < size and (size - 1) % (g - 1) == 0]
    return [*nested, size]


def _training_seconds_per_iteration(results: dict, seeds: int) -> float:
    """One model's training iteration, derived from the program that trained
    the grid: its wall time / (its runs x seeds x iterations of a run)."""
    key = f"{BASELINE}[0]"
    program = next(p for p in results["programs"] if key in p["names"])
    runs = len(program["names"]) * seeds * results["iterations"][-1]
    return program["seconds"] / runs


def _row(approach: str, tuning: str, cost, run_iterations: int, rate: float, **more):
    """One approach: its tuning's ``cost = (iterations, seconds)``, then its
    own run's iterations at ``rate`` seconds each."""
    iterations, seconds = cost
    return {
        "approach": approach,
        "tuning": tuning,
        "tuning_iterations": iterations,
        "run_iterations": run_iterations,
        "total_iterations": iterations + run_iterations,
        "total_seconds": seconds + run_iterations * rate,
        **more,
    }


def _grid_rows(results: dict, rate: float) -> list[dict]:
    """The nested grids: each costs its full runs, and reaches the target
    when its best final accuracy does."""
    table, total = results["baseline"]["grid"], results["iterations"][-1]
    rows = []
    for size in _nested_grid_sizes(len(table)):
        members = table[:: (len(table) - 1) // (size - 1)] if size > 1 else table
        best = max(members, key=lambda r: r["final_mean"])
        reached = best["final_mean"] >= results["target_accuracy"] - _SAME_ACCURACY
        rows.append(
            _row(
                f"{BASELINE}, grid of {size}",
                f"{size} full runs",
                (size * total, size * total * rate),
                0,
                rate,
                reached=reached,
                final_accuracy=best["final_mean"],
                grid_size=size,
                chosen_lr=best["learning_rate"],
            )
        )
    return rows


def cost_of_tuning(results: dict, range_test: dict, seeds: int) -> dict:
    """What each way of choosing the rate costs to reach the target, tuning
    included.

    A grid of ``G`` fixed rates costs ``G`` full runs (to know the best, all
    must finish): ``G x T`` iterations. A policy costs its tuning (the range
    test's iterations; the whole grid for one built from the grid's best
    rate; nothing for an adaptive one) plus its own run up to the first
    iteration at which it reaches the target, or the full ``T`` when it never
    does (``reached`` false). Seconds: the range test's measured wall time,
    and each training iteration at the rate derived from the program that
    trained the grid (:func:`_training_seconds_per_iteration`).

    Args:
      results: the results of :func:`run_comparison`.
      range_test: the range test's summary, with its ``num_steps`` and its
        measured wall time in ``seconds``.
      seeds: the seeds each run of ``results`` trained.

    Returns:
      ``{'target_accuracy', 'full_run_iterations', 'range_test',
      'training_seconds_per_iteration', 'rows'}``: one row per nested grid
      (``'fixed, grid of 5'``, ...) and one per policy.

    Examples:
      With a 5-rate grid of 100-iteration runs, a range test of 20 iterations
      and a policy that reaches the target at iteration 40, the grid costs
      500 iterations, the policy 20 + 40 = 60.
    """
    total = results["iterations"][-1]
    rate = _training_seconds_per_iteration(results, seeds)
    grid_size = len(results["baseline"]["grid"])
    steps, seconds = range_test["num_steps"], range_test["seconds"]
    tunings = {
        RANGE_TEST: (f"range test ({steps} iterations)", (steps, seconds)),
        GRID: (f"grid of {grid_size}", (grid_size * total, grid_size * total * rate)),
        UNTUNED: ("none", (0, 0.0)),
    }
    rows = _grid_rows(results, rate)
    for name, run in results["runs"].items():
        if name == BASELINE:
            continue
        iters = run["iterations_to_target"]
        text, cost = tunings[run["tuning"]]
        rows.append(
            _row(
                name,
                text,
                cost,
                total if iters is None else iters,
                rate,
                reached=iters is not None,
                final_accuracy=run["final_mean"],
            )
        )
    return {
        "target_accuracy": results["target_accuracy"],
        "full_run_iterations": total,
        "range_test": {"iterations": steps, "seconds": seconds},
        "training_seconds_per_iteration": rate,
        "rows": rows,
    }


# ---------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------


def _programs(specs: dict[str, PolicySpec]) -> list[tuple[dict, int | None]]:
    """The runs that train together, with their snapshot period.

    Every run with a schedule joins one grid (one per snapshot period when
    the policies' cycles differ; runs without snapshots join the first);
    each adaptive run trains alone.
    """
    scheduled = {n: s for n, s in specs.items() if s.lr_policy is None}
    periods = [s.snapshot_every for s in scheduled.values() if s.snapshot_every]
    periods = list(dict.fromkeys(periods)) or [None]
    grids: dict[Any, dict] = {period: {} for period in periods}
    for name, spec in scheduled.items():
        grids[spec.snapshot_every or periods[0]][name] = spec
    plan = [(grid, period) for period, grid in grids.items() if grid]
    adaptive = [({n: s}, None) for n, s in specs.items() if s.lr_policy is not None]
    return plan + adaptive


def _best_fixed(grid: Sequence[float], runs: dict[str, _RunArrays]):
    """``(index, one summary row per rate)``: the grid's best final accuracy."""
    table = []
    for lr, arrays in zip(grid, runs.values(), strict=True):
        final = arrays.test_accuracy[:, -1]
        table.append(
            {
                "learning_rate": float(lr),
                "final_mean": float(final.mean()),
                "final_std": float(_seed_std(final[:, None])[0]),
            }
        )
    best = max(range(len(table)), key=lambda i: (table[i]["final_mean"], -i))
    return best, table


def _train_all(
    setup: Setup, specs: dict[str, PolicySpec], on_start: Callable, first: int = 1
):
    """Every run of ``specs``, program by program (numbered from ``first``);
    ``(arrays, timings)``."""
    arrays: dict[str, _RunArrays] = {}
    timings = []
    for i, (group, period) in enumerate(_programs(specs), start=first):
        runs = "1 run" if len(group) == 1 else f"{len(group)} runs"
        on_start(f"program {i}: {runs} x {setup.seeds} seeds:")
        for spec in group.values():
            on_start(f"      {spec.description}")
        start = time.perf_counter()
        arrays.update(_train_program(setup, group, period))
        seconds = round(time.perf_counter() - start, 2)
        runs = [spec.description for spec in group.values()]
        timings.append({"names": list(group), "runs": runs, "seconds": seconds})
    return arrays, timings


def _train_in_two_stages(
    setup: Setup,
    context: PolicyContext,
    grid: Sequence[float],
    policy_names: Sequence[str],
    on_start: Callable,
):
    """The grid and the policies built from the bounds, then those built
    from the grid's best rate; ``(specs, arrays, timings, best)``."""
    specs = {
        f"{BASELINE}[{i}]": PolicySpec(float(lr), f"fixed {lr:.3g}", tuning=GRID)
        for i, lr in enumerate(grid)
    }
    built = {name: POLICIES[name](context) for name in policy_names}
    specs.update({name: spec for name, spec in built.items() if spec is not None})
    arrays, timings = _train_all(setup, specs, on_start)
    fixed = {key: arrays[key] for key in list(specs)[: len(grid)]}
    best, grid_table = _best_fixed(grid, fixed)
    tuned = context._replace(fixed_lr=float(grid[best]))
    later = {name: POLICIES[name](tuned) for name, s in built.items() if s is None}
    if later:
        more, more_timings = _train_all(setup, later, on_start, len(timings) + 1)
        specs, arrays = {**specs, **later}, {**arrays, **more}
        timings += more_timings
    return specs, arrays, timings, (best, grid_table)


def run_comparison(
    setup: Setup,
    context: PolicyContext,
    grid: Sequence[float],
    policy_names: Sequence[str],
    on_start: Callable[[str], None] = lambda what: None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Trains the fixed-rate grid and every named policy; scores them.

    The baseline is the grid's rate with the best final seed-mean test
    accuracy (the choice a user makes from a few runs). Every run then gets
    the iterations it needs to reach the baseline's final seed-mean test
    accuracy (:func:`iterations_to_reach`) and its speed-up over the
    baseline. The grid and every policy with a schedule train in one
    compiled program; an adaptive policy in one of its own, and the
    policies built from the grid's best rate in one more, after the grid.

    Args:
      setup: the shared model, optimizer, data, epochs and seeds.
      context: the bounds, step size and run length policies are built from
        (``fixed_lr`` ``None``: the grid sets it).
      grid: the fixed rates to try for the baseline.
      policy_names: keys of :data:`POLICIES`.
      on_start: called with a line of text before each program and for each
        of its runs.

    Returns:
      ``(results, learning_rates)``: the JSON-ready results (``runs`` keyed
      by name, the baseline first as ``'fixed'``; ``programs``, the runs of
      each compiled program, their keys and its wall time) and, per run, the
      rate of every update of the first seed.
    """
    specs, arrays, timings, (best, grid_table) = _train_in_two_stages(
        setup, context, grid, policy_names, on_start
    )
    base_key = f"{BASELINE}[{best}]"
    base_spec = specs[base_key]
    if len(grid) > 1:
        text = f"fixed {grid[best]:.3g}, best of {len(grid)}"
        base_spec = base_spec._replace(description=text)
    chosen = {BASELINE: (base_spec, arrays[base_key])}
    chosen.update({name: (specs[name], arrays[name]) for name in policy_names})
    runs = {name: _summarise_run(spec, a) for name, (spec, a) in chosen.items()}
    lrs = {name: a.learning_rate[0] for name, (_, a) in chosen.items()}
    target = runs[BASELINE]["final_mean"]
    _score_runs(runs, target, setup.steps_per_epoch)
    results = {
        "target_accuracy": target,
        "iterations": [(e + 1) * setup.steps_per_epoch for e in range(setup.epochs)],
        "baseline": {"grid": grid_table, "chosen_lr": float(grid[best])},
        "runs": runs,
        "programs": timings,
    }
    return results, lrs


def setup_record(
    setup: Setup, context: PolicyContext, half_cycle_epochs: float
) -> dict[str, Any]:
    """The experiment's settings and machine, JSON-ready."""
    from clr_jax.cli._models import DATASETS, OPTIMIZERS

    data = DATASETS[setup.data_name]
    return {
        "data": setup.data_name,
        "dataset": data.source,
        "n_train": len(setup.data.y_train),
        "n_test": len(setup.data.y_test),
        "model": f"{setup.model} ({data.models[setup.model].label})",
        "optimizer": f"{setup.optimizer} ({OPTIMIZERS[setup.optimizer].label})",
        "batch_size": setup.batch_size,
        "epochs": setup.epochs,
        "steps_per_epoch": setup.steps_per_epoch,
        "total_steps": setup.total_steps,
        "seeds": setup.seeds,
        "seed": setup.seed,
        "half_cycle_epochs": half_cycle_epochs,
        "step_size": context.step_size,
        "bounds": [context.base_lr, context.max_lr],
        "machine": (
            f"{platform.machine()} {platform.processor() or ''}".strip()
            + f", {os.cpu_count()} CPUs, jax {jax.__version__} "
            f"({jax.default_backend()}), {platform.python_version()}"
        ),
    }


def half_cycle(setup: Setup, half_cycle_epochs: float) -> tuple[int, str | None]:
    """Smith's step size in iterations, checked against the run's length.

    Returns:
      ``(step_size, note)``: ``note`` says when the run ends mid-cycle.

    Raises:
      ValueError: when the half-cycle is shorter than one iteration, or the
        run holds less than one whole cycle.
    """
    iterations = half_cycle_epochs * setup.steps_per_epoch
    if round(iterations) < 1:
        raise ValueError(
            "`half_cycle_epochs` must give a half-cycle of at least one "
            f"iteration ({setup.steps_per_epoch} iterations per epoch); got "
            f"{half_cycle_epochs:g} ({iterations:.3g} iterations)."
        )
    step_size = clr_jax.step_size_for(
        len(setup.data.y_train),
        setup.batch_size,
        epochs=half_cycle_epochs,
        drop_last=True,
    )
    if 2 * step_size > setup.total_steps:
        raise ValueError(
            "`half_cycle_epochs` must leave at least one whole cycle (two "
            f"half-cycles) in the {setup.epochs} epochs; got {half_cycle_epochs}."
        )
    note = None
    if setup.total_steps % (2 * step_size):
        note = (
            f"{setup.epochs} epochs is not a whole number of cycles "
            f"({2 * step_size} iterations each); cyclic runs end mid-cycle"
        )
    return step_size, note


def policy_context(setup: Setup, summary: dict, step_size: int) -> PolicyContext:
    """What the policies are built from: the summary's bounds and the setup."""
    from clr_jax.cli._models import OPTIMIZERS, feature_fn

    base_lr, max_lr = _require_bounds(summary)
    return PolicyContext(
        base_lr,
        max_lr,
        step_size,
        setup.total_steps,
        batch_size=setup.batch_size,
        num_classes=setup.data.num_classes,
        momentum=OPTIMIZERS[setup.optimizer].hyperparams.get("momentum", 0.0),
        feature_fn=feature_fn(setup.data_name, setup.model),
        fixed_lr=None,  # the grid sets it (run_comparison)
    )
