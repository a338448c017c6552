"""Tuned starting points per (algorithm, environment).

``preset(algo, env)`` is the config the CLI starts from; anything given with ``--set`` (or
``**overrides``) goes on top. Environments without an entry get the algorithm's defaults.
"""

from __future__ import annotations

from typing import Any

# MinAtar (gymnax's JAX MinAtar, [10, 10, C] images): Pgx's small CNN (conv 32 of 2x2, average
# pool 2, dense 64, ReLU) shared by actor and critic, with gymnax-blines' rollout (64 envs x 128
# steps, 4 epochs of 8 minibatches) and lr 2e-3. Breakout-MinAtar at 2e6 steps, 2 seeds (2-core
# CPU, 2026-11-30): lr 2e-3 20.3 (15.7, 24.8), lr 5e-3 16.6 (7.5, 25.7); lr 5e-4 (gymnax-blines')
# 3.5. 1e7 env steps per run, as the anchors (benchmarks/minatar.py has the table).
MINATAR = {
    "total_timesteps": 10_000_000,
    "num_envs": 64,
    "num_steps": 128,
    "num_epochs": 4,
    "num_minibatches": 8,
    "learning_rate": 2e-3,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "ent_coef": 0.01,
    "torso": "cnn",
    "conv_channels": (32,),
    "conv_kernels": (2,),
    "conv_strides": (1,),
    "conv_padding": "same",  # 10 x 10 out, so pool 2 keeps the image's last row (the paddle)
    "conv_pool": 2,
    "hidden_sizes": (64,),
    "activation": "relu",
}
MINATAR_GAMES = ("Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar",
                 "SpaceInvaders-MinAtar")
# Breakout: two 64-unit layers of each head's own above the shared torso, as in Pgx's network.
# Without them both seeds' policies collapsed (entropy near 0.1) onto a plateau of 17-19 from
# about 2.6e6 steps (18.21 at 1e7); with them the entropy stayed about 0.5 and 2 seeds reached
# 26.13 and 47.30 at 2.5e6 (lr 1.8e-3 constant; benchmarks/results/minatar_tuning_probes.md).
MINATAR_BREAKOUT = {**MINATAR, "head_sizes": (64, 64)}

# brax's published PPO settings, scaled to 32 envs on a CPU (the brax entries below start here).

BRAX_PPO = {
    "num_envs": 32,
    "num_steps": 64,
    "num_epochs": 4,
    "num_minibatches": 8,
    "learning_rate": 3e-4,
    "gamma": 0.97,
    "gae_lambda": 0.95,
    "clip_eps": 0.3,
    "ent_coef": 0.01,
    "normalize_obs": True,
    "normalize_reward": True,
}

OFF_POLICY_PENDULUM = {
    "total_timesteps": 20_000,
    "learning_rate": 1e-3,
    "hidden_sizes": (64, 64),
    "buffer_size": 20_000,
}

PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    **{("ppo", game): MINATAR for game in MINATAR_GAMES},
    ("ppo", "Breakout-MinAtar"): MINATAR_BREAKOUT,
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
    # config classes and benchmarks/learning_curves.py).
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
    # SAC and TD3 on Pendulum (RL Zoo's budget, 2e4 env steps, lr 1e-3), 64 x 64 networks
    # (SB3's 256 x 256 learn the same at 16x the compute) and a buffer holding the whole run.
    ("sac", "Pendulum-v1"): OFF_POLICY_PENDULUM,
    ("td3", "Pendulum-v1"): OFF_POLICY_PENDULUM,
    # brax's inverted pendulum (1000 steps of +1 while upright): SAC with the same settings.
    ("sac", "brax:inverted_pendulum"): {**OFF_POLICY_PENDULUM, "total_timesteps": 30_000,
                                        "buffer_size": 30_000},
    # Physics control (purejaxpo.envs.physics; needs pip install "purejaxpo[brax]" or
    # "[playground]"). brax's published PPO settings (obs normalisation, reward scaling: here
    # the running return std, GAE 0.95, gamma 0.97, lr 3e-4, clip 0.3, entropy 1e-2, 4
    # epochs) scaled from 2048-4096 envs on an accelerator to 32-64 envs on a 2-core CPU.
    # What each reaches on this project's 2-core AMD EPYC CPU (jax 0.10.2, shared with another
    # job), measured by benchmarks/physics.py (results/physics.md); "return" is the
    # mean final_return over seeds.
    # inverted_pendulum: every one of 4 seeds at 1000 (the maximum) from about 1e5 steps;
    # 4 seeds x 1e6 steps: 35 s compile + 80 s run.
    ("ppo", "brax:inverted_pendulum"): {
        **BRAX_PPO,
        "total_timesteps": 1_000_000,  # the last 5% hold >= 1 whole 1000-step episode per env
    },
    # inverted_double_pendulum (brax trains it for 2e7 steps): return 9090 (seeds 8822 and
    # 9358), above 9000 from about 5e5 steps; 2 seeds x 2e6 steps: 25 s compile + 75 s run.
    ("ppo", "brax:inverted_double_pendulum"): {**BRAX_PPO, "total_timesteps": 2_000_000},
    # ant (brax trains it for 5e7 steps with 4096 envs): return -14 over the first tenth,
    # 437 at 2e6 steps (seeds 333 and 541), still rising; 2 seeds: 31 s compile + 352 s run.
    ("ppo", "brax:ant"): {
        **BRAX_PPO,
        "total_timesteps": 2_000_000,
        "num_envs": 64,
        "num_steps": 32,
        "ent_coef": 0.0,  # 1e-2 keeps the std, and the control cost, high: 27 vs 132 at 1.5e6
        "hidden_sizes": (128, 128),
    },
    # Playground's CartpoleBalance (its PPO: 2048 envs, unroll 30, 16 epochs, gamma 0.995,
    # lr 1e-3, 6e7 steps): return 353 over the first tenth, 997.6 at 1e6 steps (seeds 997.4
    # and 997.8; 1000 is the maximum); 2 seeds: 16 s compile + 14 s run.
    ("ppo", "playground:CartpoleBalance"): {
        "total_timesteps": 1_000_000,
        "num_envs": 32,
        "num_steps": 64,
        "num_epochs": 4,
        "num_minibatches": 8,
        "learning_rate": 1e-3,
        "gamma": 0.995,
        "gae_lambda": 0.95,
        "ent_coef": 0.01,
        "normalize_obs": True,
        "normalize_reward": True,
    },
}


def preset_values(algo: str, env: str) -> dict[str, Any]:
    """The preset's settings for ``(algo, env)``: its own entry, else that of the env without
    a ``@backend`` suffix (``brax:ant@spring`` starts from ``brax:ant``'s), else none."""
    if (algo, env) in PRESETS:
        return dict(PRESETS[(algo, env)])
    return dict(PRESETS.get((algo, env.split("@")[0]), {}))


def preset(algo: str, env: str, **overrides):
    """The config for ``algo`` on ``env``: the preset (if any) with ``overrides`` on top."""
    from purejaxpo.algos import ALGORITHMS

    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r} is invalid: must be one of {sorted(ALGORITHMS)}")
    config_cls, _ = ALGORITHMS[algo]
    values = {"env": env, **preset_values(algo, env), **overrides}
    return config_cls(**values)


def from_settings(algo: str, env: str | None, items=(), *, prefix: str = "", **values):
    """:func:`preset` (``env`` None: the algorithm's default env) with ``name=value`` text settings (``items``, e.g.
    ``["learning_rate=1e-3"]``) and typed ``values`` (None values are ignored) on top.

    ValueError names the setting (after ``prefix``: the command line passes ``"--set "``).
    """
    from purejaxpo.algos import ALGORITHMS
    from purejaxpo.settings import parse_settings

    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r} is invalid: must be one of {sorted(ALGORITHMS)}")
    if env is None:  # the algorithm's own default (CartPole-v1; Pendulum-v1 for SAC and TD3)
        env = ALGORITHMS[algo][0].__dataclass_fields__["env"].default
    reserved = {"env": "--env" if prefix else "the env argument"}
    parsed = parse_settings(items, ALGORITHMS[algo][0], algo, reserved, prefix=prefix)
    parsed.update({k: v for k, v in values.items() if v is not None})
    return preset(algo, env, **parsed)
