"""Writes tests/data/peer_parity.json: fastai's and torch-lr-finder's own answers.

The expected numbers of the parity tests in tests/test_range_result.py come
from the peers themselves, run on seeded synthetic curves:

* ``rules``: fastai 2.8's ``valley``, ``steep`` and ``minimum`` and
  torch-lr-finder 0.2.2's steepest-gradient suggestion (``LRFinder.plot``),
  each called on the same arrays;
* ``pipelines``: fastai's ``Learner.lr_find`` and torch-lr-finder's
  ``LRFinder.range_test`` on a model whose loss follows a scripted raw
  sequence, with the curves they record and what they suggest.

CI has neither library, so the numbers are committed. To regenerate them (in
a scratch environment, never the project's):

    python -m venv /tmp/peers && /tmp/peers/bin/pip install torch numpy \\
        matplotlib pandas plum-dispatch fasttransform fastdownload \\
        fastprogress==1.0.3 && /tmp/peers/bin/pip install --no-deps \\
        fastai==2.8.12 fastcore torch-lr-finder==0.2.2
    /tmp/peers/bin/python tests/data/make_peer_parity.py

Only numpy and the standard library are imported at module level, so that
the test suite's doctest collection can import this file.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("peer_parity.json")


def _descent(rng, n, noise, blow_up=True, rate=(5.0, 15.0)):
    x = np.linspace(0.0, 1.0, n)
    centre, width = rng.uniform(0.35, 0.7), rng.uniform(0.03, 0.12)
    low = rng.uniform(0.1, 1.5)
    y = low + (2.3 - low) / (1.0 + np.exp((x - centre) / width))
    if blow_up:
        start = centre + rng.uniform(0.12, 0.25)
        rise = np.expm1((x - start) * rng.uniform(*rate))
        y = y + np.where(x > start, rise, 0.0)
    return y + noise * rng.normal(size=n)


def rule_curves() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Named (lrs, losses) pairs, float32, covering the rules' corner cases."""
    rng = np.random.default_rng(20240917)
    curves = []
    for n in (12, 50, 100, 300):
        for noise in (0.0, 0.02, 0.2):
            curves.append((f"descent_n{n}_noise{noise}", _descent(rng, n, noise)))
    curves += [
        ("strictly_decreasing", np.linspace(3.0, 1.0, 40)),
        ("strictly_decreasing_2", np.array([2.0, 1.0])),
        ("constant", np.full(30, 2.302585)),
        ("increasing", np.linspace(1.0, 3.0, 30)),
        ("staircase_ties", np.repeat([3.0, 2.5, 2.5, 2.0, 1.0, 1.0, 1.5], 5)),
        ("random_walk", 2.3 + np.cumsum(0.05 * rng.normal(size=200))),
        (
            "two_descents",
            np.r_[
                np.linspace(3, 2, 30),
                np.full(20, 2.0),
                np.linspace(2, 0.5, 30),
                np.linspace(0.5, 4, 20),
            ],
        ),
        ("noise", 2.3 + 0.05 * rng.normal(size=100)),
    ]
    out = []
    for name, losses in curves:
        lrs = np.geomspace(1e-5, 10.0, len(losses))
        out.append((name, lrs.astype(np.float32), losses.astype(np.float32)))
    return out


def _plain(x):
    """float64 values, as JSON numbers (NaN as null)."""
    return [float(v) for v in np.asarray(x, np.float64).ravel()]


def _f32(x):
    """float32 values, each as its shortest decimal (exact once cast back)."""
    return [float(str(v)) for v in np.asarray(x, np.float32).ravel()]


def fastai_rules(lrs, losses) -> dict[str, float]:
    import torch
    from fastai.callback.schedule import minimum, steep, valley

    t_lrs, t_losses = torch.tensor(lrs), torch.tensor(losses)
    out = {
        "fastai_valley": valley(t_lrs, t_losses, len(lrs))[0],
        "fastai_minimum": minimum(t_lrs, t_losses, len(lrs))[0],
    }
    if len(lrs) > 1:
        out["fastai_steep"] = steep(t_lrs, t_losses, len(lrs))[0]
    return {k: _f32([v])[0] for k, v in out.items()}


def _torch_finder():
    import torch
    from torch_lr_finder import LRFinder

    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    return LRFinder(model, optimizer, torch.nn.MSELoss(), device="cpu")


def torch_rule(lrs, losses) -> float:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finder = _torch_finder()
    finder.history = {"lr": [float(x) for x in lrs], "loss": [float(x) for x in losses]}
    _, ax = plt.subplots()
    _, lr = finder.plot(skip_start=0, skip_end=0, suggest_lr=True, ax=ax)
    plt.close("all")
    return float(lr)


def pipeline_raws() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    raws = []
    for n in (60, 100, 200):
        raws.append((f"blows_up_n{n}", _descent(rng, n, 0.05, rate=(20.0, 40.0))))
        raws.append((f"still_falls_n{n}", _descent(rng, n, 0.05, blow_up=False)))
    spike = 2.3 + 0.03 * rng.normal(size=100)
    spike[70] = math.nan  # a NaN loss: fastai records on, torch-lr-finder too
    raws.append(("nan_at_70", spike))
    return [(name, raw.astype(np.float32)) for name, raw in raws]


def fastai_pipeline(raw, start_lr, end_lr) -> dict:
    """``Learner.lr_find`` on a model whose loss is ``raw[i]`` at batch ``i``."""
    import torch
    from fastai.callback.schedule import minimum, steep, valley
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner

    table = torch.tensor(raw)
    calls = {"i": 0}

    def loss_func(pred, target):
        value = table[min(calls["i"], len(table) - 1)]
        calls["i"] += 1
        return value + 0.0 * (pred - target).sum()

    xs = [(torch.zeros(1), torch.zeros(1)) for _ in range(len(raw) + 10)]
    dls = DataLoaders.from_dsets(xs, xs[:2], bs=1, device="cpu", shuffle=False)
    with tempfile.TemporaryDirectory() as tmp:
        learn = Learner(dls, torch.nn.Linear(1, 1), loss_func=loss_func, path=tmp)
        found = learn.lr_find(
            start_lr=start_lr,
            end_lr=end_lr,
            num_it=len(raw),
            show_plot=False,
            suggest_funcs=(valley, steep, minimum),
        )
        rec = learn.recorder
        return {
            "lrs": _plain(rec.lrs),
            "losses": _f32([float(x) for x in rec.losses]),
            "fastai_valley": _f32([found.valley])[0],
            "fastai_steep": _f32([found.steep])[0],
            "fastai_minimum": float(found.minimum),
        }


def torch_pipeline(raw, start_lr, end_lr, smooth_f) -> dict:
    """``LRFinder.range_test`` with a criterion that returns ``raw[i]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    finder = _torch_finder()
    table = torch.tensor(raw, dtype=torch.float64)
    calls = {"i": 0}

    def criterion(pred, target):
        value = table[min(calls["i"], len(table) - 1)]
        calls["i"] += 1
        return value + 0.0 * (pred - target).sum()

    finder.criterion = criterion
    data = [(torch.zeros(1, 1), torch.zeros(1, 1)) for _ in range(len(raw))]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*map(torch.cat, zip(*data, strict=True))),
        batch_size=1,
    )
    finder.optimizer.param_groups[0]["lr"] = start_lr
    finder.range_test(loader, end_lr=end_lr, num_iter=len(raw), smooth_f=smooth_f)
    _, ax = plt.subplots()
    _, lr = finder.plot(suggest_lr=True, ax=ax)
    plt.close("all")
    return {
        "lrs": _plain(finder.history["lr"]),
        "losses": _plain(finder.history["loss"]),
        "torch_lr_finder_steepest": float(lr),
    }


def main() -> None:
    import fastai
    import torch
    import torch_lr_finder

    torch.set_num_threads(1)
    rules = []
    for name, lrs, losses in rule_curves():
        expected = fastai_rules(lrs, losses)
        if len(lrs) > 1:
            expected["torch_lr_finder_steepest"] = torch_rule(lrs, losses)
        rules.append(
            {"name": name, "lrs": _f32(lrs), "losses": _f32(losses), **expected}
        )
    pipelines = []
    start_lr, end_lr = 1e-4, 10.0
    for name, raw in pipeline_raws():
        pipelines.append(
            {
                "name": name,
                "start_lr": start_lr,
                "end_lr": end_lr,
                "raw": _f32(raw),
                "fastai": fastai_pipeline(raw, start_lr, end_lr),
                "torch_lr_finder": torch_pipeline(raw, start_lr, end_lr, smooth_f=0.02),
            }
        )
    record = {
        "generated_by": "tests/data/make_peer_parity.py",
        "versions": {
            "fastai": fastai.__version__,
            "torch_lr_finder": getattr(torch_lr_finder, "__version__", "0.2.2"),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "rules": rules,
        "pipelines": pipelines,
    }
    text = json.dumps(record, separators=(",", ":"), allow_nan=True)
    OUT.write_text(text.replace("NaN", "null") + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(rules)} rule curves, {len(pipelines)} pipelines)")


if __name__ == "__main__":
    main()
