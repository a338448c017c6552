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
    # CueRecall-v0 (recall a cue after 4 blank steps; +1 right, -1 wrong): the GRU policy
    # answers right on every seed well before 1e5 steps; the feed-forward one cannot see the
    # cue at the query and stays at chance (0). Same rollout shape for both.
    ("ppo", "CueRecall-v0"): {
        "total_timesteps": 100_000,
        "num_envs": 16,
        "num_steps": 32,
    },
    ("ppo_rnn", "CueRecall-v0"): {
        "total_timesteps": 100_000,
        "num_envs": 16,
        "num_steps": 32,
        "gru_size": 64,
    },
    # A2C, REINFORCE and environment GRPO: their defaults were tuned on these envs (see the
    # config classes and experiments/learning_curves.py).
    ("a2c", "CartPole-v1"): {},
    ("a2c", "Acrobot-v1"): {},
    ("reinforce", "CartPole-v1"): {"total_timesteps": 1_000_000},
    ("grpo", "CartPole-v1"): {"total_timesteps": 1_000_000},
    # TRPO: large rollouts (the natural gradient needs a good Fisher estimate), one
    # trust-region step per rollout, the critic fitted by Adam over several epochs.
    ("trpo", "CartPole-v1"): {
        "num_envs": 16,
        "num_steps": 256,
        "max_kl": 0.01,
    },
    ("trpo", "Acrobot-v1"): {
        "num_envs": 16,
        "num_steps": 256,
        "max_kl": 0.01,
    },
    ("trpo", "Pendulum-v1"): {
        "total_timesteps": 1_000_000,
        "num_envs": 32,
        "num_steps": 128,
        "max_kl": 0.02,
        "gamma": 0.95,
        "gae_lambda": 0.95,
        "vf_epochs": 10,
        "vf_minibatches": 32,
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


def from_settings(algo: str, env: str, items=(), *, prefix: str = "", **values):
    """:func:`preset` with ``name=value`` text settings (``items``, e.g.
    ``["learning_rate=1e-3"]``) and typed ``values`` (None values are ignored) on top.

    ValueError names the setting (after ``prefix``: the command line passes ``"--set "``).
    """
    from purejaxpo.algos import ALGORITHMS
    from purejaxpo.settings import parse_settings

    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r} is invalid: must be one of {sorted(ALGORITHMS)}")
    reserved = {"env": "--env" if prefix else "the env argument"}
    parsed = parse_settings(items, ALGORITHMS[algo][0], algo, reserved, prefix=prefix)
    parsed.update({k: v for k, v in values.items() if v is not None})
    return preset(algo, env, **parsed)
