"""The ``clr-jax`` command line on tiny settings: files written, story told."""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

import clr_jax
from clr_jax import cli
from clr_jax import data as clr_data
from clr_jax.cli import _parser, _report

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
    assert results["setup"]["data"] == "digits"  # the default data set
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
    # The grid and both policies trained as one compiled program.
    (program,) = results["programs"]
    assert len(program["runs"]) == 4 and program["seconds"] > 0

    # The cost of tuning: the 2-rate grid against the range test plus a run.
    cost = results["cost_of_tuning"]
    rows = {row["approach"]: row for row in cost["rows"]}
    assert list(rows) == ["fixed, grid of 2", "triangular", "one_cycle"]
    assert rows["fixed, grid of 2"]["total_iterations"] == 2 * 2 * steps_per_epoch
    assert rows["triangular"]["tuning_iterations"] == 100  # --smoke: its steps
    assert cost["range_test"]["seconds"] == results["range_test"]["seconds"] > 0

    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    for name in runs:
        assert f"| {name} |" in table
    assert "iterations to" in table and "Fixed-rate grid" in table
    assert "## The cost of tuning" in table and "| fixed, grid of 2 |" in table
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


def _context(**changes):
    from clr_jax.cli._compare import PolicyContext

    context = PolicyContext(
        base_lr=0.01,
        max_lr=0.1,
        step_size=10,
        total_steps=100,
        batch_size=8,
        num_classes=10,
        momentum=0.9,
        feature_fn=lambda variables, x: x,
        fixed_lr=None,
    )
    return context._replace(**changes)


def test_cosine_and_step_decay_start_from_max_lr_and_the_grids_best_rate():
    from clr_jax.cli._compare import GRID, POLICIES, RANGE_TEST, RateTable

    cosine = POLICIES["cosine_decay"](_context())
    rates = RateTable.of(cosine.learning_rate, 100).rates
    np.testing.assert_allclose(rates[[0, 50]], [0.1, 0.05], rtol=1e-6)
    assert np.all(np.diff(rates) <= 0) and rates[-1] < 1e-4
    assert cosine.tuning == RANGE_TEST and cosine.snapshot_every is None
    # Step decay waits for the grid's best rate, then drops it 10x at 50%, 75%.
    assert POLICIES["step_decay"](_context()) is None
    step = POLICIES["step_decay"](_context(fixed_lr=0.04))
    rates = RateTable.of(step.learning_rate, 100).rates
    np.testing.assert_allclose(
        rates[[0, 49, 50, 74, 75, 99]], [0.04, 0.04, 4e-3, 4e-3, 4e-4, 4e-4], rtol=1e-5
    )
    assert (
        step.tuning == GRID and "0.04 (grid's best) /10 at 50, 75" in step.description
    )


def test_every_policy_builds_once_the_grid_has_chosen_its_rate():
    from clr_jax.cli._compare import POLICIES, PolicySpec

    waiting = [name for name, build in POLICIES.items() if build(_context()) is None]
    built = {name: build(_context(fixed_lr=0.04)) for name, build in POLICIES.items()}

    assert waiting == ["step_decay"]
    assert all(isinstance(spec, PolicySpec) for spec in built.values())
    assert {spec.tuning for spec in built.values()} == {
        "range test",
        "fixed-rate grid",
        "none",
    }
    assert _parser.parse(["compare"]).grid_size >= 5


def _fake_results() -> dict:
    """A 9-rate grid of 100-iteration runs (10 per epoch) whose best rate,
    90%, is not in its every-other-rate grid of 5 (best: 88%)."""
    finals = [0.5, 0.7, 0.8, 0.9, 0.88, 0.86, 0.8, 0.6, 0.3]
    grid = [
        {"learning_rate": 0.01 * 2**i, "final_mean": f} for i, f in enumerate(finals)
    ]

    def run(tuning, iters, final):
        return {"tuning": tuning, "iterations_to_target": iters, "final_mean": final}

    names = [f"fixed[{i}]" for i in range(9)] + ["triangular", "exp_range"]
    return {
        "target_accuracy": 0.9,
        "iterations": list(range(10, 101, 10)),
        "baseline": {"grid": grid, "chosen_lr": 0.08},
        "runs": {
            "fixed": run("fixed-rate grid", 80, 0.9),
            "triangular": run("range test", 40, 0.92),
            "exp_range": run("range test", None, 0.85),
            "step_decay": run("fixed-rate grid", 60, 0.91),
            "lipschitz": run("none", 30, 0.93),
        },
        "programs": [  # 11 runs x 2 seeds x 100 iterations in 22 s: 10 ms each
            {"names": names, "seconds": 22.0},
            {"names": ["lipschitz"], "seconds": 5.0},
            {"names": ["step_decay"], "seconds": 4.0},
        ],
    }


def test_cost_of_tuning_counts_the_grids_full_runs_against_a_range_test_and_a_run():
    from clr_jax.cli._compare import _nested_grid_sizes, cost_of_tuning

    cost = cost_of_tuning(_fake_results(), {"num_steps": 20, "seconds": 3.0}, seeds=2)

    assert cost["training_seconds_per_iteration"] == pytest.approx(0.01)
    rows = {row["approach"]: row for row in cost["rows"]}
    expected = {  # (total iterations, total seconds, reached)
        "fixed, grid of 5": (500, 5.0, False),  # its best, 88%, is short of 90%
        "fixed, grid of 9": (900, 9.0, True),
        "triangular": (20 + 40, 3.0 + 0.4, True),
        "exp_range": (20 + 100, 3.0 + 1.0, False),  # never: its full run
        "step_decay": (900 + 60, 9.0 + 0.6, True),  # the grid, then its run
        "lipschitz": (30, 0.3, True),  # no tuning
    }
    assert list(rows) == list(expected)
    for name, (iterations, seconds, reached) in expected.items():
        row = rows[name]
        assert row["total_iterations"] == iterations and row["reached"] is reached
        assert row["total_seconds"] == pytest.approx(seconds)
    assert rows["fixed, grid of 5"]["chosen_lr"] == 0.01 * 2**4
    assert rows["exp_range"]["run_iterations"] == 100
    assert [_nested_grid_sizes(n) for n in (1, 2, 5, 9, 17)] == [
        [1],
        [2],
        [5],
        [5, 9],
        [5, 9, 17],
    ]

    lines = _report.format_cost_table(cost).splitlines()
    assert "| own run to 90.00% |" in lines[0] and "| vs grid of 9 |" in lines[0]
    assert lines[2] == (
        "| fixed, grid of 5 | 5 full runs | 500 | — | 500 | 0.56x | 5.00 "
        "| no: ends at 88.00% |"
    )
    assert lines[5] == (
        "| exp_range | range test (20 iterations) | 20 | never (100) | 120 "
        "| 0.13x | 4.00 | no: ends at 85.00% |"
    )


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


_FLOAT32_RULE = "must be a positive number between 1.18e-38 and 3.4e+38 (float32)"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--model", "resnet"], "invalid choice: 'resnet'"),
        (["compare", "--data", "mnist"], "invalid choice: 'mnist'"),
        (["demo", "--epochs", "0"], "must be a positive integer; got '0'"),
        (["range-test", "--start-lr", "abc"], f"{_FLOAT32_RULE}; got 'abc'"),
        (["compare", "--policies", "triangular", "nope"], "invalid choice: 'nope'"),
        # A NaN rate in float32 (1e-46 is 0 there), an infinite one.
        (["range-test", "--start-lr", "1e-46"], f"{_FLOAT32_RULE}; got '1e-46'"),
        (["compare", "--end-lr", "1e39"], f"{_FLOAT32_RULE}; got '1e39'"),
        (["demo", "--half-cycle-epochs", "inf"], f"{_FLOAT32_RULE}; got 'inf'"),
        # JAX keys keep 32 bits: 2**32 would be seed 0 again, -1 seed 2**32 - 1.
        (["demo", "--seed", str(2**32)], "must be an integer from 0 to 4294967295"),
        (["demo", "--seed", "-1"], "must be an integer from 0 to 4294967295"),
        (["compare", "--batch-size", "1.5"], "must be a positive integer; got '1.5'"),
    ],
)
def test_bad_arguments_are_rejected_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "expected a int" not in err and "Traceback" not in err


def test_a_half_cycle_under_one_iteration_is_refused(tmp_path, capsys):
    argv = ["demo", "--half-cycle-epochs", "0.001", "--out", str(tmp_path / "o")]

    assert cli.main(argv) == 2

    err = capsys.readouterr().err
    assert "`--half-cycle-epochs` must give a half-cycle of at least one " in err
    assert "(42 iterations per epoch); got 0.001 (0.042 iterations)" in err
    assert not (tmp_path / "o").exists()  # refused before the folder is made


def test_digits_defaults_are_unchanged_and_mnist1d_has_its_own():
    compare = _parser.parse(["compare"])
    demo = _parser.parse(["demo"])
    mnist1d = _parser.parse(["compare", "--data", "mnist1d"])

    assert (compare.data, compare.batch_size, compare.epochs) == ("digits", 32, 48)
    assert compare.half_cycle_epochs == 4.0 and demo.epochs == 24
    assert (mnist1d.batch_size, mnist1d.epochs, mnist1d.half_cycle_epochs) == (
        100,
        150,
        5.0,
    )
    given = _parser.parse(["compare", "--data", "mnist1d", "--batch-size", "50"])
    assert given.batch_size == 50


def test_the_sweep_length_is_the_librarys_default_everywhere():
    """400 steps, fine enough to read a momentum optimizer's half_edge."""
    defaults = {
        entry.__name__: inspect.signature(entry).parameters["num_steps"].default
        for entry in (clr_jax.range_test, clr_jax.range_test_with_step)
    }
    assert defaults == {"range_test": 400, "range_test_with_step": 400}
    for command in ("range-test", "demo"):
        assert _parser.parse([command]).steps == 400


# ---------------------------------------------------------------------------
# --out: checked before any work, never overwritten unless asked
# ---------------------------------------------------------------------------


def _run_out(argv, out: Path, capsys) -> tuple[int, str, str]:
    status = cli.main([*argv, "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_out_that_is_a_file_is_refused_with_exit_2(tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("mine")

    status, stdout, err = _run_out(["compare", "--smoke"], out, capsys)

    assert status == 2 and "Traceback" not in err
    assert f"`--out` must be a folder; got '{out}', which is a file." in err
    assert stdout == "" and out.read_text() == "mine"


def test_out_below_a_file_is_refused_with_exit_2(tmp_path, capsys):
    parent = tmp_path / "a_file"
    parent.write_text("mine")

    status, stdout, err = _run_out(["demo", "--smoke"], parent / "run", capsys)

    assert status == 2 and stdout == ""
    assert f"which sits in {parent}, a file." in err


def test_an_unwritable_out_is_refused_with_exit_2(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: make the folder refuse it
        real_mkdir = Path.mkdir

        def refuse(self, *args, **kwargs):
            if locked in (self, *self.parents):
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refuse)

    status, stdout, err = _run_out(["range-test"], locked / "run", capsys)
    locked.chmod(0o700)

    assert status == 2 and "Traceback" not in err
    assert "`--out` must be a folder that can" in err
    assert "[1/3]" not in stdout and "sweep" not in stdout
    assert not (locked / "run").exists()


def test_a_blocked_output_file_is_found_before_the_run(tmp_path, capsys):
    (tmp_path / "range_test_bounds.json").mkdir()  # where a file would go

    status, stdout, err = _run_out(
        ["compare", "--smoke", "--overwrite"], tmp_path, capsys
    )

    assert status == 2
    assert "range_test_bounds.json is taken by a folder" in err
    assert stdout == ""  # nothing ran, nothing was written
    assert [p.name for p in tmp_path.iterdir()] == ["range_test_bounds.json"]


def test_files_of_an_earlier_run_are_kept_unless_overwrite(tmp_path, capsys):
    earlier = tmp_path / "range_test.json"
    earlier.write_text("the user's curve")
    argv = ["range-test", "--steps", "60"]

    status, stdout, err = _run_out(argv, tmp_path, capsys)

    assert status == 2 and stdout == ""
    assert "holds range_test.json. Pass `--overwrite` to replace them" in err
    assert earlier.read_text() == "the user's curve"

    assert _run_out([*argv, "--overwrite"], tmp_path, capsys)[0] == 0
    assert clr_jax.RangeTestResult.load_json(earlier).lrs.shape == (60,)


def test_unrelated_files_in_out_are_left_alone(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")

    assert _run_out(["range-test", "--steps", "60"], tmp_path, capsys)[0] == 0
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------
# MNIST-1D (a synthetic cache of the right shape: the real one takes seconds
# to generate, and tests/test_data.py checks it)
# ---------------------------------------------------------------------------

needs_mnist1d = pytest.mark.skipif(
    importlib.util.find_spec("mnist1d") is None, reason="mnist1d not installed"
)


@pytest.fixture
def mnist1d_cache(tmp_path, monkeypatch):
    """A learnable stand-in for MNIST-1D in a temporary cache: class ``c`` is
    a bump at position ``3 c`` plus noise."""
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 10, n).astype(np.int32)
        x = rng.normal(0.0, 0.3, (n, 40)).astype(np.float32)
        x[np.arange(n), 3 * y + 5] += 2.0
        return x, y

    (x_train, y_train), (x_test, y_test) = split(4000), split(1000)
    cache = tmp_path / "cache"
    monkeypatch.setenv(clr_data.CACHE_DIR_ENV, str(cache))
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    clr_data._write_mnist1d_cache(clr_data.mnist1d_cache_path(), arrays)
    return cache


@needs_mnist1d
def test_demo_on_mnist1d_uses_its_data_and_defaults(tmp_path, capsys, mnist1d_cache):
    out = tmp_path / "out"
    argv = ["demo", "--data", "mnist1d", "--smoke"]

    status, stdout, _ = _run_out(argv, out, capsys)

    assert status == 0
    assert "cyclical learning rates on MNIST-1D" in stdout
    assert "4000 train / 1000 test sequences" in stdout
    setup = _read_json(out / "results.json")["setup"]
    assert setup["data"] == "mnist1d" and setup["n_train"] == 4000
    assert setup["model"].startswith("mlp (MLP 40-100-100-10")
    assert setup["batch_size"] == 100 and setup["steps_per_epoch"] == 40


@needs_mnist1d
def test_range_test_on_mnist1d_with_the_papers_cnn(tmp_path, capsys, mnist1d_cache):
    argv = ["range-test", "--data", "mnist1d", "--model", "cnn", "--steps", "60"]

    status, stdout, _ = _run_out(argv, tmp_path, capsys)

    assert status == 0
    assert "clr-jax range-test on MNIST-1D: CNN conv25/2 x3" in stdout
    assert _read_json(tmp_path / "range_test_bounds.json")["num_steps"] == 60


def test_mnist1d_models_are_the_papers():
    jax = pytest.importorskip("jax")
    from clr_jax.cli._models import DATASETS

    x = jax.ShapeDtypeStruct((3, 40), np.float32)
    sizes = {}
    for name, spec in DATASETS["mnist1d"].models.items():
        net = spec.build()  # shapes only: nothing is compiled
        variables = jax.eval_shape(net.init, jax.random.key(0), x)
        sizes[name] = sum(np.prod(a.shape) for a in jax.tree.leaves(variables))
        assert jax.eval_shape(net.apply, variables, x).shape == (3, 10)
        features = jax.eval_shape(
            lambda v, x, net=net: net.apply(v, x, features_only=True), variables, x
        )
        assert features.shape == (3, {"mlp": 100, "cnn": 125}[name])
    # The parameter counts of the authors' MLPBase and ConvBase.
    assert sizes == {"mlp": 15_210, "cnn": 5_210}


@pytest.mark.parametrize(
    ("model", "layers", "shape"),
    [
        # (features, kernel, strides, padding) of each convolution, as nn.Conv's
        ("digits", [(16, (3, 3), 1, "SAME"), (32, (3, 3), 2, "SAME")], (5, 8, 8, 1)),
        ("mnist1d", [(25, (k,), 2, [(1, 1)]) for k in (5, 3, 3)], (5, 40)),
    ],
)
def test_the_cnns_convolutions_are_nn_convs(model, layers, shape):
    # The patch products compute nn.Conv's function with its parameters.
    jax = pytest.importorskip("jax")
    import flax.linen as nn
    import jax.numpy as jnp

    from clr_jax.cli._models import DATASETS

    class Reference(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = x.reshape(x.shape[0], -1, 1) if model == "mnist1d" else x
            for features, kernel, strides, padding in layers:
                x = nn.relu(nn.Conv(features, kernel, strides, padding)(x))
            pooled = jnp.mean(x, axis=(1, 2)) if model == "digits" else x
            return nn.Dense(10)(pooled.reshape(x.shape[0], -1))

    x = jax.random.normal(jax.random.key(1), shape)
    net = DATASETS[model].models["cnn"].build()
    variables = net.init(jax.random.key(0), x)
    reference = Reference().init(jax.random.key(0), x)
    # The same names, so the same initial values from the same key.
    jax.tree.map(np.testing.assert_array_equal, variables, reference)
    np.testing.assert_allclose(
        net.apply(variables, x), Reference().apply(variables, x), atol=1e-5
    )


def test_rate_table_reads_the_schedule_at_every_update_and_holds_the_last():
    from clr_jax.cli._compare import RateTable

    schedule = clr_jax.one_cycle(0.1, 50)
    table = RateTable.of(schedule, 50)

    counts = np.arange(50)
    np.testing.assert_allclose(np.asarray(table(counts)), schedule(counts), rtol=1e-6)
    assert float(table(75)) == float(table(49))
    np.testing.assert_array_equal(RateTable.of(0.02, 4).rates, np.full(4, 0.02, "f4"))


# ---------------------------------------------------------------------------
# The clr-jax program keeps compiled programs in the cache folder
# ---------------------------------------------------------------------------


_CACHE_SCENARIOS = """
import json, os, jax
from clr_jax.cli import _commands

def seen():
    _commands._use_compile_cache()
    return str(jax.config.jax_compilation_cache_dir)

found = [seen()]
jax.config.update("jax_compilation_cache_dir", None)
os.environ["CLR_JAX_COMPILE_CACHE"] = "0"
found.append(seen())
del os.environ["CLR_JAX_COMPILE_CACHE"]
jax.config.update("jax_compilation_cache_dir", os.environ["MINE"])
found.append(seen())
print(json.dumps(found))
"""


def test_the_program_caches_compiled_code_in_the_cache_folder(tmp_path):
    import subprocess
    import sys

    # In a process of its own: the test process's JAX config stays as it is.
    env = {**os.environ, clr_data.CACHE_DIR_ENV: str(tmp_path), "MINE": "/mine"}
    done = subprocess.run(
        [sys.executable, "-c", _CACHE_SCENARIOS],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )

    default, opted_out, users_own = json.loads(done.stdout.strip().splitlines()[-1])
    assert default == str(tmp_path / "xla")
    assert opted_out == "None"
    assert users_own == "/mine"  # a folder the user chose is kept


def test_main_with_arguments_leaves_jax_config_alone(tmp_path, capsys):
    import jax

    before = jax.config.jax_compilation_cache_dir
    (tmp_path / "f").write_text("a file: the command stops at once")
    assert cli.main(["range-test", "--out", str(tmp_path / "f")]) == 2
    assert jax.config.jax_compilation_cache_dir == before
