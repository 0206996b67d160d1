"""Range-test speed, measured side by side in one run.

Compares, on the same MLP (64-256-256-10 on scikit-learn's digits, batch 128)
and the same number of steps:

  (a) ``clr_jax.range_test``: the whole sweep as one compiled ``lax.scan``;
  (b) the same step in a Python loop, one jitted step per iteration, reading
      the loss to the host every step as a finder loop does;
  (c) a bare ``lax.scan`` training loop at a constant rate: the physical limit;
  (d) torch-lr-finder on the identical PyTorch MLP (when installed);
  (e) 8 sweeps in one ``vmap`` (the built-in ``key=`` batching) against 8
      sequential sweeps, with and without divergence, and 8 bare scans
      vmapped against 8 sequential ones (what batching itself saves here);
  (f) the same 8 sweeps as ``jax.jit(jax.vmap(range_test))`` against the
      built-in batching;

plus (a) and (b) on a tiny model, where per-step overhead is everything.
Targets on a 2-core CPU: (a)/(c) <= 1.05, (b)/(a) >= 1.5 (MLP) and >= 10
(tiny), (d)/(a) >= 3, (e) <= 0.8 (<= 0.5 on a GPU), (f) <= 1.1.

Usage: python benchmarks/range_test.py [--steps 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import itertools
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import clr_jax
from clr_jax.data import batch_indices, load_digits, take

BATCH = 128
START_LR, END_LR = 1e-4, 1.0
# Sweeps that blow up part of the way, at different steps (the usual case).
DIVERGING = dict(end_lr=30.0, diverge_threshold=4.0)


# -- models -------------------------------------------------------------------------


def init_mlp(key, sizes):
    params = []
    keys = jax.random.split(key, len(sizes) - 1)
    for k, (n_in, n_out) in zip(keys, itertools.pairwise(sizes), strict=True):
        w = jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in)
        params.append({"w": w, "b": jnp.zeros(n_out)})
    return params


def mlp_logits(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"][None, :])
    return x @ params[-1]["w"] + params[-1]["b"][None, :]


def mlp_loss(params, batch):
    x, y = batch
    logits = mlp_logits(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def tiny_loss(w, batch):
    x, y = batch
    return 0.5 * jnp.mean((x @ w - y) ** 2)


# -- timing ---------------------------------------------------------------------------


def timed_once(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def time_all(contenders, repeats):
    """Warm-up (compile) each, then ``repeats`` rounds, each timing every
    contender once, so that load from other processes spreads evenly."""
    first = {name: timed_once(fn) for name, fn in contenders.items()}
    runs = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            runs[name].append(timed_once(fn))
    return {
        name: {
            "min_s": min(runs[name]),
            "median_s": statistics.median(runs[name]),
            "compile_s": max(first[name] - min(runs[name]), 0.0),
        }
        for name in contenders
    }


def environment():
    versions = {"jax": jax.__version__, "optax": optax.__version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        pass
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}:{device.device_kind}",
        "cpu_count": __import__("os").cpu_count(),
        "python": platform.python_version(),
        **versions,
    }


# -- the contenders ----------------------------------------------------------------


def clr_sweep(loss_fn, params, data, steps, batch_size=BATCH, **kw):
    args = dict(end_lr=END_LR, diverge_threshold=None) | kw
    return lambda: clr_jax.range_test(
        loss_fn,
        params,
        data,
        batch_size=batch_size,
        start_lr=START_LR,
        num_steps=steps,
        progress=False,
        **args,
    )


def python_loop(loss_fn, params, data, steps, batch_size=BATCH):
    """A finder loop: host batches, one jitted step, loss read back every step."""
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=START_LR)

    @jax.jit
    def step(params, opt_state, batch, lr):
        opt_state.hyperparams["learning_rate"] = lr
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    host_data = jax.tree.map(np.asarray, data)
    idx = np.asarray(
        batch_indices(jax.random.key(0), len(host_data[0]), batch_size, steps)
    )
    lrs = np.geomspace(START_LR, END_LR, steps).astype(np.float32)

    def run():
        p, s = params, opt.init(params)
        ema, best, beta = 0.0, np.inf, 0.98
        for t in range(steps):
            batch = jax.tree.map(lambda a, t=t: a[idx[t]], host_data)
            p, s, loss = step(p, s, batch, lrs[t])
            loss = float(loss)  # to the host, every step
            ema = beta * ema + (1 - beta) * loss
            smoothed = ema / (1 - beta ** (t + 1))
            best = min(best, smoothed)
        return p

    return run


def bare_scan(loss_fn, params, data, steps, batch_size=BATCH, keys=None, many=""):
    """Constant-rate SGD as one ``lax.scan``: no sweep, no smoothing, no checks.

    With a batch of ``keys``, one scan per key: ``many="vmap"`` in one vmapped
    program, ``many="sequential"`` one after another.
    """
    opt = optax.sgd(1e-2)

    def train(params, data, key):
        idx = batch_indices(key, len(data[0]), batch_size, steps)

        def body(carry, i):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, take(data, i))
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(body, (params, opt.init(params)), idx)
        return params, losses

    data = jax.device_put(data)
    if many == "vmap":
        vmapped = jax.jit(jax.vmap(train, in_axes=(None, None, 0)))
        return functools.partial(vmapped, params, data, keys)
    one = jax.jit(train)
    if many == "sequential":
        return lambda: [jax.block_until_ready(one(params, data, k)) for k in keys]
    return functools.partial(one, params, data, jax.random.key(0))


def torch_finder(data, steps):
    """torch-lr-finder on the identical MLP, or None when not installed."""
    try:
        import torch
        from torch_lr_finder import LRFinder
    except ImportError:
        return None
    torch.manual_seed(0)
    x, y = (torch.as_tensor(np.asarray(a)) for a in data)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y.long()),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
    )
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )

    def run():
        opt = torch.optim.SGD(model.parameters(), lr=START_LR)
        finder = LRFinder(model, opt, torch.nn.CrossEntropyLoss(), device="cpu")
        with contextlib.redirect_stdout(io.StringIO()):  # keep our output clean
            finder.range_test(
                loader, end_lr=END_LR, num_iter=steps, step_mode="exp", diverge_th=1e30
            )
        finder.reset()
        return None

    return run


def sequential(fns):
    return lambda: [fn() for fn in fns]


def jit_vmap_sweeps(loss_fn, params, data, steps, keys, **kw):
    """``jax.jit(jax.vmap(range_test))`` over keys: the user's own batching."""

    @jax.jit
    def run(keys):
        return jax.vmap(
            lambda k: clr_sweep(loss_fn, params, data, steps, key=k, **kw)()
        )(keys)

    return lambda: run(keys)


# -- main ---------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sweeps", type=int, default=8)
    args = parser.parse_args(argv)
    steps, repeats, sweeps = args.steps, args.repeats, args.sweeps

    digits = load_digits()
    data = (jnp.asarray(digits.x_train), jnp.asarray(digits.y_train))
    mlp = init_mlp(jax.random.key(0), [64, 256, 256, 10])
    rng = np.random.default_rng(0)
    tx = rng.normal(size=(1024, 8)).astype(np.float32)
    tiny_data = (jnp.asarray(tx), jnp.asarray(tx @ np.ones(8, np.float32)))
    tiny = jnp.zeros(8)
    keys = jax.random.split(jax.random.key(1), sweeps)

    contenders = {
        "a_clr_range_test": clr_sweep(mlp_loss, mlp, data, steps),
        "a_clr_range_test_progress": lambda: clr_jax.range_test(
            mlp_loss,
            mlp,
            data,
            batch_size=BATCH,
            start_lr=START_LR,
            end_lr=END_LR,
            num_steps=steps,
            diverge_threshold=None,
            progress=True,
        ),
        "b_python_loop": python_loop(mlp_loss, mlp, data, steps),
        "c_bare_scan": bare_scan(mlp_loss, mlp, data, steps),
        "d_torch_lr_finder": torch_finder(data, steps),
        "e_vmapped_sweeps": clr_sweep(mlp_loss, mlp, data, steps, key=keys),
        "e_sequential_sweeps": sequential(
            [clr_sweep(mlp_loss, mlp, data, steps, key=k) for k in keys]
        ),
        "e_vmapped_diverging": clr_sweep(
            mlp_loss, mlp, data, steps, key=keys, **DIVERGING
        ),
        "e_sequential_diverging": sequential(
            [clr_sweep(mlp_loss, mlp, data, steps, key=k, **DIVERGING) for k in keys]
        ),
        "e_bare_vmapped_scans": bare_scan(
            mlp_loss, mlp, data, steps, keys=keys, many="vmap"
        ),
        "e_bare_sequential_scans": bare_scan(
            mlp_loss, mlp, data, steps, keys=keys, many="sequential"
        ),
        "f_jit_vmap_sweeps": jit_vmap_sweeps(mlp_loss, mlp, data, steps, keys),
        "tiny_a_clr_range_test": clr_sweep(
            tiny_loss, tiny, tiny_data, steps, batch_size=32
        ),
        "tiny_b_python_loop": python_loop(
            tiny_loss, tiny, tiny_data, steps, batch_size=32
        ),
    }
    env = environment()
    for name in [n for n, fn in contenders.items() if fn is None]:
        print(f"# {name}: skipped (pip install torch torch-lr-finder to run it)")
        del contenders[name]
    results = time_all(contenders, repeats)
    for name in results:
        record = {
            "name": name,
            "steps": steps,
            "repeats": repeats,
            **results[name],
            **env,
        }
        print(json.dumps(record))

    ratios = [
        ("(a)/(c) clr / bare scan", "a_clr_range_test", "c_bare_scan", "<= 1.05"),
        (
            "(b)/(a) python loop / clr, MLP",
            "b_python_loop",
            "a_clr_range_test",
            ">= 1.5",
        ),
        (
            "(b)/(a) python loop / clr, tiny",
            "tiny_b_python_loop",
            "tiny_a_clr_range_test",
            ">= 10",
        ),
        (
            "(d)/(a) torch-lr-finder / clr",
            "d_torch_lr_finder",
            "a_clr_range_test",
            ">= 3",
        ),
        (
            f"(e) {sweeps} vmapped / {sweeps} sequential",
            "e_vmapped_sweeps",
            "e_sequential_sweeps",
            "<= 0.8",
        ),
        (
            f"(e) {sweeps} vmapped / sequential, diverging",
            "e_vmapped_diverging",
            "e_sequential_diverging",
            "<= 0.8",
        ),
        (
            "(e) limit: bare scans, vmapped / seq.",
            "e_bare_vmapped_scans",
            "e_bare_sequential_scans",
            "-",
        ),
        (
            "(f) jit(vmap(range_test)) / key= batching",
            "f_jit_vmap_sweeps",
            "e_vmapped_sweeps",
            "<= 1.1",
        ),
        ("progress bar / no bar", "a_clr_range_test_progress", "a_clr_range_test", "-"),
    ]
    print()
    print(
        f"device {env['device']}, {env['cpu_count']} CPUs, jax {env['jax']}, "
        f"{steps} steps, min/median of {repeats}"
    )
    print(f"{'measurement':<34}{'min ms':>10}{'median ms':>11}{'compile s':>11}")
    for name, r in results.items():
        print(
            f"{name:<34}{1e3 * r['min_s']:>10.1f}{1e3 * r['median_s']:>11.1f}"
            f"{r['compile_s']:>11.2f}"
        )
    print()
    print(f"{'ratio':<42}{'min':>8}{'median':>8}  target")
    for label, num, den, target in ratios:
        if num in results and den in results:
            by_min = results[num]["min_s"] / results[den]["min_s"]
            by_median = results[num]["median_s"] / results[den]["median_s"]
            print(f"{label:<42}{by_min:>8.2f}{by_median:>8.2f}  {target}")
            record = {"ratio": label, "min": by_min, "median": by_median}
            print(json.dumps({**record, "target": target, **env}))


if __name__ == "__main__":
    main()
