"""The library's figures, drawn with matplotlib: the range-test curve.

matplotlib is imported inside the functions only, so that ``import
clr_jax`` needs jax, optax and numpy alone. Install the extra with ``pip
install 'clr-jax[plot]'``. (The figures of the command line's experiments
live with them, in ``clr_jax.cli._report``.)

What the range-test figure shows is what the readings read
(:meth:`~clr_jax.RangeTestResult.read`): the zero-phase smoothed loss, the
blow-up where reading stops, every suggestion as a marker on that curve, the
bounds, and the notes under the axes. The axes' limits always include every
marker and the level the loss settles at after a blow-up.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["plot_range_test"]

_SUGGESTION_STYLES = {
    "steepest": ("tab:green", "v"),
    "minimum": ("tab:red", "o"),
    "valley": ("tab:purple", "D"),
    "half_edge": ("tab:blue", "^"),
}
_MAX_NOTES = 6  # notes written under the axes; the rest are counted


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib: pip install 'clr-jax[plot]'"
        ) from err
    return plt


def close(fig) -> None:
    """Frees a figure returned by a plotting function (after saving it)."""
    _pyplot().close(fig)


def plot_range_test(
    result,
    *,
    axes: Any = None,
    show_raw: bool = True,
    show_ema: bool = False,
    suggestions: Sequence[str] = ("half_edge", "steepest", "minimum", "valley"),
    show_bounds: bool = True,
    show_notes: bool = True,
    band: Literal["minmax", "std"] = "minmax",
    lines: bool | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    metric_name: str = "metric",
    path: str | None = None,
):
    """Loss against learning rate, with suggestions, blow-up, bounds and notes.

    A single sweep draws the raw loss (faint) and the zero-phase smoothed loss
    the suggestions are read from, the held-out loss and metric when
    ``val_data`` was given (dashed, at each evaluation), marks each suggestion of
    :meth:`~clr_jax.RangeTestResult.suggest` on that curve, marks the blow-up
    (where reading stops), shades Smith's
    :meth:`~clr_jax.RangeTestResult.bounds` and writes the reading's notes
    under the axes. When a metric was recorded, a second panel below shows it
    against the rate (Smith 2017, Figure 3). A sweep over hyperparameter
    values draws one line per value, labelled with it (as Smith 2018 draws
    weight decays), each with its own markers; a sweep over seeds only draws
    the mean curve with a band (``'minmax'``: min to max, ``'std'``: mean ± one
    standard deviation) and the mean curve's markers. The rate axis is
    logarithmic when every rate is positive.

    Args:
      result: a :class:`~clr_jax.RangeTestResult` (host or device form).
      axes: a matplotlib ``Axes`` (loss only) or a pair ``(loss_ax,
        metric_ax)``; default: a new figure with one or two panels.
      show_raw: draw the raw losses behind the smoothed ones (single sweep).
      show_ema: also draw the on-device EMA (``smoothed_losses``), which the
        divergence check uses.
      suggestions: which suggestions to mark.
      show_bounds: shade ``[base_lr, max_lr]`` (single sweep or mean curve).
      show_notes: write the reading's notes under the axes.
      band: the band of a many-sweep result, ``'minmax'`` or ``'std'``.
      lines: draw each sweep as its own line; default: when the sweeps differ
        in hyperparameters (or ``labels`` are given), else a band.
      labels: one label per sweep; default: the swept hyperparameter values
        (``'weight_decay=0.1'``), else ``'sweep k'``.
      title: title of the loss panel.
      metric_name: label of the metric panel's axis (e.g. ``'accuracy'``).
      path: when given, the figure is saved there (e.g. ``'lr_find.png'``).

    Returns:
      The matplotlib ``Figure``.

    Raises:
      ValueError: for an unknown ``band`` or suggestion, or ``labels`` whose
        length differs from the number of sweeps.

    Examples:
      >>> import numpy as np, clr_jax
      >>> lrs = np.geomspace(1e-4, 1.0, 50)
      >>> loss = 1.0 / (1.0 + 1e3 * lrs) + lrs**2
      >>> res = clr_jax.RangeTestResult(lrs, loss, loss)
      >>> fig = plot_range_test(res, suggestions=(), show_bounds=False)
      >>> len(fig.axes)
      1
    """
    if band not in ("minmax", "std"):
        raise ValueError(f"`band` must be one of ('minmax', 'std'); got {band!r}.")
    unknown = set(suggestions) - set(_SUGGESTION_STYLES)
    if unknown:
        raise ValueError(
            f"`suggestions` must name methods in {tuple(_SUGGESTION_STYLES)}; got "
            f"{sorted(unknown)}."
        )
    result = result.to_host()
    many = result.num_sweeps is not None
    if many and labels is not None and len(labels) != result.num_sweeps:
        raise ValueError(
            f"`labels` must have one entry per sweep ({result.num_sweeps}); got "
            f"{len(labels)}."
        )
    plt = _pyplot()
    loss_ax, metric_ax = _make_axes(plt, axes, result.metrics is not None)
    with warnings.catch_warnings():  # the notes are drawn, not warned
        warnings.simplefilter("ignore")
        if many and (lines or (lines is None and (labels or _swept(result)))):
            canvas = _draw_lines(loss_ax, metric_ax, result, labels, suggestions)
        else:
            canvas = _draw_one(
                loss_ax, metric_ax, result, band, show_raw, suggestions, show_bounds
            )
    if show_ema:
        _draw_ema(loss_ax, result)
    _finish_axes(loss_ax, metric_ax, result, canvas, title, metric_name)
    if show_notes:
        _write_notes(metric_ax or loss_ax, canvas.notes)
    fig = loss_ax.figure
    if path is not None:
        fig.savefig(path, bbox_inches="tight")
    return fig


class _Canvas:
    """What must be visible: the points drawn that matter, and the notes."""

    def __init__(self) -> None:
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.notes: list[str] = []

    def keep(self, x, y) -> None:
        x, y = np.ravel(np.asarray(x, np.float64)), np.ravel(np.asarray(y, np.float64))
        ok = np.isfinite(x) & np.isfinite(y)
        self.xs.extend(x[ok].tolist())
        self.ys.extend(y[ok].tolist())


def _swept(result) -> bool:
    return bool(result.config.hyperparams)


def _default_labels(result) -> list[str]:
    swept = result.config.hyperparams
    if not swept:
        return [f"sweep {k}" for k in range(result.num_sweeps)]
    return [
        ", ".join(f"{name}={values[k]:g}" for name, values in swept)
        for k in range(result.num_sweeps)
    ]


def _make_axes(plt, axes, has_metric: bool):
    if axes is None:
        rows = 2 if has_metric else 1
        _, made = plt.subplots(
            rows, 1, sharex=True, figsize=(6.4, 3.2 * rows + 0.8), squeeze=False
        )
        made = made[:, 0]
        return made[0], (made[1] if has_metric else None)
    if isinstance(axes, (tuple, list)):
        return axes[0], (axes[1] if has_metric and len(axes) > 1 else None)
    return axes, None


def _draw_one(loss_ax, metric_ax, result, band, show_raw, methods, show_bounds):
    """A single sweep, or the band and mean of a many-sweep result."""
    canvas = _Canvas()
    many = result.num_sweeps is not None
    marked = result.mean() if many else result
    reading = marked.read()
    lrs = np.asarray(marked.lrs, np.float64)
    if many:
        _draw_band(loss_ax, metric_ax, result, band)
    elif show_raw:
        loss_ax.plot(lrs, result.losses, color="tab:blue", alpha=0.3, lw=0.8)
    label = "mean, smoothed" if many else "smoothed (zero-phase)"
    loss_ax.plot(lrs, reading.curve, color="tab:blue", lw=1.8, label=label)
    canvas.keep(lrs, reading.curve)
    _keep_settle(canvas, marked, reading)
    _mark_blow_up(loss_ax, marked, reading)
    _mark_suggestions(loss_ax, canvas, lrs, reading, methods, color=None)
    if show_bounds:
        _shade_bounds([loss_ax, metric_ax], reading.bounds)
    if metric_ax is not None and not many:
        raw = np.asarray(result.metrics, np.float64)
        metric_ax.plot(lrs, raw, color="tab:orange", alpha=0.3, lw=0.8)
        metric_ax.plot(lrs, _smoothed_metric(raw, reading), color="tab:orange", lw=1.8)
    if not many:
        _draw_validation(loss_ax, metric_ax, canvas, result, reading, None)
    canvas.notes = list(reading.notes)
    return canvas


def _draw_validation(loss_ax, metric_ax, canvas, result, reading, color) -> None:
    """The held-out loss (and metric) at each of ``val_steps``, when recorded."""
    steps = getattr(result, "val_steps", None)
    if steps is None or getattr(result, "val_losses", None) is None:
        return
    steps = np.asarray(steps, np.int64)
    lrs = np.asarray(result.lrs, np.float64)[steps]
    style = dict(marker=".", ms=5, lw=1.0, ls="--", color=color or "tab:red")
    label = "validation loss" if color is None else None
    losses = np.asarray(result.val_losses, np.float64)
    loss_ax.plot(lrs, losses, label=label, **style)
    read = steps < reading.stop  # a blown-up validation loss stays off the limits
    canvas.keep(lrs[read], losses[read])
    metrics = getattr(result, "val_metrics", None)
    if metric_ax is not None and metrics is not None:
        metric_ax.plot(lrs, np.asarray(metrics, np.float64), **style)


def _smoothed_metric(raw: np.ndarray, reading) -> np.ndarray:
    from clr_jax.range_test._smoothing import smooth, smoothing_width

    out = np.full(len(raw), np.nan)
    head = raw[: reading.stop]
    if np.all(np.isfinite(head)):
        out[: reading.stop] = smooth(head, smoothing_width(len(raw)))
    return out


def _draw_band(loss_ax, metric_ax, result, band: str) -> None:
    """The band of the sweeps' zero-phase curves (loss and metric)."""
    lrs = np.asarray(result.lrs, np.float64)[0]
    readings = result.read()
    losses = np.stack([r.curve for r in readings])
    metrics = None
    if result.metrics is not None:
        raw = np.asarray(result.metrics, np.float64)
        metrics = np.stack(
            [_smoothed_metric(m, r) for m, r in zip(raw, readings, strict=True)]
        )
    for ax, curves, color in (
        (loss_ax, losses, "tab:blue"),
        (metric_ax, metrics, "tab:orange"),
    ):
        if ax is None or curves is None:
            continue
        with warnings.catch_warnings():  # all-NaN columns after divergence
            warnings.simplefilter("ignore", RuntimeWarning)
            if band == "std":
                mean, spread = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
                low, high = mean - spread, mean + spread
            else:
                low, high = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
        name = "min-max" if band == "minmax" else "±1 std"
        ax.fill_between(
            lrs, low, high, color=color, alpha=0.25, lw=0, label=f"{name} of sweeps"
        )
        if ax is metric_ax:
            ax.plot(lrs, np.mean(curves, axis=0), color=color, lw=1.8)


def _draw_lines(loss_ax, metric_ax, result, labels, methods) -> _Canvas:
    """One line per sweep, each with its own markers."""
    canvas = _Canvas()
    labels = list(labels) if labels is not None else _default_labels(result)
    readings = result.read()
    for k, (label, reading) in enumerate(zip(labels, readings, strict=True)):
        one = result.sweep(k)
        lrs = np.asarray(one.lrs, np.float64)
        (line,) = loss_ax.plot(lrs, reading.curve, lw=1.5, label=label)
        color = line.get_color()
        canvas.keep(lrs, reading.curve)
        _keep_settle(canvas, one, reading)
        _mark_suggestions(loss_ax, canvas, lrs, reading, methods, color=color)
        if reading.blow_up is not None:
            loss_ax.axvline(lrs[reading.blow_up], color=color, ls=":", lw=1)
        if metric_ax is not None:
            raw = np.asarray(one.metrics, np.float64)
            metric_ax.plot(lrs, _smoothed_metric(raw, reading), lw=1.5, color=color)
        _draw_validation(loss_ax, metric_ax, canvas, one, reading, color)
        canvas.notes.extend(reading.notes)
    canvas.notes = list(dict.fromkeys(canvas.notes))
    _legend_for_methods(loss_ax, methods)
    return canvas


def _legend_for_methods(ax, methods) -> None:
    """Legend entries for the marker shapes (the colours are the lines')."""
    for method in methods:
        _, marker = _SUGGESTION_STYLES[method]
        ax.plot([], [], marker=marker, color="gray", ls="none", label=method)


def _keep_settle(canvas: _Canvas, result, reading) -> None:
    """Keeps the level the loss settles at after the blow-up on the canvas."""
    if reading.blow_up is None or not np.isfinite(reading.curve).any():
        return
    from clr_jax.range_test._smoothing import running_median, smoothing_width

    raw = np.asarray(result.losses, np.float64)
    after = raw[reading.blow_up :]
    after = after[np.isfinite(after)]
    if not len(after):
        return
    level = float(np.median(running_median(after, smoothing_width(len(raw)))))
    best, top = float(np.nanmin(reading.curve)), float(np.nanmax(reading.curve))
    # A blow-up to 1e6 must not flatten the curve: at most 3 of its heights up,
    # or 50% of its level for a flat curve.
    cap = best + max(3.0 * (top - best), 0.5 * abs(best))
    canvas.keep(np.asarray(result.lrs)[reading.blow_up], min(level, cap))


def _mark_blow_up(ax, result, reading) -> None:
    if reading.blow_up is None:
        return
    lr = float(np.asarray(result.lrs)[reading.blow_up])
    what = "diverged" if reading.blow_up == result.diverged_step else "blow-up"
    ax.axvline(lr, color="black", ls=":", lw=1, label=f"{what}: lr {lr:.2g}")


def _marker_y(lrs: np.ndarray, curve: np.ndarray, lr: float) -> float:
    """The curve at ``lr`` (log-interpolated), or its nearest end."""
    ok = np.isfinite(curve) & (lrs > 0)
    if not ok.any():
        return math.nan
    return float(np.interp(np.log(lr), np.log(lrs[ok]), curve[ok]))


def _mark_suggestions(ax, canvas, lrs, reading, methods, *, color) -> None:
    for method in methods:
        lr = reading.suggestions[method]
        if not math.isfinite(lr):
            continue
        own_color, marker = _SUGGESTION_STYLES[method]
        y = _marker_y(lrs, reading.curve, lr)
        label = None if color is not None else f"{method}: {lr:.2g}"
        ax.plot(
            lr,
            y,
            marker=marker,
            color=color or own_color,
            markeredgecolor="black" if color else None,
            ls="none",
            ms=7,
            zorder=5,
            label=label,
        )
        canvas.keep(lr, y)


def _shade_bounds(axes, report) -> None:
    base_lr, max_lr = report.base_lr, report.max_lr
    if not (math.isfinite(base_lr) and math.isfinite(max_lr)):
        return
    for i, ax in enumerate(a for a in axes if a is not None):
        label = f"bounds: {base_lr:.2g} to {max_lr:.2g}" if i == 0 else None
        ax.axvspan(base_lr, max_lr, color="gray", alpha=0.15, lw=0, label=label)


def _draw_ema(ax, result) -> None:
    lrs = np.asarray(result.lrs, np.float64)
    ema = np.asarray(result.smoothed_losses, np.float64)
    if ema.ndim == 2:
        lrs, ema = lrs[0], np.mean(ema, axis=0)
    ax.plot(lrs, ema, color="gray", lw=0.9, ls="--", label="EMA (divergence check)")


def _finish_axes(loss_ax, metric_ax, result, canvas, title, metric_name) -> None:
    lrs = np.asarray(result.lrs, np.float64)
    log_x = bool(np.all(lrs > 0))
    for ax in (loss_ax, metric_ax):
        if ax is None:
            continue
        if log_x:
            ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
    _fit_limits(loss_ax, canvas, lrs, log_x)
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize="small", loc="best")
    if title is not None:
        loss_ax.set_title(title)
    bottom = metric_ax if metric_ax is not None else loss_ax
    if metric_ax is not None:
        metric_ax.set_ylabel(metric_name)
    bottom.set_xlabel("learning rate")


def _fit_limits(ax, canvas: _Canvas, lrs: np.ndarray, log_x: bool) -> None:
    """Limits that hold every kept point, markers included, and no more."""
    if not canvas.ys:
        return
    low, high = min(canvas.ys), max(canvas.ys)
    pad = max(high - low, 1e-12 * max(abs(high), 1.0))
    ax.set_ylim(low - 0.08 * pad, high + 0.12 * pad)
    xs = np.r_[lrs[np.isfinite(lrs)].ravel(), canvas.xs]
    lo, hi = float(xs.min()), float(xs.max())
    if log_x:
        ax.set_xlim(lo / 1.15, hi * 1.15)
    else:
        ax.set_xlim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))


def _write_notes(ax, notes: Sequence[str]) -> None:
    """The reading's notes, wrapped, under the bottom axes."""
    if not notes:
        return
    shown = [f"note: {n}" for n in notes[:_MAX_NOTES]]
    if len(notes) > _MAX_NOTES:
        shown.append(f"(and {len(notes) - _MAX_NOTES} more notes: result.read())")
    text = "\n".join(textwrap.fill(n, 100, subsequent_indent="    ") for n in shown)
    ax.annotate(
        text,
        xy=(0.0, 0.0),
        xycoords="axes fraction",
        xytext=(0, -36),
        textcoords="offset points",
        va="top",
        ha="left",
        fontsize="x-small",
        color="darkred",
    )
