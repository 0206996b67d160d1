"""The ``clr-jax`` argument parser: the only place that knows the flags."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

import clr_jax
from clr_jax.cli._compare import POLICIES

# The keys of cli._models.DATASETS, their models and OPTIMIZERS, here so that
# parsing the arguments (and --help) needs no flax.
DATA_NAMES = ("digits", "mnist1d")
MODEL_NAMES = ("mlp", "cnn")
OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "adamw")

# Flags whose default depends on --data: {flag: {data: default}}, per command.
# MNIST-1D: the paper's batch of 100 (40 updates per epoch); 150 epochs are
# its 6000 updates, 15 whole cycles of a 5-epoch half-cycle.
_DATA_DEFAULTS = {
    "range_test": {"batch_size": {"digits": 32, "mnist1d": 100}},
    "compare": {
        "batch_size": {"digits": 32, "mnist1d": 100},
        "epochs": {"digits": 48, "mnist1d": 150},
        "half_cycle_epochs": {"digits": 4.0, "mnist1d": 5.0},
    },
    "demo": {
        "batch_size": {"digits": 32, "mnist1d": 100},
        "epochs": {"digits": 24, "mnist1d": 40},
        "half_cycle_epochs": {"digits": 4.0, "mnist1d": 5.0},
    },
}

# jax.random.key keeps 32 bits of a seed (without x64): 2**32 is seed 0 again.
_SEED_MAX = 2**32 - 1
# The normal float32 numbers (XLA flushes subnormals to zero).
_FLOAT32_MIN = float(np.finfo(np.float32).tiny)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _fail(rule: str, text: str):
    raise argparse.ArgumentTypeError(f"must be {rule}; got {text!r}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        _fail("a positive integer", text)
    if value <= 0:
        _fail("a positive integer", text)
    return value


def _positive_float(text: str) -> float:
    """A positive number that float32, the dtype of every computation, holds
    as a normal number: 1e-46 would be 0, 1e39 infinite."""
    rule = f"a positive number between {_FLOAT32_MIN:.3g} and {_FLOAT32_MAX:.3g}"
    try:
        value = float(text)
    except ValueError:
        _fail(rule + " (float32)", text)
    if not (math.isfinite(value) and _FLOAT32_MIN <= value <= _FLOAT32_MAX):
        _fail(rule + " (float32)", text)
    return value


def _seed(text: str) -> int:
    rule = f"an integer from 0 to {_SEED_MAX} (2**32 - 1, the bits a JAX key keeps)"
    try:
        value = int(text)
    except ValueError:
        _fail(rule, text)
    if not 0 <= value <= _SEED_MAX:
        _fail(rule, text)
    return value


_positive_int.__name__ = "positive integer"
_positive_float.__name__ = "positive number"
_seed.__name__ = "seed"
_POSITIVE_INT = _positive_int
_POSITIVE_FLOAT = _positive_float


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except ``None`` (a default that depends on ``--data``,
    which its help states)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _per_data(command: str, name: str) -> str:
    values = _DATA_DEFAULTS[command][name]
    return "default: " + ", ".join(f"{v:g} on {data}" for data, v in values.items())


def _add_common(parser: argparse.ArgumentParser, *, out: str, command: str) -> None:
    parser.add_argument(
        "--data",
        choices=DATA_NAMES,
        default="digits",
        help="scikit-learn's bundled 8x8 digits, or MNIST-1D (generated once "
        "by the mnist1d package, then cached; no download)",
    )
    parser.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default="mlp",
        help="the model of the data set (MNIST-1D: the paper's MLP and CNN)",
    )
    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZER_NAMES,
        default="momentum",
        help="momentum = SGD with momentum 0.9 (Smith's setting)",
    )
    parser.add_argument(
        "--batch-size",
        type=_POSITIVE_INT,
        default=None,
        help=f"examples per update ({_per_data(command, 'batch_size')})",
    )
    parser.add_argument(
        "--seed", type=_seed, default=0, help="seed of the range test and trainings"
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
        "--out",
        type=Path,
        default=Path(out),
        help="folder for the files written (created if missing)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of an earlier run in --out (without it, a run "
        "that would replace one stops before it starts)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_training(parser, *, command: str, seeds: int) -> None:
    parser.add_argument(
        "--epochs",
        type=_POSITIVE_INT,
        default=None,
        help=f"epochs of every run ({_per_data(command, 'epochs')})",
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
        default=None,
        help="epochs per half-cycle (Smith: 2 to 10; "
        f"{_per_data(command, 'half_cycle_epochs')})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny run through every code path (for tests)",
    )


def _subparser(sub, name: str, summary: str, description: str):
    return sub.add_parser(
        name,
        help=summary,
        description=description,
        formatter_class=_HelpFormatter,
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
            "Cyclical learning rates on scikit-learn's bundled digits or "
            "MNIST-1D: the LR range test, a comparison of policies, and a short "
            "demo."
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
    _add_common(rt, out="clr_jax_range_test", command="range_test")
    rt.set_defaults(command="range_test")

    cmp = _subparser(
        sub,
        "compare",
        "every policy vs a tuned fixed-LR baseline",
        "Smith's Table 1: the iterations each policy needs to reach "
        "the final accuracy of the best fixed rate of a grid between the range "
        "test's bounds; writes results.md, results.json and "
        "accuracy_vs_iteration.png.",
    )
    _add_common(cmp, out="clr_jax_compare", command="compare")
    _add_training(cmp, command="compare", seeds=5)
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
    _add_common(demo, out="clr_jax_demo", command="demo")
    _add_training(demo, command="demo", seeds=3)
    demo.set_defaults(command="demo")
    return parser


# ``--smoke``: a run of seconds that exercises every code path.
_SMOKE = {
    "compare": dict(epochs=2, seeds=2, grid_size=2, steps=100, half_cycle_epochs=0.5),
    "demo": dict(epochs=2, seeds=1, steps=100, half_cycle_epochs=0.5),
}


def parse(argv) -> argparse.Namespace:
    """The parsed arguments, with the defaults of ``--data`` and the ``--smoke``
    settings applied."""
    args = build_parser().parse_args(argv)
    for name, values in _DATA_DEFAULTS[args.command].items():
        if getattr(args, name) is None:
            setattr(args, name, values[args.data])
    if getattr(args, "smoke", False):
        vars(args).update(_SMOKE[args.command])
    return args
