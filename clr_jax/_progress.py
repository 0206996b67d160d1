"""The progress bar of the range test and of ``fit``, one rule for both.

``progress=None`` (the default everywhere) shows a bar only when stderr is a
terminal and tqdm is installed, so a batch job's log never fills with
carriage-return frames; ``True`` asks for one (and needs tqdm); ``False``
shows none.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


class _NoBar:
    """Stands in for a bar when none is shown."""

    def update(self, n: int = 1) -> None:
        del n

    def set_postfix(self, **values: Any) -> None:
        del values

    def close(self) -> None:
        pass


def check_progress(progress: Any) -> bool | None:
    """``progress`` must be ``None``, ``True`` or ``False``."""
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"`progress` must be None, True or False; got {progress!r}.")
    return progress


def wanted(progress: bool | None) -> bool:
    """Whether a bar is shown for this ``progress`` setting."""
    check_progress(progress)
    if progress is None:
        return _has_tqdm() and sys.stderr is not None and sys.stderr.isatty()
    return progress


def bar(
    progress: bool | None, *, total: int, desc: str, unit: str, leave: bool = False
) -> Any:
    """A tqdm bar when :func:`wanted`, else an object that ignores updates.

    ``leave`` keeps the finished bar on screen.

    Raises:
      ImportError: for ``progress=True`` without tqdm installed.
    """
    if not wanted(progress):
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError as err:
        raise ImportError(
            "progress=True needs tqdm: pip install tqdm (or pass progress=False)"
        ) from err
    return tqdm(total=total, desc=desc, unit=unit, leave=leave)


def _has_tqdm() -> bool:
    return importlib.util.find_spec("tqdm") is not None
