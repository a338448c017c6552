"""The compiled program of a sweep: metrics reduced in windows, runs chunked, sharded over
devices; and running a plan group by group."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

import purejaxpo  # noqa: F401  (before JAX starts: honours PUREJAXPO_XLA_SAFETY)

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxpo.algos import ALGORITHMS
from purejaxpo.config import RLConfig
from purejaxpo.lm.config import LMTrainConfig
from purejaxpo.metrics import NONFINITE, final_return
from purejaxpo.sweep.plan import Range, SweepPlan, is_lm, plan_sweep
from purejaxpo.sweep.results import SweepResult

SUM_METRICS = ("episode_return_sum", "episode_count")
"""Metrics summed (not averaged) over a ``log_every`` window, so that returns stay exact."""

_AXIS = "runs"


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


def make_program(run: Callable, mesh: Mesh, chunk_size: int | None) -> Callable:
    """``program(keys [R, 2], hps {name: [R]}) -> outputs [R, ...]``, sharded over ``mesh``.

    Each device gets ``R / num_devices`` runs (``R`` must be a multiple) and runs them
    ``chunk_size`` at a time (``jax.lax.map`` over ``jax.vmap``; ``chunk_size`` must divide the
    per-device count), or all at once when ``chunk_size`` is None.
    """

    def local(keys, hps):
        if chunk_size is None or chunk_size >= keys.shape[0]:
            return jax.vmap(run)(keys, hps)
        return jax.lax.map(lambda xs: run(*xs), (keys, hps), batch_size=chunk_size)

    spec = PartitionSpec(_AXIS)
    # check_vma=False: the algorithms' scans start carries from constants (no per-device
    # variance annotations), and every run is independent, so nothing crosses devices.
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec), out_specs=spec,
                         check_vma=False)


def _global_array(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _to_host(tree) -> Any:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def check_positive_ints(**values) -> None:
    """ValueError naming the first value that is neither None nor an integer >= 1."""
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{name}={value!r} is invalid: must be an integer >= 1")


def run_groups(plan: SweepPlan, make_run: Callable, *, chunk_size: int | None,
               devices: Sequence[Any] | None, log: Callable[[str], None] | None,
               describe: Callable[[Any], str]):
    """Compiles and runs each group of ``plan`` (configurations with equal static settings):
    ``make_run(config) -> run(key, hp) -> outputs`` is vmapped over the group's runs, sharded
    over ``devices`` and chunked (:func:`make_program`).

    Returns:
      ``(groups, compile_s, run_s, num_devices)``: per group, ``(runs, outputs)`` with
      ``runs`` the ``(configuration, seed)`` of each output row (padding dropped) and the
      outputs on the host (NumPy, ``[len(runs), ...]``).
    """
    check_positive_ints(chunk_size=chunk_size)
    devices = list(jax.devices() if devices is None else devices)
    mesh = Mesh(np.array(devices), (_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(_AXIS))
    num_devices = len(devices)
    say = log if (log is not None and jax.process_index() == 0) else (lambda _: None)
    say(plan.describe() + f", {num_devices} device(s), {jax.process_count()} process(es)")

    for indices in plan.groups:  # replay buffers (SAC, TD3) must fit: refuse before compiling
        check_memory = getattr(plan.configs[indices[0]], "check_memory", None)
        if check_memory is not None:
            at_once = -(-len(indices) * plan.seeds // num_devices)
            check_memory(at_once if chunk_size is None else min(chunk_size, at_once), devices[0])
    compile_s = run_s = 0.0
    groups = []
    for g, indices in enumerate(plan.groups):
        config = plan.configs[indices[0]]
        runs = [(c, s) for c in indices for s in range(plan.seeds)]
        per_device = -(-len(runs) // num_devices)
        chunk = None if chunk_size is None else min(chunk_size, per_device)
        if chunk is not None:
            per_device = -(-per_device // chunk) * chunk
        padded = runs + [runs[0]] * (per_device * num_devices - len(runs))
        keys = np.stack([plan.seed_keys[s] for _, s in padded])
        hps = [plan.configs[c].hyperparams() for c, _ in padded]
        hps = {k: np.stack([np.asarray(h[k], np.float32) for h in hps]) for k in hps[0]}
        say(f"  compilation {g + 1}/{plan.num_compilations}: {len(indices)} configuration(s), "
            f"{len(runs)} runs (+{len(padded) - len(runs)} padding), {describe(config)}")

        program = make_program(make_run(config), mesh, chunk)
        args = (_global_array(keys, sharding),
                {k: _global_array(v, sharding) for k, v in hps.items()})
        start = time.perf_counter()
        compiled = jax.jit(program).lower(*args).compile()
        compile_s += time.perf_counter() - start
        start = time.perf_counter()
        out = _to_host(jax.block_until_ready(compiled(*args)))
        run_s += time.perf_counter() - start
        groups.append((runs, jax.tree_util.tree_map(lambda x: x[:len(runs)], out)))
    return groups, compile_s, run_s, num_devices


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
    say = log if (log is not None and jax.process_index() == 0) else (lambda _: None)
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


def assemble_result(plan: SweepPlan, per_run: Sequence[Mapping[str, Any]], *, score: str,
                    curve: str, compile_s: float, run_s: float, num_devices: int,
                    unit: str = "env steps") -> SweepResult:
    """The :class:`SweepResult` of ``per_run`` (one dict per run, configuration-major, with
    ``metrics`` ``{name: [W]}``, ``final`` (the score), ``steps`` ``[W]``, ``group`` and
    ``diverged_at`` (-1: none)): the table, and every metric NaN-padded to the longest run."""
    import pandas as pd

    width = max(len(r["steps"]) for r in per_run)

    def pad(x):
        return np.concatenate([x, np.full(width - len(x), np.nan)])

    names = list(per_run[0]["metrics"])
    metrics = {k: np.stack([pad(r["metrics"][k]) for r in per_run]) for k in names}
    rows = []
    for c, ov in enumerate(plan.overrides):
        for s in range(plan.seeds):
            r = per_run[c * plan.seeds + s]
            at = r["diverged_at"]
            rows.append({"config": c, **{n: ov[n] for n in plan.swept}, "seed": s,
                         score: r["final"], "compilation": r["group"],
                         "diverged_at_update": at + 1 if at >= 0 else None})
    table = pd.DataFrame(rows, columns=["config", *plan.swept, "seed", score,
                                        "compilation", "diverged_at_update"])
    table["diverged_at_update"] = table["diverged_at_update"].astype("Int64")
    return SweepResult(
        table=table, curves=metrics[curve], metrics=metrics,
        env_steps=np.stack([pad(r["steps"]) for r in per_run]), plan=plan,
        compile_s=compile_s, run_s=run_s, num_compilations=plan.num_compilations,
        device_count=num_devices, process_count=jax.process_count(), score=score, unit=unit)


def warn_diverged(result: SweepResult, say: Callable[[str], None]) -> None:
    """Says how many runs diverged, if any."""
    table = result.table
    diverged = table[table["diverged_at_update"].notna()]
    if len(diverged):
        say(f"warning: {len(diverged)} of {len(table)} run(s) diverged (non-finite loss or "
            f"parameters); their {result.score} is NaN (column diverged_at_update)")


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
