"""The ``clr-jax`` command line, on scikit-learn's bundled digits (no download).

Subcommands:

* ``clr-jax range-test``: Smith's learning-rate range test of a small model;
  prints the suggestions and the bounds with their reasoning, and writes the
  plot, the curve (JSON, CSV) and the bounds (JSON).
* ``clr-jax compare``: Smith's Table 1 and Figure 1 on digits. A fixed-rate
  baseline (the best of a small grid inside the range test's bounds) against
  every policy of :data:`clr_jax.compare.POLICIES`, each over several seeds run as one
  vmapped training; writes ``results.md``, ``results.json`` and
  ``accuracy_vs_iteration.png``.
* ``clr-jax demo``: the short story: range test, bounds, a fixed rate
  against triangular CLR, the iterations each needs, the plots.

Flax, matplotlib, scikit-learn and tqdm are imported inside the commands,
so importing this module costs no more than ``import clr_jax``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import clr_jax
from clr_jax.compare import (
    BASELINE,
    POLICIES,
    Setup,
    format_markdown,
    format_table,
    half_cycle,
    make_setup,
    pct,
    plot_comparison,
    policy_context,
    range_test_summary,
    run_comparison,
    run_range_test,
    say,
    setup_record,
    write_json,
    write_range_test,
)

# The keys of _digits_models.MODELS and OPTIMIZERS, here so that parsing the
# arguments (and --help) needs no flax.
_MODEL_NAMES = ("mlp", "cnn")
_OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "adamw")

__all__ = ["build_parser", "main"]

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _describe(setup: Setup) -> str:
    from clr_jax._digits_models import MODELS, OPTIMIZERS

    return (
        f"{MODELS[setup.model][1]}, {OPTIMIZERS[setup.optimizer].label}, "
        f"batch {setup.batch_size} ({setup.steps_per_epoch} iterations per epoch), "
        f"{len(setup.data.y_train)} train / {len(setup.data.y_test)} test images"
    )


def _print_range_test(summary: dict) -> None:
    if summary["diverged_step"] is None:
        say("  the loss did not diverge within the sweep")
    else:
        say(
            f"  the loss diverged at iteration {summary['diverged_step']} "
            f"(lr {summary['diverged_lr']:.3g})"
        )
    say("  suggestions, read from the smoothed loss:")
    meaning = {
        "steepest": "steepest descent of the loss per log(lr)",
        "minimum": "lr of the lowest loss, divided by 10",
        "valley": "two thirds of the way down the deepest descent",
    }
    for method, lr in summary["suggestions"].items():
        value = "none" if lr is None else f"{lr:.4g}"
        say(f"    {method:<9} {value:<10} {meaning[method]}")
    base_lr, max_lr = summary["bounds"]
    if base_lr is None:
        say(f"  bounds: none ({summary['bounds_reason']})")
    else:
        say(
            f"  bounds (Smith): base_lr {base_lr:.4g}, max_lr {max_lr:.4g}, read "
            f"from the {summary['bounds_source']}"
        )
        say(f"    why: {summary['bounds_reason']}")
    for note in summary["notes"]:
        say(f"  note: {note}")


def _cmd_range_test(args: argparse.Namespace) -> None:
    setup = make_setup(args)
    out = _prepare_out(args.out)
    say(f"clr-jax range-test on digits: {_describe(setup)}")
    say(
        f"  {args.steps} iterations, lr {args.start_lr:g} to {args.end_lr:g} "
        "(exponential), accuracy recorded per mini-batch"
    )
    result = run_range_test(setup, args)
    summary = range_test_summary(result, args)
    _print_range_test(summary)
    paths = write_range_test(result, summary, out, title=f"range test: {args.model}")
    say("wrote " + ", ".join(str(p) for p in paths))


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _comparison_files(out: Path) -> dict[str, Path]:
    return {
        "md": out / "results.md",
        "json": out / "results.json",
        "png": out / "accuracy_vs_iteration.png",
    }


def _range_test_stage(setup: Setup, args, out: Path, *, announce: str, title: str):
    """Step 1 of compare and demo: the range test, printed and written out.

    Returns the summary (suggestions, bounds) and the files written.
    """
    say(
        f"[1/3] {announce}: {args.steps} iterations, lr {args.start_lr:g} to "
        f"{args.end_lr:g}"
    )
    result = run_range_test(setup, args)
    summary = range_test_summary(result, args)
    _print_range_test(summary)
    return summary, write_range_test(result, summary, out, title=title)


def _cmd_compare(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    _apply_smoke(args, epochs=2, seeds=2, grid_size=2, steps=100, half_cycle=0.5)
    setup = make_setup(args)
    step_size = half_cycle(setup, args.half_cycle_epochs)
    out = _prepare_out(args.out)
    names = args.policies or list(POLICIES)
    say(f"clr-jax compare on digits: {_describe(setup)}")
    summary, _ = _range_test_stage(
        setup, args, out, announce="range test", title=f"range test: {args.model}"
    )
    context = policy_context(setup, summary, step_size)
    grid = np.geomspace(context.base_lr, context.max_lr, args.grid_size).tolist()
    say(
        f"[2/3] training {args.epochs} epochs x {_seeds(args.seeds)}: "
        f"{len(grid)} fixed rates, then {len(names)} policies"
    )
    results, lrs = run_comparison(setup, context, grid, names)
    results = {
        "setup": setup_record(setup, context, args),
        "range_test": summary,
        **results,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    files = _comparison_files(out)
    write_json(files["json"], results)
    files["md"].write_text(format_markdown(results), encoding="utf-8")
    plot_comparison(results, lrs, files["png"], f"digits, {args.model}")
    say("[3/3] results\n" + format_table(results))
    say("wrote " + ", ".join(str(p) for p in files.values()))


def _story(results: dict[str, Any], steps_per_epoch: int) -> str:
    base, clr = results["runs"][BASELINE], results["runs"]["triangular"]
    target = pct(results["target_accuracy"])
    base_iters = base["iterations_to_target"]
    clr_iters = clr["iterations_to_target"]
    text = (
        f"The fixed rate ends at {target} (first reached at iteration {base_iters}). "
    )
    if clr_iters is None:
        return text + (
            f"Triangular CLR never reaches it: it ends at {pct(clr['final_mean'])}."
        )
    return text + (
        f"Triangular CLR reaches it at iteration {clr_iters} "
        f"(epoch {clr_iters // steps_per_epoch}), {clr['speedup']:.2f}x as fast, "
        f"and ends at {pct(clr['final_mean'])}."
    )


def _cmd_demo(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    _apply_smoke(args, epochs=2, seeds=1, grid_size=1, steps=100, half_cycle=0.5)
    setup = make_setup(args)
    step_size = half_cycle(setup, args.half_cycle_epochs)
    out = _prepare_out(args.out)
    say("clr-jax demo: cyclical learning rates on scikit-learn's digits")
    say(f"  {_describe(setup)}")
    summary, rt_paths = _range_test_stage(
        setup,
        args,
        out,
        announce="LR range test, the rate growing every iteration",
        title="range test: digits",
    )
    context = policy_context(setup, summary, step_size)
    fixed_lr = math.sqrt(context.base_lr * context.max_lr)
    say(
        f"[2/3] training {args.epochs} epochs x {_seeds(args.seeds)}, twice:\n"
        f"  fixed lr {fixed_lr:.4g}: the geometric middle of the bounds\n"
        f"  triangular CLR between the bounds, half-cycle {context.step_size} "
        f"iterations ({args.half_cycle_epochs:g} epochs; Smith: 2 to 10)"
    )
    results, lrs = run_comparison(setup, context, [fixed_lr], ["triangular"])
    results = {
        "setup": setup_record(setup, context, args),
        "range_test": summary,
        **results,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    png = out / "accuracy_vs_iteration.png"
    plot_comparison(results, lrs, png, "digits: fixed lr vs triangular CLR")
    write_json(out / "results.json", results)
    say(f"[3/3] results (mean over {_seeds(args.seeds)})\n" + format_table(results))
    say(_story(results, setup.steps_per_epoch))
    say(
        "A fixed rate tuned on a grid is a stronger baseline; `clr-jax compare` "
        "runs one against every policy."
    )
    say(f"plots: {rt_paths[0]} (range test), {png} (accuracy vs iteration)")
    say(f"data: {rt_paths[1]}, {rt_paths[3]}, {out / 'results.json'}")
    say(f"done in {results['wall_seconds']:.0f} s")


# ---------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------


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


def _prepare_out(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out


def _apply_smoke(args, *, epochs, seeds, grid_size, steps, half_cycle) -> None:
    """``--smoke``: a run of seconds that exercises every code path."""
    if not args.smoke:
        return
    args.epochs, args.seeds, args.steps = epochs, seeds, steps
    args.half_cycle_epochs = half_cycle
    if hasattr(args, "grid_size"):
        args.grid_size = grid_size


def _add_common(parser: argparse.ArgumentParser, *, out: str) -> None:
    parser.add_argument(
        "--model", choices=_MODEL_NAMES, default="mlp", help="the digits model"
    )
    parser.add_argument(
        "--optimizer",
        choices=_OPTIMIZER_NAMES,
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
      An ``argparse.ArgumentParser`` whose subcommands set ``command``.
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
    rt.set_defaults(command=_cmd_range_test)

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
    cmp.set_defaults(command=_cmd_compare)

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
    demo.set_defaults(command=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``clr-jax``.

    Args:
      argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
      The exit status: 0 on success, 2 for a bad argument (the library's
      ``ValueError`` message is printed without a traceback), 1 when an
      optional dependency is missing.
    """
    args = build_parser().parse_args(argv)
    try:
        args.command(args)
    except ValueError as err:
        print(f"clr-jax {args.name}: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(
            f"clr-jax {args.name}: error: {err}. The command line needs the "
            "examples extra: pip install 'clr-jax[examples]'",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
