"""The algorithms, by name: each entry of :data:`ALGORITHMS` is ``(config class, make_train)``;
:func:`config_from_dict` and :func:`make_program` rebuild a run from its name and saved config
(what a checkpoint records)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from purejaxpo.algos.a2c import A2CConfig, make_train as make_a2c_train
from purejaxpo.algos.base import TrainResult
from purejaxpo.algos.grpo import GRPOConfig, make_train as make_grpo_train
from purejaxpo.algos.ppo import PPOConfig, make_train as make_ppo_train
from purejaxpo.algos.ppo_recurrent import RecurrentPPOConfig, make_train as make_ppo_rnn_train
from purejaxpo.algos.reinforce import REINFORCEConfig, make_train as make_reinforce_train
from purejaxpo.algos.sac import SACConfig, make_train as make_sac_train
from purejaxpo.algos.td3 import TD3Config, make_train as make_td3_train
from purejaxpo.algos.trpo import TRPOConfig, make_train as make_trpo_train

ALGORITHMS = {
    "a2c": (A2CConfig, make_a2c_train),
    "reinforce": (REINFORCEConfig, make_reinforce_train),
    "grpo": (GRPOConfig, make_grpo_train),
    "ppo": (PPOConfig, make_ppo_train),
    "ppo_rnn": (RecurrentPPOConfig, make_ppo_rnn_train),
    "trpo": (TRPOConfig, make_trpo_train),
    "sac": (SACConfig, make_sac_train),
    "td3": (TD3Config, make_td3_train),
}



def _entry(algo: str):
    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r} is invalid: must be one of {sorted(ALGORITHMS)}")
    return ALGORITHMS[algo]


def config_from_dict(algo: str, values: Mapping[str, Any]):
    """The validated config of ``algo`` from ``config.to_dict()`` output (e.g. read from JSON);
    keys that the config class does not have are ignored."""
    config_cls, _ = _entry(algo)
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in values.items() if k in names})


def make_program(algo: str, config, *, progress: Callable[[int], None] | None = None):
    """The :class:`~purejaxpo.algos.base.Program` (``init``, ``run``) of ``algo`` for ``config``."""
    _, make_train = _entry(algo)
    return make_train(config, progress=progress).program


__all__ = ["ALGORITHMS", "config_from_dict", "make_program", "TrainResult", "GRPOConfig",
           "make_grpo_train", "A2CConfig", "make_a2c_train", "REINFORCEConfig",
           "make_reinforce_train", "PPOConfig", "make_ppo_train", "RecurrentPPOConfig",
           "make_ppo_rnn_train", "TRPOConfig", "make_trpo_train", "SACConfig", "make_sac_train",
           "TD3Config", "make_td3_train"]
