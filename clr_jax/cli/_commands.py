"""The ``clr-jax`` commands: the only code that reads flags or prints.

Each command turns the parsed arguments into plain values, runs the
experiment of :mod:`._compare`, prints the story and writes the reports of
:mod:`._report`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clr_jax.cli import _compare, _parser, _report
from clr_jax.cli._compare import BASELINE, POLICIES, Setup, Sweep


def say(message: str) -> None:
    print(message, flush=True)


def _setup(args: argparse.Namespace) -> Setup:
    return _compare.make_setup(
        args.model,
        args.optimizer,
        batch_size=args.batch_size,
        epochs=getattr(args, "epochs", 1),
        seeds=getattr(args, "seeds", 1),
        seed=args.seed,
        progress=False if args.no_progress else None,
    )


def _sweep(args: argparse.Namespace) -> Sweep:
    return Sweep(args.start_lr, args.end_lr, args.steps)


def _describe(setup: Setup) -> str:
    from clr_jax.cli._models import MODELS, OPTIMIZERS

    return (
        f"{MODELS[setup.model][1]}, {OPTIMIZERS[setup.optimizer].label}, "
        f"batch {setup.batch_size} ({setup.steps_per_epoch} iterations per epoch), "
        f"{len(setup.data.y_train)} train / {len(setup.data.y_test)} test images"
    )


_MEANING = {
    "steepest": "steepest descent of the loss per log(lr)",
    "minimum": "lr of the lowest loss, divided by 10",
    "valley": "two thirds of the way down the deepest descent",
}


def _print_range_test(summary: dict) -> None:
    if summary["diverged_step"] is None:
        say("  the loss did not diverge within the sweep")
    else:
        say(
            f"  the loss diverged at iteration {summary['diverged_step']} "
            f"(lr {summary['diverged_lr']:.3g})"
        )
    say("  suggestions, read from the smoothed loss:")
    for method, lr in summary["suggestions"].items():
        value = "none" if lr is None else f"{lr:.4g}"
        say(f"    {method:<9} {value:<10} {_MEANING[method]}")
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


def _range_test_stage(setup: Setup, args, out: Path, *, announce: str, title: str):
    """The range test, printed and written out; returns its summary and files."""
    sweep = _sweep(args)
    say(
        f"{announce}: {sweep.num_steps} iterations, lr {sweep.start_lr:g} to "
        f"{sweep.end_lr:g}"
    )
    result = _compare.run_range_test(setup, sweep)
    summary = _compare.range_test_summary(result, sweep)
    _print_range_test(summary)
    return summary, _report.write_range_test(result, summary, out, title=title)


def _prepare_out(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _half_cycle(setup: Setup, args) -> int:
    step_size, note = _compare.half_cycle(setup, args.half_cycle_epochs)
    if note is not None:
        say(f"  note: {note}")
    return step_size


def range_test(args: argparse.Namespace) -> None:
    """``clr-jax range-test``: suggestions and bounds, plot and curve files."""
    setup = _setup(args)
    out = _prepare_out(args.out)
    say(f"clr-jax range-test on digits: {_describe(setup)}")
    _, paths = _range_test_stage(
        setup,
        args,
        out,
        announce="  exponential sweep, accuracy recorded per mini-batch",
        title=f"range test: {args.model}",
    )
    say("wrote " + ", ".join(str(p) for p in paths))


def _finish(results: dict, setup: Setup, context, args, start: float) -> dict:
    return {
        "setup": _compare.setup_record(setup, context, args.half_cycle_epochs),
        **results,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def compare(args: argparse.Namespace) -> None:
    """``clr-jax compare``: every policy against the best fixed rate of a grid."""
    start = time.perf_counter()
    setup = _setup(args)
    step_size = _half_cycle(setup, args)
    out = _prepare_out(args.out)
    names = args.policies or list(POLICIES)
    say(f"clr-jax compare on digits: {_describe(setup)}")
    summary, _ = _range_test_stage(
        setup, args, out, announce="[1/3] range test", title=f"range test: {args.model}"
    )
    context = _compare.policy_context(setup, summary, step_size)
    grid = np.geomspace(context.base_lr, context.max_lr, args.grid_size).tolist()
    say(
        f"[2/3] training {args.epochs} epochs x {_seeds(args.seeds)}: "
        f"{len(grid)} fixed rates, then {len(names)} policies"
    )
    results, lrs = _compare.run_comparison(
        setup, context, grid, names, on_start=lambda what: say(f"  {what}")
    )
    results = _finish({"range_test": summary, **results}, setup, context, args, start)
    files = {
        "md": out / "results.md",
        "json": out / "results.json",
        "png": out / "accuracy_vs_iteration.png",
    }
    _report.write_json(files["json"], results)
    files["md"].write_text(_report.format_markdown(results), encoding="utf-8")
    _report.plot_comparison(results, lrs, files["png"], f"digits, {args.model}")
    say("[3/3] results\n" + _report.format_table(results))
    say("wrote " + ", ".join(str(p) for p in files.values()))


def _story(results: dict[str, Any], steps_per_epoch: int) -> str:
    base, clr = results["runs"][BASELINE], results["runs"]["triangular"]
    target = _report.pct(results["target_accuracy"])
    base_iters = base["iterations_to_target"]
    clr_iters = clr["iterations_to_target"]
    text = (
        f"The fixed rate ends at {target} (first reached at iteration {base_iters}). "
    )
    if clr_iters is None:
        return text + (
            "Triangular CLR never reaches it: it ends at "
            f"{_report.pct(clr['final_mean'])}."
        )
    return text + (
        f"Triangular CLR reaches it at iteration {clr_iters} "
        f"(epoch {clr_iters // steps_per_epoch}), {clr['speedup']:.2f}x as fast, "
        f"and ends at {_report.pct(clr['final_mean'])}."
    )


def demo(args: argparse.Namespace) -> None:
    """``clr-jax demo``: range test, bounds, a fixed rate against triangular CLR."""
    start = time.perf_counter()
    setup = _setup(args)
    step_size = _half_cycle(setup, args)
    out = _prepare_out(args.out)
    say("clr-jax demo: cyclical learning rates on scikit-learn's digits")
    say(f"  {_describe(setup)}")
    summary, rt_paths = _range_test_stage(
        setup,
        args,
        out,
        announce="[1/3] LR range test, the rate growing every iteration",
        title="range test: digits",
    )
    context = _compare.policy_context(setup, summary, step_size)
    fixed_lr = math.sqrt(context.base_lr * context.max_lr)
    say(
        f"[2/3] training {args.epochs} epochs x {_seeds(args.seeds)}, twice:\n"
        f"  fixed lr {fixed_lr:.4g}: the geometric middle of the bounds\n"
        f"  triangular CLR between the bounds, half-cycle {context.step_size} "
        f"iterations ({args.half_cycle_epochs:g} epochs; Smith: 2 to 10)"
    )
    results, lrs = _compare.run_comparison(setup, context, [fixed_lr], ["triangular"])
    results = _finish({"range_test": summary, **results}, setup, context, args, start)
    png = out / "accuracy_vs_iteration.png"
    _report.plot_comparison(results, lrs, png, "digits: fixed lr vs triangular CLR")
    _report.write_json(out / "results.json", results)
    say(
        f"[3/3] results (mean over {_seeds(args.seeds)})\n"
        + _report.format_table(results)
    )
    say(_story(results, setup.steps_per_epoch))
    say(
        "A fixed rate tuned on a grid is a stronger baseline; `clr-jax compare` "
        "runs one against every policy."
    )
    say(f"plots: {rt_paths[0]} (range test), {png} (accuracy vs iteration)")
    say(f"data: {rt_paths[1]}, {rt_paths[3]}, {out / 'results.json'}")
    say(f"done in {results['wall_seconds']:.0f} s")


_COMMANDS = {"range_test": range_test, "compare": compare, "demo": demo}


def _with_flag_names(message: str, args: argparse.Namespace) -> str:
    """Names the arguments of a message as the command's flags (``--steps``)."""
    aliases = {"num_steps": "steps", **{name: name for name in vars(args)}}
    for name, dest in aliases.items():
        if dest in vars(args):
            message = message.replace(f"`{name}`", f"`--{dest.replace('_', '-')}`")
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``clr-jax``.

    Args:
      argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
      The exit status: 0 on success, 2 for a bad argument (the message is
      printed without a traceback, naming the flag), 1 when an optional
      dependency is missing.
    """
    args = _parser.parse(argv)
    try:
        _COMMANDS[args.command](args)
    except ValueError as err:
        message = _with_flag_names(str(err), args)
        print(f"clr-jax {args.name}: error: {message}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(
            f"clr-jax {args.name}: error: {err}. The command line needs the "
            "examples extra: pip install 'clr-jax[examples]'",
            file=sys.stderr,
        )
        return 1
    return 0
