"""The scoring of ``benchmarks/suggestions.py`` on synthetic numbers (no training)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "suggestions.py"
NAN = math.nan


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_suggestions", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its Flax module's dataclass looks it up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_consensus_is_the_median_sweep_and_refuses_with_most_sweeps(bench):
    assert bench.consensus([0.3, 0.1, 0.2]) == 0.2
    assert bench.consensus([0.1, NAN, 0.4]) == pytest.approx(0.2)  # geometric
    assert math.isnan(bench.consensus([0.1, NAN, NAN]))
    assert math.isnan(bench.consensus([0.1, 0.0, -1.0]))  # no positive majority
    assert bench.refused_sweeps([0.1, NAN, 0.0]) == 2
    assert bench.movement([0.1, 0.4, NAN]) == pytest.approx(4.0)
    assert math.isnan(bench.movement([0.1, NAN, NAN]))


def _accuracy(lr: float) -> float:
    """A bowl in log10(lr), best at 0.1: 5 points lost one decade away."""
    return 0.9 - 0.05 * (math.log10(lr) + 1.0) ** 2


def _problem(bench, readings, seeds=2):
    index, specs = bench.plan_runs(readings)
    rates = [s[1] if s[0] == "fixed" else 0.01 for s in specs]
    accuracy = np.array([[_accuracy(r)] * seeds for r in rates])
    scores = bench.score_problem(readings, index, specs, accuracy)
    return {"problem": "toy", "label": "toy", "total_steps": 10, "scores": scores}


def _three(x: float) -> list[float]:
    return [x, x, x]


def _readings(good: float, valley: float, noted: bool = False) -> dict:
    return {
        "ours": {"good": _three(good), "shy": [0.1, NAN, NAN]},
        "noted": {"good": [noted, noted, False], "shy": [False] * 3},
        "peers": {
            "fastai_valley": _three(valley),
            "torch_lr_finder_steepest": _three(1.0),
        },
        "bounds": {"base_lr": _three(0.01), "max_lr": _three(0.1)},
    }


def test_regret_factor_refusal_and_the_targets(bench):
    grid = bench.GRID
    readings = {100: _readings(0.1, grid[4]), 400: _readings(0.2, grid[4])}
    readings[400]["bounds"]["max_lr"] = [NAN, NAN, 0.1]  # no bounds at 400
    problem = _problem(bench, readings)
    scores = problem["scores"]
    assert scores["best"] == {
        "lr": grid[6],
        "accuracy": pytest.approx(0.9),
        "at_edge": False,
    }
    good = scores["rules"]["good"]
    assert good["lengths"][100]["regret"] == pytest.approx(0.0, abs=1e-9)
    assert good["lengths"][400]["factor"] == pytest.approx(2.0)
    assert good["lengths"][100]["regret_se"] == pytest.approx(0.0, abs=1e-9)
    assert good["movement"] == pytest.approx(2.0)
    shy = scores["rules"]["shy"]["lengths"][100]
    assert shy["refused"] and shy["refused_sweeps"] == 2
    valley = scores["rules"]["fastai_valley"]["lengths"][100]
    assert valley["regret"] == pytest.approx(5.0)  # one decade below the best
    triangular = scores["rules"]["triangular"]
    assert triangular["lengths"][100]["base_lr"] == 0.01
    assert triangular["lengths"][400]["refused"]
    assert triangular["lengths"][400]["refused_sweeps"] == 2
    assert math.isnan(triangular["movement"])  # one length left

    summary = bench.summarise([problem])
    assert summary["shy"]["refused"] == 2 and summary["shy"]["refused_sweeps"] == 4
    assert summary["torch_lr_finder_steepest"]["median_regret"] == pytest.approx(5.0)
    assert summary["good"]["max_regret_per_length"][400] == pytest.approx(
        100 * (0.9 - _accuracy(0.2))
    )
    checks = bench.check_targets(summary, ["good", "shy"])
    assert checks["good"] == {
        "regret": True,
        "regret_long": True,
        "regret_unnoted": True,
        "movement": True,
        "beats_peers": True,
    }
    assert not checks["shy"]["regret"]
    assert summary["shy"]["max_regret_long"] == math.inf  # refused at 400
    assert not checks["shy"]["regret_long"]
    assert bench.recommend(summary, checks) == "good"
    text = bench.problem_table(problem, [100, 400]) + bench.summary_table(
        summary, [100, 400]
    )
    assert "refused" in text and "| good |" in text
    assert "good (recommended) | PASS | PASS | PASS | PASS | PASS" in (
        bench.targets_table(checks, "good")
    )


def test_a_noted_suggestion_is_kept_out_of_the_unnoted_target(bench):
    grid = bench.GRID
    readings = {
        100: _readings(1.0, grid[4], noted=True),  # a decade off: 5 points
        400: _readings(0.1, grid[4]),
    }
    problem = _problem(bench, readings)
    rules = problem["scores"]["rules"]
    assert rules["good"]["lengths"][100]["noted"]  # two sweeps of three
    assert rules["good"]["lengths"][400]["noted"] is False
    assert rules["fastai_valley"]["lengths"][100]["noted"] is None  # no notes
    summary = bench.summarise([problem])
    good = summary["good"]
    assert good["max_regret"] == pytest.approx(5.0) and good["noted"] == 1
    assert good["max_regret_unnoted"] == pytest.approx(0.0, abs=1e-9)
    assert summary["fastai_valley"]["noted"] is None
    assert math.isnan(summary["fastai_valley"]["max_regret_unnoted"])
    checks = bench.check_targets(summary, ["good"])["good"]
    assert not checks["regret"] and checks["regret_unnoted"]
    assert "+5.0†" in bench.problem_table(problem, [100, 400])
    assert "| 1/2 | +0.0 |" in bench.summary_table(summary, [100, 400])


def test_equal_runs_train_once_and_refused_ones_not_at_all(bench):
    grid = bench.GRID
    index, specs = bench.plan_runs({100: _readings(grid[6], grid[4])})
    assert index["good", 100] == index["grid", 6]  # the same fixed rate
    assert index["fastai_valley", 100] == index["grid", 4]
    assert index["shy", 100] is None
    # torch-lr-finder's 1.0 is on the grid too: the grid and the two policies.
    assert len(specs) == len(grid) + 2
