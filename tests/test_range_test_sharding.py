"""Shardings kept on 8 forced CPU devices, and two processes with jax.distributed."""

import json
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import clr_jax
from tests.helpers import host_devices_env, run_with_host_devices

PROBLEM = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    def loss_fn(params, batch):
        h = jnp.tanh(batch["x"] @ params["w1"])
        return jnp.mean((h @ params["w2"] - batch["y"]) ** 2)
    rng = np.random.default_rng(0)
    PARAMS = {"w1": (0.3 * rng.normal(size=(8, 16))).astype(np.float32),
              "w2": (0.3 * rng.normal(size=(16,))).astype(np.float32)}
    X = rng.normal(size=(512, 8)).astype(np.float32)
    DATA = {"x": X, "y": np.sin(X.sum(-1))}
    KW = dict(batch_size=64, start_lr=1e-3, end_lr=100.0, num_steps=30,
              progress=False)
    """
)

MESHES = PROBLEM + textwrap.dedent(
    """
    import functools, json, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import clr_jax
    assert len(jax.devices()) == 8, jax.devices()
    KW["optimizer"] = functools.partial(optax.sgd, momentum=0.9)
    SPEC = {"w1": P(None, "model"), "w2": P("model")}
    single = clr_jax.range_test(loss_fn, PARAMS, DATA, **KW)
    report = {"single": np.nan_to_num(single.losses, nan=-1.0).tolist()}

    def shard_shapes(leaf):
        return sorted({tuple(s.data.shape) for s in leaf.addressable_shards})

    for shape in [(2, 4), (4, 2)]:
        mesh = Mesh(np.array(jax.devices()).reshape(shape), ("data", "model"))
        placed = jax.device_put(
            PARAMS, {k: NamedSharding(mesh, s) for k, s in SPEC.items()})
        kept = clr_jax.range_test(loss_fn, placed, DATA, mesh=mesh, **KW)
        asked = clr_jax.range_test(loss_fn, PARAMS, DATA, mesh=mesh,
                                   param_sharding=SPEC, **KW)
        for name, res in [("kept", kept), ("asked", asked)]:
            params = res.final_state.params
            trace = res.final_state.opt_state.inner_state[0].trace
            report[f"{shape}-{name}"] = {
                "losses": np.nan_to_num(res.losses, nan=-1.0).tolist(),
                "w1": shard_shapes(params["w1"]), "w2": shard_shapes(params["w2"]),
                "trace.w1": shard_shapes(trace["w1"]),
                "spec": list(params["w1"].sharding.spec),
            }
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    idx = np.asarray(clr_jax.data.batch_indices(jax.random.key(0), 512, 64, 30))
    loader = ({"x": X[i], "y": DATA["y"][i]} for i in idx)
    fed = clr_jax.range_test(loss_fn, PARAMS, loader, mesh=mesh, chunk_size=10,
                             **KW)
    report["loader"] = np.nan_to_num(fed.losses, nan=-1.0).tolist()
    try:
        clr_jax.range_test(loss_fn, PARAMS, DATA, mesh=mesh,
                           **(KW | {"batch_size": 65}))
    except ValueError as err:
        report["indivisible"] = str(err)
    print("REPORT" + json.dumps(report))
    """
)


def _report(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT"))
    return json.loads(line[len("REPORT") :])


def test_model_sharded_params_stay_sharded_on_2x4_and_4x2_meshes():
    report = _report(run_with_host_devices(MESHES, 8, timeout=120))
    single = np.array(report["single"])
    for data_size, model_size in [(2, 4), (4, 2)]:
        for how in ("kept", "asked"):
            got = report[f"({data_size}, {model_size})-{how}"]
            # each device holds 1/|model| of every model-sharded leaf
            assert got["w1"] == [[8, 16 // model_size]], got
            assert got["trace.w1"] == [[8, 16 // model_size]], got  # momentum
            assert got["w2"] == [[16 // model_size]], got
            assert got["spec"] == [None, "model"]
            np.testing.assert_allclose(got["losses"], single, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(report["loader"], single, rtol=1e-4, atol=1e-6)
    assert "`batch_size` must be a multiple of the 2 devices" in report["indivisible"]


WORKER = PROBLEM + textwrap.dedent(
    """
    import sys, json
    pid, port = int(sys.argv[1]), sys.argv[2]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=2, process_id=pid)
    from jax.sharding import Mesh
    import clr_jax
    assert jax.process_count() == 2 and jax.device_count() == 4
    mesh = Mesh(np.array(jax.devices()), ("data",))  # the global mesh
    whole = clr_jax.range_test(loss_fn, PARAMS, DATA, mesh=mesh, **KW)
    # A loader yields this process's half of every global batch.
    idx = np.asarray(clr_jax.data.batch_indices(jax.random.key(0), 512, 64, 30))
    mine = slice(32 * pid, 32 * pid + 32)
    local = ({"x": X[i][mine], "y": DATA["y"][i][mine]} for i in idx)
    fed = clr_jax.range_test(loss_fn, PARAMS, local, mesh=mesh, chunk_size=10, **KW)
    print("REPORT" + json.dumps({
        "whole": np.nan_to_num(whole.losses, nan=-1.0).tolist(),
        "fed": np.nan_to_num(fed.losses, nan=-1.0).tolist(),
    }))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_jax_distributed_match_one_device():
    if not hasattr(jax.config, "jax_cpu_collectives_implementation"):
        pytest.skip("this jax has no CPU collectives for several processes")
    port = str(_free_port())
    env = host_devices_env(2)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(pid), port],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    namespace = {}
    exec(PROBLEM, namespace)  # the same problem on this process's one device
    single = clr_jax.range_test(
        namespace["loss_fn"], namespace["PARAMS"], namespace["DATA"], **namespace["KW"]
    )
    expected = np.nan_to_num(single.losses, nan=-1.0)
    for proc, (stdout, stderr) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
        line = next(x for x in stdout.splitlines() if x.startswith("REPORT"))
        report = json.loads(line[len("REPORT") :])
        np.testing.assert_allclose(report["whole"], expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(report["fed"], expected, rtol=1e-4, atol=1e-6)
