"""Keeps XLA's CPU runtime from deadlocking on purejaxpo's programs.

With jaxlib 0.10.x, XLA's CPU runtime can hang forever on ``jit(vmap(train))``: batched QR
(the orthogonal initialisers of the networks, drawn once per seed under ``vmap``) is split into
sub-tasks that both worker threads of a small machine wait on, in the same pool. The
reproduction is in ``tests/test_xla_safety.py``. Disabling the concurrency-optimised scheduler
(``--xla_cpu_enable_concurrency_optimized_scheduler=false``) makes it finish every time; jaxlib
0.9.2 did not hang.

:func:`apply` adds that flag to ``XLA_FLAGS`` when, and only when,

* the installed jaxlib is in the affected range,
* the user has not set the flag themselves (either value is respected), and
* no JAX backend has been created yet (XLA reads ``XLA_FLAGS`` once, when the first backend is
  made; after that, changing it would do nothing, so we warn instead).

Set ``PUREJAXPO_XLA_SAFETY=0`` to turn this off entirely.
"""

from __future__ import annotations

import os
import warnings

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
SAFE_VALUE = "false"
# jaxlib versions (major, minor) in which the hang was seen or cannot be ruled out. The flag is
# known to every XLA in this range; purejaxpo's own bound keeps jax below 0.12.
_AFFECTED = ((0, 10), (0, 11))


def _version_tuple(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def needs_flag(jaxlib_version: str, xla_flags: str) -> bool:
    """Whether the scheduler flag should be added for this jaxlib and current ``XLA_FLAGS``."""
    if _version_tuple(jaxlib_version) not in _AFFECTED:
        return False
    return FLAG not in xla_flags


def apply() -> bool:
    """Adds the safe scheduler flag to ``XLA_FLAGS`` if needed and still possible.

    Returns:
      True if the flag was added by this call.
    """
    if os.environ.get("PUREJAXPO_XLA_SAFETY", "1") == "0":
        return False
    try:
        import jaxlib

        jaxlib_version = jaxlib.__version__
    except Exception:  # pragma: no cover - jaxlib always present with jax
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if not needs_flag(jaxlib_version, flags):
        return False
    try:
        from jax._src import xla_bridge

        initialised = xla_bridge.backends_are_initialized()
    except Exception:  # pragma: no cover - private API moved; assume the safe case
        initialised = False
    if initialised:
        warnings.warn(
            "purejaxpo was imported after JAX created its backends, so it could not set "
            f"XLA_FLAGS={FLAG}={SAFE_VALUE}. On jaxlib {jaxlib_version} XLA's CPU runtime can "
            "deadlock on vmapped training; import purejaxpo before running any JAX computation, "
            "or set the flag yourself.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={SAFE_VALUE}".strip()
    return True
