"""The MNIST-1D paper's baselines, reproduced with ``clr_jax.flax.fit``.

Greydanus & Kobak ("Scaling Down Deep Learning with MNIST-1D", 2020) report
test accuracies of 32% (logistic regression), 68% (MLP) and 94% (CNN). The
authors' code (``notebooks/train.py`` and ``models.py`` of
github.com/greydanus/mnist1d) trains every model with Adam at a learning
rate of 0.01, no weight decay, batches of 100 and 6000 updates, and scores
the 1000 test sequences.

This script trains the same models (``clr_jax.cli._models``: the linear
model, ``Mnist1dMLP`` and ``Mnist1dCNN``) on the same split (the mnist1d
package's ``make_dataset`` defaults, via :func:`clr_jax.data.load_mnist1d`)
with the same optimizer, batch and number of updates (150 epochs of 40),
``--seeds`` seeds per model as one vmapped ``fit``. One difference: batches
are drawn without replacement and reshuffled every epoch, where the authors
slice the training set in order. It prints the final test accuracy (mean ±
std over seeds, and the best epoch's) beside the paper's, and writes
``results.json`` and ``results.md`` to ``--out``.

Usage::

    python examples/mnist1d_baselines.py --out docs/mnist1d_baselines
    python examples/mnist1d_baselines.py --smoke --out /tmp/mnist1d_smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import optax

from clr_jax import flax as clr_flax
from clr_jax.cli import _report
from clr_jax.cli._models import DATASETS
from clr_jax.data import load_mnist1d

# The paper's test accuracies (its Table 1 / the repository's README).
PAPER = {"linear": 0.32, "mlp": 0.68, "cnn": 0.94}
LABELS = {
    "linear": "logistic regression 40-10",
    **{name: spec.label for name, spec in DATASETS["mnist1d"].models.items()},
}
FILES = ("results.json", "results.md")


def build(name: str) -> nn.Module:
    if name == "linear":
        return nn.Dense(10)
    return DATASETS["mnist1d"].models[name].build()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(PAPER), default=list(PAPER))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=150, help="150 = 6000 updates")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate")
    parser.add_argument("--out", type=Path, default=Path("mnist1d_baselines"))
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="2 epochs, 2 seeds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.seeds = 2, 2
    return args


def train(name: str, data, args: argparse.Namespace) -> dict:
    """One vmapped ``fit`` of ``args.seeds`` seeds; its accuracies as data."""
    start = time.perf_counter()
    result = clr_flax.fit(
        build(name),
        data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        key=jax.random.key(0),
        optimizer=optax.adam,
        learning_rate=args.lr,
        seeds=args.seeds,
        progress=False if args.no_progress else None,
    )
    accuracy = np.asarray(result.history.test_accuracy, np.float64)  # [seeds, e]
    final, best = accuracy[:, -1], accuracy.max(axis=1)
    ddof = 1 if args.seeds > 1 else 0
    return {
        "model": LABELS[name],
        "paper": PAPER[name],
        "final_mean": float(final.mean()),
        "final_std": float(final.std(ddof=ddof)),
        "best_epoch_mean": float(best.mean()),
        "final_per_seed": final.tolist(),
        "seconds": round(time.perf_counter() - start, 1),
    }


def table(results: dict) -> str:
    lines = [
        "| model | paper | final test accuracy | best epoch | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in results["models"].values():
        lines.append(
            f"| {row['model']} | {_report.pct(row['paper'])} "
            f"| {_report.pct(row['final_mean'], row['final_std'])} "
            f"| {_report.pct(row['best_epoch_mean'])} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Trains every model of ``--models``; returns the exit status."""
    args = parse_args(argv)
    try:
        _report.check_out(args.out, FILES, overwrite=args.overwrite)
        out = _report.make_out(args.out)
    except ValueError as err:
        message = str(err).replace("`out`", "`--out`")
        message = message.replace("`overwrite`", "`--overwrite`")
        print(f"error: {message}", file=sys.stderr)
        return 2
    data = load_mnist1d()
    print(
        f"MNIST-1D {len(data.y_train)} train / {len(data.y_test)} test; Adam lr "
        f"{args.lr:g}, batch {args.batch_size}, {args.epochs} epochs "
        f"({args.epochs * (len(data.y_train) // args.batch_size)} updates), "
        f"{args.seeds} seeds",
        flush=True,
    )
    results = {"setup": {**vars(args), "out": str(args.out)}, "models": {}}
    for name in args.models:
        results["models"][name] = row = train(name, data, args)
        print(
            f"  {name}: {_report.pct(row['final_mean'], row['final_std'])}", flush=True
        )
    results["machine"] = (
        f"{platform.machine()}, jax {jax.__version__} ({jax.default_backend()}), "
        f"Python {platform.python_version()}"
    )
    text = table(results)
    print(text)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
