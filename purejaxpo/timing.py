"""Timing a jitted program the way benchmarks report it: compile time and run time apart."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax


def compile_and_run(fn: Callable, *args) -> tuple[Any, float, float]:
    """``jax.jit(fn)`` compiled ahead of time on ``args``, then run once to completion.

    Returns:
      ``(output, compile_s, run_s)``: run time excludes compilation and includes waiting for
      every output (``block_until_ready``).
    """
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_s, time.perf_counter() - start
