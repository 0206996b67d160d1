"""Checkpoints of ``fit`` through an ``orbax.checkpoint.CheckpointManager``.

A checkpoint, numbered by the epochs completed, holds the whole carry (the
train state, the halt marker, the snapshot buffer) as an orbax PyTree, and a
JSON item with the history so far, the PRNG key of the run, whether a
callback stopped it, and a fingerprint of the carry (every leaf's path,
shape and dtype). orbax writes into a temporary directory and renames it
when complete, so a process killed in the middle of a save leaves the
previous checkpoints as they were and the partial one is never listed.

Restoring starts from the latest checkpoint; one that cannot be read (a
corrupted or truncated file) is reported with a warning and the one before
is tried, until one restores; if none does, a ``ValueError`` lists them. A
checkpoint of another model or optimizer (a different fingerprint) is not
corruption: it raises at once. Array shardings are those of the fresh carry
the checkpoint is restored into, so a model-sharded state comes back
sharded. orbax is imported only when a checkpoint directory is given.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import numpy as np

from clr_jax import _validation as v
from clr_jax.flax import _history, _results_io

FORMAT = "clr_jax.flax.fit checkpoint"


class Restored(NamedTuple):
    carry: Any
    history: _history.History | None
    epochs_done: int
    stopped: bool


class Mismatch(ValueError):
    """The checkpoint belongs to another model, optimizer or run."""


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
        leaf.dtype, jax.dtypes.prng_key
    )


def _key_data(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _dtype(leaf: Any) -> str:
    return str(leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf))


def fingerprint(carry: Any) -> list:
    """Every leaf's path, shape and dtype (PRNG keys as their key data)."""
    return [
        [jax.tree_util.keystr(path), list(np.shape(leaf)), _dtype(leaf)]
        for path, leaf in jax.tree_util.tree_leaves_with_path(_key_data(carry))
    ]


def _first_difference(saved: list, expected: list) -> str:
    for a, b in zip(saved, expected, strict=False):
        if a != b:
            return f"saved {a}, this run has {b}"
    return f"saved {len(saved)} arrays, this run has {len(expected)}"


def _key_list(key: jax.Array) -> list[int]:
    return np.asarray(jax.random.key_data(key)).reshape(-1).tolist()


class Checkpointer:
    """``fit``'s checkpoints in ``directory``: every ``every`` epochs, the
    last ``keep`` kept (``None``: all).

    Raises:
      ValueError: naming ``checkpoint_dir`` when it holds checkpoints and
        ``resume`` is False (they are never overwritten).
    """

    def __init__(self, directory, *, every: int, keep: int | None, resume: bool):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        self.every = every
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("carry", "meta")
        )
        if self._manager.all_steps() and not resume:
            self._manager.close()
            v.fail(
                "checkpoint_dir",
                "an empty directory, or resume=True to continue from its checkpoints",
                f"{self.directory} with checkpoints after epochs "
                f"{sorted(self._manager.all_steps())}",
            )

    def restore(self, template: Any, key: jax.Array) -> Restored | None:
        """The latest readable checkpoint restored into ``template``'s
        structure and shardings, or ``None`` when there is none.

        Raises:
          ValueError: naming ``checkpoint_dir`` for a checkpoint of another
            model or optimizer, or when none can be read; naming ``key``
            when the run's key differs from the checkpoint's.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        failures = []
        for step in steps:
            try:
                restored = self._restore_step(step, template, key)
            except Mismatch:
                raise
            except Exception as err:  # orbax/tensorstore errors of a bad file
                failures.append(f"after epoch {step}: {type(err).__name__}: {err}")
                v.warn(
                    f"the checkpoint after epoch {step} in {self.directory} could "
                    f"not be read ({type(err).__name__}: {str(err)[:200]}); trying "
                    "the one before.",
                    RuntimeWarning,
                )
                continue
            return restored
        if failures:
            v.fail(
                "checkpoint_dir",
                "a directory with at least one readable checkpoint",
                f"{self.directory}, where every checkpoint failed: {failures}",
            )
        return None

    def _restore_step(self, step: int, template: Any, key: jax.Array) -> Restored:
        ocp = self._ocp
        meta = self._manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )["meta"]
        self._check_meta(step, meta, template, key)
        data = _key_data(template)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, data)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(carry=ocp.args.StandardRestore(abstract))
        )["carry"]
        carry = jax.tree.map(
            lambda t, r: (
                jax.random.wrap_key_data(r, impl=jax.random.key_impl(t))
                if _is_key(t)
                else r
            ),
            template,
            restored,
        )
        history = meta["history"]
        if history is not None:
            history = _history.from_dict(_results_io.from_json_dict(history)["history"])
        return Restored(carry, history, int(meta["epochs_done"]), bool(meta["stopped"]))

    def _check_meta(self, step: int, meta: dict, template: Any, key) -> None:
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT}: {meta.get('format')!r}")
        if meta["key"] != _key_list(key):
            raise Mismatch(
                f"`key` must be the checkpointed run's key to resume it; the "
                f"checkpoint after epoch {step} in {self.directory} was made with "
                f"key data {meta['key']}, got {_key_list(key)}."
            )
        saved, expected = meta["fingerprint"], fingerprint(template)
        if saved != expected:
            raise Mismatch(
                "`checkpoint_dir` holds a checkpoint of another model, optimizer "
                f"or run layout (after epoch {step} in {self.directory}): "
                f"{_first_difference(saved, expected)}."
            )

    def due(self, epoch: int, last: bool, stopping: bool) -> bool:
        """Whether to save after ``epoch``."""
        return last or stopping or (epoch + 1) % self.every == 0

    def save(self, epochs_done: int, carry, history, *, stopped: bool, key) -> None:
        """Saves (asynchronously) the carry and the history after ``epochs_done``."""
        ocp = self._ocp
        meta = {
            "format": FORMAT,
            "epochs_done": int(epochs_done),
            "stopped": bool(stopped),
            "key": _key_list(key),
            "fingerprint": fingerprint(carry),
            "history": None
            if history is None
            else _results_io.to_json_dict({"history": history._asdict()}),
        }
        self._manager.save(
            epochs_done,
            args=ocp.args.Composite(
                carry=ocp.args.StandardSave(_key_data(carry)),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def close(self) -> None:
        """Waits for the last save to be written."""
        self._manager.wait_until_finished()
        self._manager.close()
