"""``fit`` on (data, model) meshes of 8 forced CPU devices: model-sharded
parameters and optimizer state stay sharded, only the batch is split."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.helpers import run_with_host_devices

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import flax.linen as nn
    import jax, numpy as np, optax
    from jax.sharding import PartitionSpec as P
    import clr_jax
    from clr_jax import flax as clr_flax

    assert jax.device_count() == 8

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            hidden = nn.Dense(32)(x)  # Dense_0, then the head Dense_1
            return nn.Dense(10)(nn.relu(hidden))

    # Tensor parallel: the hidden layer's columns and the head's rows.
    SPECS = {
        "Dense_0": {"kernel": P(None, "model"), "bias": P("model")},
        "Dense_1": {"kernel": P("model", None), "bias": P()},
    }
    data = clr_jax.data.load_digits()
    data = data._replace(x_train=data.x_train[:512], y_train=data.y_train[:512])

    def train(**kwargs):
        return clr_flax.fit(
            MLP(), data, epochs=2, batch_size=64, key=jax.random.key(0),
            learning_rate=clr_jax.triangular(0.02, 0.2, step_size=4), momentum=0.9,
            progress=False, **kwargs)

    def shard_shapes(tree):
        out = {}
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            shapes = {tuple(s.data.shape) for s in leaf.addressable_shards}
            out[jax.tree_util.keystr(path)] = {
                "global": list(leaf.shape), "shard": [list(s) for s in shapes],
                "devices": len(leaf.addressable_shards),
                "spec": str(leaf.sharding.spec)}
        return out

    single = train()
    report = {"single_loss": single.history.loss.tolist()}
    for shape in [(2, 4), (4, 2)]:
        mesh = jax.make_mesh(shape, ("data", "model"))
        result = train(mesh=mesh, param_sharding=SPECS)
        trace = result.state.opt_state.inner_state[0].trace
        report[str(shape)] = {
            "params": shard_shapes(result.state.params),
            "momentum": shard_shapes(trace),
            "loss": result.history.loss.tolist(),
            "test_accuracy": result.history.test_accuracy.tolist(),
            "single_test_accuracy": single.history.test_accuracy.tolist(),
        }
    json.dump(report, open(sys.argv[1], "w"))
    """
)


def test_model_sharded_leaves_stay_sharded_after_fit(tmp_path):
    out = tmp_path / "shards.json"
    proc = run_with_host_devices(SCRIPT, 8, str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for shape in ("(2, 4)", "(4, 2)"):
        model = int(shape.strip("()").split(", ")[1])
        run = report[shape]
        for tree in ("params", "momentum"):
            leaves = run[tree]
            hidden = leaves["['Dense_0']['kernel']"]
            assert hidden["global"] == [64, 32]
            assert hidden["shard"] == [[64, 32 // model]]
            assert hidden["devices"] == 8
            assert leaves["['Dense_0']['bias']"]["shard"] == [[32 // model]]
            assert leaves["['Dense_1']['kernel']"]["shard"] == [[32 // model, 10]]
            assert leaves["['Dense_1']['bias']"]["shard"] == [[10]]  # replicated
        # Only the batch is split: the curve is the single-device one.
        assert len(run["loss"]) == 16
        for a, b in zip(run["loss"], report["single_loss"], strict=True):
            assert abs(a - b) <= 1e-4 * abs(b) + 1e-5
        for a, b in zip(run["test_accuracy"], run["single_test_accuracy"], strict=True):
            assert abs(a - b) <= 1e-6
