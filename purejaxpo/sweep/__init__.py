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

The language-model trainers (``lm-sft``, ``lm-grpo``, ``lm-ppo``, ``lm-dpo``; configs in
:mod:`purejaxpo.lm.config`) sweep through the same plan and program
(:mod:`purejaxpo.sweep.lm`): ``sweep(key, LMGRPOConfig(...), grid=..., init=policy)``; their
score is held-out greedy exact match, computed inside the program.
"""

from purejaxpo.settings import ALIASES
from purejaxpo.sweep.lm import make_lm_run_fn, run_lm_plan
from purejaxpo.sweep.plan import (
    Range, SweepPlan, algorithm_of, config_classes, is_lm, plan_sweep, static_signature)
from purejaxpo.sweep.execute import make_program
from purejaxpo.sweep.program import (
    SUM_METRICS,
    final_window,
    make_run_fn,
    run_plan,
    sweep,
    window_metrics,
)
from purejaxpo.sweep.results import SweepResult, best, summary

__all__ = [
    "ALIASES", "Range", "SweepPlan", "algorithm_of", "config_classes", "is_lm", "plan_sweep",
    "static_signature", "make_lm_run_fn", "run_lm_plan",
    "SUM_METRICS", "final_window", "make_program", "make_run_fn", "run_plan", "sweep",
    "window_metrics", "SweepResult", "best", "summary",
]
