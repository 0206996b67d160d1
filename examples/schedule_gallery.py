"""A gallery of every clr_jax schedule, one small panel per call.

Draws, on a single figure with the update count on the x axis:

* Smith's cyclical policies: ``triangular``, ``triangular2``, ``exp_range``,
  the three windows (triangular, Welch, Hann) side by side, an asymmetric
  cycle (``step_size_down``), a composed bound (a ``triangular`` whose
  ``max_lr`` is ``optax.cosine_decay_schedule``), a custom ``scale_fn``
  through ``cyclical``, and ``cyclical_momentum`` against the learning rate
  it pairs with;
* SGDR: ``cosine_restarts`` with ``cycle_mult`` 1, 2 and 1.5 (with decay
  above a ``min_lr`` floor);
* 1cycle: ``one_cycle`` (cos, linear, three-phase), each with its
  ``one_cycle_momentum`` on a second y axis;
* the range-test ramp ``lr_sweep``, exponential (log scale) and linear.

Each schedule is evaluated once, vectorised, on a ``jnp.arange`` of counts
(``count`` is the number of updates already applied, as Optax passes it).

Usage::

    python examples/schedule_gallery.py                  # docs/schedule_gallery.png
    python examples/schedule_gallery.py --out gallery.png
    python examples/schedule_gallery.py --smoke --out /tmp/gallery.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import clr_jax

DEFAULT_OUT = Path("docs/schedule_gallery.png")
FIGSIZE = (14.5, 10.0)  # inches; ~1600 x 1100 px at the default dpi
DPI = 110
SMOKE_DPI = 40

LR_COLOR = "tab:blue"
MOMENTUM_COLOR = "tab:red"
LEGEND_HEADROOM = 0.22  # fraction of the data range added above for the legend


class Curve(NamedTuple):
    """One line of a panel: a schedule, its legend label (``None``: none), and
    whether it is drawn dashed (a bound rather than a rate)."""

    schedule: Callable
    label: str | None = None
    dashed: bool = False


class Panel(NamedTuple):
    """One subplot: its title (the call), curves and optional momentum."""

    title: str
    num_counts: int
    curves: tuple[Curve, ...]
    momentum: Curve | None = None
    log_y: bool = False


def _cyclical_panels() -> list[Panel]:
    lo, hi = 1e-3, 6e-3
    windows = ("triangular", "welch", "hann")
    return [
        Panel(
            "triangular(1e-3, 6e-3, 200)",
            1200,
            (Curve(clr_jax.triangular(lo, hi, 200)),),
        ),
        Panel(
            "triangular2(1e-3, 6e-3, 200)",
            1200,
            (Curve(clr_jax.triangular2(lo, hi, 200)),),
        ),
        Panel(
            "exp_range(1e-3, 6e-3, 200, gamma)",
            1200,
            tuple(
                Curve(clr_jax.exp_range(lo, hi, 200, gamma), rf"$\gamma$={gamma}")
                for gamma in (0.9995, 0.999, 0.998)
            ),
        ),
        Panel(
            "triangular(1e-3, 6e-3, 200, window=...)",
            800,
            tuple(
                Curve(clr_jax.triangular(lo, hi, 200, window=w), repr(w))
                for w in windows
            ),
        ),
        Panel(
            "triangular(1e-3, 6e-3, 50,\nstep_size_down=350)",
            1200,
            (Curve(clr_jax.triangular(lo, hi, 50, step_size_down=350)),),
        ),
        _composed_panel(lo, hi),
        Panel(
            "cyclical(1e-3, 6e-3, 200,\nscale_fn=lambda c: 1 / c)",
            1200,
            (Curve(clr_jax.cyclical(lo, hi, 200, scale_fn=lambda c: 1.0 / c)),),
        ),
        Panel(
            "cyclical_momentum(0.85, 0.95, 200)\nvs triangular(1e-3, 6e-3, 200)",
            800,
            (Curve(clr_jax.triangular(lo, hi, 200), "lr"),),
            momentum=Curve(clr_jax.cyclical_momentum(0.85, 0.95, 200), "momentum"),
        ),
    ]


def _composed_panel(lo: float, hi: float) -> Panel:
    """A bound that is a schedule: the cycle's peak follows a cosine decay."""
    peak = optax.cosine_decay_schedule(hi, 1200, alpha=0.25)
    return Panel(
        "triangular(1e-3, optax.cosine_decay_\nschedule(6e-3, 1200, alpha=0.25), 100)",
        1200,
        (
            Curve(clr_jax.triangular(lo, peak, 100), "lr"),
            Curve(peak, "max_lr(t)", dashed=True),
        ),
    )


def _restart_panels() -> list[Panel]:
    return [
        Panel(
            "cosine_restarts(1.0, 200)",
            1200,
            (Curve(clr_jax.cosine_restarts(1.0, 200)),),
        ),
        Panel(
            "cosine_restarts(1.0, 100, cycle_mult=2)",
            1500,
            (Curve(clr_jax.cosine_restarts(1.0, 100, cycle_mult=2)),),
        ),
        Panel(
            "cosine_restarts(1.0, 100, cycle_mult=1.5,\ndecay=0.7, min_lr=0.2)",
            1300,
            (
                Curve(
                    clr_jax.cosine_restarts(
                        1.0, 100, cycle_mult=1.5, decay=0.7, min_lr=0.2
                    )
                ),
            ),
        ),
    ]


def _one_cycle_panel(title: str, **options) -> Panel:
    return Panel(
        title,
        1000,
        (Curve(clr_jax.one_cycle(0.1, 1000, **options), "lr"),),
        momentum=Curve(clr_jax.one_cycle_momentum(1000, **options), "momentum"),
    )


def _one_cycle_and_sweep_panels() -> list[Panel]:
    return [
        _one_cycle_panel("one_cycle(0.1, 1000)\n+ one_cycle_momentum(1000)"),
        _one_cycle_panel(
            "one_cycle(0.1, 1000,\nanneal_strategy='linear') + momentum",
            anneal_strategy="linear",
        ),
        _one_cycle_panel(
            "one_cycle(0.1, 1000, three_phase=True)\n+ momentum", three_phase=True
        ),
        Panel(
            "lr_sweep(1e-5, 10.0, 500)  [log y]",
            500,
            (Curve(clr_jax.lr_sweep(1e-5, 10.0, 500)),),
            log_y=True,
        ),
        Panel(
            "lr_sweep(0.0, 0.1, 500, mode='linear')",
            500,
            (Curve(clr_jax.lr_sweep(0.0, 0.1, 500, mode="linear")),),
        ),
    ]


def gallery_panels() -> list[Panel]:
    """Every panel of the gallery, in reading order (4 x 4)."""
    return [
        *_cyclical_panels(),
        *_restart_panels(),
        *_one_cycle_and_sweep_panels(),
    ]


class PanelValues(NamedTuple):
    """A panel's counts and the value of each of its schedules at them."""

    counts: np.ndarray
    curves: list[np.ndarray]
    momentum: np.ndarray | None


def evaluate_panels(panels: list[Panel]) -> list[PanelValues]:
    """Every schedule of every panel, each evaluated once on a ``jnp.arange``.

    The evaluations are vectorised (no loop over counts) and traced into one
    jitted program: one compilation is quicker than one per schedule.
    """

    def evaluate_all():
        results = []
        for panel in panels:
            counts = jnp.arange(panel.num_counts)
            curves = [curve.schedule(counts) for curve in panel.curves]
            momentum = None
            if panel.momentum is not None:
                momentum = panel.momentum.schedule(counts)
            results.append(PanelValues(counts, curves, momentum))
        return results

    return jax.tree.map(np.asarray, jax.jit(evaluate_all)())


def _plain_number(value: float, _position=None) -> str:
    return f"{value:g}"


def _draw_panel(ax, panel: Panel, values: PanelValues, ticker) -> None:
    color = LR_COLOR if len(panel.curves) == 1 else None
    for curve, curve_values in zip(panel.curves, values.curves, strict=True):
        style = {"ls": "--", "lw": 1.0} if curve.dashed else {"lw": 1.4}
        ax.plot(values.counts, curve_values, color=color, label=curve.label, **style)
    ax.set_title(panel.title, fontsize=9.5, family="monospace")
    ax.set_xlim(0, panel.num_counts - 1)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    if panel.log_y:
        ax.set_yscale("log")
    else:
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain_number))
    handles, labels = ax.get_legend_handles_labels()
    if panel.momentum is not None:
        twin = _draw_momentum(ax, values, ticker)
        handles = [*handles, *twin.get_lines()]
        labels = [*labels, panel.momentum.label]
    if len(handles) > 1:
        _legend_on_top(ax, handles, labels)


def _legend_on_top(ax, handles, labels) -> None:
    """One-row legend in headroom added above the curves, so it hides none."""
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top + LEGEND_HEADROOM * (top - bottom))
    ax.legend(
        handles,
        labels,
        loc="upper center",
        ncol=len(handles),
        fontsize=7.5,
        handlelength=1.5,
        columnspacing=1.0,
        frameon=False,
    )


def _draw_momentum(ax, values: PanelValues, ticker):
    """Momentum on a second y axis, in its own colour, scaled below the legend."""
    twin = ax.twinx()
    twin.plot(values.counts, values.momentum, color=MOMENTUM_COLOR, lw=1.2, ls="--")
    twin.set_ylim(0.80, 0.80 + (1 + LEGEND_HEADROOM) * 0.16)
    twin.set_yticks([0.85, 0.90, 0.95])
    twin.tick_params(labelsize=8, colors=MOMENTUM_COLOR)
    twin.yaxis.set_major_formatter(ticker.FuncFormatter(_plain_number))
    return twin


def draw_gallery(panels: list[Panel], out: Path, dpi: int) -> Path:
    """Draws ``panels`` on a 4-column grid and writes the PNG to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    columns = 4
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=FIGSIZE, layout="constrained")
    panel_values = evaluate_panels(panels)
    for ax, panel, values in zip(axes.flat, panels, panel_values, strict=False):
        _draw_panel(ax, panel, values, ticker)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("update count", fontsize=8.5)
    fig.suptitle(
        "clr_jax schedules: the value used by each update (count 0 = the first)",
        fontsize=12,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, pil_kwargs={"optimize": True})
    plt.close(fig)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG path")
    parser.add_argument(
        "--smoke", action="store_true", help="quick low-resolution run for tests"
    )
    return parser.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    out = draw_gallery(gallery_panels(), args.out, SMOKE_DPI if args.smoke else DPI)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
