"""``fit``'s orbax checkpoints: kill and resume bit for bit, corruption, footguns.

One tiny model and one set of settings throughout, so the whole module
compiles one epoch program (the subprocesses compile their own).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

import clr_jax
from clr_jax import flax as clr_flax
from tests.fit_helpers import Tiny, small_digits

# After a failed read of a corrupted checkpoint, orbax's pending futures
# complete once its event loop is closed and report "Event loop is closed"
# when collected, in whichever later test: noise, not a failure.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)

REPO = Path(__file__).resolve().parents[1]
KEY = jax.random.key(0)
EPOCHS = 4


def train(directory=None, *, epochs=EPOCHS, model=None, **kwargs):
    """The run every test (and the subprocesses) makes."""
    settings = dict(
        epochs=epochs,
        batch_size=64,
        key=KEY,
        optimizer=optax.sgd,
        learning_rate=clr_jax.triangular(0.02, 0.2, step_size=5),
        momentum=0.9,
        checkpoint_dir=directory,
        progress=False,
    )
    settings.update(kwargs)
    return clr_flax.fit(model or Tiny(), small_digits(), **settings)


def params_of(result) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(result.state.params)]


@pytest.fixture(scope="module")
def uninterrupted():
    return train()


def assert_same_run(result, reference) -> None:
    for a, b in zip(params_of(result), params_of(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(result.history.loss, reference.history.loss)
    np.testing.assert_array_equal(result.history.epoch, reference.history.epoch)
    np.testing.assert_array_equal(
        result.history.test_accuracy, reference.history.test_accuracy
    )


# ---------------------------------------------------------------------------
# SIGKILL after an epoch, then resume: bit-identical to the uninterrupted run
# ---------------------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, "tests")
    from test_fit_checkpoint import train

    def hang_after_epoch_2(epoch, state, metrics):
        if epoch == 2:
            print("after-epoch-2", flush=True)
            time.sleep(120)  # killed here, with SIGKILL

    train(sys.argv[1], callbacks=[hang_after_epoch_2])
    """
)


def test_sigkill_after_an_epoch_then_resume_is_bit_identical(tmp_path, uninterrupted):
    directory = tmp_path / "ckpt"
    killed = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(directory)],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = killed.stdout.readline().strip()
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=60)
    assert line == "after-epoch-2", killed.stderr.read()[-3000:]
    assert killed.returncode == -signal.SIGKILL
    # Epochs 0 and 1 are saved (epoch 2's save comes after its callbacks; the
    # save after epoch 1 may have been cut short by the kill).
    saved = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    assert saved[-1] in (1, 2)
    resumed = train(directory, resume=True)  # in this process: no new compile
    assert_same_run(resumed, uninterrupted)


# ---------------------------------------------------------------------------
# Corrupted, partial and foreign checkpoints
# ---------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, uninterrupted):
    """A complete checkpointed run (checkpoints after epochs 2, 3, 4)."""
    directory = tmp_path / "ckpt"
    result = train(directory)
    assert_same_run(result, uninterrupted)
    assert sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) == [
        2,
        3,
        4,
    ]
    return directory


def _corrupt(step_dir: Path) -> None:
    """Truncates every array file of a checkpoint (a disk fault, a bad copy)."""
    for root, _, files in os.walk(step_dir / "carry"):
        for name in files:
            if "METADATA" not in name:
                with open(Path(root) / name, "wb") as f:
                    f.write(b"\0")


def test_a_corrupted_latest_checkpoint_falls_back_to_the_one_before(
    saved, uninterrupted
):
    _corrupt(saved / "4")
    with pytest.warns(RuntimeWarning, match=r"after epoch 4 .* could not be read"):
        result = train(saved, resume=True)
    # Restored after epoch 3, epoch 3 trained again: the same run.
    assert_same_run(result, uninterrupted)


def test_every_checkpoint_corrupted_raises(saved):
    for step in ("2", "3", "4"):
        _corrupt(saved / step)
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(ValueError, match=r"`checkpoint_dir`.*every checkpoint failed"),
    ):
        train(saved, resume=True)


def test_a_partial_save_is_ignored_and_a_finished_run_is_not_retrained(
    saved, uninterrupted
):
    # What a process killed in the middle of a save leaves: a temporary
    # directory, never renamed to its step.
    partial = saved / "5.orbax-checkpoint-tmp-1234567890"
    partial.mkdir()
    (partial / "garbage").write_bytes(b"partial")

    def no_epoch_runs(epoch, state, metrics):
        raise AssertionError(f"epoch {epoch} ran again")

    result = train(saved, resume=True, callbacks=[no_epoch_runs])
    assert_same_run(result, uninterrupted)


def test_existing_checkpoints_are_not_overwritten_without_resume(saved):
    with pytest.raises(ValueError, match=r"`checkpoint_dir`.*resume=True"):
        train(saved)


def test_a_checkpoint_of_another_model_raises(saved):
    class Wider(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(nn.relu(nn.Dense(24)(x)))

    with pytest.raises(ValueError, match=r"`checkpoint_dir`.*another model"):
        train(saved, resume=True, model=Wider())


def test_resuming_with_another_key_raises(saved):
    with pytest.raises(ValueError, match=r"`key`"):
        train(saved, resume=True, key=jax.random.key(1))


def test_resume_with_more_epochs_continues_the_run(saved, uninterrupted):
    longer = train(saved, resume=True, epochs=EPOCHS + 1)
    np.testing.assert_array_equal(longer.history.epoch, np.arange(EPOCHS + 1))
    np.testing.assert_array_equal(
        longer.history.loss[: uninterrupted.history.loss.size],
        uninterrupted.history.loss,
    )


def test_bad_checkpoint_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"`resume`"):
        train(None, resume=True)
    with pytest.raises(ValueError, match=r"`checkpoint_every`"):
        train(tmp_path / "a", checkpoint_every=0)
    with pytest.raises(ValueError, match=r"`keep`"):
        train(tmp_path / "b", keep=0)


def test_start_epoch_disagreeing_with_the_checkpoint_raises(saved):
    with pytest.raises(ValueError, match=r"`start_epoch`"):
        train(saved, resume=True, start_epoch=1)


def test_a_stopped_run_stays_stopped_on_resume(tmp_path):
    directory = tmp_path / "ckpt"
    stopper = clr_flax.EarlyStopping(
        "test_accuracy", patience=1, min_delta=10.0, restore_best=False
    )
    stopped = train(directory, callbacks=[stopper])
    assert stopper.stopped_epoch == 1
    np.testing.assert_array_equal(stopped.history.epoch, [0, 1])

    def no_epoch_runs(epoch, state, metrics):
        raise AssertionError(f"epoch {epoch} ran after the stop")

    again = train(directory, resume=True, callbacks=[no_epoch_runs])
    assert_same_run(again, stopped)


# ---------------------------------------------------------------------------
# Resuming from a state: the epoch comes from its step
# ---------------------------------------------------------------------------


def test_an_initial_state_resumes_at_its_epoch_bit_for_bit(uninterrupted):
    half = train(epochs=2)
    rest = train(initial_state=half.state)  # no start_epoch: read from the step
    np.testing.assert_array_equal(rest.history.epoch, [2, 3])
    for a, b in zip(params_of(rest), params_of(uninterrupted), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(rest.history.loss, uninterrupted.history.loss[10:])
    with pytest.raises(ValueError, match=r"`start_epoch` must be None or 2"):
        train(initial_state=half.state, start_epoch=1)
    mid_epoch = half.state.replace(step=half.state.step + 1)
    with pytest.raises(ValueError, match=r"`initial_state`.*end of an epoch"):
        train(initial_state=mid_epoch)
    with pytest.raises(ValueError, match=r"`epochs`"):
        train(initial_state=uninterrupted.state)  # nothing left to run


def test_an_initial_state_of_another_model_raises():
    class Wider(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(nn.relu(nn.Dense(24)(x)))

    other = clr_flax.create_train_state(
        Wider(), small_digits().x_train[:1], key=KEY, learning_rate=0.1, momentum=0.9
    )
    with pytest.raises(ValueError, match=r"`initial_state`.*this model"):
        train(initial_state=other)
