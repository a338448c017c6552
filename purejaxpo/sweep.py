"""Hyperparameter sweeps: every (configuration, seed) run of a sweep in one compiled program.

A sweep is a base config, some settings to vary (a grid of values, and/or random samples from
ranges) and a number of seeds. The sweepable settings of the config (``Config.SWEEPABLE``:
learning rate, discount, clip range, coefficients...) are traced, so all their runs go through
one ``jax.vmap`` of ``train`` over ``(key, hyperparams)``. Static settings (``num_envs``,
``num_steps``, ``num_minibatches``, ``hidden_sizes``, ``total_timesteps``, switches...) define
the program, so the sweep is grouped by them automatically: one compilation per distinct
combination of static values (the number is logged before anything compiles).

Example::

    import jax
    from purejaxpo.algos.ppo import PPOConfig
    from purejaxpo.sweep import best, sweep

    result = sweep(jax.random.PRNGKey(0), PPOConfig(env="CartPole-v1"),
                   grid={"lr": [1e-4, 3e-4, 1e-3], "clip_eps": [0.1, 0.2]}, seeds=8)
    result.table          # DataFrame, one row per run: config, learning_rate, clip_eps, seed, ...
    result.curves         # [runs, num_points] episode_return
    best(result)          # the configuration with the highest mean final_return over seeds

Memory and devices: the run axis is split over every device (all local devices, or every
device of every process after ``jax.distributed.initialize``) with ``jax.shard_map`` on a
one-axis :class:`jax.sharding.Mesh`; on each device runs go ``chunk_size`` at a time through
``jax.lax.map``; ``log_every=k`` keeps metrics only as means over windows of ``k`` updates
(sums for ``episode_return_sum`` and ``episode_count``). Runs are padded (with copies of the
first run) to a multiple of ``device_count * chunk_size`` and the padding is dropped from the
results. ``final_return`` is computed from the unreduced metrics inside the program, so it is
exact whatever ``log_every``.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

import purejaxpo  # noqa: F401  (before JAX starts: honours PUREJAXPO_XLA_SAFETY)

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxpo.config import RLConfig
from purejaxpo.metrics import final_return

ALIASES = {"lr": "learning_rate"}
"""Short names accepted for config fields in sweeps (Python and command line)."""

SUM_METRICS = ("episode_return_sum", "episode_count")
"""Metrics summed (not averaged) over a ``log_every`` window, so that returns stay exact."""

_AXIS = "runs"


# ---------------------------------------------------------------------------------------------
# What to run: configurations, validated and grouped by their static settings.


@dataclasses.dataclass(frozen=True)
class Range:
    """A range to sample a setting from in random search: uniform, or log-uniform if ``log``.

    Integer fields are rounded to the nearest integer after sampling.
    """

    low: float
    high: float
    log: bool = False


def algorithm_of(config: RLConfig) -> str:
    """The name in :data:`purejaxpo.algos.ALGORITHMS` whose config class ``config`` is."""
    from purejaxpo.algos import ALGORITHMS

    for name, (cls, _) in ALGORITHMS.items():
        if type(config) is cls:
            return name
    raise ValueError(f"config of type {type(config).__name__} is not a registered algorithm's")


def resolve_name(name: str, config_cls) -> str:
    """The config field that ``name`` (or its alias, e.g. ``lr``) means; ValueError if none."""
    key = name.strip().replace("-", "_")
    key = ALIASES.get(key, key)
    fields = [f.name for f in dataclasses.fields(config_cls)]
    if key not in fields:
        close = difflib.get_close_matches(key, fields + list(ALIASES), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{name}: unknown setting for {config_cls.__name__}.{hint} "
                         f"Known: {', '.join(sorted(fields))}")
    return key


def _numeric_type(config_cls, name: str):
    """``int`` or ``float`` for a numeric field (``float | None`` counts), else None."""
    import types
    import typing

    annotation = typing.get_type_hints(config_cls)[name]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return annotation if annotation in (int, float) else None


def _sample_ranges(key, ranges: Mapping[str, Range], num_samples: int, config_cls) -> list[dict]:
    """``num_samples`` points drawn from ``ranges`` (one uniform draw per point and name)."""
    if not ranges:
        return [{}]
    names = list(ranges)
    u = np.asarray(jax.random.uniform(key, (num_samples, len(names)), jnp.float32), np.float64)
    points = [dict() for _ in range(num_samples)]
    for j, name in enumerate(names):
        r = ranges[name]
        annotation = _numeric_type(config_cls, name)
        if annotation is None:
            raise ValueError(f"{name}: a range needs a numeric setting (int or float)")
        low, high = float(r.low), float(r.high)
        if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
            raise ValueError(f"{name}={low}:{high} is invalid: a range needs low < high")
        if r.log and low <= 0:
            raise ValueError(f"{name}={low}:{high}:log is invalid: log ranges need low > 0")
        if r.log:
            values = np.exp(np.log(low) + u[:, j] * (np.log(high) - np.log(low)))
        else:
            values = low + u[:, j] * (high - low)
        is_int = annotation is int
        for point, v in zip(points, values):
            point[name] = int(round(v)) if is_int else float(v)
    return points


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A validated sweep, before anything compiles.

    Attributes:
      algo: algorithm name in :data:`purejaxpo.algos.ALGORITHMS`.
      base: the base config.
      swept: names of the settings that vary, in column order.
      configs: one full, validated config per configuration ``[num_configs]``.
      overrides: the swept values of each configuration ``[num_configs]``.
      groups: configuration indices per compilation (configs with equal static settings).
      seeds: seeds per configuration; run ``c * seeds + s`` is configuration ``c``, seed ``s``.
      seed_keys: ``[seeds, 2]`` PRNG keys; seed ``s`` of every configuration uses ``seed_keys[s]``.
    """

    algo: str
    base: RLConfig
    swept: tuple[str, ...]
    configs: tuple[RLConfig, ...]
    overrides: tuple[dict, ...]
    groups: tuple[tuple[int, ...], ...]
    seeds: int
    seed_keys: np.ndarray

    @property
    def num_compilations(self) -> int:
        return len(self.groups)

    @property
    def num_runs(self) -> int:
        return len(self.configs) * self.seeds

    def describe(self) -> str:
        """One line: configurations, seeds, runs and how many compilations they need."""
        static = [n for n in self.swept if n not in type(self.base).SWEEPABLE]
        why = f" (one per value of {', '.join(static)})" if static else ""
        return (f"sweep {self.algo} on {self.base.env}: {len(self.configs)} configuration(s) x "
                f"{self.seeds} seed(s) = {self.num_runs} runs in {self.num_compilations} "
                f"compilation(s){why}")


def static_signature(config: RLConfig) -> tuple:
    """The config's static (non-sweepable) settings: equal signatures share one program."""
    return tuple((f.name, getattr(config, f.name)) for f in dataclasses.fields(config)
                 if f.name not in type(config).SWEEPABLE)


def plan_sweep(key, algo: str | RLConfig, base: RLConfig | None = None, *,
               grid: Mapping[str, Sequence[Any]] | None = None,
               ranges: Mapping[str, Range | tuple] | None = None,
               num_samples: int | None = None, sample_key=None, seeds: int = 1) -> SweepPlan:
    """Builds and validates every configuration of a sweep, and groups them by static settings.

    Args:
      key: PRNG key; ``jax.random.split(key, seeds)`` gives the seeds' keys.
      algo: algorithm name, or a config (then it is also the base and ``base`` must be None).
      base: the config the sweep starts from (default: the algorithm's defaults).
      grid: ``{name: [values]}``; the configurations are the Cartesian product.
      ranges: ``{name: Range(low, high, log)}`` (or a ``(low, high[, "log"])`` tuple) for
        random search: ``num_samples`` points, each crossed with every grid point.
      num_samples: number of random-search samples (needed with ``ranges``).
      sample_key: PRNG key of the random search (default ``jax.random.fold_in(key, 1)``).
      seeds: seeds per configuration.

    Raises:
      ValueError: naming the field, for an unknown name or an invalid value (every
      configuration is constructed, hence validated, here).
    """
    from purejaxpo.algos import ALGORITHMS

    if isinstance(algo, RLConfig):
        if base is not None:
            raise ValueError("base: give either a config as algo or a base config, not both")
        base, algo = algo, algorithm_of(algo)
    if algo not in ALGORITHMS:
        close = difflib.get_close_matches(str(algo), list(ALGORITHMS), n=3)
        raise ValueError(f"algo={algo!r} is invalid: must be one of {sorted(ALGORITHMS)}"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""))
    config_cls = ALGORITHMS[algo][0]
    base = config_cls() if base is None else base
    if type(base) is not config_cls:
        raise ValueError(f"base: a {config_cls.__name__} is needed for {algo}, "
                         f"got {type(base).__name__}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r} is invalid: must be an integer >= 1")

    grid_items = []
    for name, values in (grid or {}).items():
        field = resolve_name(name, config_cls)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{field}: a grid needs a non-empty list of values, got {values!r}")
        if field in dict(grid_items):
            raise ValueError(f"{field}: given twice in the grid")
        grid_items.append((field, list(values)))
    range_items = {}
    for name, r in (ranges or {}).items():
        field = resolve_name(name, config_cls)
        if field in dict(grid_items) or field in range_items:
            raise ValueError(f"{field}: given twice (grid and range)")
        if not isinstance(r, Range):
            r = Range(float(r[0]), float(r[1]), len(r) > 2 and r[2] in ("log", True))
        range_items[field] = r
    if range_items:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r} is invalid: random search needs "
                             "an integer >= 1")
    elif num_samples is not None:
        raise ValueError("num_samples: random search needs ranges to sample from")
    for field in ("env",):
        if field in dict(grid_items) or field in range_items:
            raise ValueError(f"{field}: cannot be swept (one sweep is one environment)")

    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):   # jax.random.key(...): raw uint32 data
        key = jax.random.key_data(key)
    if sample_key is None:
        sample_key = jax.random.fold_in(key, 1)
    grid_points = [dict(zip([n for n, _ in grid_items], combo))
                   for combo in itertools.product(*[v for _, v in grid_items])]
    samples = _sample_ranges(sample_key, range_items, num_samples or 1, config_cls)
    overrides = [dict(g, **s) for g in grid_points for s in samples]
    configs = tuple(base.replace(**ov) for ov in overrides)   # validates every configuration

    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(static_signature(config), []).append(i)
    swept = tuple([n for n, _ in grid_items] + list(range_items))
    seed_keys = np.asarray(jax.random.split(key, seeds))
    return SweepPlan(algo, base, swept, configs, tuple(overrides),
                     tuple(tuple(g) for g in groups.values()), seeds, seed_keys)


# ---------------------------------------------------------------------------------------------
# The program: metrics reduced in windows, runs chunked, sharded over devices.


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
    ``L = final_window(config, fraction)`` updates unreduced, for an exact ``final_return``.
    """
    last = final_window(config, fraction)

    def run(key, hp):
        metrics = train(key, hp).metrics
        tail = {k: metrics[k][-last:] for k in SUM_METRICS}
        return {"metrics": window_metrics(metrics, log_every), "final": tail}

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


# ---------------------------------------------------------------------------------------------
# Results.


@dataclasses.dataclass
class SweepResult:
    """What :func:`sweep` returns (the same on every process of a multi-host sweep).

    Attributes:
      table: one row per run (``[num_configs * seeds]`` rows, configuration-major): ``config``
        (configuration index), each swept setting, ``seed`` (index), ``final_return``,
        ``compilation`` (index of the program that ran it).
      curves: ``[runs, W]`` float64 ``episode_return`` per window of ``log_every`` updates, rows
        in table order; NaN-padded on the right when static settings give different ``W``.
      metrics: every metric the same way, ``{name: [runs, W]}``.
      env_steps: ``[runs, W]`` env steps done at the end of each window (NaN padding).
      plan: the :class:`SweepPlan` (configs, groups, keys).
      compile_s, run_s: summed over compilations (run time includes gathering results).
      num_compilations, device_count, process_count: how it ran.
    """

    table: Any
    curves: np.ndarray
    metrics: dict[str, np.ndarray]
    env_steps: np.ndarray
    plan: SweepPlan
    compile_s: float
    run_s: float
    num_compilations: int
    device_count: int
    process_count: int

    @property
    def total_env_steps(self) -> int:
        """Env steps of every run of the sweep (padding excluded)."""
        return sum(c.num_updates * c.batch_size for c in self.plan.configs) * self.plan.seeds

    @property
    def steps_per_s(self) -> float:
        """Env steps of the whole sweep per second of run time."""
        return self.total_env_steps / self.run_s if self.run_s > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        """The JSON contract of ``purejaxpo sweep --json``."""
        def clean(v):
            if isinstance(v, tuple):
                return list(v)
            if isinstance(v, (np.floating, float)):
                return float(v) if math.isfinite(v) else None
            if isinstance(v, np.integer):
                return int(v)
            return v

        runs = [{k: clean(v) for k, v in row.items()} for row in self.table.to_dict("records")]
        top = best(self)
        return {
            "algo": self.plan.algo,
            "env": self.plan.base.env,
            "swept": list(self.plan.swept),
            "seeds": self.plan.seeds,
            "num_configs": len(self.plan.configs),
            "runs": runs,
            "best": {k: clean(v) for k, v in top.items() if k != "config_obj"},
            "compile_s": self.compile_s,
            "run_s": self.run_s,
            "steps_per_s": self.steps_per_s,
            "num_compilations": self.num_compilations,
            "device_count": self.device_count,
            "process_count": self.process_count,
            "config": self.plan.base.to_dict(),
        }


def summary(result: SweepResult):
    """One row per configuration, best first: swept settings, ``mean_final_return``,
    ``std_final_return``, ``min_final_return``, ``max_final_return`` over seeds (NaN last)."""
    import pandas as pd

    table = result.table
    agg = table.groupby("config")["final_return"].agg(["mean", "std", "min", "max"])
    agg.columns = [f"{c}_final_return" for c in agg.columns]
    first = table.drop_duplicates("config").set_index("config")[list(result.plan.swept)]
    out = pd.concat([first, agg], axis=1).reset_index()
    return out.sort_values("mean_final_return", ascending=False, na_position="last",
                           kind="stable").reset_index(drop=True)


def best(result: SweepResult) -> dict[str, Any]:
    """The configuration with the highest mean ``final_return`` over seeds.

    Returns:
      ``{"config": index, <swept setting>: value, ..., "mean_final_return": float,
      "std_final_return": float, "config_obj": the full config}``.
    """
    row = summary(result).iloc[0].to_dict()
    index = int(row["config"])
    out = {"config": index}
    out.update({n: result.plan.overrides[index][n] for n in result.plan.swept})  # exact types
    out["mean_final_return"] = float(row["mean_final_return"])
    out["std_final_return"] = float(row["std_final_return"])
    out["config_obj"] = result.plan.configs[index]
    return out


# ---------------------------------------------------------------------------------------------
# Running.


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
    import pandas as pd

    from purejaxpo.algos import ALGORITHMS

    for name, value in (("chunk_size", chunk_size), ("log_every", log_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{name}={value!r} is invalid: must be an integer >= 1")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} is invalid: must be in (0, 1]")
    make_train = make_train or ALGORITHMS[plan.algo][1]
    devices = list(jax.devices() if devices is None else devices)
    mesh = Mesh(np.array(devices), (_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(_AXIS))
    num_devices = len(devices)
    say = log if (log is not None and jax.process_index() == 0) else (lambda _: None)
    say(plan.describe() + f", {num_devices} device(s), {jax.process_count()} process(es)")

    num_runs = plan.num_runs
    per_run: list[dict | None] = [None] * num_runs
    compile_s = run_s = 0.0
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
            f"{len(runs)} runs (+{len(padded) - len(runs)} padding), "
            f"{config.num_envs} envs x {config.num_steps} steps, {config.num_updates} updates")

        run = make_run_fn(make_train(config), config, log_every=log_every, fraction=fraction)
        program = make_program(run, mesh, chunk)
        args = (_global_array(keys, sharding),
                {k: _global_array(v, sharding) for k, v in hps.items()})
        start = time.perf_counter()
        compiled = jax.jit(program).lower(*args).compile()
        compile_s += time.perf_counter() - start
        start = time.perf_counter()
        out = _to_host(jax.block_until_ready(compiled(*args)))
        run_s += time.perf_counter() - start

        finals = final_return(out["final"], fraction=1.0)
        for i, (c, s) in enumerate(runs):
            m = {k: np.asarray(v[i], np.float64) for k, v in out["metrics"].items()}
            points = len(m["episode_return"])
            ends = config.num_updates - (points - 1 - np.arange(points)) * log_every
            steps = (ends * config.batch_size).astype(np.float64)
            per_run[c * plan.seeds + s] = {"metrics": m, "final": float(finals[i]),
                                           "steps": steps, "group": g}

    width = max(len(r["steps"]) for r in per_run)

    def pad(x):
        return np.concatenate([x, np.full(width - len(x), np.nan)])

    names = list(per_run[0]["metrics"])
    metrics = {k: np.stack([pad(r["metrics"][k]) for r in per_run]) for k in names}
    rows = []
    for c, ov in enumerate(plan.overrides):
        for s in range(plan.seeds):
            r = per_run[c * plan.seeds + s]
            rows.append({"config": c, **{n: ov[n] for n in plan.swept}, "seed": s,
                         "final_return": r["final"], "compilation": r["group"]})
    table = pd.DataFrame(rows, columns=["config", *plan.swept, "seed", "final_return",
                                        "compilation"])
    result = SweepResult(
        table=table, curves=metrics["episode_return"], metrics=metrics,
        env_steps=np.stack([pad(r["steps"]) for r in per_run]), plan=plan,
        compile_s=compile_s, run_s=run_s, num_compilations=plan.num_compilations,
        device_count=num_devices, process_count=jax.process_count())
    say(f"compile {compile_s:.1f} s, run {run_s:.2f} s, "
        f"{result.steps_per_s:,.0f} env steps/s over the sweep")
    return result


def sweep(key, algo: str | RLConfig, base: RLConfig | None = None, *,
          grid: Mapping[str, Sequence[Any]] | None = None,
          ranges: Mapping[str, Range | tuple] | None = None, num_samples: int | None = None,
          sample_key=None, seeds: int = 1, chunk_size: int | None = None, log_every: int = 1,
          fraction: float = 0.05, make_train: Callable | None = None,
          devices: Sequence[Any] | None = None,
          log: Callable[[str], None] | None = print) -> SweepResult:
    """Runs every (configuration, seed) of a sweep; see :func:`plan_sweep` and :func:`run_plan`.

    Every configuration is validated before anything compiles. Seed ``s`` of every
    configuration uses ``jax.random.split(key, seeds)[s]``, so a row equals
    ``make_train(config)(keys[s])`` of that configuration trained alone, up to float rounding
    (batched programs may round differently; long RL runs amplify it).

    Returns:
      a :class:`SweepResult` (``.table``, ``.curves`` ``[runs, W]``, timings, counts).
    """
    plan = plan_sweep(key, algo, base, grid=grid, ranges=ranges, num_samples=num_samples,
                      sample_key=sample_key, seeds=seeds)
    return run_plan(plan, chunk_size=chunk_size, log_every=log_every, fraction=fraction,
                    make_train=make_train, devices=devices, log=log)


# ---------------------------------------------------------------------------------------------
# Command line: ``purejaxpo sweep`` (registered by purejaxpo.cli).


def parse_grid(items: Sequence[str], config_cls) -> dict[str, list]:
    """``["lr=1e-4,3e-4", "hidden_sizes=64,64/128,128"]`` -> ``{field: [values]}``.

    Values are separated by commas; for list-valued fields (``hidden_sizes``) by ``/``.
    """
    import typing

    from purejaxpo.cli import _field_types, parse_value

    types_ = _field_types(config_cls)
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--grid {item!r} is invalid: expected name=v1,v2,...")
        name, text = item.split("=", 1)
        field = resolve_name(name, config_cls)
        if field in grid:
            raise ValueError(f"--grid {field}: given twice")
        annotation = types_[field]
        is_tuple = typing.get_origin(annotation) is tuple
        parts = [p for p in text.split("/" if is_tuple else ",") if p.strip()]
        if not parts:
            raise ValueError(f"--grid {field}: no values given")
        grid[field] = [parse_value(field, p.strip(), annotation) for p in parts]
    return grid


def parse_range(items: Sequence[str], config_cls) -> dict[str, Range]:
    """``["lr=1e-5:1e-2:log", "ent_coef=0:0.02"]`` -> ``{field: Range}``."""
    ranges: dict[str, Range] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--range {item!r} is invalid: expected name=low:high[:log]")
        name, text = item.split("=", 1)
        field = resolve_name(name, config_cls)
        parts = text.split(":")
        scale = parts[2].strip().lower() if len(parts) == 3 else "uniform"
        if len(parts) not in (2, 3) or scale not in ("log", "uniform"):
            raise ValueError(f"--range {field}={text!r} is invalid: expected low:high, "
                             "low:high:log or low:high:uniform")
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"--range {field}={text!r} is invalid: low and high must be "
                             "numbers") from None
        if field in ranges:
            raise ValueError(f"--range {field}: given twice")
        ranges[field] = Range(low, high, scale == "log")
    return ranges


def cmd_sweep(args) -> int:
    """``purejaxpo sweep``: validates everything (exit 2 on bad input), then runs the sweep."""
    import json
    import os
    import sys

    from purejaxpo.algos import ALGORITHMS
    from purejaxpo.cli import build_config, device_description

    try:
        base = build_config(args.algo, args)
        config_cls = ALGORITHMS[args.algo][0]
        grid = parse_grid(args.grid or [], config_cls)
        ranges = parse_range(args.range or [], config_cls)
        if args.random is not None and not ranges:
            raise ValueError("--random: random search needs at least one --range")
        if ranges and args.random is None:
            raise ValueError("--range: give the number of samples with --random N")
        for flag in ("seeds", "chunk_size", "log_every"):
            value = getattr(args, flag)
            if value is not None and value < 1:
                raise ValueError(f"--{flag.replace('_', '-')}={value} is invalid: "
                                 "must be an integer >= 1")
        plan = plan_sweep(jax.random.PRNGKey(args.seed), args.algo, base, grid=grid,
                          ranges=ranges, num_samples=args.random, seeds=args.seeds)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if jax.process_index() == 0:
        print(f"purejaxpo sweep {args.algo} on {base.env}, {device_description()}", flush=True)
    result = run_plan(plan, chunk_size=args.chunk_size, log_every=args.log_every)
    if jax.process_index() != 0:
        return 0
    table = summary(result)
    with_pd_options = table.to_string(index=False, float_format=lambda v: f"{v:.6g}")
    print(f"\nconfigurations, best first (final_return over {plan.seeds} seed(s)):")
    print(with_pd_options)
    top = best(result)
    print("best: " + ", ".join(f"{n}={top[n]}" for n in plan.swept)
          + f" -> mean final_return {top['mean_final_return']:.2f}")
    print(f"{result.num_compilations} compilation(s), {result.device_count} device(s); "
          f"compile {result.compile_s:.1f} s, run {result.run_s:.2f} s, "
          f"{result.steps_per_s:,.0f} env steps/s")
    for path, write in ((args.json, "json"), (args.csv, "csv")):
        if not path:
            continue
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if write == "json":
            out = result.to_json()
            out.update(seed=args.seed, device=device_description())
            with open(path, "w") as f:
                json.dump(out, f, indent=1)
        else:
            result.table.to_csv(path, index=False)
        print(f"wrote {path}")
    return 0


def add_cli_parser(sub) -> None:
    """Adds the ``sweep`` sub-command to the ``purejaxpo`` parser's ``sub``-parsers."""
    from purejaxpo.algos import ALGORITHMS

    p = sub.add_parser("sweep", help="a hyperparameter sweep x seeds, one program per static "
                       "setting")
    p.add_argument("algo", choices=sorted(ALGORITHMS))
    p.add_argument("--env", default="CartPole-v1",
                   help="gymnax environment; starts from its tuned preset (default CartPole-v1)")
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2,...",
                   help="values to try (repeatable; the sweep is their product); lr means "
                   "learning_rate; list settings separate values by '/' (hidden_sizes=64,64/32)")
    p.add_argument("--random", type=int, default=None, metavar="N",
                   help="random search: N samples from the --range settings")
    p.add_argument("--range", action="append", metavar="NAME=LOW:HIGH[:log]",
                   help="range to sample with --random (uniform, or log-uniform with :log)")
    p.add_argument("--seeds", type=int, default=4, help="seeds per configuration (default 4)")
    p.add_argument("--seed", type=int, default=0,
                   help="base PRNG seed of the runs and of the random search (default 0)")
    p.add_argument("--total-timesteps", type=int, default=None, help="env steps per run")
    p.add_argument("--num-envs", type=int, default=None, help="parallel environments per run")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="any config field of the base config (repeatable)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="runs per device at a time (less memory); default all at once")
    p.add_argument("--log-every", type=int, default=1,
                   help="keep metrics as means over windows of this many updates")
    p.add_argument("--json", metavar="PATH", help="write every run and the timings here")
    p.add_argument("--csv", metavar="PATH", help="write the table (one row per run) here")
    p.set_defaults(func=cmd_sweep)
