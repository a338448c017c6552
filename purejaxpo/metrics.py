"""Summaries of training metrics, computed on the host after a run."""

from __future__ import annotations

import math

import numpy as np


def final_return(metrics, fraction: float = 0.05) -> np.ndarray:
    """Mean return of the episodes completed in the last ``fraction`` of a run's env steps.

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
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)
