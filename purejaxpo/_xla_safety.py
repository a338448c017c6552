"""The jaxlib 0.10 CPU deadlock in batched QR: what causes it, and an opt-in guard.

What happens: with jaxlib 0.10.x on a small CPU machine, XLA's CPU runtime can hang forever on
``jit(vmap(f))`` when ``f`` runs QR, e.g. ``jax.nn.initializers.orthogonal`` drawing one network
per seed. Under ``vmap`` the QR is a batched LAPACK call that XLA's concurrency-optimised
scheduler splits into sub-tasks; both worker threads of a 2-core machine end up waiting on
sub-tasks queued to the same pool. ``--xla_cpu_enable_concurrency_optimized_scheduler=false``
makes it finish every time; jaxlib 0.9.2 did not hang.

How purejaxpo avoids it: its programs contain no LAPACK call. Its networks draw orthogonal
weights by Gram-Schmidt in plain matmuls (:func:`purejaxpo.networks.orthogonal`, the same
matrices as jax's initialiser), so ``jit(vmap(train))`` is safe under the default scheduler;
``tests/test_xla_safety.py`` runs a vmapped-over-seeds PPO many times to keep it so. The
scheduler flag is therefore *not* set by default: on this project's 2-core CI machine it made
PPO on CartPole-v1 about a third slower (run time 4.3-4.9 s with it, 3.3-3.9 s without).

If your own code runs QR, SVD or other LAPACK routines under ``vmap`` on jaxlib 0.10/0.11, set
``PUREJAXPO_XLA_SAFETY=1`` before importing purejaxpo: :func:`apply` then adds the flag to
``XLA_FLAGS``, but only if

* the installed jaxlib is in the affected range,
* the flag is not already in ``XLA_FLAGS`` (either value the user chose is respected), and
* no JAX backend has been created yet (XLA reads ``XLA_FLAGS`` once, when the first backend is
  made; after that, changing it would do nothing, so it warns instead).
"""

from __future__ import annotations

import os
import warnings

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
SAFE_VALUE = "false"
ENV_VAR = "PUREJAXPO_XLA_SAFETY"
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
    """Whether the scheduler flag applies to this jaxlib and is absent from ``xla_flags``."""
    if _version_tuple(jaxlib_version) not in _AFFECTED:
        return False
    return FLAG not in xla_flags


def apply() -> bool:
    """Adds the safe scheduler flag to ``XLA_FLAGS`` if ``PUREJAXPO_XLA_SAFETY=1`` asks for it.

    Returns:
      True if the flag was added by this call.
    """
    if os.environ.get(ENV_VAR, "0") != "1":
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
            f"{ENV_VAR}=1, but purejaxpo was imported after JAX created its backends, so it "
            f"could not set XLA_FLAGS={FLAG}={SAFE_VALUE}; import purejaxpo before running any "
            "JAX computation, or set the flag yourself.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={SAFE_VALUE}".strip()
    return True
