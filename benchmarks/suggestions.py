"""Are the range test's suggestions any good? Their regret against a grid.

For every problem (a data set, a model and an optimizer of the command line)
and every sweep length (100, 400 and 1,600 steps), ``clr_jax.range_test``
runs three sweeps from 1e-4 to 10 (the command line's range, three seeds by
the built-in key batching, each with its own initialisation). Each rule
gives one rate per sweep: this library's suggestions (every method of
``RangeTestResult.suggestions()``), fastai's and torch-lr-finder's rules on
the curves those libraries record (``peer_suggestions()``), and Smith's
bounds (``bounds()``). The rate a rule suggests at a sweep length is the
median of its three sweeps' rates (the geometric mean of two when one
sweep refuses); a rule that refuses in most sweeps is *refused* there and
not trained.

Every suggestion is then trained as a fixed rate for a fixed budget, the
bounds as a ``triangular`` schedule (two whole cycles) and as a
``one_cycle`` from ``base_lr`` to ``max_lr``, next to a grid of ten fixed
rates half a decade apart (1e-4 to 10**0.5), every run over the same 20
seeds (paired: seed ``i`` starts from the same weights and sees the same batches
in every run). All of one problem's runs train in one compiled program: a
grid of per-update rate tables times the seeds.

Reported per problem: the grid-best rate (best final test accuracy, mean
over seeds); each suggestion's factor from it; its *regret*, the grid-best
accuracy minus the accuracy at the suggestion, in points; and how far it
*moves* across the three sweep lengths (max/min). Then per rule: median and
max regret, max movement, refusals, and how many of our suggestions come
with a note (a ``RangeTestWarning`` in most of the three sweeps). Targets
for a recommended method of ours: regret <= 1 point on every problem (a) at
every sweep length, (b) at the sweeps of ``LONG_SWEEP`` (400) steps or
more, which the README recommends, and (c) wherever it is given without a
note; movement <= 3x; and a median regret below both fastai's ``valley``
and torch-lr-finder's steepest point.

Usage::

    python benchmarks/suggestions.py             # the full table, 20 seeds (about
                                                 # 15 min on 2 quiet CPU cores)
    python benchmarks/suggestions.py --quick     # a smoke test, under 2 min
    python benchmarks/suggestions.py --seeds 3 --out results.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import clr_jax
from clr_jax import flax as clr_flax
from clr_jax.cli._compare import RateTable
from clr_jax.cli._models import DATASETS, OPTIMIZERS
from clr_jax.cli._parser import _DATA_DEFAULTS

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "suggestions.json"

# The command line's range test: its rates and its batch sizes.
START_LR, END_LR = 1e-4, 10.0
BATCH_SIZE = _DATA_DEFAULTS["range_test"]["batch_size"]
SWEEP_LENGTHS = (100, 400, 1600)
SWEEPS = 3
GRID = tuple(float(r) for r in 10.0 ** np.arange(-4.0, 0.6, 0.5))
POLICIES = ("triangular", "one_cycle")
# Targets for the recommended method (points of test accuracy, factors).
MAX_REGRET = 1.0
MAX_MOVEMENT = 3.0
# The shortest sweep the README recommends for a fixed rate: at 100 steps
# (20 per decade) noisy curves are refused or read coarsely.
LONG_SWEEP = 400
PEERS_TO_BEAT = ("fastai_valley", "torch_lr_finder_steepest")
NOTED_MARK = "†"  # a regret whose suggestion came with a note


class Problem(NamedTuple):
    """A training problem: a data set, its model, an optimizer, a budget."""

    data: str  # a key of DATASETS
    model: str  # a model of that data set, or 'softmax'
    optimizer: str  # a key of OPTIMIZERS
    epochs: int  # the training budget

    @property
    def name(self) -> str:
        return f"{self.data} {self.model} {self.optimizer}"


# Budgets (updates of the command line's batch): the digits problems 10
# epochs (420 updates), the MNIST-1D MLP 20 (800) and its CNN 10 (400).
PROBLEMS = (
    Problem("digits", "softmax", "sgd", 10),
    Problem("digits", "softmax", "momentum", 10),
    Problem("digits", "softmax", "adam", 10),
    Problem("digits", "mlp", "sgd", 10),
    Problem("digits", "mlp", "momentum", 10),
    Problem("digits", "mlp", "adam", 10),
    Problem("digits", "cnn", "momentum", 10),
    Problem("mnist1d", "mlp", "momentum", 20),
    Problem("mnist1d", "cnn", "adam", 10),
)
QUICK_PROBLEMS = (
    Problem("digits", "softmax", "sgd", 2),
    Problem("digits", "mlp", "adam", 2),
)
QUICK_LENGTHS = (100, 400)


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression: one linear layer to 10 logits."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def build_model(problem: Problem) -> nn.Module:
    if problem.model == "softmax":
        return SoftmaxRegression()
    return DATASETS[problem.data].models[problem.model].build()


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Range tests and their readings
# ---------------------------------------------------------------------------


def run_range_test(problem: Problem, data, num_steps: int, key) -> Any:
    """``SWEEPS`` sweeps of the problem's model, one compiled program."""
    net = build_model(problem)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    init_keys, data_keys = jax.vmap(jax.random.split, out_axes=1)(
        jax.random.split(key, SWEEPS)
    )
    params = jax.vmap(lambda k: net.init(k, x[:1]))(init_keys)

    def loss_fn(params, batch):
        xb, yb = batch
        logits = net.apply(params, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def accuracy_fn(params, batch):
        xb, yb = batch
        return clr_flax.accuracy(net.apply(params, xb), yb)

    return clr_jax.range_test(
        loss_fn,
        params,
        (x, y),
        batch_size=BATCH_SIZE[problem.data],
        optimizer=OPTIMIZERS[problem.optimizer].with_fixed_hyperparams(),
        start_lr=START_LR,
        end_lr=END_LR,
        num_steps=num_steps,
        key=data_keys,
        metric_fn=accuracy_fn,
        batched_params=True,
        progress=False,
    )


def _floats(values) -> list[float]:
    return [float(v) for v in np.atleast_1d(np.asarray(values, np.float64))]


def read_sweeps(result) -> dict[str, Any]:
    """Every rule's rate per sweep, the bounds, the divergences and notes,
    and per sweep whether each of our suggestions came with a note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", clr_jax.RangeTestWarning)
        ours = result.suggestions()
        peers = result.peer_suggestions()
        base_lr, max_lr = result.bounds()
        sweeps = result.read()
    notes = [str(w.message) for w in caught]
    return {
        "ours": {m: _floats(v) for m, v in ours.items()},
        "noted": {m: [bool(r.notes_for(m)) for r in sweeps] for m in ours},
        "peers": {m: _floats(v) for m, v in peers.items()},
        "bounds": {"base_lr": _floats(base_lr), "max_lr": _floats(max_lr)},
        "diverged_step": list(result.to_host().diverged_step),
        "notes": list(dict.fromkeys(notes)),
    }


def consensus(values) -> float:
    """The median rate of the sweeps, NaN when most of them refuse.

    The geometric median: of three rates the middle one, of two finite ones
    their geometric mean.

    Examples:
      >>> consensus([0.1, 0.3, 0.2]), consensus([0.1, float("nan"), 0.4])
      (0.2, 0.2)
      >>> math.isnan(consensus([0.1, float("nan"), float("nan")]))
      True
    """
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values) & (values > 0)]
    if 2 * len(finite) <= len(values):
        return math.nan
    return float(np.round(np.exp(np.median(np.log(finite))), 12))


def noted(reading: dict, rule: str) -> bool | None:
    """Whether most sweeps warn about ``rule``'s suggestion; ``None`` for a
    rule that gives no notes (the peers', the policies').

    Examples:
      >>> reading = {"noted": {"a": [True, True, False]}}
      >>> noted(reading, "a"), noted(reading, "fastai_valley")
      (True, None)
    """
    flags = reading["noted"].get(rule)
    return None if flags is None else 2 * sum(flags) > len(flags)


def refused_sweeps(values) -> int:
    """How many sweeps gave no rate (NaN)."""
    values = np.asarray(values, np.float64)
    return int(np.sum(~(np.isfinite(values) & (values > 0))))


# ---------------------------------------------------------------------------
# The runs of one problem, and their training in one program
# ---------------------------------------------------------------------------


def rule_specs(readings: dict[int, dict]) -> dict[tuple[str, int], tuple]:
    """``(rule, length) -> run spec``: ``('fixed', lr)``, a policy with bounds,
    or ``('refused',)``."""
    specs = {}
    for length, reading in readings.items():
        for group in ("ours", "peers"):
            for rule, values in reading[group].items():
                lr = consensus(values)
                specs[rule, length] = ("fixed", lr) if math.isfinite(lr) else None
        base = consensus(reading["bounds"]["base_lr"])
        top = consensus(reading["bounds"]["max_lr"])
        finite = math.isfinite(base) and math.isfinite(top) and base < top
        for policy in POLICIES:
            specs[policy, length] = (policy, base, top) if finite else None
    return {key: spec or ("refused",) for key, spec in specs.items()}


def rate_table(spec: tuple, total_steps: int) -> RateTable:
    """The learning rate of every update of a run spec."""
    kind, *args = spec
    if kind == "fixed":
        return RateTable.of(args[0], total_steps)
    base, top = args
    if kind == "triangular":  # two whole cycles, ending at base_lr
        schedule = clr_jax.triangular(base, top, max(1, total_steps // 4))
    else:  # Smith's 1cycle starts at the lower bound
        schedule = clr_jax.one_cycle(top, total_steps, div_factor=top / base)
    return RateTable.of(schedule, total_steps)


def train_runs(problem: Problem, data, specs: list[tuple], seeds: int, seed: int):
    """Final test accuracy ``[runs, seeds]`` and halted seeds ``[runs]`` of
    every spec: one ``fit`` of the grid of ``specs`` x ``seeds``."""
    batch = BATCH_SIZE[problem.data]
    total_steps = problem.epochs * (len(data.y_train) // batch)
    optimizer = OPTIMIZERS[problem.optimizer]
    result = clr_flax.fit(
        build_model(problem),
        data,
        epochs=problem.epochs,
        batch_size=batch,
        key=jax.random.key(seed),  # the same seeds in every run: paired
        optimizer=optimizer.factory,
        learning_rate=[rate_table(s, total_steps) for s in specs],
        seeds=seeds,
        progress=False,
        **optimizer.hyperparams,
    )
    history = result.history
    accuracy = np.asarray(history.test_accuracy, np.float64)[..., -1]
    halted = np.sum(np.asarray(history.nonfinite_step) >= 0, axis=-1)
    return accuracy.reshape(len(specs), seeds), halted.reshape(len(specs))


def plan_runs(readings: dict[int, dict]) -> tuple[dict, list[tuple]]:
    """``(key -> index into specs, specs)``: the grid, then every rule's run;
    equal runs train once, refused ones not at all."""
    keys = {("grid", i): ("fixed", lr) for i, lr in enumerate(GRID)}
    keys.update(rule_specs(readings))
    specs = list(dict.fromkeys(s for s in keys.values() if s[0] != "refused"))
    index = {spec: i for i, spec in enumerate(specs)}
    return {key: index.get(spec) for key, spec in keys.items()}, specs


# ---------------------------------------------------------------------------
# Scores: factor, regret, movement (pure functions of the numbers)
# ---------------------------------------------------------------------------


def grid_best(accuracy: np.ndarray) -> int:
    """Index of the best seed-mean accuracy (the smaller rate on a tie)."""
    means = np.asarray(accuracy, np.float64).mean(axis=-1)
    return int(np.argmax(means))


def movement(rates) -> float:
    """max/min of a rule's rates across sweep lengths (NaN below two).

    Examples:
      >>> movement([0.1, 0.4, 0.2]), math.isnan(movement([0.1, float("nan")]))
      (4.0, True)
    """
    finite = [r for r in rates if math.isfinite(r) and r > 0]
    return max(finite) / min(finite) if len(finite) >= 2 else math.nan


def score_rule(spec: tuple, accuracy, best_lr: float, best_seeds) -> dict:
    """The rate, factor, regret (points) and its standard error (over the
    paired seeds) of one rule at one length."""
    if spec[0] == "refused":
        return {
            "refused": True,
            "rate": None,
            "base_lr": None,
            "factor": None,
            "regret": None,
            "regret_se": None,
        }
    lr = spec[1] if spec[0] == "fixed" else spec[2]  # a policy's max_lr
    mean = float(np.mean(accuracy))
    gaps = 100.0 * (np.asarray(best_seeds, np.float64) - np.asarray(accuracy))
    se = float(np.std(gaps, ddof=1) / np.sqrt(len(gaps))) if len(gaps) > 1 else None
    return {
        "refused": False,
        "rate": lr,
        "base_lr": spec[1] if spec[0] != "fixed" else None,
        "factor": lr / best_lr,
        "accuracy": mean,
        "accuracy_per_seed": [float(a) for a in accuracy],
        "regret": 100.0 * (float(np.mean(best_seeds)) - mean),
        "regret_se": se,
    }


def _refusals(reading: dict, rule: str) -> int:
    """Sweeps in which ``rule`` gave no rate (a policy: no bounds)."""
    if rule in POLICIES:
        bounds = reading["bounds"]
        pairs = zip(bounds["base_lr"], bounds["max_lr"], strict=True)
        return sum(refused_sweeps([b]) or refused_sweeps([m]) for b, m in pairs)
    values = reading["ours"].get(rule, reading["peers"].get(rule))
    return refused_sweeps(values)


def score_problem(readings, index, specs, accuracy) -> dict[str, Any]:
    """The grid, its best, and every rule's scores at every length."""
    grid = accuracy[[index["grid", i] for i in range(len(GRID))]]
    best = grid_best(grid)
    best_lr, best_accuracy = GRID[best], float(grid[best].mean())
    best_seeds = grid[best]
    rules: dict[str, dict] = {}
    for (rule, length), i in index.items():
        if rule == "grid":
            continue
        if i is None:
            row = score_rule(("refused",), None, best_lr, best_seeds)
        else:
            row = score_rule(specs[i], accuracy[i], best_lr, best_seeds)
        row["refused_sweeps"] = _refusals(readings[length], rule)
        row["noted"] = noted(readings[length], rule)
        rules.setdefault(rule, {"lengths": {}})["lengths"][length] = row
    for rule, entry in rules.items():
        rows = entry["lengths"].values()
        entry["movement"] = movement([r["rate"] or math.nan for r in rows])
        if rule in POLICIES:  # the farther of the two bounds
            bases = movement([r["base_lr"] or math.nan for r in rows])
            entry["movement"] = max(entry["movement"], bases)
    return {
        "grid": [
            {"lr": lr, "accuracy": float(a.mean()), "accuracy_per_seed": a.tolist()}
            for lr, a in zip(GRID, grid, strict=True)
        ],
        "best": {
            "lr": best_lr,
            "accuracy": best_accuracy,
            "at_edge": best in (0, len(GRID) - 1),
        },
        "rules": rules,
    }


def summarise(problems: list[dict]) -> dict[str, dict]:
    """Per rule, over every problem and sweep length: regrets, movement,
    refusals."""
    rules = list(problems[0]["scores"]["rules"])
    summary = {}
    for rule in rules:
        entries = [p["scores"]["rules"][rule] for p in problems]
        rows = [(n, r) for e in entries for n, r in e["lengths"].items()]
        given = [r for _, r in rows if not r["refused"]]
        regrets = [r["regret"] for r in given]
        errors = [r["regret_se"] for _, r in rows if r["regret_se"] is not None]
        long = [r for n, r in rows if int(n) >= LONG_SWEEP]
        unnoted = [r["regret"] for r in given if r["noted"] is False]
        gives_notes = any(r["noted"] is not None for r in given)
        by_length: dict[int, list[float]] = {}
        for length, row in rows:
            if not row["refused"]:
                by_length.setdefault(length, []).append(row["regret"])
        finite = [e["movement"] for e in entries if math.isfinite(e["movement"])]
        summary[rule] = {
            "median_regret": float(np.median(regrets)) if regrets else math.nan,
            "max_regret": max(regrets) if regrets else math.nan,
            "median_regret_per_length": {
                n: float(np.median(g)) for n, g in by_length.items()
            },
            "max_regret_per_length": {n: max(g) for n, g in by_length.items()},
            "within_target": sum(g <= MAX_REGRET for g in regrets),
            "noted": sum(bool(r["noted"]) for r in given) if gives_notes else None,
            "max_regret_unnoted": max(unnoted, default=math.nan),
            "median_regret_se": float(np.median(errors)) if errors else math.nan,
            "max_regret_long": max(
                (math.inf if r["refused"] else r["regret"] for r in long),
                default=math.nan,
            ),
            "readings": len(rows),
            "max_movement": max(finite, default=math.nan),
            "refused": sum(r["refused"] for _, r in rows),
            "refused_sweeps": sum(r["refused_sweeps"] for _, r in rows),
            "sweeps": SWEEPS * len(rows),
        }
    return summary


def check_targets(summary: dict[str, dict], ours: list[str]) -> dict[str, dict]:
    """The targets for each of our methods, PASS (True) or FAIL."""
    peers = [summary[p]["median_regret"] for p in PEERS_TO_BEAT if p in summary]
    to_beat = min(peers) if peers else math.nan
    checks = {}
    for method in ours:
        s = summary[method]
        checks[method] = {
            "regret": s["refused"] == 0 and s["max_regret"] <= MAX_REGRET,
            "regret_long": s["max_regret_long"] <= MAX_REGRET,
            "regret_unnoted": s["max_regret_unnoted"] <= MAX_REGRET,
            "movement": s["max_movement"] <= MAX_MOVEMENT,
            "beats_peers": s["median_regret"] < to_beat,
        }
    return checks


def recommend(summary: dict[str, dict], checks: dict[str, dict]) -> str:
    """The method of ours that meets the most targets (then: lowest median
    regret, lowest max regret)."""

    def rank(method):
        s = summary[method]
        return (-sum(checks[method].values()), s["median_regret"], s["max_regret"])

    return min(checks, key=rank)


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------


def _num(x, spec: str = ".2g", none: str = "—") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return format(x, spec)


def _rate(lr) -> str:
    return _num(lr, ".2g")


def _times(factor) -> str:
    """``2.3x``, or a dash for no number."""
    text = _num(factor, ".2g")
    return text if text == "—" else text + "x"


def grid_table(problems: list[dict]) -> str:
    head = "| problem | updates | " + " | ".join(_rate(r) for r in GRID) + " | best |"
    lines = [head, "|---|---:|" + "---:|" * (len(GRID) + 1)]
    for p in problems:
        cells = [f"{100 * g['accuracy']:.1f}" for g in p["scores"]["grid"]]
        best = p["scores"]["best"]
        edge = " (edge)" if best["at_edge"] else ""
        lines.append(
            f"| {p['problem']} | {p['total_steps']} | "
            + " | ".join(cells)
            + f" | {_rate(best['lr'])}{edge} |"
        )
    return "\n".join(lines)


def _cell(row: dict) -> list[str]:
    if row["refused"]:
        return ["refused", "", ""]
    rate = _rate(row["rate"])
    if row.get("base_lr") is not None:
        rate = f"{_rate(row['base_lr'])}..{rate}"
    mark = NOTED_MARK if row.get("noted") else ""
    return [rate, _times(row["factor"]), _num(row["regret"], "+.1f") + mark]


def problem_table(problem: dict, lengths) -> str:
    best = problem["scores"]["best"]
    title = (
        f"**{problem['problem']}** ({problem['label']}), {problem['total_steps']} "
        f"updates; grid-best {_rate(best['lr'])}: {100 * best['accuracy']:.1f}%"
    )
    head = (
        "| rule | "
        + " | ".join(f"{n}: lr | factor | regret" for n in lengths)
        + " | moves |"
    )
    lines = [title, "", head, "|---|" + "---:|---:|---:|" * len(lengths) + "---:|"]
    for rule, entry in problem["scores"]["rules"].items():
        cells = [c for n in lengths for c in _cell(entry["lengths"][n])]
        moves = _times(entry["movement"])
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {moves} |")
    return "\n".join(lines)


def _share(count, total) -> str:
    return "—" if count is None else f"{count}/{total}"


def summary_table(summary: dict[str, dict], lengths) -> str:
    head = (
        "| rule | median regret | max regret | "
        + " | ".join(f"@{n}: median / max" for n in lengths)
        + " | regret ≤ 1 | noted | max regret unnoted | median SE | max movement "
        "| refused | refused sweeps |"
    )
    lines = [head, "|---|" + "---:|" * (len(lengths) + 9)]
    for rule, s in summary.items():
        medians, maxima = s["median_regret_per_length"], s["max_regret_per_length"]
        per = [
            f"{_num(medians.get(n), '+.1f')} / {_num(maxima.get(n), '+.1f')}"
            for n in lengths
        ]
        lines.append(
            f"| {rule} | {_num(s['median_regret'], '+.1f')} | "
            f"{_num(s['max_regret'], '+.1f')} | "
            + " | ".join(per)
            + f" | {_share(s['within_target'], s['readings'])} | "
            f"{_share(s['noted'], s['readings'])} | "
            f"{_num(s['max_regret_unnoted'], '+.1f')} | "
            f"{_num(s['median_regret_se'], '.1f')} | {_times(s['max_movement'])} | "
            f"{_share(s['refused'], s['readings'])} | "
            f"{_share(s['refused_sweeps'], s['sweeps'])} |"
        )
    return "\n".join(lines)


def targets_table(checks: dict[str, dict], recommended: str) -> str:
    word = {True: "PASS", False: "FAIL"}
    lines = [
        f"| method | regret ≤ {MAX_REGRET:g} everywhere "
        f"| regret ≤ {MAX_REGRET:g} at {LONG_SWEEP}+ steps "
        f"| regret ≤ {MAX_REGRET:g} wherever not noted | moves ≤ {MAX_MOVEMENT:g}x "
        "| median regret < valley's and steepest's |",
        "|---|---|---|---|---|---|",
    ]
    for method, c in checks.items():
        mark = " (recommended)" if method == recommended else ""
        lines.append(
            f"| {method}{mark} | {word[c['regret']]} | {word[c['regret_long']]} | "
            f"{word[c['regret_unnoted']]} | {word[c['movement']]} | "
            f"{word[c['beats_peers']]} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def _label(problem: Problem) -> str:
    model = (
        "softmax regression"
        if problem.model == "softmax"
        else (DATASETS[problem.data].models[problem.model].label)
    )
    return f"{model}, {OPTIMIZERS[problem.optimizer].label}"


def run_problem(problem: Problem, lengths, seeds: int, seed: int) -> dict[str, Any]:
    """The range tests, the training program and the scores of one problem."""
    data = DATASETS[problem.data].load(problem.model)
    readings, seconds = {}, {}
    for length in lengths:
        start = time.perf_counter()
        result = run_range_test(problem, data, length, jax.random.key(seed + 1))
        readings[length] = read_sweeps(result)
        seconds[f"range_test_{length}"] = round(time.perf_counter() - start, 1)
        _log(f"  range test {length} steps: {seconds[f'range_test_{length}']} s")
    index, specs = plan_runs(readings)
    start = time.perf_counter()
    accuracy, halted = train_runs(problem, data, specs, seeds, seed)
    seconds["training"] = round(time.perf_counter() - start, 1)
    _log(f"  training {len(specs)} runs x {seeds} seeds: {seconds['training']} s")
    return {
        "problem": problem.name,
        "label": _label(problem),
        "settings": problem._asdict(),
        "batch_size": BATCH_SIZE[problem.data],
        "total_steps": problem.epochs * (len(data.y_train) // BATCH_SIZE[problem.data]),
        "readings": {str(n): r for n, r in readings.items()},
        "runs": len(specs),
        "halted_seeds": int(np.sum(halted)),
        "scores": score_problem(readings, index, specs, accuracy),
        "seconds": seconds,
    }


def environment() -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "backend": jax.default_backend(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "flax": flax.__version__,
        "clr_jax": clr_jax.__version__,
    }


def _jsonable(x):
    """NaN and infinities as ``None``, NumPy scalars as Python numbers."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def report(record: dict) -> None:
    """Prints every table, the targets and one JSON line per target."""
    lengths, problems = record["lengths"], record["problems"]
    print(
        "# Range-test suggestions against a fixed-rate grid "
        f"({record['seeds']} seeds)\n"
    )
    print("Final test accuracy (%) of each fixed rate, mean over seeds:\n")
    print(grid_table(problems) + "\n")
    print(
        f"{NOTED_MARK}: most of the three sweeps give this suggestion with a note "
        "(a RangeTestWarning).\n"
    )
    for problem in problems:
        print(problem_table(problem, lengths) + "\n")
    print("Summary over every problem and sweep length (regret in points):\n")
    print(summary_table(record["summary"], lengths) + "\n")
    print(targets_table(record["targets"], record["recommended"]) + "\n")
    method = record["recommended"]
    s = record["summary"][method]
    peers = [record["summary"][p]["median_regret"] for p in PEERS_TO_BEAT]
    lines = [
        (f"{method}: max regret, points", s["max_regret"], f"<= {MAX_REGRET:g}"),
        (
            f"{method}: max regret at {LONG_SWEEP}+ steps, points",
            s["max_regret_long"],
            f"<= {MAX_REGRET:g}",
        ),
        (
            f"{method}: max regret where not noted, points",
            s["max_regret_unnoted"],
            f"<= {MAX_REGRET:g}",
        ),
        (
            f"{method}: max movement across lengths",
            s["max_movement"],
            f"<= {MAX_MOVEMENT:g}",
        ),
        (
            f"{method}: median regret minus the better peer's",
            s["median_regret"] - min(peers),
            "< 0",
        ),
    ]
    for label, value, target in lines:
        line = {
            "benchmark": "suggestions",
            "ratio": label,
            "value": value,
            "target": target,
        }
        print(json.dumps(_jsonable(line)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two problems, 2 lengths")
    parser.add_argument("--seeds", type=int, default=20, help="training seeds per run")
    parser.add_argument("--seed", type=int, default=0, help="the first key")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON of every number (default {DEFAULT_OUT.relative_to(HERE.parent)}; "
        "none with --quick)",
    )
    args = parser.parse_args(argv)
    problems = QUICK_PROBLEMS if args.quick else PROBLEMS
    lengths = QUICK_LENGTHS if args.quick else SWEEP_LENGTHS
    start = time.perf_counter()
    results = []
    for i, problem in enumerate(problems, start=1):
        _log(f"[{i}/{len(problems)}] {problem.name}")
        results.append(run_problem(problem, lengths, args.seeds, args.seed))
    summary = summarise(results)
    ours = list(results[0]["readings"][str(lengths[0])]["ours"])
    checks = check_targets(summary, ours)
    record = {
        "benchmark": "suggestions",
        "command": " ".join(
            [
                "python benchmarks/suggestions.py",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "lengths": list(lengths),
        "seeds": args.seeds,
        "sweeps": SWEEPS,
        "range": [START_LR, END_LR],
        "grid": list(GRID),
        "ours": ours,
        "problems": results,
        "summary": summary,
        "targets": checks,
        "recommended": recommend(summary, checks),
        "environment": environment(),
    }
    record["seconds"] = round(time.perf_counter() - start, 1)
    report(record)
    out = args.out or (None if args.quick else DEFAULT_OUT)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_jsonable(record), indent=1) + "\n", encoding="utf-8")
        _log(f"wrote {out} ({record['seconds']} s)")
    return record


if __name__ == "__main__":
    main()
