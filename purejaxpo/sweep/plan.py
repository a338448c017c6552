"""Planning a sweep: every configuration built and validated, grouped by static settings,
before anything compiles."""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo.algos import ALGORITHMS
from purejaxpo.config import RLConfig
from purejaxpo.lm.config import LM_TRAINERS, LMTrainConfig
from purejaxpo.settings import numeric_type, resolve_name


@dataclasses.dataclass(frozen=True)
class Range:
    """A range to sample a setting from in random search: uniform, or log-uniform if ``log``.

    Integer fields are rounded to the nearest integer after sampling.
    """

    low: float
    high: float
    log: bool = False


def config_classes() -> dict[str, type]:
    """Every sweepable trainer's config class by name: the environment algorithms
    (:data:`purejaxpo.algos.ALGORITHMS`) and the language-model trainers
    (:data:`purejaxpo.lm.config.LM_TRAINERS`: ``lm-sft``, ``lm-grpo``, ``lm-ppo``, ``lm-dpo``)."""
    return {**{name: cls for name, (cls, _) in ALGORITHMS.items()}, **LM_TRAINERS}


def algorithm_of(config: RLConfig | LMTrainConfig) -> str:
    """The name in :func:`config_classes` whose config class ``config`` is."""
    for name, cls in config_classes().items():
        if type(config) is cls:
            return name
    raise ValueError(f"config of type {type(config).__name__} is not a registered algorithm's")


def is_lm(config) -> bool:
    """Whether ``config`` belongs to a language-model trainer (scored by exact match)."""
    return isinstance(config, LMTrainConfig)


def _sample_ranges(key, ranges: Mapping[str, Range], num_samples: int, config_cls) -> list[dict]:
    """``num_samples`` points drawn from ``ranges`` (one uniform draw per point and name)."""
    if not ranges:
        return [{}]
    names = list(ranges)
    u = np.asarray(jax.random.uniform(key, (num_samples, len(names)), jnp.float32), np.float64)
    points = [dict() for _ in range(num_samples)]
    for j, name in enumerate(names):
        r = ranges[name]
        annotation = numeric_type(config_cls, name)
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
      algo: algorithm name in :func:`config_classes` (e.g. ``ppo``, ``lm-grpo``).
      base: the base config.
      swept: names of the settings that vary, in column order.
      configs: one full, validated config per configuration ``[num_configs]``.
      overrides: the swept values of each configuration ``[num_configs]``.
      groups: configuration indices per compilation (configs with equal static settings).
      seeds: seeds per configuration; run ``c * seeds + s`` is configuration ``c``, seed ``s``.
      seed_keys: ``[seeds, 2]`` PRNG keys; seed ``s`` of every configuration uses ``seed_keys[s]``.
    """

    algo: str
    base: RLConfig | LMTrainConfig
    swept: tuple[str, ...]
    configs: tuple[RLConfig | LMTrainConfig, ...]
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
        where = f"task {self.base.task}" if is_lm(self.base) else self.base.env
        return (f"sweep {self.algo} on {where}: {len(self.configs)} configuration(s) x "
                f"{self.seeds} seed(s) = {self.num_runs} runs in {self.num_compilations} "
                f"compilation(s){why}")


def static_signature(config: RLConfig | LMTrainConfig) -> tuple:
    """The config's static (non-sweepable) settings: equal signatures share one program."""
    return tuple((f.name, getattr(config, f.name)) for f in dataclasses.fields(config)
                 if f.name not in type(config).SWEEPABLE)


def plan_sweep(key, algo: str | RLConfig | LMTrainConfig,
               base: RLConfig | LMTrainConfig | None = None, *,
               grid: Mapping[str, Sequence[Any]] | None = None,
               ranges: Mapping[str, Range | tuple] | None = None,
               num_samples: int | None = None, sample_key=None, seeds: int = 1) -> SweepPlan:
    """Builds and validates every configuration of a sweep, and groups them by static settings.

    Args:
      key: PRNG key; ``jax.random.split(key, seeds)`` gives the seeds' keys.
      algo: algorithm name (:func:`config_classes`), or a config (then it is also the base
        and ``base`` must be None).
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
    classes = config_classes()
    if isinstance(algo, (RLConfig, LMTrainConfig)):
        if base is not None:
            raise ValueError("base: give either a config as algo or a base config, not both")
        base, algo = algo, algorithm_of(algo)
    if algo not in classes:
        close = difflib.get_close_matches(str(algo), list(classes), n=3)
        raise ValueError(f"algo={algo!r} is invalid: must be one of {sorted(classes)}"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""))
    config_cls = classes[algo]
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
    for field in ("env", "task", "task_args"):
        if field in dict(grid_items) or field in range_items:
            raise ValueError(f"{field}: cannot be swept (one sweep is one environment or task)")

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
