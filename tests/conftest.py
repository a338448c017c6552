"""Shared test set-up.

JAX's persistent compilation cache is switched on for the test session (and, through the
environment, for the processes the tests start): many tests compile the same program through
fresh ``make_train`` closures or fresh CLI processes, and the cache, keyed on the compiled
program, turns the repeats into a lookup. It changes no result (same program, same machine);
the directory is emptied by nothing, so only the first run on a machine pays every compile.
Set ``JAX_COMPILATION_CACHE_DIR`` to use another directory.
"""

import os
import tempfile

import pytest

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"purejaxpo-tests-jax-cache-{os.getuid()}"),
)

import purejaxpo  # noqa: F401,E402

import jax  # noqa: E402

# The tests' own process keeps the device count its environment gives (one CPU device unless
# XLA_FLAGS says otherwise): starting the backend here, before any test, means the CLI's
# `--cpu-devices auto` (one device per core) never changes it for the tests that run after a
# CLI test. Tests of several devices run in fresh processes (tests/*_subprocess.py).
jax.devices()


@pytest.fixture(autouse=True)
def _plain_backend_after_each_test():
    """A test that runs a command in-process turns the CPU backend on (as ``purejaxpo`` does on
    a CPU); put the plain backend back after it, so that no later test in this worker traces
    with hooks it did not ask for."""
    from purejaxpo import backends

    yield
    backends.activate(backends.DEFAULT)
