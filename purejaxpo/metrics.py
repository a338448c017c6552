"""Summaries of training metrics, computed on the host after a run; and the in-program
divergence flag (:func:`nonfinite`) that every trainer records."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

NONFINITE = "nonfinite"
"""The per-update metric (1.0 where a loss or a parameter was NaN or infinite) that the
programs add; :func:`divergence` reads it."""


def all_finite(tree) -> jax.Array:
    """Scalar bool: every element of every leaf of ``tree`` is finite (jittable)."""
    finite = jnp.bool_(True)
    for leaf in jax.tree_util.tree_leaves(tree):
        finite = finite & jnp.all(jnp.isfinite(leaf))
    return finite


def nonfinite(params, losses=None) -> jax.Array:
    """The :data:`NONFINITE` metric of one update or step (jittable): float32 1.0 where any
    parameter or any of ``losses`` (a pytree of loss values) is NaN or infinite, else 0.0.

    Non-finite gradients reach the parameters through the optimiser (global-norm clipping and
    Adam turn them into NaN parameters), so they are caught too, with no host sync.
    """
    return jnp.logical_not(all_finite(params) & all_finite(losses)).astype(jnp.float32)


def divergence(metrics) -> tuple[np.ndarray, np.ndarray]:
    """Which runs diverged, and at which update.

    Args:
      metrics: metrics ``[..., num_updates]`` with the ``nonfinite`` metric.

    Returns:
      ``(diverged, first_update)``: ``[...]`` bool, and ``[...]`` int64, the index along the
      update axis (0 = the first update) of the first update after which a loss or a parameter
      was non-finite (-1 where the run stayed finite). Reports (the CLI, sweep tables) count
      updates from 1, as the language-model trainers count steps.
      Both all-False / -1 when the metrics have no ``nonfinite`` entry.
    """
    if NONFINITE not in metrics:
        shape = np.shape(metrics["episode_return_sum"])[:-1]
        return np.zeros(shape, bool), np.full(shape, -1, np.int64)
    bad = np.asarray(metrics[NONFINITE]) > 0
    diverged = bad.any(-1)
    return diverged, np.where(diverged, bad.argmax(-1), -1)


def diverged_runs(metrics) -> list[int]:
    """Flat indices of the runs that diverged (over every leading axis)."""
    diverged, _ = divergence(metrics)
    return [int(i) for i in np.flatnonzero(np.ravel(diverged))]


def final_return(metrics, fraction: float = 0.05, *, warn: bool = True) -> np.ndarray:
    """Mean return of the episodes completed in the last ``fraction`` of a run's env steps.

    A run that diverged (see :func:`divergence`) gets NaN, never a number that looks fine (a
    policy with NaN parameters may still act, e.g. the argmax of NaN logits), and a warning
    names those runs unless ``warn`` is false.

    Args:
      metrics: the ``metrics`` of a ``TrainResult``, with ``episode_return_sum`` and
        ``episode_count`` of shape ``[..., num_updates]`` (leading axes from ``vmap``).
      fraction: share of the run (in updates, which are equal numbers of env steps) to average.

    Returns:
      ``[...]`` float64, NaN where no episode ended in that window.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} is invalid: must be in (0, 1]")
    sums = np.asarray(metrics["episode_return_sum"], np.float64)
    counts = np.asarray(metrics["episode_count"], np.float64)
    last = max(1, math.ceil(fraction * sums.shape[-1]))
    s = sums[..., -last:].sum(-1)
    c = counts[..., -last:].sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(c > 0, s / np.maximum(c, 1), np.nan)
    diverged, first = divergence(metrics)
    if diverged.any():
        if warn:
            runs = [int(i) for i in np.flatnonzero(np.ravel(diverged))]
            at = [int(u) for u in np.ravel(first)[runs]]
            warnings.warn(f"{len(runs)} run(s) diverged (non-finite loss or parameters): runs "
                          f"{runs} at updates {at}; their final_return is NaN", RuntimeWarning,
                          stacklevel=2)
        out = np.where(diverged, np.nan, out)
    return out
