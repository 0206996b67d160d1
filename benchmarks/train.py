"""Training-loop speed of ``clr_jax.flax.fit``, measured side by side in one run.

Same model (Linen MLP 64-256-256-10 on scikit-learn's digits, batch 128),
same optimizer (SGD with a triangular learning rate and cyclical momentum),
same data order rule, same per-epoch test evaluation:

  (a) ``fit``: one compiled ``lax.scan`` per epoch, batches drawn on the device;
  (b) a hand-written Python loop: one jitted step per batch (batches sliced
      from host arrays after a NumPy shuffle, as in Flax's examples), the
      learning rate and momentum logged from inside the step, a jitted
      evaluation per epoch;
  (c) ``fit(..., seeds=8)``: 8 trainings in one vmapped program;
  (d) 8 sequential ``fit`` calls with the same 8 keys;

  (e) ``fit`` with an orbax checkpoint after every epoch (and every 5);
  (f) ``fit`` streaming the same batches from a host loader (an iterable of
      NumPy batches, re-iterated each epoch) instead of device-resident data;

and, for context: (b) reading each step's loss on the host (a logging
loop); a bare ``lax.scan`` of the same updates with nothing else (no
evaluation, history or guard), the limit on this machine; and (a) vs (b)
on a small MLP (64-32-32-10), where per-step overhead weighs more.

Compilation is timed apart (the first call); runs are timed after a warm-up,
with ``block_until_ready``, min and median over interleaved repeats.

Separately, *compile included*: (g) 8 ``max_lr`` values as one
``fit(learning_rate=[...])`` grid (one vmapped program) against (h) 8
sequential ``fit`` calls with the 8 schedules (one compilation: the
schedules are arguments), and against 8 sequential calls whose schedules
are closures (8 compilations, the behaviour before schedules were values);
each measured from a cold cache for the epoch program (a fresh loss
function object; the programs the loss does not key, such as the model's
initialisation, are compiled once beforehand for every case alike), with
the number of compilations of the epoch program counted; and (g) against
(h) once compiled, the runs alone.

Targets on a 2-core CPU: (a) >= 1.3x the steps/s of (b); (c) <= 0.6x the
time of (d); (g) <= 0.6x the time of (h).

Usage: python benchmarks/train.py [--epochs 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import clr_jax
from clr_jax import flax as clr_flax
from clr_jax.data import load_digits
from clr_jax.flax import _programs

BATCH = 128
SEEDS = 8
SCHEDULE = clr_jax.triangular(0.01, 0.1, step_size=40)
MOMENTUM = clr_jax.cyclical_momentum(0.8, 0.95, step_size=40)


class MLP(nn.Module):
    width: int = 256

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.width)(x))
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(10)(x)


# -- the two loops ----------------------------------------------------------------


def fit(data, epochs: int, key, seeds: int | None = None, width: int = 256, **kw):
    settings = dict(learning_rate=SCHEDULE, momentum=MOMENTUM, seeds=seeds)
    settings.update(kw)
    return clr_flax.fit(
        MLP(width),
        data,
        epochs=epochs,
        batch_size=BATCH,
        key=key,
        optimizer=optax.sgd,
        progress=False,
        **settings,
    )


def checkpointed(data, epochs: int, key, every: int):
    """``fit`` saving an orbax checkpoint every ``every`` epochs (a fresh
    directory each call, removed afterwards)."""
    directory = tempfile.mkdtemp(prefix="clr_jax_bench_")
    try:
        return fit(data, epochs, key, checkpoint_dir=directory, checkpoint_every=every)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class HostLoader:
    """An iterable of NumPy batches in a fresh shuffled order each epoch, as a
    DataLoader hands them over."""

    def __init__(self, data):
        self.x, self.y = data.x_train, data.y_train
        self.rng = np.random.default_rng(0)

    def __len__(self):
        return len(self.y) // BATCH

    def __iter__(self):
        order = self.rng.permutation(len(self.y))[: len(self) * BATCH]
        for idx in order.reshape(len(self), BATCH):
            yield self.x[idx], self.y[idx]


def streamed(data, epochs: int, key):
    return clr_flax.fit(
        MLP(),
        HostLoader(data),
        epochs=epochs,
        key=key,
        optimizer=optax.sgd,
        learning_rate=SCHEDULE,
        momentum=MOMENTUM,
        eval_data=(data.x_test, data.y_test),
        progress=False,
    )


class FreshLoss:
    """Softmax cross-entropy as a new object: a cold compile cache for ``fit``
    (the loss is part of the compiled epoch's static key)."""

    def __call__(self, logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


LOSS = FreshLoss()  # one loss object: the compiled rows reuse its programs


def epoch_compilations() -> int:
    """How many variants of ``fit``'s compiled epoch exist so far."""
    return _programs.epoch._cache_size()


MAX_LRS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3)


def lr_schedules():
    """Eight freshly built schedules (new objects, as a sweep builds them)."""
    return [clr_jax.triangular(0.01, m, step_size=40) for m in MAX_LRS]


def grid_vmapped(data, epochs: int, key, loss, width: int = 256) -> None:
    fit(data, epochs, key, width=width, learning_rate=lr_schedules(), loss_fn=loss)


def grid_sequential(
    data, epochs: int, key, loss, width: int = 256, closures: bool = False
) -> None:
    """8 fits one after another. ``closures`` wraps each schedule in a new
    function, as a closure-based schedule is: each fit then recompiles (the
    behaviour before schedules were pytree values)."""
    for schedule in lr_schedules():
        if closures:
            schedule = lambda count, s=schedule: s(count)  # noqa: E731
        fit(data, epochs, key, width=width, learning_rate=schedule, loss_fn=loss)


def cold_cases(data, epochs: int) -> dict:
    """``name: loss -> None``, each measured from a cold compile cache."""
    key = jax.random.key(0)
    return {
        "max_lr_grid_vmapped": lambda loss: grid_vmapped(data, epochs, key, loss),
        "max_lr_sequential": lambda loss: grid_sequential(data, epochs, key, loss),
        "max_lr_sequential_closures": lambda loss: grid_sequential(
            data, epochs, key, loss, closures=True
        ),
        "max_lr_grid_vmapped_small_mlp": lambda loss: grid_vmapped(
            data, epochs, key, loss, width=32
        ),
        "max_lr_sequential_small_mlp": lambda loss: grid_sequential(
            data, epochs, key, loss, width=32
        ),
    }


def measure_cold(fns: dict, repeats: int) -> dict[str, dict]:
    """Each call from a cold compile cache (a new loss object), compile
    included; also the number of compilations of the epoch per call."""
    for fn in fns.values():  # the programs the loss does not key, compiled once
        fn(FreshLoss())
    runs = {name: [] for name in fns}
    compiles = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            before = epoch_compilations()
            runs[name].append(timed(lambda fn=fn: fn(FreshLoss())))
            compiles[name] = epoch_compilations() - before
    return {
        name: {
            "min_s": min(runs[name]),
            "median_s": statistics.median(runs[name]),
            "epoch_compilations": compiles[name],
            "repeats": repeats,
        }
        for name in fns
    }


def make_python_loop(data, width: int = 256, read_loss: bool = False):
    """A hand-written loop: ``run(epochs, seed) -> (state, per-step logs)``.

    ``read_loss`` reads each step's loss on the host (a logging loop).
    """
    tx = clr_jax.with_schedules(optax.sgd, learning_rate=SCHEDULE, momentum=MOMENTUM)
    model = MLP(width)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    @jax.jit
    def train_step(state, x, y):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        state = state.apply_gradients(grads=grads)
        hyper = state.opt_state.hyperparams
        return state, (loss, hyper["learning_rate"], hyper["momentum"])

    @jax.jit
    def evaluate(state):
        logits = state.apply_fn({"params": state.params}, x_test)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_test).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == y_test)

    def run(epochs: int, seed: int):
        rng = np.random.default_rng(seed)
        params = model.init(jax.random.key(seed), data.x_train[:1])["params"]
        state = clr_flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        logs, evals = [], []
        per_epoch = len(data.y_train) // BATCH
        for _ in range(epochs):
            order = rng.permutation(len(data.y_train))[: per_epoch * BATCH]
            for idx in order.reshape(per_epoch, BATCH):
                state, log = train_step(state, data.x_train[idx], data.y_train[idx])
                logs.append(float(log[0]) if read_loss else log)
            evals.append(evaluate(state))
        return state, logs, evals

    return run


def make_bare_scan(data, steps: int):
    """The physical limit: the same updates as one ``lax.scan``, nothing else
    (no evaluation, history, schedule logging or non-finite guard)."""
    tx = clr_jax.with_schedules(optax.sgd, learning_rate=SCHEDULE, momentum=MOMENTUM)
    model = MLP()
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    order = clr_jax.data.batch_indices(jax.random.key(0), len(y), BATCH, steps)

    def step(state, idx):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, x[idx])
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, y[idx]
            ).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    @jax.jit
    def train(params):
        state = clr_flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        return jax.lax.scan(step, state, order)

    def run(key):
        return train(model.init(key, data.x_train[:1])["params"])

    return run


# -- timing -----------------------------------------------------------------------


def timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def measure_all(fns: dict, repeats: int) -> dict[str, dict]:
    """First call (compilation included) of each, one warm-up, then the
    repeats interleaved so that a change of load hits every row alike."""
    first = {name: timed(fn) for name, fn in fns.items()}
    for fn in fns.values():
        timed(fn)
    runs = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(timed(fn))
    return {
        name: {
            "first_call_s": first[name],
            "min_s": min(runs[name]),
            "median_s": statistics.median(runs[name]),
            "repeats": repeats,
        }
        for name in fns
    }


def environment() -> dict:
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}:{device.device_kind}",
        "device_count": jax.device_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "optax": optax.__version__,
        "flax": flax.__version__,
        "clr_jax": clr_jax.__version__,
    }


def warm_cases(data, epochs: int) -> dict:
    """``name: (function, trainings it runs)``, timed after a warm-up."""
    steps = epochs * (len(data.y_train) // BATCH)
    key = jax.random.key(0)
    keys = jax.random.split(key, SEEDS)
    loop = make_python_loop(data)
    logging_loop = make_python_loop(data, read_loss=True)
    small_loop = make_python_loop(data, width=32)
    bare = make_bare_scan(data, steps)
    return {
        "fit": (lambda: fit(data, epochs, key), 1),
        "python_loop": (lambda: loop(epochs, 0), 1),
        "python_loop_read_loss": (lambda: logging_loop(epochs, 0), 1),
        "bare_scan_limit": (lambda: bare(key), 1),
        "fit_seeds_vmapped": (lambda: fit(data, epochs, key, seeds=SEEDS), SEEDS),
        "fit_seeds_sequential": (lambda: [fit(data, epochs, k) for k in keys], SEEDS),
        "fit_checkpoint_every_epoch": (lambda: checkpointed(data, epochs, key, 1), 1),
        "fit_checkpoint_every_5": (lambda: checkpointed(data, epochs, key, 5), 1),
        "fit_streamed_loader": (lambda: streamed(data, epochs, key), 1),
        "fit_small_mlp": (lambda: fit(data, epochs, key, width=32), 1),
        "python_loop_small_mlp": (lambda: small_loop(epochs, 0), 1),
        "seeds_vmapped_small_mlp": (
            lambda: fit(data, epochs, key, seeds=SEEDS, width=32),
            SEEDS,
        ),
        "seeds_sequential_small_mlp": (
            lambda: [fit(data, epochs, k, width=32) for k in keys],
            SEEDS,
        ),
        "max_lr_grid_compiled": (lambda: grid_vmapped(data, epochs, key, LOSS), 8),
        "max_lr_sequential_compiled": (
            lambda: grid_sequential(data, epochs, key, LOSS),
            8,
        ),
    }


RATIO_LABELS = {
    "fit_speedup": "fit vs Python loop, steps/s (target >= 1.3)",
    "fit_speedup_vs_read_loss": "fit vs a loop reading each loss",
    "fit_speedup_small_mlp": "fit vs Python loop, small MLP",
    "fit_vs_limit": "fit time / bare scan time (the limit)",
    "seeds_time": "8 vmapped / 8 sequential, time (target <= 0.6)",
    "seeds_time_small_mlp": "8 vmapped / 8 sequential, time, small MLP",
    "checkpoint_every_epoch": "fit + checkpoint every epoch / fit",
    "checkpoint_every_5": "fit + checkpoint every 5 epochs / fit",
    "streamed": "fit streaming a loader / device-resident fit",
    "grid_time": "8 max_lr grid / 8 sequential, compile incl. (<= 0.6)",
    "grid_time_vs_closures": "8 max_lr grid / 8 recompiling sequential fits",
    "grid_time_small_mlp": "8 max_lr grid / 8 sequential, small MLP",
    "grid_time_compiled": "8 max_lr grid / 8 sequential, compiled",
}


def ratios_of(rows: dict, cold: dict) -> dict[str, float]:
    def ratio(slow: str, fast: str, table=rows) -> float:
        return table[slow]["median_s"] / table[fast]["median_s"]

    return {
        "fit_speedup": ratio("python_loop", "fit"),
        "fit_speedup_vs_read_loss": ratio("python_loop_read_loss", "fit"),
        "fit_speedup_small_mlp": ratio("python_loop_small_mlp", "fit_small_mlp"),
        "fit_vs_limit": ratio("fit", "bare_scan_limit"),
        "seeds_time": ratio("fit_seeds_vmapped", "fit_seeds_sequential"),
        "seeds_time_small_mlp": ratio(
            "seeds_vmapped_small_mlp", "seeds_sequential_small_mlp"
        ),
        "checkpoint_every_epoch": ratio("fit_checkpoint_every_epoch", "fit"),
        "checkpoint_every_5": ratio("fit_checkpoint_every_5", "fit"),
        "streamed": ratio("fit_streamed_loader", "fit"),
        "grid_time": ratio("max_lr_grid_vmapped", "max_lr_sequential", cold),
        "grid_time_vs_closures": ratio(
            "max_lr_grid_vmapped", "max_lr_sequential_closures", cold
        ),
        "grid_time_small_mlp": ratio(
            "max_lr_grid_vmapped_small_mlp", "max_lr_sequential_small_mlp", cold
        ),
        "grid_time_compiled": ratio(
            "max_lr_grid_compiled", "max_lr_sequential_compiled"
        ),
    }


def report(rows: dict, cold: dict, ratios: dict, env: dict, epochs: int, steps: int):
    print(f"digits MLP 64-256-256-10 (small: 64-32-32-10), batch {BATCH}, ")
    print(f"{epochs} epochs = {steps} updates per training; {env['device']}, ")
    print(f"jax {env['jax']}, flax {env['flax']}\n")
    header = f"{'measurement':<28}{'first call s':>13}{'min s':>9}{'median s':>10}"
    print(header + f"{'steps/s':>10}")
    for name, row in rows.items():
        print(
            f"{name:<28}{row['first_call_s']:>13.2f}{row['min_s']:>9.3f}"
            f"{row['median_s']:>10.3f}{row['steps_per_s']:>10.0f}"
        )
    print(f"\ncompile included{'':<12}{'min s':>9}{'median s':>10}{'compiles':>10}")
    for name, row in cold.items():
        print(
            f"{name:<28}{row['min_s']:>9.2f}{row['median_s']:>10.2f}"
            f"{row['epoch_compilations']:>10}"
        )
    print()
    for name, label in RATIO_LABELS.items():
        print(f"{label:<56}{ratios[name]:>6.2f}")
    print()


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    data = load_digits()
    steps = args.epochs * (len(data.y_train) // BATCH)
    cases = warm_cases(data, args.epochs)
    rows = measure_all({name: fn for name, (fn, _) in cases.items()}, args.repeats)
    for name, row in rows.items():
        row["steps_per_s"] = cases[name][1] * steps / row["median_s"]
    cold = measure_cold(cold_cases(data, args.epochs), max(1, args.repeats // 2))
    ratios = ratios_of(rows, cold)
    env = environment()
    report(rows, cold, ratios, env, args.epochs, steps)

    records = []
    for name, row in {**rows, **cold}.items():
        record = {"benchmark": "train", "measurement": name, "steps": steps, **row}
        records.append({**record, **env})
    for name, value in ratios.items():
        records.append({"benchmark": "train", "ratio": name, "value": value, **env})
    for record in records:
        print(json.dumps(record))
    return records


if __name__ == "__main__":
    main()
