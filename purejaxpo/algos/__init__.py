"""The algorithms, by name: each entry is ``(config class, make_train)``."""

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

__all__ = ["ALGORITHMS", "GRPOConfig", "make_grpo_train", "A2CConfig", "make_a2c_train", "REINFORCEConfig", "make_reinforce_train", "PPOConfig", "TrainResult", "make_ppo_train", "RecurrentPPOConfig",
           "make_ppo_rnn_train", "TRPOConfig", "make_trpo_train", "SACConfig", "make_sac_train",
           "TD3Config", "make_td3_train"]
