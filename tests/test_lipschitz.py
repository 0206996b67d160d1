"""Tests of the Lipschitz adaptive learning rate (Yedida & Saha 2019).

References are float64 NumPy computations written from the formulas in the
paper (and, for MAE and the MSE norms, the derived forms documented in
``clr_jax/lipschitz.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import clr_jax
from clr_jax import lipschitz
from tests.helpers import TraceCounter

# ---------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------


def ref_constant(
    k_z, loss, m, k=None, lam=0.0, wmax=0.0, out_norm=None, y_norm=None
) -> float:
    k_z, m = float(k_z), float(m)
    slope = {
        "softmax_ce": lambda: (k - 1) / (k * m),
        "binary_ce": lambda: 1 / (2 * m),
        "mse": lambda: (out_norm + y_norm) / m,
        "mae": lambda: 1 / m,
    }[loss]()
    return slope * k_z + lam * wmax


def ref_chunk_norms(fn, params, x, batch_size) -> np.ndarray:
    """Frobenius norm of ``fn`` on every consecutive chunk, the partial one too."""
    norms = []
    for start in range(0, len(x), batch_size):
        out = np.asarray(fn(params, x[start : start + batch_size]), np.float64)
        norms.append(np.linalg.norm(out.ravel()))
    return np.array(norms)


def mlp_features(params, x):
    """A ReLU layer with a bias: zero input rows give non-zero features."""
    return jax.nn.relu(x @ params["w"] + params["b"][None, :])


def make_mlp(key, d_in=5, d_out=7):
    kw, kb = jax.random.split(key)
    return {
        "w": jax.random.normal(kw, (d_in, d_out)),
        "b": jax.random.uniform(kb, (d_out,), minval=0.5, maxval=1.5),
    }


# ---------------------------------------------------------------------------
# Formulas: the paper's anchors and the NumPy reference
# ---------------------------------------------------------------------------


def test_resnet20_fixed_anchor():
    # Paper, CIFAR-10 ResNet20 "Fixed": K_z = 206.695, max||w|| = 43.257,
    # k = 10, m = 128, lambda = 1e-3 -> LR 0.668.
    kwargs = dict(loss="softmax_ce", batch_size=128, num_classes=10)
    kwargs.update(weight_decay=1e-3, max_weight_norm=43.257)
    lr = float(clr_jax.lipschitz_lr(206.695, **kwargs))
    assert round(lr, 3) == 0.668
    np.testing.assert_allclose(lr, 0.6682, atol=5e-5)
    k = float(clr_jax.lipschitz_constant(206.695, **kwargs))
    np.testing.assert_allclose(k, 9 / 1280 * 206.695 + 1e-3 * 43.257, rtol=1e-6)


def test_mnist_anchor():
    # Logged MNIST epoch-1 LR 2.62 with K_z ~ 108.4, B = 256, no L2 term.
    lr = float(
        clr_jax.lipschitz_lr(108.4, loss="softmax_ce", batch_size=256, num_classes=10)
    )
    assert abs(lr - 2.62) < 0.01


@pytest.mark.parametrize("loss", lipschitz.LOSSES)
def test_constant_matches_numpy(loss):
    rng = np.random.default_rng(0)
    for _ in range(20):
        k_z, wmax = rng.uniform(0, 500, 2)
        m = int(rng.integers(1, 1024))
        lam = float(rng.choice([0.0, 1e-4, 1e-3, 0.1]))
        kwargs = dict(weight_decay=lam, max_weight_norm=wmax)
        ref_kwargs = dict(lam=lam, wmax=wmax)
        if loss == "softmax_ce":
            k = int(rng.integers(2, 1000))
            kwargs["num_classes"] = ref_kwargs["k"] = k
        if loss == "mse":
            a, y = rng.uniform(0, 50, 2)
            kwargs.update(output_norm=a, target_norm=y)
            ref_kwargs.update(out_norm=a, y_norm=y)
        got = clr_jax.lipschitz_constant(k_z, loss=loss, batch_size=m, **kwargs)
        want = ref_constant(k_z, loss, m, **ref_kwargs)
        np.testing.assert_allclose(float(got), want, rtol=1e-6)
        lr = clr_jax.lipschitz_lr(k_z, loss=loss, batch_size=m, **kwargs)
        np.testing.assert_allclose(float(lr), 1 / want, rtol=1e-6)
        assert got.dtype == jnp.float32 and got.shape == ()


def test_mse_uses_plus_sign():
    # v1-v3 printed K_a - ||y||; the paper's final version (and the triangle
    # inequality) has K_a + ||y||.
    k = clr_jax.lipschitz_constant(
        10.0, loss="mse", batch_size=5, output_norm=1.0, target_norm=3.0
    )
    assert float(k) == pytest.approx(8.0)


def test_classical_softmax_regression_full_batch():
    # Classical softmax regression: no hidden layer, a^[0] = X, so K_z is the
    # Frobenius norm of the whole training set and m = N.
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 16, (300, 64)).astype(np.float32)
    n, k = len(x), 10
    k_z = clr_jax.penultimate_norm(lambda _, xb: xb, None, x, batch_size=n)
    np.testing.assert_allclose(
        float(k_z), np.linalg.norm(x.astype(np.float64)), rtol=1e-6
    )
    lr = clr_jax.lipschitz_lr(k_z, loss="softmax_ce", batch_size=n, num_classes=k)
    want = k * n / ((k - 1) * np.linalg.norm(x.astype(np.float64)))
    np.testing.assert_allclose(float(lr), want, rtol=1e-6)


# ---------------------------------------------------------------------------
# Is K a bound on the true gradient?
# ---------------------------------------------------------------------------


def _regression_setup(n=96, batch_size=32, d_in=6, d=8, seed=0):
    key_x, key_y, key_h = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(key_x, (n, d_in))
    hidden = {"w": jax.random.normal(key_h, (d_in, d)), "b": jnp.full((d,), 0.3)}
    y = jax.random.normal(key_y, (n, 1)) * 3.0
    feats = mlp_features(hidden, x)  # the penultimate activations A
    return x, y, hidden, feats, batch_size


def _chunk_mse(w, a_b, y_b):
    """Mean-squared-error loss of one chunk, E = 1/(2m) sum (a w - y)^2."""
    return 0.5 * jnp.mean(jnp.square(a_b @ w - y_b))


def _weight_grid(d, radius, key, count=64):
    """Weights inside the ball ||w|| <= radius: random directions and radii,
    plus the top right-singular directions, where ||A w|| is largest."""
    dirs = jax.random.normal(key, (count, d, 1))
    dirs = dirs / jnp.linalg.norm(dirs, axis=(1, 2), keepdims=True)
    radii = jnp.linspace(0.0, radius, count).reshape(count, 1, 1)
    return dirs * radii


def test_mse_bound_holds_on_every_full_chunk():
    """The paper's MSE constant (K_a + ||y||) K_z / m bounds the true gradient.

    For a linear output a = A w, the chunk gradient is A_b^T (A_b w - y_b)/m
    and ||A^T r|| <= ||A||_2 ||r|| <= ||A||_F (||A w|| + ||y||), so with
    K_z = max_b ||A_b||_F, K_a = max over the weights considered and chunks
    of ||A_b w||, and ||y|| = max_b ||y_b|| the bound is rigorous. We check
    it with jax.grad on a grid of weights inside ||w|| <= R, both as a
    gradient bound and as a Lipschitz bound on the loss differences.
    """
    x, y, hidden, feats, bs = _regression_setup()
    n, d = feats.shape
    radius = 2.0
    grid = _weight_grid(d, radius, jax.random.key(3))
    _, _, vt = np.linalg.svd(np.asarray(feats[:bs]), full_matrices=False)
    grid = jnp.concatenate([grid, radius * jnp.asarray(vt[:2]).reshape(2, d, 1)])

    k_z = clr_jax.penultimate_norm(mlp_features, hidden, x, batch_size=bs)

    def predict(params, xb):
        return mlp_features(params["hidden"], xb) @ params["w"]

    # K_a over the weights considered: the estimator vmapped over the grid.
    norms = jax.vmap(
        lambda w: clr_jax.output_target_norms(
            predict, {"hidden": hidden, "w": w}, x, y, batch_size=bs
        )
    )(grid)
    k_a = float(jnp.max(norms.output_norm))
    y_norm = float(norms.target_norm[0])
    bound = float(
        clr_jax.lipschitz_constant(
            k_z, loss="mse", batch_size=bs, output_norm=k_a, target_norm=y_norm
        )
    )

    chunks = [(feats[s : s + bs], y[s : s + bs]) for s in range(0, n, bs)]
    grad = jax.jit(jax.vmap(jax.grad(_chunk_mse), in_axes=(0, None, None)))
    worst = 0.0
    for a_b, y_b in chunks:
        assert len(a_b) == bs
        g = grad(grid, a_b, y_b)
        worst = max(worst, float(jnp.max(jnp.linalg.norm(g, axis=(1, 2)))))
        # Lipschitz in the loss-value sense too, on pairs of grid points.
        losses = jax.vmap(_chunk_mse, in_axes=(0, None, None))(grid, a_b, y_b)
        dl = np.abs(np.subtract.outer(np.asarray(losses), np.asarray(losses)))
        dw = np.linalg.norm(
            np.asarray(grid)[:, None] - np.asarray(grid)[None], axis=(2, 3)
        )
        assert np.all(dl <= bound * dw + 1e-5)
    assert 0.0 < worst <= bound
    # The bound is not vacuous here: within a factor of 20 of the worst case.
    assert worst > bound / 20

    # Pointwise too: at each weight, K_a measured at that weight bounds the
    # gradient on each chunk (what a per-epoch estimate uses).
    k_w = clr_jax.lipschitz_constant(
        k_z,
        loss="mse",
        batch_size=bs,
        output_norm=norms.output_norm,
        target_norm=norms.target_norm,
    )
    for a_b, y_b in chunks:
        g = jnp.linalg.norm(grad(grid, a_b, y_b), axis=(1, 2))
        assert bool(jnp.all(g <= k_w))


def test_mse_bound_can_fail_for_a_partial_chunk_averaged_over_its_own_size():
    """Found while testing: m = B does not bound a short last chunk's mean loss.

    The last partial chunk (m' < B rows) averages over m', so its gradient
    can be B/m' times the bound computed with m = B. Here one large last row
    after two chunks of small rows gives exactly B times the bound. (The
    paper's practical algorithm divides by B whatever the chunk; this is
    only a caveat about reading K as a bound for a short final batch.)
    """
    bs, d = 32, 4
    a = jnp.arange(1.0, d + 1.0)
    feats = jnp.concatenate([jnp.tile(0.1 * a, (2 * bs, 1)), a[None]])
    y = jnp.zeros((2 * bs + 1, 1))
    w = jnp.ones((d, 1))
    ident = lambda _, xb: xb  # noqa: E731
    k_z = clr_jax.penultimate_norm(ident, None, feats, batch_size=bs)
    norms = clr_jax.output_target_norms(
        lambda w_, xb: xb @ w_, w, feats, y, batch_size=bs
    )
    bound = float(
        clr_jax.lipschitz_constant(k_z, loss="mse", batch_size=bs, **norms._asdict())
    )
    g_last = float(jnp.linalg.norm(jax.grad(_chunk_mse)(w, feats[-1:], y[-1:])))
    np.testing.assert_allclose(g_last / bound, bs, rtol=1e-5)
    # Averaged over B (as the formula assumes) it is within the bound.
    assert g_last / bs <= bound * (1 + 1e-6)


def test_softmax_constant_is_the_papers_value_not_a_worst_case_bound():
    """Documents A4 of the design note: (k-1)/(k m) K_z is not a sup bound.

    In the paper's own "limiting case" (uniform predictions, all labels the
    same class) with identical feature rows, the true last-layer gradient is
    sqrt(m k / (k - 1)) times the paper's constant.
    """
    m, k = 16, 10
    a_row = jnp.array([1.0, 2.0, 2.0])
    feats = jnp.tile(a_row, (m, 1))
    labels = jax.nn.one_hot(jnp.zeros(m, jnp.int32), k)

    def loss(w):
        logp = jax.nn.log_softmax(feats @ w)
        return -jnp.mean(jnp.sum(labels * logp, axis=-1))

    g = float(jnp.linalg.norm(jax.grad(loss)(jnp.zeros((3, k)))))
    k_z = clr_jax.penultimate_norm(lambda _, xb: xb, None, feats, batch_size=m)
    paper = float(
        clr_jax.lipschitz_constant(k_z, loss="softmax_ce", batch_size=m, num_classes=k)
    )
    np.testing.assert_allclose(g / paper, np.sqrt(m * k / (k - 1)), rtol=1e-5)


# ---------------------------------------------------------------------------
# Transformations
# ---------------------------------------------------------------------------


def test_jit_and_vmap():
    k_z = jnp.linspace(1.0, 300.0, 7)
    wmax = jnp.linspace(0.0, 50.0, 7)
    lr_fn = functools.partial(
        clr_jax.lipschitz_lr, loss="softmax_ce", batch_size=128, num_classes=10
    )
    batched = jax.jit(
        jax.vmap(lambda kz, w: lr_fn(kz, max_weight_norm=w, weight_decay=1e-3))
    )
    got = np.asarray(batched(k_z, wmax))
    want = [
        1 / ref_constant(a, "softmax_ce", 128, 10, 1e-3, b)
        for a, b in zip(k_z, wmax, strict=True)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6)

    # Everything numeric may be traced at once, including m and k.
    @jax.jit
    def all_traced(kz, m, k, lam, w):
        return clr_jax.lipschitz_constant(
            kz,
            loss="softmax_ce",
            batch_size=m,
            num_classes=k,
            weight_decay=lam,
            max_weight_norm=w,
        )

    got = all_traced(100.0, jnp.float32(64), jnp.int32(5), 1e-2, 3.0)
    np.testing.assert_allclose(
        float(got), ref_constant(100, "softmax_ce", 64, 5, 1e-2, 3.0), rtol=1e-6
    )

    mse = jax.vmap(
        lambda a, y: clr_jax.lipschitz_lr(
            10.0, loss="mse", batch_size=4, output_norm=a, target_norm=y
        )
    )
    np.testing.assert_allclose(
        np.asarray(mse(jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]))),
        [0.1, 4 / 60],
        rtol=1e-6,
    )
    # Same-shaped array arguments broadcast without rank promotion.
    assert clr_jax.lipschitz_lr(k_z, loss="mae", batch_size=2.0).shape == (7,)


def test_estimators_compose_with_an_outer_jit():
    key = jax.random.key(0)
    params = make_mlp(key)
    x = jax.random.normal(key, (50, 5))

    @jax.jit
    def epoch_lr(params, x):
        k_z = clr_jax.penultimate_norm(mlp_features, params, x, batch_size=16)
        wmax = clr_jax.max_weight_norm(params)
        return clr_jax.lipschitz_lr(
            k_z,
            loss="softmax_ce",
            batch_size=16,
            num_classes=3,
            weight_decay=1e-3,
            max_weight_norm=wmax,
        )

    k_z = ref_chunk_norms(mlp_features, params, np.asarray(x), 16).max()
    wmax = max(np.linalg.norm(np.asarray(p).ravel()) for p in params.values())
    want = 1 / ref_constant(k_z, "softmax_ce", 16, 3, 1e-3, wmax)
    np.testing.assert_allclose(float(epoch_lr(params, x)), want, rtol=1e-5)


# ---------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "batch_size"), [(103, 16), (96, 16), (5, 1), (7, 7), (7, 50), (1, 4)]
)
def test_penultimate_norm_equals_python_loop(n, batch_size):
    params = make_mlp(jax.random.key(n))
    x = np.array(jax.random.normal(jax.random.key(batch_size), (n, 5)))
    x[-1] *= 5.0  # make the last (possibly partial) chunk the largest
    got = clr_jax.penultimate_norm(mlp_features, params, x, batch_size=batch_size)
    norms = ref_chunk_norms(mlp_features, params, x, batch_size)
    assert len(norms) == -(-n // batch_size)
    np.testing.assert_allclose(float(got), norms.max(), rtol=1e-5)
    assert got.shape == () and got.dtype == jnp.float32


def test_penultimate_norm_counts_the_partial_chunk_exactly():
    """Rows beyond the data must not count, whatever ``feature_fn`` maps them to.

    features = x + 1 maps a zero row to ones, so zero-padding the last chunk
    without masking would add rows of ones; reading the last chunk as an
    overlapping window without masking would count chunk 0's rows again.
    Both give sqrt(32 d) here; the right answer is chunk 0's sqrt(31 d).
    """
    d = 3
    x = np.zeros((33, d), np.float32)
    x[0] = -1.0  # chunk 0: one row of zero features, 31 rows of ones
    got = clr_jax.penultimate_norm(lambda _, xb: xb + 1.0, None, x, batch_size=32)
    np.testing.assert_allclose(float(got), np.sqrt(31 * d), rtol=1e-6)


def test_penultimate_norm_pytree_data_and_features():
    def fn(params, batch):
        h = batch["x"] * params
        return {"h": h, "t": batch["t"][:, None, None] * h}

    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(11, 2, 3)), "t": rng.normal(size=(11,))}
    got = clr_jax.penultimate_norm(fn, 2.0, data, batch_size=4)
    want = []
    for s in range(0, 11, 4):
        out = fn(2.0, {k: v[s : s + 4] for k, v in data.items()})
        want.append(np.sqrt(sum(np.sum(np.square(o)) for o in out.values())))
    np.testing.assert_allclose(float(got), max(want), rtol=1e-5)


def test_output_target_norms_equals_python_loop():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(37, 4)).astype(np.float32)
    y = rng.normal(size=(37,)).astype(np.float32)
    w = rng.normal(size=(4,)).astype(np.float32)

    def predict(w, xb):
        return xb @ w

    got = clr_jax.output_target_norms(predict, w, x, y, batch_size=10)
    assert isinstance(got, clr_jax.OutputTargetNorms)
    np.testing.assert_allclose(
        float(got.output_norm), ref_chunk_norms(predict, w, x, 10).max(), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(got.target_norm),
        ref_chunk_norms(lambda _, yb: yb, None, y, 10).max(),
        rtol=1e-5,
    )


def test_estimator_is_compiled_once_per_function_and_shape():
    features = TraceCounter(lambda params, x: jnp.tanh(x * params))

    x = np.linspace(-1, 1, 60, dtype=np.float32).reshape(20, 3)
    first = clr_jax.penultimate_norm(features, jnp.float32(1), x, batch_size=8)
    for scale in (2.0, 3.0, 0.5):  # new params and data, same shapes
        clr_jax.penultimate_norm(features, jnp.float32(scale), x * scale, batch_size=8)
    assert features.count == 1
    assert float(first) > 0
    clr_jax.penultimate_norm(features, 1.0, x, batch_size=4)  # a new chunk size
    assert features.count == 2
    clr_jax.max_weight_norm({"a": x})
    clr_jax.max_weight_norm({"a": 2 * x})
    assert lipschitz.max_weight_norm._cache_size() == 1


def test_max_weight_norm_is_the_largest_leaf_norm():
    rng = np.random.default_rng(3)
    tree = {
        "params": {
            "dense": {"kernel": rng.normal(size=(6, 4)), "bias": rng.normal(size=(4,))},
            "bn": {"scale": np.ones(4), "bias": np.zeros(4)},
        },
        "batch_stats": {
            "bn": {"mean": 5 * rng.normal(size=(4,)), "var": np.full(4, 30.0)}
        },
    }
    want = max(np.linalg.norm(leaf.ravel()) for leaf in jax.tree.leaves(tree))
    np.testing.assert_allclose(float(clr_jax.max_weight_norm(tree)), want, rtol=1e-6)
    assert want == pytest.approx(60.0)  # the running variance dominates here
    # Not the global norm.
    global_norm = np.sqrt(sum(np.sum(leaf**2) for leaf in jax.tree.leaves(tree)))
    assert want < global_norm
    assert float(clr_jax.max_weight_norm({})) == 0.0


# ---------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------

_SOFTMAX = dict(loss="softmax_ce", batch_size=32, num_classes=10)
_MSE = dict(loss="mse", batch_size=32, output_norm=1.0, target_norm=1.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({**_SOFTMAX, "loss": "hinge"}, "loss"),
        ({**_SOFTMAX, "num_classes": None}, "num_classes"),
        ({**_SOFTMAX, "num_classes": 1}, "num_classes"),
        ({**_SOFTMAX, "num_classes": 2.5}, "num_classes"),
        ({**_SOFTMAX, "batch_size": 0}, "batch_size"),
        ({**_SOFTMAX, "batch_size": -8}, "batch_size"),
        ({**_SOFTMAX, "weight_decay": -1e-4}, "weight_decay"),
        ({**_SOFTMAX, "max_weight_norm": -1.0}, "max_weight_norm"),
        ({**_SOFTMAX, "max_weight_norm": float("nan")}, "max_weight_norm"),
        ({**_SOFTMAX, "output_norm": 1.0}, "output_norm"),
        ({**_MSE, "output_norm": None}, "output_norm"),
        ({**_MSE, "target_norm": None}, "target_norm"),
        ({**_MSE, "target_norm": -2.0}, "target_norm"),
        ({**_MSE, "num_classes": 10}, "num_classes"),
        ({"loss": "binary_ce", "batch_size": 4, "num_classes": 3}, "num_classes"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        clr_jax.lipschitz_constant(1.0, **kwargs)
    with pytest.raises(ValueError, match=f"`{name}`"):
        clr_jax.lipschitz_lr(1.0, **kwargs)


def test_bad_k_z_and_accepted_edge_values():
    with pytest.raises(ValueError, match=r"`k_z` must be non-negative; got -1\.0"):
        clr_jax.lipschitz_constant(-1.0, **_SOFTMAX)
    # binary_ce tolerates num_classes=2; zero features give an infinite LR.
    assert float(
        clr_jax.lipschitz_constant(4.0, loss="binary_ce", batch_size=2, num_classes=2)
    ) == pytest.approx(1.0)
    assert np.isinf(float(clr_jax.lipschitz_lr(0.0, loss="mae", batch_size=3)))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (
            lambda x: clr_jax.penultimate_norm(mlp_features, None, x, batch_size=0),
            "batch_size",
        ),
        (
            lambda x: clr_jax.penultimate_norm(mlp_features, None, x, batch_size=2.5),
            "batch_size",
        ),
        (lambda x: clr_jax.penultimate_norm("f", None, x, batch_size=2), "feature_fn"),
        (
            lambda x: clr_jax.penultimate_norm(mlp_features, None, x[:0], batch_size=2),
            "data",
        ),
        (
            lambda x: clr_jax.penultimate_norm(
                mlp_features, None, {"a": x, "b": x[:3]}, batch_size=2
            ),
            "data",
        ),
        (
            lambda x: clr_jax.output_target_norms(
                mlp_features, None, x, x[:3], batch_size=2
            ),
            "data",
        ),
        (
            lambda x: clr_jax.output_target_norms(None, None, x, x, batch_size=2),
            "predict_fn",
        ),
    ],
)
def test_bad_estimator_arguments(call, name):
    x = np.zeros((6, 5), np.float32)
    with pytest.raises(ValueError, match=f"`{name}`"):
        call(x)
