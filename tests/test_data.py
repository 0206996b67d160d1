"""``clr_jax.data.load_mnist1d``: generation without network, the cache, the RNG.

MNIST-1D is generated once per test session (a few seconds, with every
network entry point patched to fail); the cache tests reuse those arrays.
No test writes to the real home cache: ``HOME``, ``XDG_CACHE_HOME`` and
``CLR_JAX_CACHE_DIR`` point into temporary folders.
"""

from __future__ import annotations

import importlib.metadata
import random
import socket
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from clr_jax import data as clr_data

mnist1d_data = pytest.importorskip("mnist1d.data")


def _refuse(*args, **kwargs):
    raise AssertionError("load_mnist1d touched the network")


def _block_network(patch: pytest.MonkeyPatch) -> None:
    patch.setattr(socket.socket, "connect", _refuse)
    patch.setattr(socket, "create_connection", _refuse)
    patch.setattr(socket, "getaddrinfo", _refuse)
    patch.setattr(urllib.request, "urlopen", _refuse)
    requests = pytest.importorskip("requests")
    patch.setattr(requests, "get", _refuse)
    patch.setattr(requests.Session, "request", _refuse)
    # The package's downloader: never reachable from ours.
    patch.setattr(mnist1d_data, "get_dataset", _refuse)


def _draws() -> tuple[float, float]:
    return random.random(), float(np.random.rand())


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """One real generation: the arrays, what make_dataset was called with,
    and the caller's random draws after the call against the expected ones."""
    cache = tmp_path_factory.mktemp("mnist1d_cache")
    real_make = mnist1d_data.make_dataset
    calls = []

    def spy(args=None, **kwargs):
        calls.append(dict(vars(args)))
        result = real_make(args, **kwargs)
        calls[-1]["result"] = result
        return result

    random.seed(1234)
    np.random.seed(1234)
    expected = _draws()
    random.seed(1234)
    np.random.seed(1234)
    with pytest.MonkeyPatch.context() as patch:
        _block_network(patch)
        patch.setattr(mnist1d_data, "make_dataset", spy)
        dataset = clr_data.load_mnist1d(cache_dir=cache)
    after = _draws()
    return types.SimpleNamespace(
        data=dataset, cache=cache, calls=calls, expected=expected, after=after
    )


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(clr_data.CACHE_DIR_ENV, str(tmp_path / "env_cache"))


def _arrays(dataset) -> dict[str, np.ndarray]:
    return {k: getattr(dataset, k) for k in ("x_train", "y_train", "x_test", "y_test")}


def _assert_same(a, b) -> None:
    for name, value in _arrays(a).items():
        np.testing.assert_array_equal(value, getattr(b, name), err_msg=name)


def _serve(monkeypatch, generated) -> list[int]:
    """Regeneration returns the session's arrays; the list counts the calls."""
    calls = []

    def fake():
        calls.append(1)
        return _arrays(generated.data)

    monkeypatch.setattr(clr_data, "_generate_mnist1d", fake)
    return calls


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------


def test_mnist1d_is_the_packages_default_split_as_float32_and_int32(generated):
    data = generated.data

    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.y_train.shape == (4000,) and data.y_test.shape == (1000,)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert data.num_classes == 10
    assert set(np.unique(data.y_train)) == set(range(10))
    # make_dataset was called once, with get_dataset_args()'s defaults, and
    # the arrays are its output.
    (call,) = generated.calls
    raw = call.pop("result")
    assert call == mnist1d_data.get_dataset_args(as_dict=True)
    np.testing.assert_array_equal(data.x_train, raw["x"].astype(np.float32))
    np.testing.assert_array_equal(data.y_test, raw["y_test"])


def test_mnist1d_generation_leaves_the_global_random_states_alone(generated):
    assert generated.after == generated.expected


def test_mnist1d_generation_restores_the_random_states_when_it_fails(monkeypatch):
    def failing(args=None):
        np.random.seed(0)
        random.seed(0)
        raise RuntimeError("boom")

    monkeypatch.setattr(mnist1d_data, "make_dataset", failing)
    random.seed(99)
    np.random.seed(99)
    expected = _draws()
    random.seed(99)
    np.random.seed(99)

    with pytest.raises(RuntimeError, match="boom"):
        clr_data._generate_mnist1d()
    assert _draws() == expected


# ---------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------


def test_mnist1d_cache_is_read_without_generating(generated, monkeypatch):
    calls = _serve(monkeypatch, generated)

    again = clr_data.load_mnist1d(cache_dir=generated.cache)

    assert calls == []
    _assert_same(again, generated.data)
    (cached,) = generated.cache.iterdir()  # one file, no temporary left
    assert cached.name == f"mnist1d-{importlib.metadata.version('mnist1d')}.npz"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _garbage(path: Path) -> None:
    path.write_bytes(b"not an npz file")


def _stale_checksum(path: Path) -> None:
    with np.load(path) as stored:
        arrays = dict(stored)
    arrays["x_train"] = arrays["x_train"].copy()
    arrays["x_train"][0, 0] += 1.0
    np.savez(path, **arrays)


def _wrong_dtype(path: Path) -> None:
    with np.load(path) as stored:
        arrays = dict(stored)
    arrays["y_train"] = arrays["y_train"].astype(np.float64)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_truncate, "does not load"),
        (_garbage, "does not load"),
        (_stale_checksum, "checksum does not match"),
        (_wrong_dtype, "`y_train` must be int32"),
    ],
)
def test_a_corrupt_mnist1d_cache_is_regenerated_not_trusted(
    generated, tmp_path, monkeypatch, damage, reason
):
    cache = tmp_path / "cache"
    cache.mkdir()
    path = clr_data.mnist1d_cache_path(cache)
    path.write_bytes(clr_data.mnist1d_cache_path(generated.cache).read_bytes())
    damage(path)
    calls = _serve(monkeypatch, generated)

    with pytest.warns(UserWarning, match=reason):
        data = clr_data.load_mnist1d(cache_dir=cache)

    assert calls == [1]
    _assert_same(data, generated.data)
    # The rewritten cache is valid: the next call reads it.
    assert clr_data._read_mnist1d_cache(path) is not None
    assert [p.name for p in cache.iterdir()] == [path.name]


def test_regenerate_rewrites_a_valid_cache(generated, tmp_path, monkeypatch):
    calls = _serve(monkeypatch, generated)
    clr_data.load_mnist1d(cache_dir=tmp_path)

    clr_data.load_mnist1d(cache_dir=tmp_path, regenerate=True)

    assert calls == [1, 1]


def test_a_failed_cache_write_keeps_the_old_file_and_leaves_no_temporary(
    generated, tmp_path, monkeypatch
):
    path = clr_data.mnist1d_cache_path(tmp_path)
    path.write_bytes(b"previous contents")

    def failing_savez(file, **arrays):
        file.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)

    with pytest.warns(UserWarning, match="could not write the MNIST-1D cache"):
        clr_data._write_mnist1d_cache(path, _arrays(generated.data))

    assert path.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_an_unwritable_cache_folder_warns_and_returns_the_data(
    generated, tmp_path, monkeypatch
):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    _serve(monkeypatch, generated)

    with pytest.warns(UserWarning, match=clr_data.CACHE_DIR_ENV):
        data = clr_data.load_mnist1d(cache_dir=blocker / "cache")

    _assert_same(data, generated.data)


# ---------------------------------------------------------------------------
# Where the cache lives, and bad arguments
# ---------------------------------------------------------------------------


def test_mnist1d_cache_folder_follows_argument_env_xdg_then_home(tmp_path, monkeypatch):
    version = importlib.metadata.version("mnist1d")
    name = f"mnist1d-{version}.npz"
    assert clr_data.mnist1d_cache_path(tmp_path / "arg") == tmp_path / "arg" / name
    assert clr_data.mnist1d_cache_path() == tmp_path / "env_cache" / name

    monkeypatch.delenv(clr_data.CACHE_DIR_ENV)
    assert clr_data.mnist1d_cache_path() == tmp_path / "xdg" / "clr_jax" / name

    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # not absolute
    home = tmp_path / "home" / ".cache" / "clr_jax" / name
    assert clr_data.mnist1d_cache_path() == home
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert clr_data.mnist1d_cache_path() == home


def test_load_mnist1d_without_the_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)

    with pytest.raises(ImportError, match=r"pip install 'clr-jax\[examples\]'"):
        clr_data.load_mnist1d()


def test_load_mnist1d_refuses_a_regenerate_that_is_not_a_bool():
    with pytest.raises(ValueError, match="`regenerate` must be True or False"):
        clr_data.load_mnist1d(regenerate="no")


# ---------------------------------------------------------------------------
# Digits: read from scikit-learn's file, without importing scikit-learn
# ---------------------------------------------------------------------------


def test_digits_file_reads_exactly_what_sklearn_loads():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()

    images, labels = clr_data._digits_arrays()

    np.testing.assert_array_equal(images, digits.images)
    np.testing.assert_array_equal(labels, digits.target)
    data = clr_data.load_digits()
    assert (len(data.y_train), len(data.y_test)) == (1347, 450)
