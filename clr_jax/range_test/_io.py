"""Range-test results to and from files: JSON (the whole record) and CSV.

The JSON file is the record of a sweep: the curves with their dtypes,
``diverged_step``, the :class:`RangeTestConfig` (rates, steps, mode,
``beta``, threshold, batch size, optimizer, swept hyperparameters, number of
sweeps, library versions) and, for a reader of the file, what
:meth:`RangeTestResult.read` finds in it (suggestions, bounds, blow-up,
notes). Loading gives back an equal result: the same values and dtypes, NaN
and ±inf included (standard JSON has neither, so NaN is ``null`` and ±inf
the strings ``"inf"`` and ``"-inf"``), and the same configuration. The
reading is recomputed, not read back; ``final_state`` is not saved.

The CSV file is a table of the per-step curves, one row per step (and
sweep), with exact values (``repr`` of each float, ±inf and NaN kept); the
held-out evaluations (``val_*``, one every ``val_every`` steps) are in the
JSON file only.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

CURVES = ("lrs", "losses", "smoothed_losses", "metrics", "smoothed_metrics")
# The held-out evaluations every ``val_every`` steps, when the result has them.
VALIDATION = ("val_steps", "val_losses", "val_metrics")
FORMAT = "clr_jax.RangeTestResult"
FORMAT_VERSION = 2
_CSV_COLUMNS = {
    "lrs": "lr",
    "losses": "loss",
    "smoothed_losses": "smoothed_loss",
    "metrics": "metric",
    "smoothed_metrics": "smoothed_metric",
}
_SPECIAL = {"inf": math.inf, "-inf": -math.inf}


def _encode(x) -> list:
    """Floats as plain JSON: NaN as ``None``, ±inf as ``"inf"``/``"-inf"``."""
    arr = np.asarray(x)
    out = arr.astype(np.float64).astype(object)
    out[np.isnan(arr)] = None
    out[np.isposinf(arr)] = "inf"
    out[np.isneginf(arr)] = "-inf"
    return out.tolist()


def _decode(values, dtype) -> np.ndarray:
    def one(x):
        if isinstance(x, list):
            return [one(y) for y in x]
        if x is None:
            return math.nan
        return _SPECIAL[x] if isinstance(x, str) else x

    return np.asarray(one(values), np.float64).astype(dtype)


def _config_to_dict(config) -> dict[str, Any]:
    out = config._asdict()
    out["hyperparams"] = {name: list(vals) for name, vals in config.hyperparams}
    out["versions"] = dict(config.versions)
    return out


def _config_from_dict(config_type, d: Mapping[str, Any] | None):
    if not d:
        return config_type()
    known = {k: d[k] for k in config_type._fields if k in d}
    known["hyperparams"] = tuple(
        (name, tuple(vals)) for name, vals in (d.get("hyperparams") or {}).items()
    )
    known["versions"] = tuple((d.get("versions") or {}).items())
    return config_type(**known)


def _reading_to_dict(result) -> dict[str, Any] | list[dict[str, Any]]:
    """What :meth:`read` finds, for a reader of the file (never read back)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reading = result.read()
    if result.num_sweeps is not None:
        return [_one_reading(r, result.sweep(k)) for k, r in enumerate(reading)]
    return _one_reading(reading, result)


def _one_reading(reading, result) -> dict[str, Any]:
    def plain(x):
        return float(x) if math.isfinite(x) else None

    step = reading.blow_up
    return {
        "suggestions": {k: plain(x) for k, x in reading.suggestions.items()},
        "bounds": [plain(reading.bounds.base_lr), plain(reading.bounds.max_lr)],
        "bounds_source": reading.bounds.source,
        "bounds_reason": reading.bounds.reason,
        "blow_up_step": step,
        "blow_up_lr": None if step is None else float(np.asarray(result.lrs)[step]),
        "blow_up_reason": reading.blow_up_reason,
        "notes": list(reading.notes),
    }


def _arrays(cls_or_result) -> tuple[str, ...]:
    """The array fields a result type has: the curves, then any validation."""
    fields = getattr(cls_or_result, "__dataclass_fields__", {})
    return (*CURVES, *(f for f in VALIDATION if f in fields))


def to_dict(result) -> dict[str, Any]:
    """The record as plain JSON values; see the module docstring."""
    result = result.to_host()
    names = _arrays(result)
    present = [f for f in names if getattr(result, f) is not None]
    step = result.diverged_step
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": _config_to_dict(result.config),
        "dtypes": {f: str(np.asarray(getattr(result, f)).dtype) for f in present},
        **{f: _encode(getattr(result, f)) if f in present else None for f in names},
        "diverged_step": list(step) if isinstance(step, tuple) else step,
        "reading": _reading_to_dict(result),
    }


def from_dict(cls, d: Mapping[str, Any]):
    """Inverse of :func:`to_dict` (also reads the files of version 1)."""
    dtypes = d.get("dtypes") or {}
    arrays = {
        f: None if d.get(f) is None else _decode(d[f], dtypes.get(f, "float64"))
        for f in _arrays(cls)
    }
    step = d.get("diverged_step")
    config = _config_from_dict(_config_type(), d.get("config"))
    return cls(
        **arrays,
        diverged_step=tuple(step) if isinstance(step, list) else step,
        config=config,
    )


def _config_type():
    from clr_jax.range_test._result import RangeTestConfig

    return RangeTestConfig


def save_json(result, path) -> None:
    """Writes :func:`to_dict` as standard JSON."""
    text = json.dumps(to_dict(result), allow_nan=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def load_json(cls, path):
    """Reads a file written by :func:`save_json`."""
    with open(path, encoding="utf-8") as f:
        return from_dict(cls, json.load(f))


def save_csv(result, path) -> None:
    """One row per step (and sweep); see :meth:`RangeTestResult.save_csv`."""
    result = result.to_host()
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


def _column(values: list[float]) -> np.ndarray:
    """float32 when every value is one (as the range test records), else float64."""
    arr = np.array(values, np.float64)
    narrow = arr.astype(np.float32)
    lossless = np.array_equal(narrow.astype(np.float64), arr, equal_nan=True)
    return narrow if lossless else arr


def load_csv(cls, path):
    """Reads a file written by :func:`save_csv`."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    sweeps = sorted({int(r.get("sweep", 0)) for r in rows})
    parts = []
    for k in sweeps:
        mine = [r for r in rows if int(r.get("sweep", 0)) == k]
        curves = {
            f: _column([float(r[c]) for r in mine])
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
