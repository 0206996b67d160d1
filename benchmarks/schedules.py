"""Benchmarks of clr_jax schedules, measured side by side in one run.

Part A, cost in the number of cycles: ``clr_jax.cosine_restarts`` against
``optax.sgdr_schedule`` (which joins one cosine schedule per cycle) at 1, 10,
100 and 1000 cycles over the same 10^5 updates. Each is timed two ways:

* ``arange``: one jitted evaluation on ``jnp.arange(100_000)``;
* ``scan``: a jitted ``lax.scan`` that evaluates the schedule once per step
  for 10^5 steps, as an optimizer does.

The two are checked to agree on the grid (max abs difference printed).

Part B, overhead inside an optimizer: one jitted ``optax.sgd`` update
(``optax.apply_updates`` included, params and state donated) on a ~10M
parameter pytree, with a clr_jax schedule against a constant rate:

* ``optax.sgd(triangular(...))`` vs ``optax.sgd(const)``;
* ``with_schedules(optax.sgd, learning_rate=triangular(...),
  momentum=cyclical_momentum(...))`` vs ``optax.sgd(const, momentum=0.9)``.

The repeats of the two variants are interleaved (A B A B ...) so that drift
cancels, and the median of the per-pair ratios is reported.

Compilation is timed separately (``jax.jit(f).lower(...).compile()``), every
function is warmed up before timing and every result is blocked on. Prints a
table, then one JSON line per measurement with the device and versions.

Usage::

    python benchmarks/schedules.py
    python benchmarks/schedules.py --cycles 1 10 --repeats 5   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import clr_jax

NUM_COUNTS = 100_000
PEAK_LR = 0.1
RUN_BUDGET_S = 4.0  # stop repeating a slow measurement after about this long


class Timing(NamedTuple):
    """Compile time and run times (seconds) of one jitted function."""

    compile_s: float
    runs_s: list[float]

    @property
    def min_s(self) -> float:
        return min(self.runs_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)


# ---------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------


def compile_timed(fn: Callable, *args, donate_argnums=()) -> tuple[Callable, float]:
    """AOT-compiles ``fn`` for ``args``; returns the executable and seconds."""
    start = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
    return compiled, time.perf_counter() - start


def run_timed(fn: Callable, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def time_function(fn: Callable, args: tuple, repeats: int) -> tuple[Timing, object]:
    """Compiles, warms up once, then runs up to ``repeats`` times.

    A slow function stops repeating after about ``RUN_BUDGET_S`` seconds, but
    is always measured at least once after the warm-up.
    """
    compiled, compile_s = compile_timed(fn, *args)
    _, out = run_timed(compiled, *args)  # warm-up
    runs = []
    while len(runs) < repeats and (not runs or sum(runs) < RUN_BUDGET_S):
        elapsed, out = run_timed(compiled, *args)
        runs.append(elapsed)
    return Timing(compile_s, runs), out


# ---------------------------------------------------------------------------
# Part A: cosine restarts vs optax.sgdr_schedule
# ---------------------------------------------------------------------------


def restart_schedules(num_cycles: int) -> dict[str, optax.Schedule]:
    """The same SGDR schedule from both libraries: equal cosine cycles."""
    cycle_steps = NUM_COUNTS // num_cycles
    cycle = dict(
        init_value=PEAK_LR,
        peak_value=PEAK_LR,
        warmup_steps=0,
        decay_steps=cycle_steps,
        end_value=0.0,
    )
    return {
        "clr_jax.cosine_restarts": clr_jax.cosine_restarts(PEAK_LR, cycle_steps),
        "optax.sgdr_schedule": optax.sgdr_schedule([cycle] * num_cycles),
    }


def scan_evaluation(schedule: optax.Schedule) -> Callable:
    """Evaluates ``schedule`` once per ``lax.scan`` step, from ``first_count``."""

    def evaluate(first_count):
        def step(count, _):
            return count + 1, schedule(count)

        _, values = jax.lax.scan(step, first_count, length=NUM_COUNTS)
        return values

    return evaluate


def bench_restarts(cycles: list[int], repeats: int) -> list[dict]:
    counts = jnp.arange(NUM_COUNTS)
    first_count = jnp.zeros((), counts.dtype)
    records = []
    for num_cycles in cycles:
        grids = {}
        for name, schedule in restart_schedules(num_cycles).items():
            arange, grids[name] = time_function(schedule, (counts,), repeats)
            scan, scanned = time_function(
                scan_evaluation(schedule), (first_count,), repeats
            )
            np.testing.assert_array_equal(scanned, grids[name])
            for mode, timing in (("arange", arange), ("scan", scan)):
                records.append(_restart_record(name, mode, num_cycles, timing, repeats))
        ours, theirs = (np.asarray(g, np.float64) for g in grids.values())
        max_abs_diff = float(np.max(np.abs(ours - theirs)))
        for record in records[-4:]:
            record["max_abs_diff_vs_other"] = max_abs_diff
        print(f"  {num_cycles:>4} cycles done (max abs diff {max_abs_diff:.3g})")
    return records


def _restart_record(name, mode, num_cycles, timing: Timing, repeats) -> dict:
    return {
        "benchmark": "restarts",
        "schedule": name,
        "mode": mode,
        "cycles": num_cycles,
        "cycle_steps": NUM_COUNTS // num_cycles,
        "num_counts": NUM_COUNTS,
        "compile_s": timing.compile_s,
        "run_min_s": timing.min_s,
        "run_median_s": timing.median_s,
        "repeats": len(timing.runs_s),
        "repeats_asked": repeats,
    }


# ---------------------------------------------------------------------------
# Part B: one optimizer update with a schedule vs a constant rate
# ---------------------------------------------------------------------------


def make_params(num_layers: int = 4, width: int = 1600) -> dict[str, jax.Array]:
    """A few dense matrices: 4 x 1600 x 1600 = 10.24M float32 parameters."""
    keys = jax.random.split(jax.random.key(0), num_layers)
    return {
        f"dense_{i}": jax.random.normal(key, (width, width), jnp.float32) * 0.01
        for i, key in enumerate(keys)
    }


def optimizer_pairs() -> dict[str, tuple[optax.GradientTransformation, ...]]:
    """Baseline (constant) and scheduled optimizer, per comparison."""
    lr = clr_jax.triangular(1e-3, 6e-3, step_size=2000)
    momentum = clr_jax.cyclical_momentum(0.85, 0.95, step_size=2000)
    return {
        "sgd: triangular vs const": (optax.sgd(3e-3), optax.sgd(lr)),
        "sgd+momentum: with_schedules(lr, momentum) vs const 0.9": (
            optax.sgd(3e-3, momentum=0.9),
            clr_jax.with_schedules(optax.sgd, learning_rate=lr, momentum=momentum),
        ),
    }


def make_update_step(optimizer: optax.GradientTransformation) -> Callable:
    def update_step(params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return update_step


class _Variant:
    """A compiled update step and the (donated) buffers it carries along."""

    def __init__(self, optimizer, params, grads):
        params = jax.tree.map(jnp.copy, params)
        self.state = (params, optimizer.init(params))
        self.grads = grads
        self.step, self.compile_s = compile_timed(
            make_update_step(optimizer), *self.state, grads, donate_argnums=(0, 1)
        )

    def run(self, num_steps: int) -> float:
        """Seconds per update, averaged over ``num_steps`` consecutive updates."""
        start = time.perf_counter()
        for _ in range(num_steps):
            self.state = self.step(*self.state, self.grads)
        jax.block_until_ready(self.state)
        return (time.perf_counter() - start) / num_steps


def bench_update(repeats: int, steps_per_repeat: int) -> list[dict]:
    params = make_params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
    num_params = sum(p.size for p in jax.tree.leaves(params))
    records = []
    for name, optimizers in optimizer_pairs().items():
        variants = [_Variant(opt, params, grads) for opt in optimizers]
        for variant in variants:
            variant.run(3)  # warm-up
        times = [[], []]
        for _ in range(repeats):  # interleaved: A B A B ...
            for variant, runs in zip(variants, times, strict=True):
                runs.append(variant.run(steps_per_repeat))
        ratios = [b / a for a, b in zip(*times, strict=True)]
        for label, variant, runs in zip(
            ("const", "scheduled"), variants, times, strict=True
        ):
            records.append(
                {
                    "benchmark": "update",
                    "comparison": name,
                    "variant": label,
                    "num_params": num_params,
                    "compile_s": variant.compile_s,
                    "run_min_s": min(runs),
                    "run_median_s": statistics.median(runs),
                    "repeats": repeats,
                    "steps_per_repeat": steps_per_repeat,
                    "median_ratio_scheduled_over_const": statistics.median(ratios),
                }
            )
        print(f"  {name} done")
    return records


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def machine() -> dict:
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}:{device.device_kind}",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "clr_jax": clr_jax.__version__,
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:10.2f}"


def print_restart_table(records: list[dict]) -> None:
    print(
        "\nA. cosine restarts over 10^5 counts (ms; compile | min | median; "
        "ratio = optax / clr_jax median run)"
    )
    header = f"{'cycles':>6} {'mode':<7} {'schedule':<24}"
    print(f"{header} {'compile':>10} {'min':>10} {'median':>10} {'ratio':>8}")
    by_key = {(r["cycles"], r["mode"], r["schedule"]): r for r in records}
    for record in records:
        other = "optax.sgdr_schedule"
        ours = by_key[(record["cycles"], record["mode"], "clr_jax.cosine_restarts")]
        ratio = ""
        if record["schedule"] == other:
            ratio = f"{record['run_median_s'] / ours['run_median_s']:7.1f}x"
        print(
            f"{record['cycles']:>6} {record['mode']:<7} {record['schedule']:<24}"
            f"{_ms(record['compile_s'])} {_ms(record['run_min_s'])}"
            f" {_ms(record['run_median_s'])} {ratio:>8}"
        )
    for num_cycles in sorted({r["cycles"] for r in records}):
        diff = by_key[(num_cycles, "arange", "optax.sgdr_schedule")]
        print(
            f"  max |clr_jax - optax| at {num_cycles} cycles: "
            f"{diff['max_abs_diff_vs_other']:.3g}"
        )


def print_update_table(records: list[dict]) -> None:
    print(
        "\nB. one jitted sgd update + apply_updates, params and state donated "
        "(ms per update)"
    )
    print(
        f"{'comparison':<56} {'variant':<10} {'compile':>10} {'min':>10}"
        f" {'median':>10} {'ratio':>7}"
    )
    for record in records:
        ratio = ""
        if record["variant"] == "scheduled":
            ratio = f"{record['median_ratio_scheduled_over_const']:.3f}"
        print(
            f"{record['comparison']:<56} {record['variant']:<10}"
            f"{_ms(record['compile_s'])} {_ms(record['run_min_s'])}"
            f" {_ms(record['run_median_s'])} {ratio:>7}"
        )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=20, help="runs per timing")
    parser.add_argument(
        "--update-repeats", type=int, default=30, help="A/B pairs for part B"
    )
    parser.add_argument(
        "--steps-per-repeat", type=int, default=5, help="updates per timed run"
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    info = machine()
    print("machine:", " ".join(f"{k}={v}" for k, v in info.items()))
    print("A. cosine restarts ...")
    restart_records = bench_restarts(args.cycles, args.repeats)
    print("B. optimizer update ...")
    update_records = bench_update(args.update_repeats, args.steps_per_repeat)
    print_restart_table(restart_records)
    print_update_table(update_records)
    print()
    for record in [*restart_records, *update_records]:
        print(json.dumps({**record, **info}))


if __name__ == "__main__":
    main(sys.argv[1:])
