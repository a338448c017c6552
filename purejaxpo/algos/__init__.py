"""The algorithms, by name: each entry is ``(config class, make_train)``."""

from purejaxpo.algos.base import TrainResult
from purejaxpo.algos.ppo import PPOConfig, make_train as make_ppo_train

ALGORITHMS = {
    "ppo": (PPOConfig, make_ppo_train),
}

__all__ = ["ALGORITHMS", "PPOConfig", "TrainResult", "make_ppo_train"]
