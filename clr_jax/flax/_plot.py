"""The figure of a :class:`History`: loss, metrics and learning rate per update.

matplotlib is imported inside the function. Many runs (seeds, a grid) are
drawn as their mean with a min-max band; per-epoch values are marked at the
update that ends their epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _band(ax, x, values, label: str, marker: str | None = None) -> None:
    values = np.asarray(values, np.float64).reshape(-1, np.shape(values)[-1])
    mean = np.nanmean(values, axis=0) if values.shape[0] > 1 else values[0]
    line = ax.plot(x, mean, label=label, marker=marker, lw=1.2 if marker else 0.8)
    if values.shape[0] > 1:
        ax.fill_between(
            x,
            np.nanmin(values, 0),
            np.nanmax(values, 0),
            color=line[0].get_color(),
            alpha=0.2,
            lw=0,
        )


def plot_history(history, *, axes: Any = None):
    """Draws ``history`` on ``axes`` (one per panel) or a new figure; returns it."""
    import matplotlib.pyplot as plt

    metric_names = sorted(set(history.metrics) | set(history.test_metrics))
    panels = 2 + bool(metric_names)
    if axes is None:
        fig, axes = plt.subplots(panels, 1, figsize=(7, 2.6 * panels), sharex=True)
    axes = np.atleast_1d(axes)
    fig = axes[0].figure
    steps = np.shape(history.loss)[-1]
    first = int(np.min(np.asarray(history.step)[..., :1])) if steps else 0
    x = first + np.arange(steps)
    epoch_end = np.asarray(history.epoch_end)
    ends = first + epoch_end.reshape(-1, epoch_end.shape[-1])[0] - 1

    ax = axes[0]
    _band(ax, x, history.loss, "loss (mini-batch)")
    _band(ax, ends, history.train_loss, "train loss (epoch)", "o")
    if history.test_loss is not None:
        _band(ax, ends, history.test_loss, "test loss", "s")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    if metric_names:
        ax = axes[1]
        for name in metric_names:
            if name in history.metrics:
                _band(ax, x, history.metrics[name], f"{name} (mini-batch)")
            if name in history.test_metrics:
                _band(ax, ends, history.test_metrics[name], f"test {name}", "s")
        ax.set_ylabel("metrics")
        ax.legend(fontsize="small")
    ax = axes[-1]
    _band(ax, x, history.learning_rate, "learning rate")
    ax.set_ylabel("learning rate")
    if np.any(np.isfinite(history.momentum)):
        twin = ax.twinx()
        _band(twin, x, history.momentum, "momentum")
        twin.set_ylabel("momentum")
    ax.set_xlabel("update")
    fig.tight_layout()
    return fig
