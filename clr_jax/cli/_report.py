"""The reports of an experiment: Markdown tables, JSON files, figures.

Plain data in (the results of :mod:`._compare`), files and text out;
matplotlib is imported inside the figure functions. The output folder is
checked before a run starts (:func:`check_out`, :func:`make_out`): a run never
replaces a file of an earlier run unless asked to.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import clr_jax

# The files each command writes into its output folder.
RANGE_TEST_FILES = (
    "range_test.png",
    "range_test.json",
    "range_test.csv",
    "range_test_bounds.json",
)
COMPARE_FILES = ("results.md", "results.json", "accuracy_vs_iteration.png")
DEMO_FILES = ("accuracy_vs_iteration.png", "results.json")


def check_out(out: Path, names: Sequence[str], *, overwrite: bool) -> None:
    """Checks, touching nothing, that the folder ``out`` can take ``names``.

    Raises:
      ValueError: naming ``out`` when it or a parent is a file, a name is
        taken by anything but a file, a name is a file of an earlier run and
        ``overwrite`` is false, or the nearest existing folder is read-only.
    """
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == out else f"sits in {existing}, a file"
        raise ValueError(f"`out` must be a folder; got {str(out)!r}, which {where}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"`out` must be a folder that can be written; got {str(out)!r} "
            f"({existing} is read-only)."
        )
    taken = [name for name in names if os.path.lexists(out / name)]
    blocked = [name for name in taken if not (out / name).is_file()]
    if blocked:
        raise ValueError(
            f"`out` must have room for this run's files; got {str(out)!r}, where "
            f"{', '.join(blocked)} is taken by a folder (or other non-file). "
            "Move it, or choose another `out`."
        )
    if taken and not overwrite:
        raise ValueError(
            f"`out` must not hold files of an earlier run; got {str(out)!r}, "
            f"which holds {', '.join(taken)}. Pass `overwrite` to replace them, "
            "or choose another `out`."
        )


def make_out(out: Path) -> Path:
    """Creates the folder ``out`` and proves it writable with a probe file.

    Raises:
      ValueError: naming ``out`` when it cannot be created or written.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(
            f"`out` must be a folder that can be created and written; got "
            f"{str(out)!r} ({reason})."
        ) from err
    return out


def pct(mean: float | None, std: float | None = None) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None:
        return f"{100 * mean:.2f}%"
    return f"{100 * mean:.2f} ± {100 * std:.2f}%"


def _halted(run: dict[str, Any]) -> str:
    halted = run.get("halted_seeds", 0)
    return f" ({halted} seeds halted: non-finite loss)" if halted else ""


def format_table(results: dict[str, Any]) -> str:
    """The Markdown table of a comparison: one row per run, the baseline first.

    Args:
      results: the ``results`` of :func:`run_comparison`.

    Returns:
      The table as Markdown text.
    """
    target = results["target_accuracy"]
    header = (
        f"| policy | schedule | iterations to {pct(target)} | speed-up "
        "| final test accuracy | snapshot ensemble |"
    )
    lines = [header, "|---|---|---:|---:|---:|---:|"]
    for name, run in results["runs"].items():
        iters = run["iterations_to_target"]
        speedup = run["speedup"]
        ensemble = run["ensemble_mean"]
        lines.append(
            f"| {name} | {run['schedule']} "
            f"| {'never' if iters is None else iters} "
            f"| {'—' if speedup is None else f'{speedup:.2f}x'} "
            f"| {pct(run['final_mean'], run['final_std'])}{_halted(run)} "
            f"| {'—' if ensemble is None else pct(ensemble, run['ensemble_std'])} |"
        )
    return "\n".join(lines)


def _format_grid(results: dict[str, Any]) -> str:
    chosen = results["baseline"]["chosen_lr"]
    lines = ["| fixed learning rate | final test accuracy |", "|---:|---:|"]
    for row in results["baseline"]["grid"]:
        mark = " (chosen)" if row["learning_rate"] == chosen else ""
        lines.append(
            f"| {row['learning_rate']:.4g}{mark} "
            f"| {pct(row['final_mean'], row['final_std'])} |"
        )
    return "\n".join(lines)


def _reached(row: dict[str, Any]) -> str:
    if row["reached"]:
        return "yes"
    return f"no: ends at {pct(row['final_accuracy'])}"


def format_cost_table(cost: dict[str, Any]) -> str:
    """The Markdown table of :func:`cost_of_tuning`: one row per approach.

    Args:
      cost: ``results['cost_of_tuning']``.

    Returns:
      The table as Markdown text; an own run that never reaches the target
      counts in full, marked 'never'.
    """
    rows = cost["rows"]
    grids = [row for row in rows if "grid_size" in row]
    full_grid = max(grids, key=lambda row: row["grid_size"])
    lines = [
        f"| approach | tuning | tuning iterations | own run to "
        f"{pct(cost['target_accuracy'])} | total iterations "
        f"| vs grid of {full_grid['grid_size']} "
        "| wall (s) | reaches it |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        own = row["run_iterations"]
        own = "—" if own == 0 else (str(own) if row["reached"] else f"never ({own})")
        ratio = row["total_iterations"] / full_grid["total_iterations"]
        lines.append(
            f"| {row['approach']} | {row['tuning']} | {row['tuning_iterations']} "
            f"| {own} | {row['total_iterations']} | {ratio:.2f}x "
            f"| {row['total_seconds']:.2f} | {_reached(row)} |"
        )
    return "\n".join(lines)


def _cost_method(cost: dict[str, Any], seeds: int) -> str:
    rt = cost["range_test"]
    per_iteration = 1000 * cost["training_seconds_per_iteration"]
    return (
        "Iterations are one model's updates. A grid costs all its full runs "
        "(the best is known only when every run has finished); a policy costs "
        "its tuning plus its own run up to the first epoch end at which the "
        "seed-mean accuracy reaches the target ('never': the full run, "
        "counted in full). Wall: the range test as measured "
        f"({rt['seconds']:.2f} s for {rt['iterations']} iterations of one "
        f"model, {1000 * rt['seconds'] / rt['iterations']:.3g} ms each, "
        "compilation or cache loading included), and every training iteration "
        f"at {per_iteration:.3g} ms: the wall time of the program that trained "
        f"the grid divided by its runs x {seeds} seeds x iterations (its runs "
        "are vmapped together, so this is the cost per model amortised over "
        "them)."
    )


# How a report names each data set of ``--data``: (title, examples).
_DATA_WORDS = {"digits": ("digits", "images"), "mnist1d": ("MNIST-1D", "sequences")}


def format_markdown(results: dict[str, Any]) -> str:
    """The whole ``results.md`` of a comparison.

    Args:
      results: the JSON-ready results of ``clr-jax compare``.

    Returns:
      Markdown text: the setup, the range test, the metric, both tables.
    """
    s, rt = results["setup"], results["range_test"]
    base_lr, max_lr = rt["bounds"]
    title, unit = _DATA_WORDS[s.get("data", "digits")]
    return f"""# Learning-rate policies on {title} (Smith 2017, Table 1)

{s["model"]}, {s["optimizer"]}, batch {s["batch_size"]}, {s["epochs"]} epochs \
of {s["steps_per_epoch"]} iterations, {s["seeds"]} seeds (vmapped), \
{s["n_train"]} train / {s["n_test"]} test {unit}.

Range test ({rt["num_steps"]} iterations, lr {rt["start_lr"]:g} to \
{rt["end_lr"]:g}): bounds {base_lr:.4g} to {max_lr:.4g} from the \
{rt["bounds_source"]}; {rt["bounds_reason"]} Half-cycle: \
{s["half_cycle_epochs"]:g} epochs = {s["step_size"]} iterations.

**Iterations to {pct(results["target_accuracy"])}**: the first iteration \
(end of an epoch) at which the seed-mean test accuracy reaches the fixed \
baseline's final seed-mean test accuracy; 'never' when it does not. \
Speed-up = the baseline's iterations / the policy's. Accuracies: mean ± std \
(ddof=1) over seeds, on the {s["n_test"]} test {unit} after the last epoch. \
Snapshot ensemble: averaged softmax of the snapshots taken at each cycle's \
learning-rate minimum.

{format_table(results)}

Fixed-rate grid (the baseline is its best final accuracy):

{_format_grid(results)}
{_format_cost(results)}"""


def _format_cost(results: dict[str, Any]) -> str:
    cost = results.get("cost_of_tuning")
    if cost is None:
        return ""
    return f"""
## The cost of tuning

Total cost to reach the fixed baseline's final accuracy \
({pct(cost["target_accuracy"])}), tuning included. \
{_cost_method(cost, results["setup"]["seeds"])}

{format_cost_table(cost)}
"""


def plot_comparison(
    results: dict[str, Any], lrs: dict[str, np.ndarray], path: Path, title: str
) -> None:
    """Smith's Figure 1 of a comparison, saved to ``path``."""
    import matplotlib.pyplot as plt

    curves = {
        name: (run["mean_test_accuracy"], run["std_test_accuracy"])
        for name, run in results["runs"].items()
    }
    fig = plot_policy_comparison(
        results["iterations"],
        curves,
        target=results["target_accuracy"],
        learning_rates=lrs,
        title=title,
        path=str(path),
    )
    plt.close(fig)


def _jsonable(obj: Any) -> Any:
    """``obj`` with NaN/Inf as ``None`` (standard JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented standard JSON (NaN and Inf as ``null``)."""
    text = json.dumps(_jsonable(data), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def write_range_test(result, summary: dict, out: Path, *, title: str) -> list[Path]:
    """The range test's plot, curve (JSON, CSV) and bounds (JSON) in ``out``."""
    from clr_jax.plotting import close

    paths = [out / name for name in RANGE_TEST_FILES]
    with warnings.catch_warnings():  # the summary already reported them
        warnings.simplefilter("ignore", clr_jax.RangeTestWarning)
        plot = result.plot(
            path=str(paths[0]), title=title, metric_name="mini-batch accuracy"
        )
        close(plot)
    result.save_json(paths[1])
    result.save_csv(paths[2])
    write_json(paths[3], summary)
    return paths


# ---------------------------------------------------------------------------
# Smith's Figure 1: test accuracy against iteration
# ---------------------------------------------------------------------------


def plot_policy_comparison(
    iterations: Any,
    curves: Any,
    *,
    target: float | None = None,
    learning_rates: Any = None,
    title: str | None = None,
    path: str | None = None,
):
    """Seed-mean test accuracy of each policy against the iteration, with bands.

    The plot of Smith's Figure 1: one line per policy (the mean over seeds of
    the test accuracy measured at the end of each epoch) inside a band of
    ± one standard deviation over seeds. A dotted line marks ``target``, the
    accuracy the policies race to (the fixed-rate baseline's final
    accuracy). With ``learning_rates``, a lower panel shows each policy's
    rate per update on a log scale.

    Args:
      iterations: the update count at which each accuracy was measured,
        shape ``[epochs]``.
      curves: a mapping ``name -> (mean, std)`` of arrays of shape
        ``[epochs]``, drawn in order.
      target: an accuracy to mark with a horizontal line, or ``None``.
      learning_rates: a mapping ``name -> rate per update`` (a subset of the
        names of ``curves``), or ``None`` for the accuracy panel only.
      title: title of the accuracy panel.
      path: when given, the figure is saved there.

    Returns:
      The matplotlib ``Figure``.

    Raises:
      ValueError: when a curve's length differs from ``iterations``.

    Examples:
      >>> import numpy as np
      >>> steps = np.arange(1, 6) * 10
      >>> acc = np.linspace(0.5, 0.9, 5)
      >>> fig = plot_policy_comparison(
      ...     steps, {"fixed": (acc, 0 * acc), "clr": (acc + 0.05, 0.01 + 0 * acc)},
      ...     target=0.9)
      >>> len(fig.axes)
      1
    """
    iterations = np.asarray(iterations)
    for name, (mean, std) in curves.items():
        if np.shape(mean) != iterations.shape or np.shape(std) != iterations.shape:
            raise ValueError(
                f"`curves[{name!r}]` must hold a mean and a std of shape "
                f"{iterations.shape} (one per iteration); got {np.shape(mean)} and "
                f"{np.shape(std)}."
            )
    import matplotlib.pyplot as plt

    rows = 1 if learning_rates is None else 2
    fig, axes = plt.subplots(
        rows,
        1,
        sharex=True,
        figsize=(7.5, 4.2 + 2.4 * (rows - 1)),
        squeeze=False,
        height_ratios=[2.2, 1.0][:rows],
    )
    acc_ax = axes[0, 0]
    styles = _draw_curves(acc_ax, iterations, curves)
    if target is not None:
        acc_ax.axhline(
            target, color="black", ls=":", lw=1, label=f"baseline final {target:.4f}"
        )
    _zoom_on_accuracy(acc_ax, curves, target)
    acc_ax.set_ylabel("test accuracy (mean ± std over seeds)")
    acc_ax.grid(True, alpha=0.3)
    acc_ax.legend(fontsize="small", loc="lower right", ncol=2)
    if title is not None:
        acc_ax.set_title(title)
    bottom = acc_ax
    if learning_rates is not None:
        bottom = axes[1, 0]
        for name, lrs in learning_rates.items():
            lrs = np.asarray(lrs, float)
            steps = np.arange(1, len(lrs) + 1)
            bottom.plot(steps, lrs, lw=0.9, **styles.get(name, {}))
        bottom.set_yscale("log")
        bottom.set_ylabel("learning rate")
        bottom.grid(True, which="both", alpha=0.3)
    bottom.set_xlabel("iteration")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, bbox_inches="tight", dpi=120)
    return fig


def _draw_curves(ax, iterations, curves) -> dict[str, dict]:
    """Each curve in a band of its std; ``{name: its line style}``. Past ten
    curves the colours repeat, dashed."""
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab10").colors
    styles = {}
    for i, (name, (mean, std)) in enumerate(curves.items()):
        mean, std = np.asarray(mean, float), np.asarray(std, float)
        style = {"color": palette[i % 10], "ls": "-" if i < 10 else "--"}
        ax.plot(iterations, mean, lw=1.6, label=name, **style)
        ax.fill_between(
            iterations, mean - std, mean + std, color=style["color"], alpha=0.15, lw=0
        )
        styles[name] = style
    return styles


def _zoom_on_accuracy(ax, curves, target) -> None:
    """Shows the race near the top rather than the first epochs' low accuracy."""
    finals = [float(np.asarray(mean)[-1]) for mean, _ in curves.values()]
    finals = [f for f in finals if np.isfinite(f)]
    if target is not None:
        finals.append(target)
    if not finals:
        return
    top = max(finals)
    low = min(finals)
    span = max(top - low, 0.01)
    ax.set_ylim(max(0.0, low - 4.0 * span), min(1.0, top + span))
