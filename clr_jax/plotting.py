"""The library's figures, drawn with matplotlib: the range-test curve.

matplotlib is imported inside the functions only, so that ``import
clr_jax`` needs jax, optax and numpy alone. Install the extra with ``pip
install 'clr-jax[plot]'``. (The figures of the command line's experiments
live with them, in ``clr_jax.cli._report``.)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["plot_range_test"]

_SUGGESTION_STYLES = {
    "steepest": ("tab:green", "v"),
    "minimum": ("tab:red", "o"),
    "valley": ("tab:purple", "D"),
}


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
    suggestions: Sequence[str] = ("steepest", "minimum", "valley"),
    show_bounds: bool = True,
    band: Literal["minmax", "std"] = "minmax",
    labels: Sequence[str] | None = None,
    title: str | None = None,
    metric_name: str = "metric",
    path: str | None = None,
):
    """Loss against learning rate, with suggestions, bounds and a metric panel.

    A single sweep draws the raw loss (faint) and the smoothed loss, marks each
    suggestion of :meth:`~clr_jax.RangeTestResult.suggest` and shades the span
    between Smith's :meth:`~clr_jax.RangeTestResult.bounds`. When a metric was
    recorded, a second panel below shows it against the rate (Smith 2017,
    Figure 3). A result of many sweeps draws the mean smoothed curve with a
    band (``'minmax'``: min to max, ``'std'``: mean ± one standard
    deviation), or one line per sweep when ``labels`` are given (e.g. the
    weight decays of each sweep, as in Smith 2018). The rate axis is
    logarithmic when every rate is positive.

    Args:
      result: a :class:`~clr_jax.RangeTestResult`.
      axes: a matplotlib ``Axes`` (loss only) or a pair ``(loss_ax,
        metric_ax)``; default: a new figure with one or two panels.
      show_raw: draw the raw losses behind the smoothed ones (single sweep).
      suggestions: which suggestions to mark (single sweep or mean curve).
      show_bounds: shade ``[base_lr, max_lr]``.
      band: the band of a many-sweep result, ``'minmax'`` or ``'std'``.
      labels: one label per sweep, to draw each sweep as its own line.
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
    plt = _pyplot()
    has_metric = result.metrics is not None
    loss_ax, metric_ax = _make_axes(plt, axes, has_metric)
    many = result.num_sweeps is not None
    if many and labels is not None:
        if len(labels) != result.num_sweeps:
            raise ValueError(
                f"`labels` must have one entry per sweep ({result.num_sweeps}); got "
                f"{len(labels)}."
            )
        _draw_lines(loss_ax, metric_ax, result, labels)
        marked = None
    elif many:
        _draw_band(loss_ax, metric_ax, result, band)
        marked = result.mean()
    else:
        _draw_single(loss_ax, metric_ax, result, show_raw)
        marked = result
    if marked is not None:
        with warnings.catch_warnings():  # a flat curve simply has no marks
            warnings.simplefilter("ignore")
            _mark_suggestions(loss_ax, marked, suggestions)
            if show_bounds:
                _shade_bounds([loss_ax, metric_ax], marked)
    _finish_axes(loss_ax, metric_ax, result, title, metric_name)
    fig = loss_ax.figure
    if path is not None:
        fig.savefig(path, bbox_inches="tight")
    return fig


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


def _draw_single(loss_ax, metric_ax, result, show_raw: bool) -> None:
    lrs = np.asarray(result.lrs)
    if show_raw:
        loss_ax.plot(
            lrs, result.losses, color="tab:blue", alpha=0.3, lw=0.8, label="loss"
        )
    loss_ax.plot(
        lrs, result.smoothed_losses, color="tab:blue", lw=1.8, label="smoothed"
    )
    if result.diverged_step is not None:
        loss_ax.axvline(
            lrs[result.diverged_step], color="black", ls=":", lw=1, label="diverged"
        )
    if metric_ax is not None:
        metric_ax.plot(lrs, result.metrics, color="tab:orange", alpha=0.3, lw=0.8)
        metric_ax.plot(lrs, result.smoothed_metrics, color="tab:orange", lw=1.8)


def _draw_band(loss_ax, metric_ax, result, band: str) -> None:
    lrs = np.asarray(result.lrs)[0]
    for ax, curves, color in (
        (loss_ax, result.smoothed_losses, "tab:blue"),
        (metric_ax, result.smoothed_metrics, "tab:orange"),
    ):
        if ax is None:
            continue
        curves = np.asarray(curves, np.float64)
        with warnings.catch_warnings():  # all-NaN columns after divergence
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.mean(curves, axis=0)  # ends at the first divergence
            if band == "std":
                spread = np.nanstd(curves, axis=0)
                low, high = mean - spread, mean + spread
            else:
                low, high = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
        name = "min-max" if band == "minmax" else "±1 std"
        ax.fill_between(lrs, low, high, color=color, alpha=0.25, lw=0, label=name)
        ax.plot(lrs, mean, color=color, lw=1.8, label=f"mean of {len(curves)}")


def _draw_lines(loss_ax, metric_ax, result, labels) -> None:
    lrs = np.asarray(result.lrs)
    for k, label in enumerate(labels):
        (line,) = loss_ax.plot(lrs[k], result.smoothed_losses[k], lw=1.5, label=label)
        if metric_ax is not None:
            metric_ax.plot(
                lrs[k], result.smoothed_metrics[k], lw=1.5, color=line.get_color()
            )


def _mark_suggestions(ax, result, methods) -> None:
    lrs = np.asarray(result.lrs)
    smoothed = np.asarray(result.smoothed_losses)
    for method in methods:
        lr = result.suggest(method)
        if not np.isfinite(lr):
            continue
        color, marker = _SUGGESTION_STYLES[method]
        at = int(np.argmin(np.abs(lrs - lr)))
        ax.plot(
            lr,
            smoothed[at],
            marker=marker,
            color=color,
            ls="none",
            ms=7,
            label=f"{method}: {lr:.2g}",
        )


def _shade_bounds(axes, result) -> None:
    base_lr, max_lr = result.bounds()
    if not (np.isfinite(base_lr) and np.isfinite(max_lr)):
        return
    for i, ax in enumerate(a for a in axes if a is not None):
        label = f"bounds: {base_lr:.2g} to {max_lr:.2g}" if i == 0 else None
        ax.axvspan(base_lr, max_lr, color="gray", alpha=0.15, lw=0, label=label)


def _finish_axes(loss_ax, metric_ax, result, title, metric_name) -> None:
    lrs = np.asarray(result.lrs)
    log_x = bool(np.all(lrs > 0))
    for ax in (loss_ax, metric_ax):
        if ax is None:
            continue
        if log_x:
            ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
    loss_ax.set_ylabel("loss")
    _clip_loss_axis(loss_ax, result)
    loss_ax.legend(fontsize="small", loc="best")
    if title is not None:
        loss_ax.set_title(title)
    bottom = metric_ax if metric_ax is not None else loss_ax
    if metric_ax is not None:
        metric_ax.set_ylabel(metric_name)
    bottom.set_xlabel("learning rate")


def _clip_loss_axis(ax, result) -> None:
    """Keeps the blow-up at divergence from flattening the interesting part."""
    smoothed = np.asarray(result.smoothed_losses, np.float64)
    finite = smoothed[np.isfinite(smoothed)]
    if finite.size < 2:
        return
    n = smoothed.shape[-1]
    head = smoothed[..., : max(1, n // 10) + 1]
    top = (
        np.nanmax(head[np.isfinite(head)]) if np.isfinite(head).any() else finite.max()
    )
    low = finite.min()
    span = max(top - low, 1e-12)
    ax.set_ylim(low - 0.1 * span, top + 0.3 * span)
