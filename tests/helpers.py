"""Helpers shared by the test modules: a trace counter, an example loader and
the environment of a subprocess with several host devices."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class TraceCounter:
    """A function that counts how often JAX traces it.

    Wrap a function that runs only while tracing (a loss, a step, the body of
    a jitted function); ``count`` is then the number of compilations it took
    part in. The wrapper is one object, so it can be reused as a jit static
    argument across calls.

    Examples:
      >>> import jax
      >>> f = TraceCounter(lambda x: x + 1)
      >>> g = jax.jit(f)
      >>> _ = g(1.0), g(2.0)
      >>> f.count
      1
    """

    def __init__(self, fn):
        self.fn = fn
        self.count = 0
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.fn(*args, **kwargs)

    def reset(self) -> None:
        self.count = 0


def load_example(name: str) -> ModuleType:
    """Imports ``examples/<name>.py`` by path (``examples/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def host_devices_env(count: int) -> dict[str, str]:
    """The environment of a subprocess with ``count`` CPU devices, keeping the
    suite's other XLA flags (its cheap compiler settings)."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} "
    flags += f"--xla_force_host_platform_device_count={count}"
    return {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}


def run_with_host_devices(
    script: str, count: int, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Runs ``python -c script *args`` from the repository root in a process
    with ``count`` CPU devices; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=EXAMPLES.parent,
        env=host_devices_env(count),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
