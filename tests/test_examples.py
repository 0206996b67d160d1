"""Runs the example scripts on their ``--smoke`` settings."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.helpers import load_example

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == _PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_schedule_gallery_smoke_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    gallery = load_example("schedule_gallery")
    out = tmp_path / "g.png"

    assert gallery.main(["--smoke", "--out", str(out)]) == out

    assert out.is_file()
    assert out.stat().st_size > 10_000  # sixteen drawn panels, not a blank canvas
    width, height = _png_size(out)
    assert width > 400 and height > 300
    assert abs(width / height - 1600 / 1100) < 0.05


def test_schedule_gallery_shows_every_schedule():
    gallery = load_example("schedule_gallery")
    titles = " ".join(panel.title for panel in gallery.gallery_panels())
    for name in (
        "triangular(",
        "triangular2(",
        "exp_range(",
        "window=",
        "step_size_down=",
        "cosine_decay_",  # a bound that is a schedule
        "min_lr=",
        "cyclical(",
        "cyclical_momentum(",
        "cycle_mult=2",
        "cycle_mult=1.5",
        "one_cycle(",
        "one_cycle_momentum(",
        "three_phase=True",
        "anneal_strategy='linear'",
        "lr_sweep(",
        "mode='linear'",
    ):
        assert name in titles


def test_compare_policies_smoke_tables_every_policy(tmp_path, capsys):
    import json
    import math

    for extra in ("flax", "matplotlib", "sklearn"):
        pytest.importorskip(extra)
    from clr_jax.cli._compare import POLICIES

    compare = load_example("compare_policies")

    assert compare.main(["--smoke", "--out", str(tmp_path), "--no-progress"]) == 0

    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert list(results["runs"]) == ["fixed", *POLICIES]
    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    printed = capsys.readouterr().out
    for name, run in results["runs"].items():
        assert f"| {name} |" in table and f"| {name} |" in printed
        assert all(math.isfinite(a) for a in run["mean_test_accuracy"])
        assert 0.0 < run["final_mean"] <= 1.0
    width, height = _png_size(tmp_path / "accuracy_vs_iteration.png")
    assert width > 400 and height > 300


def test_mnist1d_baselines_smoke_tables_each_model_beside_the_paper(
    tmp_path, capsys, monkeypatch
):
    import importlib.util
    import json

    import numpy as np

    for extra in ("flax", "matplotlib"):
        pytest.importorskip(extra)
    if importlib.util.find_spec("mnist1d") is None:
        pytest.skip("mnist1d not installed")
    from clr_jax import data as clr_data

    # A stand-in cache of the right shapes (tests/test_data.py checks the
    # real generation), so that the smoke run needs no generation.
    monkeypatch.setenv(clr_data.CACHE_DIR_ENV, str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(4000, 40)).astype(np.float32),
        "y_train": rng.integers(0, 10, 4000).astype(np.int32),
        "x_test": rng.normal(size=(1000, 40)).astype(np.float32),
        "y_test": rng.integers(0, 10, 1000).astype(np.int32),
    }
    clr_data._write_mnist1d_cache(clr_data.mnist1d_cache_path(), arrays)
    baselines = load_example("mnist1d_baselines")
    out = tmp_path / "out"

    argv = ["--smoke", "--models", "linear", "cnn", "--no-progress"]
    assert baselines.main([*argv, "--out", str(out)]) == 0

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(results["models"]) == ["linear", "cnn"]
    assert baselines.parse_args([]).models == ["linear", "mlp", "cnn"]
    printed = capsys.readouterr().out
    for name, row in results["models"].items():
        assert row["paper"] == {"linear": 0.32, "mlp": 0.68, "cnn": 0.94}[name]
        assert len(row["final_per_seed"]) == 2  # --smoke: 2 seeds
        assert 0.0 <= row["final_mean"] <= 1.0
        assert f"| {row['model']} | {100 * row['paper']:.2f}% |" in printed
    # A second run refuses to replace the first one's files.
    assert baselines.main(["--smoke", "--out", str(out)]) == 2
    assert "Pass `--overwrite` to replace them" in capsys.readouterr().err
