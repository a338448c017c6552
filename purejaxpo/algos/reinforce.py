"""REINFORCE: Monte-Carlo policy gradient, with an optional learned baseline.

Each rollout's discounted returns ``G_t`` weight ``-log pi(a_t|s_t)``; with ``baseline`` a
value function V is fitted to ``G_t`` and the weights become ``G_t - V(s_t)``. With
``normalize_returns`` the weights are normalised to zero mean and unit std over the batch.

Returns are summed to the end of each episode inside the rollout. An episode still running when
the rollout ends is cut there: it bootstraps from V(last observation) with a baseline, and is
cut at zero without one, so use rollouts about as long as the episodes (``num_steps``).

References:
  Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
  learning", 1992; Sutton and Barto, "Reinforcement Learning", 2nd ed., section 13.4.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

from purejaxpo.algos.a2c import actor_critic_loss, make_single_step_train
from purejaxpo.config import RLConfig, check_bool, check_float, check_optimizer
from purejaxpo.networks import PolicyParts


@dataclasses.dataclass(frozen=True, kw_only=True)
class REINFORCEConfig(RLConfig):
    """REINFORCE settings (see :class:`~purejaxpo.config.RLConfig` for the shared ones).

    Attributes:
      baseline: learn a state-value baseline (trained jointly, weighted by ``vf_coef``).
      normalize_returns: normalise the policy-gradient weights over each batch.
      ent_coef: entropy bonus weight (sweepable).
      vf_coef: baseline-loss weight (sweepable).
      optimizer: ``adam`` or ``rmsprop``.
      optimizer_eps: the optimiser's epsilon.
    """

    # Tuned on CartPole-v1 (1e6 steps, 4 seeds: lr 6e-3 reached 494; 3e-3 431; 1e-2 unstable).
    num_envs: int = 16
    num_steps: int = 200
    learning_rate: float = 6e-3
    baseline: bool = True
    normalize_returns: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    optimizer: str = "adam"
    optimizer_eps: float = 1e-5

    SWEEPABLE: ClassVar[tuple[str, ...]] = RLConfig.SWEEPABLE + ("ent_coef", "vf_coef")

    def policy_parts(self) -> PolicyParts:
        """The actor, and a critic only as the baseline; feed-forward or recurrent."""
        return PolicyParts(("actor", "critic") if self.baseline else ("actor",), memory=True)

    def validate(self) -> None:
        super().validate()
        check_bool("baseline", self.baseline)
        check_bool("normalize_returns", self.normalize_returns)
        check_float("ent_coef", self.ent_coef, 0.0)
        check_float("vf_coef", self.vf_coef, 0.0)
        check_optimizer(self.optimizer, self.optimizer_eps)


def make_train(config: REINFORCEConfig, *, progress: Callable[[int], None] | None = None):
    """Returns ``train(key, hyperparams=None) -> TrainResult`` for ``config``.

    Metrics as A2C's (``value_loss`` is 0 and ``explained_variance`` meaningless without a
    baseline).
    """
    if not isinstance(config, REINFORCEConfig):
        raise TypeError(f"make_train needs a REINFORCEConfig, got {type(config).__name__}")
    return make_single_step_train(
        config,
        lambda policy, hp: actor_critic_loss(
            policy, hp, normalize_advantages=config.normalize_returns,
            use_critic=config.baseline),
        gae_lambda_key=None, use_critic=config.baseline, optimizer=config.optimizer,
        optimizer_eps=config.optimizer_eps, progress=progress,
    )
