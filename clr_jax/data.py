"""Bundled and generated datasets, and on-device batching.

:func:`load_digits` reads scikit-learn's bundled digits; :func:`load_mnist1d`
generates MNIST-1D with the ``mnist1d`` package's own ``make_dataset`` (never
its downloader) and caches the arrays in the user's cache directory.

Batches are drawn *inside* compiled loops: a training or range-test scan
takes an ``int32[steps, batch_size]`` index array made here once, and
gathers each batch from device-resident data with :func:`take`. Sampling is
without replacement within an epoch (one permutation per epoch, never one
per step); the last partial batch of an epoch is dropped so that every batch
has the same shape.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.metadata
import importlib.util
import os
import random
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clr_jax import _validation as v

__all__ = [
    "Dataset",
    "batch_indices",
    "cache_dir",
    "epoch_indices",
    "load_digits",
    "load_mnist1d",
    "mnist1d_cache_path",
    "num_examples",
    "take",
]


class Dataset(NamedTuple):
    """A train/test split of arrays, leading axis = examples."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def load_digits(
    *, test_fraction: float = 0.25, seed: int = 0, image: bool = False
) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes; no download).

    Pixels are scaled from 0..16 to [0, 1]. The split is stratified by class
    and fixed by ``seed``.

    Args:
      test_fraction: share of each class held out for testing, in (0, 1).
      seed: seed of the split.
      image: ``True`` gives ``float32[n, 8, 8, 1]`` images (for CNNs),
        ``False`` flat ``float32[n, 64]`` vectors (for MLPs).

    Returns:
      A :class:`Dataset` with int32 labels.

    Raises:
      ImportError: when scikit-learn is not installed.
      ValueError: for ``test_fraction`` outside (0, 1).
    """
    v.check_interval(
        "test_fraction", test_fraction, 0.0, 1.0, closed_low=False, closed_high=False
    )
    images, target = _digits_arrays()
    x = (images / 16.0).astype(np.float32)
    x = x[..., None] if image else x.reshape(len(x), -1)
    y = target.astype(np.int32)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test[members[: round(test_fraction * len(members))]] = True
    return Dataset(x[~test], y[~test], x[test], y[test], int(y.max()) + 1)


# ---------------------------------------------------------------------------
# MNIST-1D: generated once by the mnist1d package, then read from a cache
# ---------------------------------------------------------------------------

CACHE_DIR_ENV = "CLR_JAX_CACHE_DIR"
# The package's default split: 5000 examples, 80% for training, length 40.
_MNIST1D_SHAPES = {
    "x_train": (4000, 40),
    "y_train": (4000,),
    "x_test": (1000, 40),
    "y_test": (1000,),
}
_MNIST1D_CLASSES = 10


def _mnist1d_version() -> str:
    try:
        return importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError as err:
        raise ImportError(
            "load_mnist1d needs the mnist1d package: pip install 'clr-jax[examples]'"
        ) from err


def cache_dir() -> Path:
    """clr_jax's cache folder: ``$CLR_JAX_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/clr_jax`` (an absolute ``XDG_CACHE_HOME`` only), else
    ``~/.cache/clr_jax``. Nothing is created here."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "clr_jax"


def mnist1d_cache_path(folder: str | os.PathLike | None = None) -> Path:
    """The cache file of :func:`load_mnist1d`: ``<folder>/mnist1d-<version>.npz``.

    The folder is ``folder`` when given, else :func:`cache_dir`. The file
    name carries the installed mnist1d version, so an upgrade regenerates.

    Raises:
      ImportError: when mnist1d is not installed.

    Examples:
      >>> mnist1d_cache_path("/tmp/cache").parent.as_posix()
      '/tmp/cache'
    """
    folder = cache_dir() if folder is None else Path(folder)
    return folder / f"mnist1d-{_mnist1d_version()}.npz"


def load_mnist1d(
    *, cache_dir: str | os.PathLike | None = None, regenerate: bool = False
) -> Dataset:
    """MNIST-1D: 4000 train / 1000 test sequences of length 40, 10 classes.

    Generated on first use by the ``mnist1d`` package's own ``make_dataset``
    with its default arguments (``mnist1d.data.get_dataset_args()``: 5000
    examples, seed 42, the first 80% for training), then read from a cache
    file (:func:`mnist1d_cache_path`). No network is used: the package's
    downloader, ``get_dataset``, is never called.

    ``make_dataset`` reseeds Python's and NumPy's global random generators;
    both are restored afterwards, so the caller's random streams continue
    unchanged (other threads drawing from them meanwhile are not shielded).

    The cache is written atomically (a temporary file renamed into place)
    and holds a checksum of the arrays. A cache that does not load, or
    whose shapes, dtypes or checksum are wrong, is regenerated with a
    warning, never trusted; a folder that cannot be written gives a warning
    and the freshly generated arrays.

    Args:
      cache_dir: the folder of the cache file (default :func:`cache_dir`).
      regenerate: generate and rewrite the cache even when it is valid.

    Returns:
      A :class:`Dataset`: ``float32[4000, 40]`` and ``float32[1000, 40]``
      sequences (centred and scaled to unit standard deviation over the
      whole set, as the package makes them) and int32 labels ``0..9``.

    Raises:
      ImportError: when mnist1d is not installed.
      ValueError: for a ``regenerate`` that is not a bool.

    Examples:
      >>> data = load_mnist1d()  # doctest: +SKIP
      >>> data.x_train.shape, data.x_test.shape  # doctest: +SKIP
      ((4000, 40), (1000, 40))

    References:
      Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", 2020,
      https://arxiv.org/abs/2011.14439.
    """
    regenerate = v.check_bool("regenerate", regenerate)
    path = mnist1d_cache_path(cache_dir)
    arrays = None if regenerate else _read_mnist1d_cache(path)
    if arrays is None:
        arrays = _generate_mnist1d()
        _write_mnist1d_cache(path, arrays)
    return Dataset(**arrays, num_classes=_MNIST1D_CLASSES)


def _generate_mnist1d() -> dict[str, np.ndarray]:
    """``make_dataset(get_dataset_args())``, the global random states kept."""
    _mnist1d_version()  # the install hint when the package is missing
    from mnist1d.data import get_dataset_args, make_dataset

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(get_dataset_args())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    arrays = {
        "x_train": np.asarray(raw["x"], np.float32),
        "y_train": np.asarray(raw["y"], np.int32),
        "x_test": np.asarray(raw["x_test"], np.float32),
        "y_test": np.asarray(raw["y_test"], np.int32),
    }
    problem = _mnist1d_problem(arrays)
    if problem is not None:
        raise RuntimeError(f"mnist1d.make_dataset gave an unexpected split: {problem}")
    return arrays


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in _MNIST1D_SHAPES:
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _mnist1d_problem(arrays: dict[str, np.ndarray]) -> str | None:
    """What is wrong with the arrays of a split, or ``None``."""
    for name, shape in _MNIST1D_SHAPES.items():
        a = arrays.get(name)
        dtype = np.float32 if name.startswith("x") else np.int32
        if a is None or a.shape != shape or a.dtype != dtype:
            found = "missing" if a is None else f"{a.dtype}{list(a.shape)}"
            return f"`{name}` must be {np.dtype(dtype)}{list(shape)}; got {found}"
    if not all(np.all(np.isfinite(arrays[n])) for n in ("x_train", "x_test")):
        return "the sequences must be finite"
    labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    if labels.min() < 0 or labels.max() >= _MNIST1D_CLASSES:
        return f"the labels must lie in 0..{_MNIST1D_CLASSES - 1}"
    return None


def _read_mnist1d_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays; ``None`` (with a warning if the file exists but is
    unusable) when they must be generated."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        checksum = str(arrays.pop("checksum", ""))
        problem = _mnist1d_problem(arrays)
        if problem is None and checksum != _checksum(arrays):
            problem = "its checksum does not match its arrays"
    except Exception as err:  # any unreadable file is regenerated
        problem = f"it does not load ({type(err).__name__}: {err})"
    if problem is None:
        return {name: arrays[name] for name in _MNIST1D_SHAPES}
    v.warn(
        f"the MNIST-1D cache {path} is unusable ({problem}); regenerating it",
        UserWarning,
    )
    return None


def _write_mnist1d_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes the cache atomically; warns (and keeps going) when it cannot."""
    # A unique name beside the target (so the rename stays on one file
    # system), created with the umask's permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as file:
            np.savez(file, checksum=np.array(_checksum(arrays)), **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):  # no temporary when the folder is not
            tmp.unlink(missing_ok=True)
        v.warn(
            f"could not write the MNIST-1D cache {path} ({err}); the data was "
            f"generated but not cached. Set {CACHE_DIR_ENV} to a writable folder.",
            UserWarning,
        )


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(images float64[n, 8, 8], labels)``.

    Read straight from the file scikit-learn ships (as its ``load_digits``
    reads it), which spares the two seconds of importing scikit-learn;
    through ``sklearn.datasets.load_digits`` when the file is not where it
    has always been.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise ImportError(
            "load_digits needs scikit-learn: pip install 'clr-jax[examples]'"
        )
    folder = Path(next(iter(spec.submodule_search_locations or [""]), ""))
    path = folder / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        with gzip.open(path, "rt") as file:
            table = np.loadtxt(file, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    from sklearn import datasets  # pragma: no cover - another layout

    digits = datasets.load_digits()  # pragma: no cover
    return digits.images, digits.target  # pragma: no cover


def num_examples(data: Any) -> int:
    """The common leading dimension of every leaf of ``data``."""
    sizes = {np.shape(leaf)[0] for leaf in jax.tree.leaves(data)}
    if len(sizes) != 1:
        raise ValueError(
            "every array in `data` must have the same leading (example) axis; "
            f"got {sorted(sizes)}."
        )
    return sizes.pop()


def epoch_indices(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """One shuffled epoch as ``int32[num_examples // batch_size, batch_size]``."""
    per_epoch = _batches_per_epoch(num_examples, batch_size)
    perm = jax.random.permutation(key, num_examples)[: per_epoch * batch_size]
    return perm.reshape(per_epoch, batch_size).astype(jnp.int32)


def batch_indices(
    key: jax.Array, num_examples: int, batch_size: int, num_steps: int
) -> jax.Array:
    """Indices of ``num_steps`` batches, shuffled epoch after epoch.

    Returns ``int32[num_steps, batch_size]``: consecutive epochs, each a fresh
    permutation of the examples with the last partial batch dropped.

    Examples:
      >>> import jax
      >>> idx = batch_indices(jax.random.key(0), 10, 4, num_steps=5)
      >>> idx.shape
      (5, 4)
      >>> len(set(idx[:2].ravel().tolist()))  # no repeat within an epoch
      8
    """
    per_epoch = _batches_per_epoch(num_examples, batch_size)
    epochs = -(-num_steps // per_epoch)
    keys = jax.random.split(key, epochs)
    idx = jax.vmap(lambda k: epoch_indices(k, num_examples, batch_size))(keys)
    return idx.reshape(-1, batch_size)[:num_steps]


def take(data: Any, idx: jax.Array) -> Any:
    """Gathers examples ``idx`` from every leaf of ``data``."""
    return jax.tree.map(lambda leaf: jnp.take(leaf, idx, axis=0), data)


def _batches_per_epoch(num_examples: int, batch_size: int) -> int:
    v.check_step_count("batch_size", batch_size)
    if batch_size > num_examples:
        raise ValueError(
            f"`batch_size` must be <= the number of examples ({num_examples}); "
            f"got {batch_size}."
        )
    return num_examples // batch_size
