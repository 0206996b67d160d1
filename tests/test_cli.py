"""The ``clr-jax`` command line on tiny settings: files written, story told."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import clr_jax
from clr_jax import cli
from clr_jax.cli import _report

for _extra in ("flax", "matplotlib", "sklearn"):
    pytest.importorskip(_extra)


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------
# range-test
# ---------------------------------------------------------------------------


def test_range_test_prints_suggestions_and_writes_plot_curve_bounds(tmp_path, capsys):
    argv = ["range-test", "--steps", "120", "--out", str(tmp_path), "--no-progress"]
    assert cli.main(argv) == 0

    out = capsys.readouterr().out
    for text in ("steepest", "minimum", "valley", "bounds (Smith)", "why:"):
        assert text in out
    names = ("range_test.png", "range_test.json", "range_test.csv")
    for name in (*names, "range_test_bounds.json"):
        assert (tmp_path / name).stat().st_size > 0
    summary = _read_json(tmp_path / "range_test_bounds.json")
    base_lr, max_lr = summary["bounds"]
    assert 1e-4 <= base_lr < max_lr <= 10.0
    assert all(math.isfinite(v) for v in summary["suggestions"].values())
    curve = clr_jax.RangeTestResult.load_json(tmp_path / "range_test.json")
    assert len(curve.lrs) == 120 and curve.metrics is not None
    np.testing.assert_allclose([curve.lrs[0], curve.lrs[-1]], [1e-4, 10.0], rtol=1e-5)
    assert clr_jax.RangeTestResult.load_csv(tmp_path / "range_test.csv").lrs.shape == (
        120,
    )


# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------


def test_demo_tells_the_story_and_writes_both_plots(tmp_path, capsys):
    assert cli.main(["demo", "--smoke", "--out", str(tmp_path), "--no-progress"]) == 0

    out = capsys.readouterr().out
    for text in (
        "[1/3] LR range test",
        "bounds (Smith)",
        "the geometric middle of the bounds",
        "[3/3] results",
        "| fixed |",
        "| triangular |",
        "The fixed rate ends at",
        str(tmp_path / "range_test.png"),
        str(tmp_path / "accuracy_vs_iteration.png"),
    ):
        assert text in out
    for name in ("range_test.png", "accuracy_vs_iteration.png", "results.json"):
        assert (tmp_path / name).stat().st_size > 0
    results = _read_json(tmp_path / "results.json")
    assert list(results["runs"]) == ["fixed", "triangular"]
    base_lr, max_lr = results["range_test"]["bounds"]
    assert results["baseline"]["chosen_lr"] == pytest.approx(
        math.sqrt(base_lr * max_lr)
    )
    assert results["runs"]["fixed"]["iterations_to_target"] is not None


# ---------------------------------------------------------------------------
# compare (examples/compare_policies.py --smoke runs every policy: see
# tests/test_examples.py)
# ---------------------------------------------------------------------------


def _check_run(run: dict, target: float, steps_per_epoch: int, base_iters: int):
    accuracy = np.asarray(run["test_accuracy_per_seed"])
    assert accuracy.shape == (2, 2)  # --smoke: 2 seeds x 2 epochs
    assert np.all((accuracy >= 0.0) & (accuracy <= 1.0))
    mean = np.asarray(run["mean_test_accuracy"])
    np.testing.assert_allclose(mean, accuracy.mean(axis=0))
    np.testing.assert_allclose(run["final_mean"], mean[-1])
    assert math.isfinite(run["final_std"]) and run["final_std"] >= 0.0
    iters = run["iterations_to_target"]
    if iters is None:  # 'never': no epoch reaches the target
        assert np.all(mean < target) and run["speedup"] is None
        return
    epoch = iters // steps_per_epoch - 1
    assert iters % steps_per_epoch == 0
    assert mean[epoch] >= target - 1e-6 and np.all(mean[:epoch] < target)
    assert run["speedup"] == pytest.approx(base_iters / iters)


def test_compare_scores_policies_against_the_best_fixed_rate(tmp_path, capsys):
    argv = ["compare", "--smoke", "--policies", "triangular", "one_cycle"]
    assert cli.main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0

    results = _read_json(tmp_path / "results.json")
    runs = results["runs"]
    assert list(runs) == ["fixed", "triangular", "one_cycle"]
    # The baseline is the grid's best final accuracy; the grid spans the bounds.
    grid = results["baseline"]["grid"]
    base_lr, max_lr = results["range_test"]["bounds"]
    assert 0.0 < base_lr < max_lr
    rates = [row["learning_rate"] for row in grid]
    np.testing.assert_allclose(rates, [base_lr, max_lr], rtol=1e-6)
    best = max(grid, key=lambda row: row["final_mean"])
    assert results["baseline"]["chosen_lr"] == best["learning_rate"]
    target = results["target_accuracy"]
    assert target == runs["fixed"]["final_mean"] == best["final_mean"]

    steps_per_epoch = results["setup"]["steps_per_epoch"]
    base_iters = runs["fixed"]["iterations_to_target"]
    assert runs["fixed"]["speedup"] == 1.0
    for run in runs.values():
        _check_run(run, target, steps_per_epoch, base_iters)
    # Snapshot ensembles for cyclic policies only (one_cycle has one cycle).
    assert 0.0 <= runs["triangular"]["ensemble_mean"] <= 1.0
    assert runs["one_cycle"]["ensemble_mean"] is None
    assert runs["fixed"]["ensemble_mean"] is None

    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    for name in runs:
        assert f"| {name} |" in table
    assert "iterations to" in table and "Fixed-rate grid" in table
    assert (tmp_path / "accuracy_vs_iteration.png").stat().st_size > 0
    assert _report.format_table(results) in capsys.readouterr().out


def test_format_table_says_never_and_leaves_missing_ensembles_blank():
    run = {
        "schedule": "s",
        "final_mean": 0.9,
        "final_std": 0.01,
        "ensemble_mean": None,
        "ensemble_std": None,
    }
    results = {
        "target_accuracy": 0.95,
        "runs": {
            "fixed": run | {"iterations_to_target": 84, "speedup": 1.0},
            "slow": run | {"iterations_to_target": None, "speedup": None},
        },
    }
    rows = _report.format_table(results).splitlines()
    assert "iterations to 95.00%" in rows[0]
    assert rows[2] == "| fixed | s | 84 | 1.00x | 90.00 ± 1.00% | — |"
    assert rows[3] == "| slow | s | never | — | 90.00 ± 1.00% | — |"


# ---------------------------------------------------------------------------
# Errors: a message, no traceback, exit status 2
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--batch-size", "5000"], "`--batch-size` must be <="),
        (["range-test", "--start-lr", "1", "--end-lr", "0.5"], "`--end-lr` must be >"),
        (
            ["compare", "--epochs", "4", "--half-cycle-epochs", "3", "--steps", "120"],
            "`--half-cycle-epochs` must leave at least one whole cycle",
        ),
    ],
)
def test_value_errors_print_a_message_and_exit_2(argv, message, tmp_path, capsys):
    status = cli.main([*argv, "--out", str(tmp_path), "--no-progress"])

    err = capsys.readouterr().err
    assert status == 2
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--model", "resnet"], "invalid choice: 'resnet'"),
        (["demo", "--epochs", "0"], "must be > 0"),
        (["range-test", "--start-lr", "abc"], "expected a float"),
        (["compare", "--policies", "triangular", "nope"], "invalid choice: 'nope'"),
    ],
)
def test_bad_arguments_are_rejected_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
