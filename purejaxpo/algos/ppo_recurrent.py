"""PPO with a recurrent (GRU) policy, for partially observed tasks that need memory.

``ppo_rnn`` is PPO (:mod:`purejaxpo.algos.ppo`) with a GRU torso: the same loss, GAE, epochs
and update scan, and the same config class with other defaults (``gru_size=64``). Any PPO
config with ``gru_size > 0`` trains the same way; this name only selects the defaults. What a
GRU changes, and where it lives:

* the policy (:class:`~purejaxpo.networks.Policy` with ``gru_size > 0``) has a GRU torso shared
  by the actor and critic heads, its hidden state zeroed at episode boundaries;
* the rollout (the shared :func:`~purejaxpo.rollout.collect`) carries the hidden state from
  step to step and from one update to the next, and stores the state each rollout started from;
* values for GAE are recomputed by unrolling the GRU over the rollout ``[T, B]`` from its
  initial state (:meth:`~purejaxpo.networks.Policy.rollout_values`);
* minibatches are whole sequences: the env axis B is split into ``num_minibatches`` groups and
  time T is kept intact, each sequence with its initial hidden state and its reset flags
  (:meth:`~purejaxpo.algos.base.Rollout.sequence_batch`), so the loss backpropagates through
  time over the whole rollout.

    train = make_train(RecurrentPPOConfig(env="CueRecall-v0"))
    result = jax.jit(jax.vmap(train))(jax.random.split(key, 8))

References:
  Schulman et al., "Proximal Policy Optimization Algorithms", 2017; Ni et al., "Recurrent
  Model-Free RL Can Be a Strong Baseline for Many POMDPs", 2022.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from purejaxpo.algos import ppo
from purejaxpo.config import check_int


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecurrentPPOConfig(ppo.PPOConfig):
    """PPO's settings with a GRU policy's defaults (see :class:`~purejaxpo.algos.ppo.PPOConfig`).

    The policy: an embedding layer of ``hidden_sizes`` and a GRU of ``gru_size`` units, shared
    by the actor and critic heads, each with its own dense layers of ``head_sizes``.
    ``num_minibatches`` (whole sequences) must divide ``num_envs``.
    """

    gru_size: int = 64
    num_envs: int = 16
    num_steps: int = 32
    hidden_sizes: tuple[int, ...] = (64,)
    head_sizes: tuple[int, ...] = (64,)

    def validate(self) -> None:
        super().validate()
        check_int("gru_size", self.gru_size)


def make_train(config: RecurrentPPOConfig, *, progress: Callable[[int], None] | None = None):
    """Returns ``train(key, hyperparams=None) -> TrainResult``, as :func:`ppo.make_train`.

    Parameters are ``{"torso": ..., "actor": ..., "critic": ...}``; metrics are PPO's.
    """
    if not isinstance(config, RecurrentPPOConfig):
        raise TypeError(f"make_train needs a RecurrentPPOConfig, got {type(config).__name__}")
    return ppo.make_train(config, progress=progress)
