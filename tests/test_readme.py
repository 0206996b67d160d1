"""The README's Python examples run, in order, as written.

Blocks that use a reader's own model and loss (``loss_fn``, ``params``,
``model``, ...) get them from a small digits prelude.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

PRELUDE = """
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import clr_jax

_digits = clr_jax.data.load_digits()
x_train, y_train = jnp.asarray(_digits.x_train), jnp.asarray(_digits.y_train)


class _Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(64)(x)))


model = _Mlp()
params = model.init(jax.random.key(0), x_train[:1])


def loss_fn(params, batch):
    x, y = batch
    logits = model.apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def accuracy(params, batch):
    x, y = batch
    return jnp.mean(jnp.argmax(model.apply(params, x), -1) == y)
"""


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write plots and JSON
    blocks = _python_blocks()
    assert len(blocks) >= 4
    namespace: dict = {}
    exec(PRELUDE, namespace)
    for block in blocks:
        exec(block, namespace)
    lo, hi = namespace["base_lr"], namespace["max_lr"]
    assert 0 < lo < hi
    assert (tmp_path / "lr_find.png").exists()
    assert namespace["result"].history.test_accuracy.shape == (5, 48)
