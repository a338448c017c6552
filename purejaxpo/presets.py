"""Tuned starting points per (algorithm, environment).

``preset(algo, env)`` is the config the CLI starts from; anything given with ``--set`` (or
``**overrides``) goes on top. Environments without an entry get the algorithm's defaults.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    # PureJaxRL's CartPole settings; every one of 16 seeds reaches 500 at 5e5 steps.
    ("ppo", "CartPole-v1"): {},
    ("ppo", "Acrobot-v1"): {},
    ("ppo", "Pendulum-v1"): {
        "total_timesteps": 1_000_000,
        "num_envs": 16,
        "num_steps": 128,
        "num_epochs": 10,
        "num_minibatches": 32,
        "learning_rate": 1e-3,
        "gamma": 0.95,
        "ent_coef": 0.0,
        "normalize_obs": True,
        "normalize_reward": True,
    },
}


def preset(algo: str, env: str, **overrides):
    """The config for ``algo`` on ``env``: the preset (if any) with ``overrides`` on top."""
    from purejaxpo.algos import ALGORITHMS

    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r} is invalid: must be one of {sorted(ALGORITHMS)}")
    config_cls, _ = ALGORITHMS[algo]
    values = {"env": env, **PRESETS.get((algo, env), {}), **overrides}
    return config_cls(**values)
