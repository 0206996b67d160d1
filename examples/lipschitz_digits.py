"""Lipschitz LR on a classical model: softmax regression on the digits data.

Reproduces the classical-model experiment of Yedida & Saha ("LipschitzLR",
arXiv 1902.07399, Tables 1-2, row "Digits"): softmax regression with no
hidden layer, trained by full-batch gradient descent with a fixed
``alpha = 0.1`` against ``alpha = 1/L``, where

    L = (k - 1) / (k m) * ||X||_F,   m = N (the training-set size).

It reports 1/L, the number of iterations until the training loss first
reaches the threshold (0.2) and the test accuracy after 200 epochs (one
epoch = one full-batch step). All of training is one ``lax.scan``, with the
two learning rates ``vmap``-ed side by side.

The paper does not state its preprocessing. Raw pixels (0..16) with a
70/30 split reproduce its 1/L = 0.634-0.635, so ``raw`` is the headline
preprocessing; ``scale16`` (pixels / 16) and ``standardize`` (per-feature
z-score fitted on the training split) are run too for comparison. See
``docs/lipschitz_reproduction.md``.

Usage::

    python examples/lipschitz_digits.py --out runs/lipschitz_digits
    python examples/lipschitz_digits.py --smoke --out /tmp/smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import clr_jax
from clr_jax.data import load_digits

PREPROCESSINGS = ("raw", "scale16", "standardize")


def preprocess(name: str, x_train: np.ndarray, x_test: np.ndarray):
    """Maps ``load_digits``' [0, 1] pixels (raw / 16) to the named scaling."""
    x_train = x_train.astype(np.float64)
    x_test = x_test.astype(np.float64)
    if name == "raw":  # back to the 0..16 integers of scikit-learn's data
        return x_train * 16.0, x_test * 16.0
    if name == "scale16":
        return x_train, x_test
    if name == "standardize":
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)  # constant (always-0) pixels
        return (x_train - mean) / std, (x_test - mean) / std
    raise ValueError(f"`preprocess` must be one of {PREPROCESSINGS}; got {name!r}.")


def inverse_lipschitz(x_train: np.ndarray, num_classes: int) -> float:
    """``1/L`` with ``K_z = ||X||_F`` of the whole training set and ``m = N``."""
    n = len(x_train)
    k_z = clr_jax.penultimate_norm(
        _identity, None, jnp.asarray(x_train, jnp.float32), batch_size=n
    )
    lr = clr_jax.lipschitz_lr(
        k_z, loss="softmax_ce", batch_size=n, num_classes=num_classes
    )
    return float(lr)


def _identity(_, x):
    return x


def _loss(params, x, y_onehot):
    w, b = params
    logits = x @ w + b[None, :]
    return -jnp.mean(jnp.sum(y_onehot * jax.nn.log_softmax(logits), axis=-1))


def _accuracy(params, x, y):
    w, b = params
    return jnp.mean(jnp.argmax(x @ w + b[None, :], axis=-1) == y)


def make_train(num_steps: int, eval_step: int):
    """Full-batch GD from zero weights, one ``lax.scan`` for all steps.

    Returns ``(losses, test_acc)``: ``losses[t]`` is the training loss after
    ``t`` steps (``t = 0..num_steps``), ``test_acc`` the test accuracy after
    ``eval_step`` steps.
    """

    def train(lr, x, y_onehot, x_test, y_test):
        d, k = x.shape[1], y_onehot.shape[1]
        params = (jnp.zeros((d, k), x.dtype), jnp.zeros((k,), x.dtype))

        def step(params, t):
            loss, grads = jax.value_and_grad(_loss)(params, x, y_onehot)
            acc = _accuracy(params, x_test, y_test)
            params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
            return params, (loss, acc)

        params, (losses, accs) = jax.lax.scan(step, params, jnp.arange(num_steps + 1))
        return losses, accs[eval_step]

    return jax.jit(jax.vmap(train, in_axes=(0, None, None, None, None)))


def first_below(losses: np.ndarray, threshold: float) -> int | None:
    """Number of GD steps after which the loss first is ``<= threshold``."""
    hits = np.flatnonzero(losses <= threshold)
    return int(hits[0]) if hits.size else None


def run(args) -> dict:
    data = load_digits(test_fraction=args.test_fraction, seed=args.seed)
    k = data.num_classes
    num_steps = max(args.max_iters, args.epochs)
    train = make_train(num_steps, args.epochs)
    results = {
        "config": {
            "split": (
                f"clr_jax.data.load_digits(test_fraction={args.test_fraction}, "
                f"seed={args.seed}) (stratified by class)"
            ),
            "n_train": len(data.x_train),
            "n_test": len(data.x_test),
            "threshold": args.threshold,
            "alpha": args.alpha,
            "epochs": args.epochs,
            "max_iters": num_steps,
            "model": "softmax regression (W, b), zero init, full-batch GD",
        },
        "runs": {},
    }
    curves = {}
    for name in args.preprocess:
        x_train, x_test = preprocess(name, data.x_train, data.x_test)
        inv_l = inverse_lipschitz(x_train, k)
        lrs = jnp.array([args.alpha, inv_l], jnp.float32)
        losses, accs = train(
            lrs,
            jnp.asarray(x_train, jnp.float32),
            jax.nn.one_hot(data.y_train, k),
            jnp.asarray(x_test, jnp.float32),
            jnp.asarray(data.y_test),
        )
        losses = np.asarray(losses, np.float64)
        results["runs"][name] = {
            "inv_L": inv_l,
            "iters_alpha": first_below(losses[0], args.threshold),
            "iters_inv_L": first_below(losses[1], args.threshold),
            "test_acc_alpha": float(accs[0]),
            "test_acc_inv_L": float(accs[1]),
            "final_loss_alpha": float(losses[0, -1]),
            "final_loss_inv_L": float(losses[1, -1]),
        }
        curves[name] = losses
    return results, curves


def write_outputs(out: Path, results: dict, curves: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    for name, losses in curves.items():
        header = "step,loss_alpha,loss_inv_L"
        table = np.column_stack([np.arange(losses.shape[1]), losses.T])
        np.savetxt(
            out / f"loss_{name}.csv", table, delimiter=",", header=header,
            comments="", fmt=["%d", "%.8g", "%.8g"],
        )  # fmt: skip
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - plotting is optional
        return
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.5))
    axes = np.atleast_1d(axes)
    alpha = results["config"]["alpha"]
    for ax, (name, losses) in zip(axes, curves.items(), strict=True):
        inv_l = results["runs"][name]["inv_L"]
        ax.semilogy(losses[0], label=f"alpha = {alpha:g}")
        ax.semilogy(losses[1], label=f"alpha = 1/L = {inv_l:.4g}")
        ax.axhline(results["config"]["threshold"], color="gray", ls=":")
        ax.set(title=f"digits, {name}", xlabel="GD iteration", ylabel="train loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=120)
    plt.close(fig)


def format_table(results: dict) -> str:
    def iters(v):
        return "not reached" if v is None else str(v)

    lines = [
        "preprocess   | 1/L     | iters a=0.1 | iters 1/L | acc a=0.1 | acc 1/L",
        "-------------|---------|-------------|-----------|-----------|--------",
    ]
    for name, r in results["runs"].items():
        lines.append(
            f"{name:12s} | {r['inv_L']:<7.4f} | {iters(r['iters_alpha']):>11s} | "
            f"{iters(r['iters_inv_L']):>9s} | {100 * r['test_acc_alpha']:8.2f}% | "
            f"{100 * r['test_acc_inv_L']:6.2f}%"
        )
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("lipschitz_digits_out"))
    parser.add_argument("--smoke", action="store_true", help="tiny fast run")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--max-iters", type=int, default=5000)
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--preprocess", nargs="+", choices=PREPROCESSINGS, default=list(PREPROCESSINGS)
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = min(args.epochs, 20)
        args.max_iters = min(args.max_iters, 300)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    results, curves = run(args)
    write_outputs(args.out, results, curves)
    print(format_table(results))
    print(f"outputs in {os.fspath(args.out)}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
