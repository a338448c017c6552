"""What a sweep returns: one row per run, curves, timings; summaries over seeds."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from purejaxpo.sweep.plan import SweepPlan


@dataclasses.dataclass
class SweepResult:
    """What :func:`sweep` returns (the same on every process of a multi-host sweep).

    Attributes:
      table: one row per run (``[num_configs * seeds]`` rows, configuration-major): ``config``
        (configuration index), each swept setting, ``seed`` (index), the score (:attr:`score`: NaN
        for a run that diverged), ``compilation`` (index of the program that ran it),
        ``diverged_at_update`` (the first update, counted from 1, with a non-finite loss or
        parameter; missing where the run stayed finite).
      curves: ``[runs, W]`` float64 ``episode_return`` per window of ``log_every`` updates, rows
        in table order; NaN-padded on the right when static settings give different ``W``.
      metrics: every metric the same way, ``{name: [runs, W]}``.
      env_steps: ``[runs, W]`` env steps done at the end of each window (NaN padding).
      plan: the :class:`SweepPlan` (configs, groups, keys).
      compile_s, run_s: summed over compilations (run time includes gathering results).
      num_compilations, device_count, process_count: how it ran.
      score: the table's column that ranks configurations: ``final_return`` (environment
        algorithms) or ``exact_match`` (language-model trainers: held-out greedy exact match
        at the end of the run).
      unit: what ``env_steps`` counts: ``env steps``, or ``steps`` (training steps of a
        language-model trainer).
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
    score: str = "final_return"
    unit: str = "env steps"

    @property
    def total_env_steps(self) -> int:
        """Env steps (:attr:`unit`) of every run of the sweep (padding excluded)."""
        if self.unit == "steps":
            return sum(c.steps for c in self.plan.configs) * self.plan.seeds
        return sum(c.num_updates * c.batch_size for c in self.plan.configs) * self.plan.seeds

    @property
    def steps_per_s(self) -> float:
        """Env steps (:attr:`unit`) of the whole sweep per second of run time."""
        return self.total_env_steps / self.run_s if self.run_s > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        """The JSON contract of ``purejaxpo sweep --json``."""
        import pandas as pd

        def clean(v):
            if isinstance(v, tuple):
                return list(v)
            if isinstance(v, (np.floating, float)):
                return float(v) if math.isfinite(v) else None
            if isinstance(v, np.integer):
                return int(v)
            if v is None or v is pd.NA:
                return None
            return v

        runs = [{k: clean(v) for k, v in row.items()} for row in self.table.to_dict("records")]
        top = best(self)
        return {
            "algo": self.plan.algo,
            "env": getattr(self.plan.base, "env", None),
            "task": getattr(self.plan.base, "task", None),
            "score": self.score,
            "unit": self.unit,
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
    """One row per configuration, best first: swept settings, ``mean_<score>``,
    ``std_<score>``, ``min_<score>``, ``max_<score>`` over seeds (NaN last; ``<score>`` is
    :attr:`SweepResult.score`, e.g. ``mean_final_return``)."""
    import pandas as pd

    table = result.table
    agg = table.groupby("config")[result.score].agg(["mean", "std", "min", "max"])
    agg.columns = [f"{c}_{result.score}" for c in agg.columns]
    agg["diverged"] = table.groupby("config")["diverged_at_update"].count()
    first = table.drop_duplicates("config").set_index("config")[list(result.plan.swept)]
    out = pd.concat([first, agg], axis=1).reset_index()
    return out.sort_values(f"mean_{result.score}", ascending=False, na_position="last",
                           kind="stable").reset_index(drop=True)


def best(result: SweepResult) -> dict[str, Any]:
    """The configuration with the highest mean score (:attr:`SweepResult.score`, e.g.
    ``final_return``) over seeds.

    Returns:
      ``{"config": index, <swept setting>: value, ..., "mean_<score>": float,
      "std_<score>": float, "config_obj": the full config}`` (returns are NaN when no run
      completed an episode in its final window).
    """
    row = summary(result).iloc[0].to_dict()
    index = int(row["config"])
    out = {"config": index}
    out.update({n: result.plan.overrides[index][n] for n in result.plan.swept})  # exact types
    for name in (f"mean_{result.score}", f"std_{result.score}"):  # NaN when no episode ended
        out[name] = float("nan") if row[name] is None else float(row[name])
    out["config_obj"] = result.plan.configs[index]
    return out
