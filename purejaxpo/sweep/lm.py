"""Sweeps of the language-model trainers: every (configuration, seed) of ``lm-sft``,
``lm-grpo``, ``lm-ppo`` or ``lm-dpo`` in one compiled program per group of static settings,
exactly as the environment algorithms' sweeps (:mod:`purejaxpo.sweep.program`).

Each run is the trainer's :class:`~purejaxpo.algos.base.Program` from its key and traced
hyperparameters, with the held-out greedy exact match (the fixed prompts that ``purejaxpo lm``
reports on) computed inside the program at the start and after every ``log_every`` steps:
no host round trip, so thousands of small runs vmap. The score is the exact match at the end.

Example::

    import jax
    from purejaxpo.lm.checkpoint import load_policy
    from purejaxpo.lm.config import LMGRPOConfig
    from purejaxpo.sweep import sweep

    policy = load_policy("runs/lm/sft")
    result = sweep(jax.random.PRNGKey(0), LMGRPOConfig(steps=200, estimator="rloo"),
                   grid={"lr": [1e-4, 3e-4]}, seeds=2, init=policy)
    result.table        # one row per run: config, learning_rate, seed, heldout_exact_match, ...
    result.curves       # [runs, 1 + steps / log_every] held-out exact match from step 0
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo.lm.common import greedy_exact_match, if_finite
from purejaxpo.lm.config import LMDPOConfig, LMGRPOConfig, LMPPOConfig, LMSFTConfig, LMTrainConfig
from purejaxpo.metrics import NONFINITE
from purejaxpo.sweep.execute import assemble_result, process0_log, run_groups, warn_diverged
from purejaxpo.sweep.plan import SweepPlan
from purejaxpo.sweep.results import SweepResult

SCORE = "heldout_exact_match"
"""The score column (and curve metric) of a language-model sweep."""


def trainer_program(config: LMTrainConfig, init=None, *, pairs=None, extra_rewards=None):
    """``(program, policy_of, model, task)`` for one configuration: the trainer's Program,
    the function that picks the policy's parameters out of its state's parameters (PPO's
    state also holds the critic), the policy's model and the task.

    Args:
      config: an :data:`~purejaxpo.lm.config.LM_TRAINERS` config.
      init: the starting policy (:class:`~purejaxpo.lm.checkpoint.Policy`, or any object with
        ``params`` and ``model``): needed by ``lm-grpo``, ``lm-ppo`` and ``lm-dpo``;
        ``lm-sft`` trains from scratch and refuses one.
      pairs: ``lm-dpo``'s training data (:class:`~purejaxpo.lm.pairs.Pairs` or ``Unpaired``);
        default: generated from the task as ``purejaxpo lm dpo`` does.
      extra_rewards: extra reward functions for ``lm-grpo`` / ``lm-ppo`` (e.g. a reward
        model's), by name.
    """
    if isinstance(config, LMGRPOConfig) and config.compact_tail is None:
        # Runs are vmapped, where the tail's switch would run every branch (backends.cpu.Tail).
        config = config.replace(compact_tail=False)
    task = config.make_task()
    if isinstance(config, LMSFTConfig):
        if init is not None:
            raise ValueError("init: lm-sft trains from scratch (its model comes from the "
                             "config); give no starting policy")
        from purejaxpo.lm.sft import sft_program

        model = config.model_config()
        return sft_program(config, model, task), (lambda p: p), model, task
    if init is None:
        raise ValueError(f"init: {type(config).__name__} starts from a policy (purejaxpo "
                         "sweep --init DIR; in Python, init=load_policy(DIR))")
    params, model = init.params, init.model
    if isinstance(config, LMPPOConfig):
        from purejaxpo.lm.ppo import ppo_program

        program = ppo_program(config, params, model, task, extra_rewards=extra_rewards)
        return program, (lambda p: p["policy"]), model, task
    if isinstance(config, LMGRPOConfig):
        from purejaxpo.lm.grpo import grpo_program

        program = grpo_program(config, params, model, task, extra_rewards=extra_rewards)
        return program, (lambda p: p), model, task
    if isinstance(config, LMDPOConfig):
        from purejaxpo.lm.dpo import dpo_program, training_data
        from purejaxpo.lm.pairs import preference_data

        if pairs is None:
            pairs = preference_data(config, task, policy=(params, model)).train
        program = dpo_program(config, params, model, training_data(config, pairs))
        return program, (lambda p: p), model, task
    raise ValueError(f"config: {type(config).__name__} is not a sweepable language-model "
                     "trainer's config")


def make_lm_run_fn(config: LMTrainConfig, init=None, *, pairs=None,
                   extra_rewards=None) -> Callable:
    """``run(key, hp) -> {"metrics": {name: [E + 1]}, "diverged_at": int}`` for one run.

    The run is the trainer's Program in ``E = ceil(steps / log_every)`` pieces; after each
    (and before the first) the policy's held-out greedy exact match on ``config.eval_prompts``
    fixed prompts (NaN once the parameters are not finite). ``metrics`` holds that curve
    (:data:`SCORE`) and each training metric's mean over the piece before the point (NaN at
    step 0); ``diverged_at`` is the first step (from 0) whose loss or parameters were not
    finite, or -1.
    """
    program, policy_of, model, task = trainer_program(config, init, pairs=pairs,
                                                 extra_rewards=extra_rewards)
    heldout = task.heldout(config.eval_prompts)

    def score(params):
        policy = policy_of(params)
        return if_finite(policy, greedy_exact_match(policy, model, task, heldout))

    every = config.log_every
    full, rest = divmod(config.steps, every)

    def piece(state, length):
        state, metrics = program.run(state, length)
        return state, metrics, score(state.params)

    def run(key, hp):
        state = program.init(key, hp)
        scores, means, flags = [score(state.params)[None]], [], []
        if full:
            def body(state, _):
                state, metrics, s = piece(state, every)
                return state, (metrics, s)

            state, (metrics, s) = jax.lax.scan(body, state, None, length=full)
            scores.append(s)
            means.append({k: jnp.mean(jnp.asarray(v, jnp.float32), axis=1)
                          for k, v in metrics.items()})
            flags.append(metrics[NONFINITE].reshape(-1))
        if rest:
            state, metrics, s = piece(state, rest)
            scores.append(s[None])
            means.append({k: jnp.mean(jnp.asarray(v, jnp.float32))[None]
                          for k, v in metrics.items()})
            flags.append(metrics[NONFINITE])
        out = {k: jnp.concatenate([jnp.full((1,), jnp.nan)] + [m[k] for m in means])
               for k in means[0]}
        out[SCORE] = jnp.concatenate(scores)
        bad = jnp.concatenate(flags) > 0
        diverged_at = jnp.where(jnp.any(bad), jnp.argmax(bad), -1).astype(jnp.int32)
        return {"metrics": out, "diverged_at": diverged_at}

    return run


def eval_steps(config: LMTrainConfig) -> np.ndarray:
    """The steps at which :func:`make_lm_run_fn` evaluates: 0, log_every, ..., steps."""
    return np.unique(np.append(np.arange(0, config.steps, config.log_every), config.steps))


def run_lm_plan(plan: SweepPlan, *, init=None, pairs=None, extra_rewards=None,
                chunk_size: int | None = None, devices: Sequence[Any] | None = None,
                log: Callable[[str], None] | None = print) -> SweepResult:
    """Runs a :class:`SweepPlan` of a language-model trainer (see :func:`make_lm_run_fn`);
    ``init``, ``pairs`` and ``extra_rewards`` as in :func:`trainer_program`. The result's table
    has the column :data:`SCORE` (held-out greedy exact match at the end, NaN for a run that
    diverged), its curves the exact match at :func:`eval_steps`, ``env_steps`` those steps
    (``unit="steps"``)."""
    say = process0_log(log)
    groups, compile_s, run_s, num_devices = run_groups(
        plan, lambda config: make_lm_run_fn(config, init, pairs=pairs,
                                            extra_rewards=extra_rewards),
        chunk_size=chunk_size, devices=devices, log=log,
        describe=lambda c: f"{c.steps} steps, held-out exact match every {c.log_every}")
    per_run: list[dict | None] = [None] * plan.num_runs
    for g, (runs, out) in enumerate(groups):
        config = plan.configs[plan.groups[g][0]]
        steps = eval_steps(config).astype(np.float64)
        for i, (c, s) in enumerate(runs):
            m = {k: np.asarray(v[i], np.float64) for k, v in out["metrics"].items()}
            at = int(out["diverged_at"][i])
            per_run[c * plan.seeds + s] = {
                "metrics": m, "final": float(m[SCORE][-1]) if at < 0 else float("nan"),
                "steps": steps, "group": g, "diverged_at": at}
    result = assemble_result(plan, per_run, score=SCORE, curve=SCORE, compile_s=compile_s,
                             run_s=run_s, num_devices=num_devices, unit="steps")
    say(f"compile {compile_s:.1f} s, run {run_s:.2f} s, "
        f"{result.steps_per_s:,.1f} training steps/s over the sweep")
    warn_diverged(result, say)
    return result
