"""Range-test results to and from files: JSON (a dict of lists) and CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

CURVES = ("lrs", "losses", "smoothed_losses", "metrics", "smoothed_metrics")
_CSV_COLUMNS = {
    "lrs": "lr",
    "losses": "loss",
    "smoothed_losses": "smoothed_loss",
    "metrics": "metric",
    "smoothed_metrics": "smoothed_metric",
}


def to_dict(result) -> dict[str, Any]:
    """The curves as plain lists (NaN as ``None``) and ``diverged_step``."""
    out: dict[str, Any] = {
        f: None if getattr(result, f) is None else _to_list(getattr(result, f))
        for f in CURVES
    }
    step = result.diverged_step
    out["diverged_step"] = list(step) if isinstance(step, tuple) else step
    return out


def from_dict(cls, d: Mapping[str, Any]):
    """Inverse of :func:`to_dict`."""
    curves = {
        # float64 conversion turns null (JSON's NaN) back into NaN
        f: None if d.get(f) is None else np.asarray(d[f], np.float64)
        for f in CURVES
    }
    step = d.get("diverged_step")
    return cls(**curves, diverged_step=tuple(step) if isinstance(step, list) else step)


def save_json(result, path) -> None:
    """Writes :func:`to_dict` as standard JSON (NaN as ``null``)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(to_dict(result), f)


def load_json(cls, path):
    """Reads a file written by :func:`save_json`."""
    with open(path, encoding="utf-8") as f:
        return from_dict(cls, json.load(f))


def save_csv(result, path) -> None:
    """One row per step (and sweep); see :meth:`RangeTestResult.save_csv`."""
    batched = result.num_sweeps is not None
    results = (
        [result.sweep(k) for k in range(result.num_sweeps)] if batched else [result]
    )
    names = [_CSV_COLUMNS[f] for f in CURVES if getattr(result, f) is not None]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*(["sweep"] if batched else []), "step", *names, "diverged"])
        for k, r in enumerate(results):
            columns = [np.asarray(getattr(r, f)) for f in CURVES]
            columns = [c for c in columns if c.ndim]
            stop = len(r.lrs) if r.diverged_step is None else r.diverged_step
            for t in range(len(r.lrs)):
                row = [repr(float(c[t])) for c in columns]
                sweep = [k] if batched else []
                writer.writerow([*sweep, t, *row, int(t >= stop)])


def load_csv(cls, path):
    """Reads a file written by :func:`save_csv`."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    sweeps = sorted({int(r.get("sweep", 0)) for r in rows})
    parts = []
    for k in sweeps:
        mine = [r for r in rows if int(r.get("sweep", 0)) == k]
        curves = {
            f: np.array([float(r[c]) for r in mine])
            for f, c in _CSV_COLUMNS.items()
            if c in mine[0]
        }
        flags = [int(r["diverged"]) for r in mine]
        step = flags.index(1) if 1 in flags else None
        parts.append(cls(**curves, diverged_step=step))
    if "sweep" not in rows[0]:
        return parts[0]
    stacked = {
        f: None
        if getattr(parts[0], f) is None
        else np.stack([getattr(p, f) for p in parts])
        for f in CURVES
    }
    return cls(**stacked, diverged_step=tuple(p.diverged_step for p in parts))


def _to_list(x) -> list:
    arr = np.asarray(x, np.float64)
    return np.where(np.isfinite(arr), arr, None).tolist()
