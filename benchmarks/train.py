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
  (d) 8 sequential ``fit`` calls with the same 8 keys.

Compilation is timed apart (the first call); runs are timed after it, with
``block_until_ready``, min and median over repeats. Targets on a 2-core
CPU: (a) >= 1.3x the steps/s of (b); (c) <= 0.6x the time of (d).

Usage: python benchmarks/train.py [--epochs 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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

BATCH = 128
SEEDS = 8
SCHEDULE = clr_jax.triangular(0.01, 0.1, step_size=40)
MOMENTUM = clr_jax.cyclical_momentum(0.8, 0.95, step_size=40)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(256)(x))
        x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(10)(x)


# -- the two loops ----------------------------------------------------------------


def fit(data, epochs: int, key, seeds: int | None = None):
    return clr_flax.fit(
        MLP(),
        data,
        epochs=epochs,
        batch_size=BATCH,
        key=key,
        optimizer=optax.sgd,
        learning_rate=SCHEDULE,
        momentum=MOMENTUM,
        seeds=seeds,
        progress=False,
    )


def make_python_loop(data):
    """A hand-written loop: ``run(epochs, seed) -> (state, per-step logs)``."""
    tx = clr_jax.with_schedules(optax.sgd, learning_rate=SCHEDULE, momentum=MOMENTUM)
    model = MLP()
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
                logs.append(log)
            evals.append(evaluate(state))
        return state, logs, evals

    return run


# -- timing -----------------------------------------------------------------------


def timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def measure(fn, repeats: int) -> dict:
    compile_s = timed(fn)  # first call: tracing and compilation included
    timed(fn)  # warm-up
    runs = [timed(fn) for _ in range(repeats)]
    return {
        "first_call_s": compile_s,
        "min_s": min(runs),
        "median_s": statistics.median(runs),
        "repeats": repeats,
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


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    data = load_digits()
    steps = args.epochs * (len(data.y_train) // BATCH)
    key = jax.random.key(0)
    loop = make_python_loop(data)
    keys = jax.random.split(key, SEEDS)

    rows = {
        "fit": measure(lambda: fit(data, args.epochs, key), args.repeats),
        "python_loop": measure(lambda: loop(args.epochs, 0), args.repeats),
        "fit_seeds_vmapped": measure(
            lambda: fit(data, args.epochs, key, seeds=SEEDS), args.repeats
        ),
        "fit_seeds_sequential": measure(
            lambda: [fit(data, args.epochs, k) for k in keys], args.repeats
        ),
    }
    runs = {"fit": 1, "python_loop": 1, "fit_seeds_vmapped": SEEDS}
    runs["fit_seeds_sequential"] = SEEDS
    for name, row in rows.items():
        row["steps_per_s"] = runs[name] * steps / row["median_s"]

    speedup = rows["python_loop"]["median_s"] / rows["fit"]["median_s"]
    seed_ratio = (
        rows["fit_seeds_vmapped"]["median_s"] / rows["fit_seeds_sequential"]["median_s"]
    )
    env = environment()
    print(f"digits MLP 64-256-256-10, batch {BATCH}, {args.epochs} epochs = {steps}")
    print(f"updates per run; {env['device']}, jax {env['jax']}, flax {env['flax']}\n")
    header = f"{'measurement':<22}{'first call s':>13}{'min s':>9}{'median s':>10}"
    print(header + f"{'steps/s':>11}")
    for name, row in rows.items():
        print(
            f"{name:<22}{row['first_call_s']:>13.2f}{row['min_s']:>9.3f}"
            f"{row['median_s']:>10.3f}{row['steps_per_s']:>11.0f}"
        )
    print(f"\nfit vs Python loop (steps/s):   {speedup:.2f}x   (target >= 1.3)")
    print(f"8 vmapped / 8 sequential (time): {seed_ratio:.2f}    (target <= 0.6)\n")

    records = []
    for name, row in rows.items():
        record = {"benchmark": "train", "measurement": name, "steps": steps, **row}
        records.append({**record, **env})
    records.append({"benchmark": "train", "ratio": "fit_speedup", "value": speedup})
    records.append({"benchmark": "train", "ratio": "seeds_time", "value": seed_ratio})
    for record in records:
        print(json.dumps(record))
    return records


if __name__ == "__main__":
    main()
