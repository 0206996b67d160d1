"""The ``clr-jax`` commands: the only code that reads flags or prints.

Each command turns the parsed arguments into plain values, runs the
experiment of :mod:`._compare`, prints the story and writes the reports of
:mod:`._report`.
"""

from __future__ import annotations

import argparse
import math
import os
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
        args.data,
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
    from clr_jax.cli._models import DATASETS, OPTIMIZERS

    data = DATASETS[setup.data_name]
    return (
        f"{data.models[setup.model].label}, {OPTIMIZERS[setup.optimizer].label}, "
        f"batch {setup.batch_size} ({setup.steps_per_epoch} iterations per epoch), "
        f"{len(setup.data.y_train)} train / {len(setup.data.y_test)} test {data.unit}"
    )


def _title(args: argparse.Namespace) -> str:
    """The data set's name in titles (digits' keep their earlier form)."""
    return "digits" if args.data == "digits" else "MNIST-1D"


def _subject(args: argparse.Namespace) -> str:
    """The model in titles: ``'mlp'`` on digits, ``'MNIST-1D mlp'`` else."""
    return args.model if args.data == "digits" else f"{_title(args)} {args.model}"


_MEANING = {
    "half_edge": "half the lr where training breaks down, read the lag early",
    "steepest": "steepest descent of the loss per log(lr) (torch-lr-finder's rule)",
    "minimum": "lr of the lowest loss, divided by 10 (fastai's minimum)",
    "valley": "middle of the longest decreasing run (fastai's valley)",
}


def _print_range_test(summary: dict) -> None:
    step, lr = summary["blow_up_step"], summary["blow_up_lr"]
    if step is None:
        say("  the loss did not blow up within the sweep")
    else:
        say(
            f"  the loss blew up at iteration {step} (lr {lr:.3g}): "
            f"{summary['blow_up_reason']}; nothing past it is read"
        )
    say("  suggestions, read from the zero-phase smoothed loss before its minimum:")
    for method, lr in summary["suggestions"].items():
        value = "none" if lr is None else f"{lr:.4g}"
        say(f"    {method:<12} {value:<10} {_MEANING[method]}")
    peers = summary["peer_suggestions"]
    say(
        "  fastai's and torch-lr-finder's rules on their own EMA curves: "
        + ", ".join(
            f"{k} {'none' if x is None else f'{x:.4g}'}" for k, x in peers.items()
        )
    )
    base_lr, max_lr = summary["bounds"]
    if base_lr is None:
        say(f"  bounds: none ({summary['bounds_reason']})")
    elif max_lr is None:
        say(
            f"  bounds: base_lr {base_lr:.4g}, no max_lr (the "
            f"{summary['bounds_source']} still improves at end_lr)"
        )
    else:
        say(
            f"  bounds (Smith): base_lr {base_lr:.4g}, max_lr {max_lr:.4g}, read "
            f"from the {summary['bounds_source']}"
        )
        say(f"    why: {summary['bounds_reason']}")
    for note in summary["notes"]:
        say(f"  note: {note}")


def _range_test_stage(setup: Setup, args, out: Path, *, announce: str, title: str):
    """The range test, printed and written out; returns its summary (with its
    wall time, for the cost of tuning) and files."""
    start = time.perf_counter()
    sweep = _sweep(args)
    say(
        f"{announce}: {sweep.num_steps} iterations, lr {sweep.start_lr:g} to "
        f"{sweep.end_lr:g}"
    )
    result = _compare.run_range_test(setup, sweep)
    summary = _compare.range_test_summary(result, sweep)
    _print_range_test(summary)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary, _report.write_range_test(result, summary, out, title=title)


def _load(args: argparse.Namespace, files: Sequence[str]) -> tuple[Setup, Path]:
    """The setup, once the output folder is known to take ``files``: the
    folder is checked first (touching nothing), then the values and the
    data, then the folder is created; all before any training."""
    _report.check_out(args.out, files, overwrite=args.overwrite)
    if args.data == "mnist1d":
        _announce_mnist1d()
    return _setup(args), args.out


def _load_training(args, files: Sequence[str]) -> tuple[Setup, Path, int]:
    """:func:`_load`, and the half-cycle checked against the run."""
    setup, out = _load(args, files)
    step_size = _half_cycle(setup, args)
    return setup, _report.make_out(out), step_size


def _announce_mnist1d() -> None:
    from clr_jax.data import mnist1d_cache_path

    path = mnist1d_cache_path()
    if not path.exists():
        say(f"generating MNIST-1D once (mnist1d.make_dataset), cached in {path}")


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _half_cycle(setup: Setup, args) -> int:
    step_size, note = _compare.half_cycle(setup, args.half_cycle_epochs)
    if note is not None:
        say(f"  note: {note}")
    return step_size


def range_test(args: argparse.Namespace) -> None:
    """``clr-jax range-test``: suggestions and bounds, plot and curve files."""
    setup, out = _load(args, _report.RANGE_TEST_FILES)
    _report.make_out(out)
    say(f"clr-jax range-test on {_title(args)}: {_describe(setup)}")
    _, paths = _range_test_stage(
        setup,
        args,
        out,
        announce="  exponential sweep, accuracy recorded per mini-batch",
        title=f"range test: {_subject(args)}",
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
    files = (*_report.RANGE_TEST_FILES, *_report.COMPARE_FILES)
    setup, out, step_size = _load_training(args, files)
    names = args.policies or list(POLICIES)
    say(f"clr-jax compare on {_title(args)}: {_describe(setup)}")
    summary, _ = _range_test_stage(
        setup,
        args,
        out,
        announce="[1/3] range test",
        title=f"range test: {_subject(args)}",
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
    results["cost_of_tuning"] = _compare.cost_of_tuning(results, summary, setup.seeds)
    results = _finish({"range_test": summary, **results}, setup, context, args, start)
    files = {
        "md": out / "results.md",
        "json": out / "results.json",
        "png": out / "accuracy_vs_iteration.png",
    }
    _report.write_json(files["json"], results)
    files["md"].write_text(_report.format_markdown(results), encoding="utf-8")
    _report.plot_comparison(results, lrs, files["png"], f"{_title(args)}, {args.model}")
    say("[3/3] results\n" + _report.format_table(results))
    say("the cost of tuning\n" + _report.format_cost_table(results["cost_of_tuning"]))
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
    files = (*_report.RANGE_TEST_FILES, *_report.DEMO_FILES)
    setup, out, step_size = _load_training(args, files)
    source = "scikit-learn's digits" if args.data == "digits" else "MNIST-1D"
    say(f"clr-jax demo: cyclical learning rates on {source}")
    say(f"  {_describe(setup)}")
    summary, rt_paths = _range_test_stage(
        setup,
        args,
        out,
        announce="[1/3] LR range test, the rate growing every iteration",
        title=f"range test: {_title(args)}",
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
    _report.plot_comparison(
        results, lrs, png, f"{_title(args)}: fixed lr vs triangular CLR"
    )
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


# Set to "0" to run the ``clr-jax`` program without the compilation cache.
COMPILE_CACHE_ENV = "CLR_JAX_COMPILE_CACHE"


def _use_compile_cache() -> None:
    """XLA's persistent compilation cache in ``<cache_dir()>/xla``: a later
    run reuses every compiled program (most of a short run's time on CPU).

    Left alone when JAX already has a cache folder (the user's choice) or
    ``CLR_JAX_COMPILE_CACHE=0``.
    """
    import jax

    from clr_jax.data import cache_dir

    if jax.config.jax_compilation_cache_dir or os.environ.get(COMPILE_CACHE_ENV) == "0":
        return
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    # Every program, however small: a short run is made of small ones.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``clr-jax``.

    Args:
      argv: the arguments after the program name; ``None`` (the ``clr-jax``
        program) reads ``sys.argv[1:]`` and also turns on XLA's persistent
        compilation cache (:func:`_use_compile_cache`), while a list leaves
        JAX's configuration alone.

    Returns:
      The exit status: 0 on success, 2 for a bad argument or a file that
      cannot be written (the message is printed without a traceback, naming
      the flag), 1 when an optional dependency is missing.
    """
    args = _parser.parse(argv)
    if argv is None:
        _use_compile_cache()
    try:
        _COMMANDS[args.command](args)
    except ValueError as err:
        message = _with_flag_names(str(err), args)
        print(f"clr-jax {args.name}: error: {message}", file=sys.stderr)
        return 2
    except OSError as err:  # a file problem met after the checks of --out
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
