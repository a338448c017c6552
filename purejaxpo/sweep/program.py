"""The compiled program of a sweep: metrics reduced in windows, runs chunked, sharded over
devices; and running a plan group by group."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np


import jax
import jax.numpy as jnp

from purejaxpo.algos import ALGORITHMS
from purejaxpo.config import RLConfig
from purejaxpo.lm.config import LMTrainConfig
from purejaxpo.metrics import NONFINITE, final_return
from purejaxpo.sweep.execute import (
    assemble_result, check_positive_ints, process0_log, run_groups, warn_diverged)
from purejaxpo.sweep.plan import Range, SweepPlan, is_lm, plan_sweep
from purejaxpo.sweep.results import SweepResult

SUM_METRICS = ("episode_return_sum", "episode_count")
"""Metrics summed (not averaged) over a ``log_every`` window, so that returns stay exact."""

def window_metrics(metrics: Mapping[str, jax.Array], log_every: int) -> dict[str, jax.Array]:
    """Metrics ``[U]`` reduced over windows of ``log_every`` updates: ``[ceil(U / log_every)]``.

    Windows end at the last update; when ``log_every`` does not divide ``U`` the first window is
    shorter. ``episode_return_sum`` and ``episode_count`` are summed, ``episode_return`` is
    recomputed from them (exact mean over every episode of the window, NaN if none), every other
    metric is the mean over the window, ignoring NaN.
    """
    if log_every == 1:
        return dict(metrics)
    out = {}
    for name, x in metrics.items():
        x = jnp.asarray(x, jnp.float32)
        num = x.shape[-1]
        windows = -(-num // log_every)
        pad = windows * log_every - num
        x = jnp.concatenate([jnp.full(x.shape[:-1] + (pad,), jnp.nan, jnp.float32), x], -1)
        x = x.reshape(x.shape[:-1] + (windows, log_every))
        out[name] = jnp.nansum(x, -1) if name in SUM_METRICS else jnp.nanmean(x, -1)
    if "episode_return_sum" in out and "episode_count" in out:
        count = out["episode_count"]
        out["episode_return"] = jnp.where(
            count > 0, out["episode_return_sum"] / jnp.maximum(count, 1.0), jnp.nan)
    return out


def final_window(config: RLConfig, fraction: float) -> int:
    """Updates at the end of a run that ``final_return(metrics, fraction)`` averages over."""
    return max(1, math.ceil(fraction * config.num_updates))


def make_run_fn(train: Callable, config: RLConfig, *, log_every: int = 1,
                fraction: float = 0.05) -> Callable:
    """``run(key, hp) -> {"metrics": {name: [W]}, "final": {...: [L]}}`` for one run.

    ``metrics`` are windowed by :func:`window_metrics` (``W = ceil(num_updates / log_every)``);
    ``final`` keeps ``episode_return_sum`` and ``episode_count`` of the last
    ``L = final_window(config, fraction)`` updates unreduced, for an exact ``final_return``;
    ``diverged_at`` is the index of the first update whose loss or parameters were non-finite
    (-1: none), exact whatever ``log_every``.
    """
    last = final_window(config, fraction)

    def run(key, hp):
        metrics = train(key, hp).metrics
        tail = {k: metrics[k][-last:] for k in SUM_METRICS}
        bad = metrics[NONFINITE] > 0
        diverged_at = jnp.where(jnp.any(bad), jnp.argmax(bad), -1).astype(jnp.int32)
        return {"metrics": window_metrics(metrics, log_every), "final": tail,
                "diverged_at": diverged_at}

    return run


def run_plan(plan: SweepPlan, *, chunk_size: int | None = None, log_every: int = 1,
             fraction: float = 0.05, make_train: Callable | None = None,
             devices: Sequence[Any] | None = None,
             log: Callable[[str], None] | None = print) -> SweepResult:
    """Runs a :class:`SweepPlan`: one compiled program per group of equal static settings.

    Args:
      plan: from :func:`plan_sweep`.
      chunk_size: runs per device at a time (``jax.lax.map``); None runs them all at once.
      log_every: keep metrics as windows of this many updates (see :func:`window_metrics`).
      fraction: share of each run that ``final_return`` averages over.
      make_train: ``make_train(config) -> train`` (default: the algorithm's).
      devices: devices to shard runs over (default ``jax.devices()``: every device of every
        process).
      log: where progress messages go (``print``; None for silence; only process 0 logs).
    """
    if is_lm(plan.base):
        raise ValueError(f"plan: {plan.algo} is a language-model trainer; run its plan with "
                         "purejaxpo.sweep.lm.run_lm_plan (or call sweep())")
    check_positive_ints(chunk_size=chunk_size, log_every=log_every)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} is invalid: must be in (0, 1]")
    make_train = make_train or ALGORITHMS[plan.algo][1]
    say = process0_log(log)
    groups, compile_s, run_s, num_devices = run_groups(
        plan, lambda config: make_run_fn(make_train(config), config, log_every=log_every,
                                         fraction=fraction),
        chunk_size=chunk_size, devices=devices, log=log,
        describe=lambda c: f"{c.num_envs} envs x {c.num_steps} steps, {c.num_updates} updates")

    per_run: list[dict | None] = [None] * plan.num_runs
    for g, (runs, out) in enumerate(groups):
        config = plan.configs[plan.groups[g][0]]
        diverged_at = np.asarray(out["diverged_at"])
        finals = np.where(diverged_at >= 0, np.nan, final_return(out["final"], fraction=1.0))
        for i, (c, s) in enumerate(runs):
            m = {k: np.asarray(v[i], np.float64) for k, v in out["metrics"].items()}
            points = len(m["episode_return"])
            ends = config.num_updates - (points - 1 - np.arange(points)) * log_every
            steps = (ends * config.batch_size).astype(np.float64)
            per_run[c * plan.seeds + s] = {"metrics": m, "final": float(finals[i]),
                                           "steps": steps, "group": g,
                                           "diverged_at": int(diverged_at[i])}

    result = assemble_result(plan, per_run, score="final_return", curve="episode_return",
                             compile_s=compile_s, run_s=run_s, num_devices=num_devices)
    say(f"compile {compile_s:.1f} s, run {run_s:.2f} s, "
        f"{result.steps_per_s:,.0f} env steps/s over the sweep")
    warn_diverged(result, say)
    return result


def sweep(key, algo: str | RLConfig | LMTrainConfig,
          base: RLConfig | LMTrainConfig | None = None, *,
          grid: Mapping[str, Sequence[Any]] | None = None,
          ranges: Mapping[str, Range | tuple] | None = None, num_samples: int | None = None,
          sample_key=None, seeds: int = 1, chunk_size: int | None = None, log_every: int = 1,
          fraction: float = 0.05, make_train: Callable | None = None,
          devices: Sequence[Any] | None = None, init=None, pairs=None,
          extra_rewards: Mapping[str, Callable] | None = None,
          log: Callable[[str], None] | None = print) -> SweepResult:
    """Runs every (configuration, seed) of a sweep; see :func:`plan_sweep` and :func:`run_plan`
    (environment algorithms) or :func:`purejaxpo.sweep.lm.run_lm_plan` (language-model
    trainers: ``lm-sft``, ``lm-grpo``, ``lm-ppo``, ``lm-dpo``, which take ``init``, ``pairs``
    and ``extra_rewards``; ``log_every``, ``fraction`` and ``make_train`` are the
    environment algorithms').

    Every configuration is validated before anything compiles. Seed ``s`` of every
    configuration uses ``jax.random.split(key, seeds)[s]``, so a row equals
    ``make_train(config)(keys[s])`` of that configuration trained alone, up to float rounding
    (batched programs may round differently; long RL runs amplify it).

    Returns:
      a :class:`SweepResult` (``.table``, ``.curves`` ``[runs, W]``, timings, counts).
    """
    plan = plan_sweep(key, algo, base, grid=grid, ranges=ranges, num_samples=num_samples,
                      sample_key=sample_key, seeds=seeds)
    if is_lm(plan.base):
        from purejaxpo.sweep.lm import run_lm_plan

        return run_lm_plan(plan, init=init, pairs=pairs, extra_rewards=extra_rewards,
                           chunk_size=chunk_size, devices=devices, log=log)
    if init is not None or pairs is not None or extra_rewards is not None:
        raise ValueError("init, pairs, extra_rewards: only language-model trainers take them")
    return run_plan(plan, chunk_size=chunk_size, log_every=log_every, fraction=fraction,
                    make_train=make_train, devices=devices, log=log)
