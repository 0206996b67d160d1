"""Every benchmark row in one run: one JSON file per benchmark and one table.

Runs the benchmark scripts of this folder one after another in this process
(each stays a script: its ``main(argv)`` is imported by path and called):
``schedules.py``, ``range_test.py``, ``train.py`` and ``suggestions.py``
when it exists. Their output is echoed; the JSON lines each prints are
collected into ``<out>/<name>.json`` together with the device, the versions,
the arguments and the wall time, and every ratio goes into
``<out>/summary.md``, headed by the accelerator targets:

* range test >= 10x torch-lr-finder on the same MLP;
* 8 vmapped sweeps <= 0.5x the time of 8 sequential ones;
* ``fit`` >= 1.3x the steps/s of a Python loop.

The full settings are sized for one GPU (under 8 minutes); ``--quick`` runs
small settings on a 2-core CPU in a few minutes.

Machines without a package index: the torch-lr-finder row needs the
``torch_lr_finder`` package, which travels as a wheel in
``benchmarks/wheels/`` (``--wheels DIR`` for another folder). A wheel whose
package is not importable is installed with ``pip install --no-index
--no-deps --target`` into ``<out>/_wheels`` and put on ``sys.path``; nothing
else is touched. torch-lr-finder imports ``tqdm``, ``matplotlib`` and
``packaging`` at the top but its range test needs none of them: where one is
missing, a stand-in takes its place (an unwrapped loop, no figure, a
numeric version parse), which only spares torch-lr-finder its progress
bar. The JSON records which wheels and stand-ins were used.

Usage::

    python benchmarks/run_all.py                # one GPU, <= 8 minutes
    python benchmarks/run_all.py --quick        # the 2-core CPU
    python benchmarks/run_all.py --out runs/gpu --wheels /path/to/wheels
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name: (full argv, --quick argv). A script missing from the folder is skipped.
BENCHMARKS = {
    "schedules": (
        [],
        [
            "--cycles",
            "1",
            "10",
            "100",
            "--repeats",
            "3",
            "--update-repeats",
            "3",
            "--steps-per-repeat",
            "2",
        ],
    ),
    "range_test": ([], ["--steps", "100", "--repeats", "2"]),
    "train": ([], ["--epochs", "3", "--repeats", "1"]),
    "suggestions": ([], ["--quick"]),
}

# The accelerator targets: (label, benchmark, how to find the record, target).
HEADLINES = [
    (
        "range test vs torch-lr-finder, same MLP (time ratio)",
        "range_test",
        lambda r: str(r.get("ratio", "")).startswith("(d)/(a)"),
        ">= 10",
    ),
    (
        "8 vmapped sweeps / 8 sequential (time ratio)",
        "range_test",
        lambda r: str(r.get("ratio", "")).startswith("(e)"),
        "<= 0.5",
    ),
    (
        "fit vs a Python loop (steps/s ratio)",
        "train",
        lambda r: r.get("ratio") == "fit_speedup",
        ">= 1.3",
    ),
]

# The 2-core CPU targets of ratios whose records carry none (train.py's).
_TARGETS = {"fit_speedup": ">= 1.3", "seeds_time": "<= 0.6", "grid_time": "<= 0.6"}

# Versions worth recording, by distribution name.
PACKAGES = (
    "jax",
    "jaxlib",
    "optax",
    "flax",
    "equinox",
    "numpy",
    "torch",
    "torch-lr-finder",
    "clr-jax",
)

# Modules torch-lr-finder imports at the top that its range test never uses.
_STAND_INS = ("tqdm", "matplotlib", "packaging")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _gpu_names() -> list[str]:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]
    return []


def environment() -> dict:
    """The device, the host and the versions, for every JSON file."""
    import jax

    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        "gpus": _gpu_names(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in PACKAGES},
    }


# ---------------------------------------------------------------------------
# Wheels and stand-ins, for a machine without a package index
# ---------------------------------------------------------------------------


def _wheel_module(wheel: Path) -> str:
    """``torch_lr_finder-0.2.2-py3-none-any.whl`` -> ``torch_lr_finder``."""
    return wheel.name.split("-", 1)[0]


def install_wheels(folder: Path, target: Path) -> list[str]:
    """Installs the wheels of ``folder`` whose module is not importable."""
    used = []
    for wheel in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        if importlib.util.find_spec(_wheel_module(wheel)) is not None:
            continue
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index"]
        subprocess.run(
            [*pip, "--no-deps", "--target", str(target), str(wheel)], check=True
        )
        used.append(wheel.name)
    if used:
        sys.path.insert(0, str(target))
        importlib.invalidate_caches()
    return used


def _numeric_version(text: str) -> tuple[int, ...]:
    """``'2.13.0+cu124'`` -> ``(2, 13, 0)``: enough to compare releases."""
    parts = []
    for part in text.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _stand_in(name: str) -> None:
    if name == "tqdm":
        auto = types.ModuleType("tqdm.autonotebook")
        auto.tqdm = lambda iterable=None, *args, **kwargs: iterable
        modules = {"tqdm": types.ModuleType("tqdm"), "tqdm.autonotebook": auto}
    elif name == "matplotlib":
        modules = {
            "matplotlib": types.ModuleType("matplotlib"),
            "matplotlib.pyplot": types.ModuleType("matplotlib.pyplot"),
        }
    else:
        version = types.ModuleType("packaging.version")
        version.parse = _numeric_version
        modules = {
            "packaging": types.ModuleType("packaging"),
            "packaging.version": version,
        }
    for module_name, module in modules.items():
        module.__clr_jax_stand_in__ = True
        sys.modules[module_name] = module
    modules[name].__path__ = []  # a package, so that its submodule imports


def stand_ins() -> list[str]:
    """Stand-ins for torch-lr-finder's unused imports that are missing."""
    if importlib.util.find_spec("torch_lr_finder") is None:
        return []
    missing = [name for name in _STAND_INS if importlib.util.find_spec(name) is None]
    for name in missing:
        _stand_in(name)
    return missing


# ---------------------------------------------------------------------------
# Running the scripts
# ---------------------------------------------------------------------------


class _Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.copy.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (Flax modules) look it up
    spec.loader.exec_module(module)
    return module


def json_lines(text: str) -> list[dict]:
    """The JSON objects among the lines of ``text``."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def run_one(name: str, argv: list[str]) -> dict:
    """Runs ``benchmarks/<name>.py``'s ``main(argv)``; its record."""
    print(f"\n=== {name}.py {' '.join(argv)}", flush=True)
    tee = _Tee(sys.stdout)
    start = time.perf_counter()
    error = None
    try:
        with contextlib.redirect_stdout(tee):
            _load(name).main(argv)
    except (Exception, SystemExit) as err:  # one failing script spoils no other
        error = "".join(traceback.format_exception(err))
        print(error, file=sys.stderr, flush=True)
    return {
        "benchmark": name,
        "argv": argv,
        "seconds": round(time.perf_counter() - start, 1),
        "error": error,
        "records": json_lines(tee.copy.getvalue()),
        "stdout": tee.copy.getvalue(),
    }


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------


def _ratio_rows(run: dict) -> list[tuple[str, float, str]]:
    """``(label, value, target)`` of every ratio a benchmark printed."""
    rows = []
    for r in run["records"]:
        if "ratio" in r:
            value = r.get("median", r.get("value"))
            target = r.get("target", _TARGETS.get(r["ratio"], "—"))
            rows.append((str(r["ratio"]), value, str(target)))
        elif "median_ratio_scheduled_over_const" in r and r.get("variant") != "const":
            label = f"{r.get('comparison', 'update')}: scheduled / constant"
            rows.append((label, r["median_ratio_scheduled_over_const"], "<= 1.02"))
    return rows


def _met(value: float, target: str) -> str:
    op, _, bound = target.partition(" ")
    try:
        bound = float(bound)
    except ValueError:
        return ""
    return "met" if (value >= bound if op == ">=" else value <= bound) else "not met"


def summary(runs: dict[str, dict], env: dict) -> str:
    """The Markdown summary: the accelerator targets, then every ratio."""
    device = ", ".join(env["gpus"] or env["devices"])
    lines = [
        f"# Benchmarks on {device}",
        "",
        f"{env['cpu']}, {env['cpu_count']} CPUs; Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        "",
        "| target | value | goal | |",
        "|---|---:|---:|---|",
    ]
    for label, name, match, target in HEADLINES:
        found = [r for r in runs.get(name, {}).get("records", []) if match(r)]
        if not found:
            lines.append(f"| {label} | not measured | {target} | |")
            continue
        value = found[0].get("median", found[0].get("value"))
        lines.append(f"| {label} | {value:.2f} | {target} | {_met(value, target)} |")
    lines += ["", "| benchmark | ratio | median | target | seconds |"]
    lines.append("|---|---|---:|---|---:|")
    for name, run in runs.items():
        status = "failed, see its JSON" if run["error"] else ""
        for label, value, target in _ratio_rows(run):
            lines.append(
                f"| {name} | {label} | {value:.3g} | {target} | {run['seconds']:.0f} |"
            )
        if status or not _ratio_rows(run):
            lines.append(
                f"| {name} | {status or 'no ratio'} | | | {run['seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small settings, CPU")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/benchmarks"), help="results folder"
    )
    parser.add_argument(
        "--wheels", type=Path, default=HERE / "wheels", help="wheels to install"
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(BENCHMARKS), help="run these benchmarks"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    wheels = install_wheels(args.wheels, args.out / "_wheels")
    faked = stand_ins()
    env = {**environment(), "wheels_installed": wheels, "stand_ins": faked}
    mode = "quick" if args.quick else "full"
    print(f"run_all ({mode}) on {env['gpus'] or env['devices']}", flush=True)
    start = time.perf_counter()
    runs = {}
    for name, (full, quick) in BENCHMARKS.items():
        if (args.only and name not in args.only) or not (HERE / f"{name}.py").exists():
            continue
        runs[name] = run_one(name, quick if args.quick else full)
        record = {**runs[name], "mode": mode, "environment": env}
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    table = summary(runs, env)
    (args.out / "summary.md").write_text(table, encoding="utf-8")
    total = time.perf_counter() - start
    print(f"\n{table}\nrun_all: {total:.0f} s; wrote {args.out}/*.json, summary.md")
    return 1 if any(run["error"] for run in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
