"""Runs the Lipschitz digits reproduction example on its smoke setting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clr_jax.data import load_digits
from tests.helpers import load_example

pytest.importorskip("sklearn")


def test_smoke_run_writes_outputs_and_reproduces_inverse_l(tmp_path):
    example = load_example("lipschitz_digits")
    results = example.main(["--smoke", "--out", str(tmp_path)])

    assert (tmp_path / "results.json").is_file()
    assert json.loads((tmp_path / "results.json").read_text()) == results
    for name in example.PREPROCESSINGS:
        curve = np.loadtxt(tmp_path / f"loss_{name}.csv", delimiter=",", skiprows=1)
        assert curve.shape == (results["config"]["max_iters"] + 1, 3)
        assert np.all(np.isfinite(curve))
    assert (tmp_path / "loss_curves.png").is_file()

    runs = results["runs"]
    # Raw 0..16 pixels, 70/30 split: the paper's 1/L = 0.634-0.635.
    assert 0.630 < runs["raw"]["inv_L"] < 0.640
    # ... and it is k N / ((k - 1) ||X||_F) of that training matrix (NumPy).
    x = load_digits(test_fraction=0.3, seed=0).x_train.astype(np.float64) * 16
    assert results["config"]["n_train"] == len(x) == 1258
    want = 10 * len(x) / (9 * np.linalg.norm(x))
    np.testing.assert_allclose(runs["raw"]["inv_L"], want, rtol=1e-5)
    # On standardised features 1/L reaches the loss threshold in a handful
    # of iterations, far fewer than alpha = 0.1 (the paper's Table 1 shape).
    std = runs["standardize"]
    assert std["iters_inv_L"] is not None and std["iters_alpha"] is not None
    assert std["iters_inv_L"] <= 5 < std["iters_alpha"]
    assert std["test_acc_inv_L"] > 0.9
