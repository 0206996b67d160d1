"""The host driver of ``fit``: one compiled epoch (or chunks) after another.

Per epoch: run it on the device (one program over device-resident data, or
one program per streamed chunk and one for the evaluation), then, only if
someone needs them, bring that epoch's logs to the host: callbacks get the
epoch's metrics, and a due checkpoint saves the carry with the history so
far. Without callbacks or checkpoints nothing is read back until the end.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from clr_jax.flax import _history, _programs, _streaming
from clr_jax.flax._callbacks import STOP
from clr_jax.flax._epoch import Carry, EpochLog
from clr_jax.flax._history import EpochRecord, History
from clr_jax.flax._setup import Run


class Outcome(NamedTuple):
    carry: Carry
    history: History | None  # the whole history, the restored part included
    final_state: Any  # a callback's replacement for the final state, or None


def _statics(run: Run) -> dict:
    return {"task_static": run.task_static, "config": run.config, "layout": run.layout}


def _array_epoch(run: Run, carry: Carry, epoch: int) -> tuple[Carry, EpochRecord]:
    carry, steps, log = _programs.epoch(
        carry,
        run.task_dynamic,
        run.data_keys,
        np.int32(epoch),
        run.train,
        run.test,
        **_statics(run),
    )
    return carry, EpochRecord(epoch, [steps], log)


def _streamed_epoch(run: Run, carry: Carry, epoch: int) -> tuple[Carry, EpochRecord]:
    chunks = _streaming.epoch_chunks(
        run.data.train,
        epoch,
        chunk=run.chunk,
        sharding=run.chunk_sharding,
        check=run.check_targets,
    )
    steps = []
    for batches in chunks:
        carry, logs = _programs.chunk(carry, run.task_dynamic, batches, **_statics(run))
        steps.append(logs)
    if run.test is None:
        log = EpochLog(None, {}, None)
    else:
        log = _programs.evaluation(
            carry.state, run.task_dynamic, run.test, **_statics(run)
        )
    return carry, EpochRecord(epoch, steps, log)


class _HostHistory:
    """The history brought to the host so far, and the records not yet fetched."""

    def __init__(self, restored: History | None):
        self.fetched, self.pending = restored, []

    def add(self, record: EpochRecord) -> None:
        self.pending.append(record)

    def fetch(self, carry: Carry) -> History | None:
        new = _history.collect(self.pending, carry.halted_at)
        self.fetched, self.pending = _history.concatenate(self.fetched, new), []
        return self.fetched


def _call_callbacks(run: Run, epoch: int, carry: Carry, history: History) -> bool:
    metrics = history.epoch_metrics(-1)
    stop = False
    for callback in run.callbacks:
        stop |= callback(epoch, carry.state, metrics) is STOP
    return stop


def _begin(run: Run) -> None:
    for callback in run.callbacks:
        begin = getattr(callback, "on_train_begin", None)
        if begin is not None:
            begin(start_epoch=run.start_epoch, epochs=run.epochs, history=run.restored)


def _end(run: Run, state: Any) -> Any:
    final = None
    for callback in run.callbacks:
        end = getattr(callback, "on_train_end", None)
        replacement = None if end is None else end(state)
        final = replacement if replacement is not None else final
    return final


def train(run: Run) -> Outcome:
    """Runs the epochs ``run.start_epoch .. run.epochs - 1`` (none when a
    restored run had stopped) and returns the carry and the history."""
    carry, host = run.carry, _HostHistory(run.restored)
    run_epoch = _streamed_epoch if run.data.streamed else _array_epoch
    epochs = range(run.start_epoch, run.epochs) if not run.stopped else range(0)
    _begin(run)
    final = None
    try:
        for epoch in epochs:
            carry, record = run_epoch(run, carry, epoch)
            host.add(record)
            last = epoch == run.epochs - 1
            due = run.checkpointer is not None and run.checkpointer.due(
                epoch, last, False
            )
            if not run.callbacks and not due:
                continue
            history = host.fetch(carry)
            stop = bool(run.callbacks) and _call_callbacks(run, epoch, carry, history)
            if run.checkpointer is not None and (due or stop):
                run.checkpointer.save(
                    epoch + 1, carry, history, stopped=stop, key=run.key
                )
            if stop:
                break
    finally:
        final = _end(run, carry.state)
        if run.checkpointer is not None:
            run.checkpointer.close()
    return Outcome(carry, host.fetch(carry), final)
