"""The ``clr-jax`` argument parser: the only place that knows the flags."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clr_jax
from clr_jax.cli._compare import POLICIES

# The keys of cli._models.MODELS and OPTIMIZERS, here so that parsing the
# arguments (and --help) needs no flax.
MODEL_NAMES = ("mlp", "cnn")
OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "adamw")


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {kind.__name__}, got {text!r}"
            ) from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


_POSITIVE_INT = _positive(int)
_POSITIVE_FLOAT = _positive(float)


def _add_common(parser: argparse.ArgumentParser, *, out: str) -> None:
    parser.add_argument(
        "--model", choices=MODEL_NAMES, default="mlp", help="the digits model"
    )
    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZER_NAMES,
        default="momentum",
        help="momentum = SGD with momentum 0.9 (Smith's setting)",
    )
    parser.add_argument(
        "--batch-size", type=_POSITIVE_INT, default=32, help="examples per update"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the range test and trainings"
    )
    parser.add_argument(
        "--start-lr", type=_POSITIVE_FLOAT, default=1e-4, help="range test: first lr"
    )
    parser.add_argument(
        "--end-lr", type=_POSITIVE_FLOAT, default=10.0, help="range test: last lr"
    )
    parser.add_argument(
        "--steps", type=_POSITIVE_INT, default=400, help="range test: iterations"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(out), help="folder for the files written"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_training(parser, *, epochs: int, seeds: int) -> None:
    parser.add_argument(
        "--epochs", type=_POSITIVE_INT, default=epochs, help="epochs of every run"
    )
    parser.add_argument(
        "--seeds",
        type=_POSITIVE_INT,
        default=seeds,
        help="trainings per policy, run at once (vmapped)",
    )
    parser.add_argument(
        "--half-cycle-epochs",
        type=_POSITIVE_FLOAT,
        default=4.0,
        help="epochs per half-cycle (Smith: 2 to 10)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny run of seconds (for tests)"
    )


def _subparser(sub, name: str, summary: str, description: str):
    return sub.add_parser(
        name,
        help=summary,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``clr-jax`` argument parser.

    Returns:
      An ``argparse.ArgumentParser`` whose subcommands set ``command`` (the
      name of the function of :mod:`._commands` that runs it).
    """
    parser = argparse.ArgumentParser(
        prog="clr-jax",
        description=(
            "Cyclical learning rates on scikit-learn's bundled digits: the LR "
            "range test, a comparison of policies, and a short demo."
        ),
    )
    parser.add_argument("--version", action="version", version=clr_jax.__version__)
    sub = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")

    rt = _subparser(
        sub,
        "range-test",
        "LR range test: suggestions and bounds",
        "Smith's LR range test: prints the suggested rates and the bounds of a "
        "cyclical schedule with their reasoning; writes the plot, the curve "
        "(JSON, CSV) and the bounds (JSON).",
    )
    _add_common(rt, out="clr_jax_range_test")
    rt.set_defaults(command="range_test")

    cmp = _subparser(
        sub,
        "compare",
        "every policy vs a tuned fixed-LR baseline",
        "Smith's Table 1 on digits: the iterations each policy needs to reach "
        "the final accuracy of the best fixed rate of a grid between the range "
        "test's bounds; writes results.md, results.json and "
        "accuracy_vs_iteration.png.",
    )
    _add_common(cmp, out="clr_jax_compare")
    _add_training(cmp, epochs=48, seeds=5)
    cmp.add_argument(
        "--grid-size",
        type=_POSITIVE_INT,
        default=5,
        help="fixed rates tried for the baseline (geometric, between the bounds)",
    )
    cmp.add_argument(
        "--policies",
        nargs="+",
        choices=list(POLICIES),
        metavar="NAME",
        help=f"policies to run (default: all of {', '.join(POLICIES)})",
    )
    cmp.set_defaults(command="compare")

    demo = _subparser(
        sub,
        "demo",
        "range test, then a fixed LR vs triangular CLR",
        "The story in a minute: range test, bounds, a fixed rate (the "
        "geometric middle of the bounds) against triangular CLR, and the "
        "iterations each needs; writes the plots.",
    )
    _add_common(demo, out="clr_jax_demo")
    _add_training(demo, epochs=24, seeds=3)
    demo.set_defaults(command="demo")
    return parser


# ``--smoke``: a run of seconds that exercises every code path.
_SMOKE = {
    "compare": dict(epochs=2, seeds=2, grid_size=2, steps=100, half_cycle_epochs=0.5),
    "demo": dict(epochs=2, seeds=1, steps=100, half_cycle_epochs=0.5),
}


def parse(argv) -> argparse.Namespace:
    """The parsed arguments, with the ``--smoke`` settings applied."""
    args = build_parser().parse_args(argv)
    if getattr(args, "smoke", False):
        vars(args).update(_SMOKE[args.command])
    return args
