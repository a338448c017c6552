"""Runs sbx's SAC once on Pendulum-v1 (one seed) and prints one JSON line with its timings.

This file is run by ``bench_sac.py`` inside the separate sbx virtual environment (``.venv-sbx``,
see ``requirements-sbx.txt``); it never imports purejaxpo. It prints exactly one line on stdout::

    {"impl": "sbx", "compile_s": .., "run_s": .., "learn_s": .., "final_return": ..,
     "eval_return": .., ...}

sbx (PyPI ``sbx-rl``) is Stable-Baselines3 with JAX networks and updates: the environment loop,
the replay buffer and the bookkeeping are SB3's Python (gymnasium's NumPy Pendulum-v1 in a
``DummyVecEnv``), and each env step calls a jitted action sampler and then a jitted update of
``gradient_steps`` gradient steps. One seed per process: nothing is vmapped.

Timing. Each ``SAC`` instance compiles its own jitted functions on their first calls (its
``TrainState`` carries the bound ``apply`` of its own flax modules, which jax's caches compare
by identity), so compilation cannot be moved out of ``learn()`` entirely. The runner therefore

1. warms up: a throwaway model (seed ``seed + 10_000``, same settings) learns
   ``--warmup-steps`` steps (past ``learning_starts``, so it also runs gradient steps): imports,
   backend start, gymnasium and SB3's first-call costs, and the jitted functions that do not
   depend on the instance;
2. times ``learn(total_timesteps)`` of a fresh model with the benchmark's seed (``learn_s``,
   wall clock), while a ``jax.monitoring`` listener adds up the compilation events inside it
   (tracing, lowering to MLIR, XLA compile: ``compile_s``);
3. reports ``run_s = learn_s - compile_s``: training without compilation, as the JAX sides'
   ``run_s`` (ahead-of-time compiled programs) is.

``final_return``: the mean return of the training episodes (SB3's ``Monitor``) that ended in the
last ``--final-fraction`` (5%) of the env steps, as purejaxpo reports it. ``eval_return``: the mean
return of ``--eval-episodes`` episodes with the deterministic policy (``tanh(mean)``,
``evaluate_policy(..., deterministic=True)``) on a separate environment, after timing.

How the benchmark's settings map onto sbx 0.28's ``SAC``:

===========================  ============================================================
benchmark                    sbx / SB3
===========================  ============================================================
1 env, N env steps           one gymnasium ``Pendulum-v1`` (200-step time limit),
                             ``learn(total_timesteps=N)``; ``train_freq=1``
learning starts              ``learning_starts``: uniform random actions while
                             ``num_timesteps < learning_starts``; gradient steps once
                             ``num_timesteps > learning_starts`` (after the step)
1 gradient step per step     ``gradient_steps=1``
buffer, minibatch            ``buffer_size``, ``batch_size``
lr (actor, critic, alpha)    ``learning_rate`` (Adam, eps 1e-8, for all three)
gamma, tau                   ``gamma``, ``tau`` (target update after every critic step)
MLP sizes, activation        ``policy_kwargs={"net_arch": [..], "activation_fn": nn.<name>}``
temperature                  ``ent_coef="auto"`` (initial 1), ``target_entropy="auto"``
                             (``-action_dim``), loss ``log(alpha) * (entropy - target)``
===========================  ============================================================

Fixed by sbx: twin critics, log-std clipped to [-20, 2], flax's default lecun-normal
initialisation, gradient order critic, target update, actor, temperature; truncations bootstrap
from the true final observation (SB3's ``handle_timeout_termination``).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import time

import _bench_common as bench  # next to this file (never purejaxpo: see above)


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="Pendulum-v1")
    p.add_argument("--total-timesteps", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learning-rate", type=float, default=1e-2)
    p.add_argument("--buffer-size", type=int, default=10_000)
    p.add_argument("--learning-starts", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--tau", type=float, default=0.02)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--hidden-sizes", default="64,64")
    p.add_argument("--activation", default="silu", help="a flax.linen function name")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="steps of the throwaway warm-up model (default learning_starts + 64; "
                        "0: no warm-up)")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--final-fraction", type=float, default=0.05)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    import jax
    import jaxlib
    import numpy as np
    from jax import monitoring

    compile_events: collections.Counter = collections.Counter()

    def on_duration(event: str, duration: float, **_) -> None:
        if event.startswith("/jax/core/compile/"):
            compile_events[event] += duration

    monitoring.register_event_duration_secs_listener(on_duration)

    import flax.linen as nn
    import gymnasium as gym
    from sbx import SAC
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    def make_model(seed: int):
        env = Monitor(gym.make(args.env))
        model = SAC(
            "MlpPolicy", env,
            learning_rate=args.learning_rate,
            buffer_size=args.buffer_size,
            learning_starts=args.learning_starts,
            batch_size=args.batch_size,
            tau=args.tau,
            gamma=args.gamma,
            train_freq=1,
            gradient_steps=1,
            ent_coef="auto",
            target_entropy="auto",
            policy_kwargs={
                "net_arch": [int(h) for h in args.hidden_sizes.split(",")],
                "activation_fn": getattr(nn, args.activation),
            },
            seed=seed,
            verbose=0,
        )
        return model, env

    warmup_steps = (args.learning_starts + 64 if args.warmup_steps is None
                    else args.warmup_steps)
    t0 = time.perf_counter()
    if warmup_steps > 0:
        warm, _ = make_model(args.seed + 10_000)
        warm.learn(total_timesteps=warmup_steps)
        del warm
    warmup_s = time.perf_counter() - t0
    warmup_compile_s = sum(compile_events.values())

    model, env = make_model(args.seed)
    compile_events.clear()
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.total_timesteps)
    learn_s = time.perf_counter() - t0
    compile_s = sum(compile_events.values())
    run_s = learn_s - compile_s
    assert model.num_timesteps == args.total_timesteps, model.num_timesteps

    # final_return: Monitor's episodes that ended in the last final_fraction of the steps.
    returns = np.asarray(env.get_episode_rewards(), np.float64)
    ends = np.cumsum(env.get_episode_lengths())
    window = math.ceil(args.final_fraction * args.total_timesteps)
    last = returns[ends > args.total_timesteps - window]
    final_return = float(last.mean()) if last.size else None

    eval_env = DummyVecEnv([lambda: Monitor(gym.make(args.env))])
    eval_env.seed(args.seed + 1)
    eval_returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes,
                                      deterministic=True, return_episode_rewards=True)

    out = {
        "impl": "sbx",
        "algo": "sac",
        "compile_s": compile_s,
        "run_s": run_s,
        "learn_s": learn_s,
        "compile_events_s": dict(compile_events),
        "warmup_steps": warmup_steps,
        "warmup_s": warmup_s,
        "warmup_compile_s": warmup_compile_s,
        "final_return": final_return,
        "final_return_per_seed": [final_return],
        "final_episodes_per_seed": [int(last.size)],
        "eval_return": float(np.mean(eval_returns)),
        "eval_return_per_seed": [float(np.mean(eval_returns))],
        "eval_returns": [float(r) for r in eval_returns],
        "eval_episodes": args.eval_episodes,
        "total_timesteps": args.total_timesteps,
        "env_steps_per_seed": int(model.num_timesteps),
        "gradient_steps_per_seed": int(model._n_updates),
        "seeds": 1,
        "seed": args.seed,
        "steps_per_s": args.total_timesteps / run_s,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        **bench.dist_versions(("sbx-rl", "stable_baselines3", "gymnasium", "flax", "optax",
                               "torch")),
        "device": str(jax.devices()[0]),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": sys.version.split()[0],
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
