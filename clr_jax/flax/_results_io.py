"""Writing and reading results: nested dicts of arrays as ``.npz`` or ``.json``.

A tree of dicts, arrays and ``None`` is split into a *skeleton* (its shape,
JSON) and flat arrays named by their path. ``.npz`` keeps the arrays as
they are; ``.json`` writes each as dtype, shape and a flat list (NaN and
infinities as the strings ``"nan"``, ``"inf"``, ``"-inf"``), exact for
float32. An existing file is never overwritten unless asked.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from clr_jax import _validation as v

FORMAT = "clr_jax.flax result"
VERSION = 1


def leaves_by_path(tree: Any) -> dict[str, np.ndarray]:
    """``{keystr(path): array}`` of ``tree``'s leaves (PRNG keys as key data)."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
            leaf.dtype, jax.dtypes.prng_key
        ):
            leaf = jax.random.key_data(leaf)
        out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def restore_like(like: Any, leaves: dict[str, np.ndarray], name: str) -> Any:
    """``like`` with its leaves replaced by the saved ``leaves`` (same paths,
    shapes and dtypes; PRNG keys rewrapped).

    Raises:
      ValueError: naming ``name`` at the first path that differs.
    """
    templates, treedef = jax.tree.flatten(like)
    expected = leaves_by_path(like)
    if list(expected) != list(leaves):
        missing = sorted(set(expected) ^ set(leaves))[:3]
        v.fail(name, "a state of the saved structure", f"paths differing at {missing}")
    out = []
    for template, key in zip(templates, expected, strict=True):
        saved, want = leaves[key], expected[key]
        if saved.shape != want.shape or saved.dtype != want.dtype:
            v.fail(
                name,
                f"a state whose {key} is {want.dtype}{list(want.shape)}",
                f"{saved.dtype}{list(saved.shape)} saved",
            )
        is_key = isinstance(template, jax.Array) and jax.dtypes.issubdtype(
            template.dtype, jax.dtypes.prng_key
        )
        impl = jax.random.key_impl(template) if is_key else None
        out.append(jax.random.wrap_key_data(saved, impl=impl) if is_key else saved)
    return jax.tree.unflatten(treedef, out)


def _split(tree: Any, prefix: str, arrays: dict) -> Any:
    """The skeleton of ``tree``; its arrays go into ``arrays``."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {
            "dict": {
                str(k): _split(x, f"{prefix}/{k}", arrays) for k, x in tree.items()
            }
        }
    if isinstance(tree, np.ndarray | np.generic | jax.Array | int | float):
        arrays[prefix] = np.asarray(tree)
        return {"array": prefix}
    return _split(leaves_by_path(tree), prefix, arrays)  # another pytree


def _join(skeleton: Any, arrays: dict) -> Any:
    if skeleton is None:
        return None
    if "dict" in skeleton:
        return {k: _join(x, arrays) for k, x in skeleton["dict"].items()}
    return arrays[skeleton["array"]]


def _check_path(path, overwrite: bool) -> str:
    path = os.fspath(path)
    if not path.endswith((".npz", ".json")):
        v.fail("path", "a file name ending in .npz or .json", path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"`path` {path!r} exists; pass overwrite=True to replace it or choose "
            "another name."
        )
    return path


def save(tree: dict, path, overwrite: bool = False) -> None:
    """Writes ``tree`` (dicts, arrays, ``None``, other pytrees) to ``path``."""
    path = _check_path(path, overwrite)
    arrays: dict[str, np.ndarray] = {}
    skeleton = _split(tree, "", arrays)
    header = {"format": FORMAT, "version": VERSION, "skeleton": skeleton}
    if path.endswith(".npz"):
        with open(path, "wb") as f:
            np.savez(f, __header__=json.dumps(header), **arrays)
        return
    header["arrays"] = {k: _encode(a) for k, a in arrays.items()}
    with open(path, "w") as f:
        json.dump(header, f)


def load(path) -> dict:
    """Reads a file written by :func:`save`."""
    path = os.fspath(path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(str(npz["__header__"]))
            arrays = {k: npz[k] for k in npz.files if k != "__header__"}
    else:
        with open(path) as f:
            header = json.load(f)
        arrays = {k: _decode(a) for k, a in header["arrays"].items()}
    if header.get("format") != FORMAT:
        v.fail("path", f"a file written by {FORMAT} save()", path)
    return _join(header["skeleton"], arrays)


def _encode(a: np.ndarray) -> dict:
    flat = a.reshape(-1)
    if np.issubdtype(a.dtype, np.floating):
        data = [
            x if np.isfinite(x) else str(x) for x in flat.astype(np.float64).tolist()
        ]
    else:
        data = flat.tolist()
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": data}


def _decode(entry: dict) -> np.ndarray:
    data = np.asarray(entry["data"], dtype=np.dtype(entry["dtype"]))
    return data.reshape(entry["shape"])


def to_json_dict(tree: dict) -> dict:
    """``tree`` as a JSON-ready dict (what :func:`save` writes to ``.json``)."""
    arrays: dict[str, np.ndarray] = {}
    skeleton = _split(tree, "", arrays)
    return {"skeleton": skeleton, "arrays": {k: _encode(a) for k, a in arrays.items()}}


def from_json_dict(data: dict) -> dict:
    """The tree of :func:`to_json_dict`."""
    arrays = {k: _decode(a) for k, a in data["arrays"].items()}
    return _join(data["skeleton"], arrays)
