"""Synchronous advantage actor-critic (A2C).

Every rollout of ``num_envs x num_steps`` transitions gives one gradient step on
``-log pi(a|s) A + vf_coef (V(s) - target)^2 / 2 - ent_coef H`` over the whole batch, with
n-step advantages (``gae_lambda = 1``: bootstrapped from V at the end of the rollout) or GAE,
and RMSProp (as in the paper) or Adam.

References:
  Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning", 2016; the synchronous
  variant of OpenAI Baselines / Stable-Baselines3.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import jax
import jax.numpy as jnp

from purejaxpo import advantages, losses
from purejaxpo.algos.base import OnPolicySetup, as_train, build_policy, on_policy_program
from purejaxpo.config import RLConfig, check_bool, check_float, check_optimizer
from purejaxpo.networks import PolicyParts
from purejaxpo.update import gradient_step, linear_schedule, make_optimizer

@dataclasses.dataclass(frozen=True, kw_only=True)
class A2CConfig(RLConfig):
    """A2C settings (see :class:`~purejaxpo.config.RLConfig` for the shared ones).

    Attributes:
      gae_lambda: 1.0 gives n-step returns over the rollout; below 1, GAE (sweepable).
      ent_coef: entropy bonus weight (sweepable).
      vf_coef: value-loss weight (sweepable).
      optimizer: ``rmsprop`` (decay 0.99, as PyTorch/SB3) or ``adam``.
      optimizer_eps: the optimiser's epsilon.
      normalize_advantages: normalise advantages over each batch.
    """

    # Tuned on CartPole-v1 and Acrobot-v1 (8 seeds, 5e5 steps): lr 3e-3 to 8e-3 all work.
    num_envs: int = 16
    num_steps: int = 32
    learning_rate: float = 5e-3
    gae_lambda: float = 1.0
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    optimizer: str = "rmsprop"
    optimizer_eps: float = 1e-5
    normalize_advantages: bool = False

    SWEEPABLE: ClassVar[tuple[str, ...]] = RLConfig.SWEEPABLE + ("gae_lambda", "ent_coef", "vf_coef")

    def policy_parts(self) -> PolicyParts:
        """Actor and critic; feed-forward or recurrent (the whole rollout is one batch)."""
        return PolicyParts(memory=True)

    def validate(self) -> None:
        super().validate()
        check_float("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_float("ent_coef", self.ent_coef, 0.0)
        check_float("vf_coef", self.vf_coef, 0.0)
        check_optimizer(self.optimizer, self.optimizer_eps)
        check_bool("normalize_advantages", self.normalize_advantages)


def actor_critic_loss(policy, hp: Mapping[str, Any], *, normalize_advantages: bool,
                      use_critic: bool = True):
    """``loss(params, batch) -> (loss, metrics)``: the policy-gradient actor-critic objective.

    ``batch`` holds ``[N]`` transitions (``obs``, ``action``, ``advantages``, ``targets``), or
    ``[N, T]`` whole sequences for a recurrent policy (``policy.evaluate`` unrolls them).
    ``hp`` needs ``ent_coef`` and, with ``use_critic``, ``vf_coef``. Shared by A2C and
    REINFORCE (whose "critic" is its baseline).
    """

    def loss(params, batch):
        dist, value = policy.evaluate(params, batch)
        log_prob = dist.log_prob(batch["action"])
        adv = batch["advantages"]
        if normalize_advantages:
            adv = advantages.normalize(adv)
        pg_loss = jnp.mean(losses.policy_gradient_loss(log_prob, adv))
        ent = jnp.mean(dist.entropy())
        total = pg_loss - hp["ent_coef"] * ent
        if use_critic:
            v_loss = jnp.mean(losses.value_loss(value, batch["targets"]))
            total = total + hp["vf_coef"] * v_loss
        else:
            v_loss = jnp.zeros(())
        metrics = {"total_loss": total, "policy_loss": pg_loss, "value_loss": v_loss,
                   "entropy": ent}
        return total, jax.lax.stop_gradient(metrics)

    return loss


def make_single_step_train(config: RLConfig, loss_fn: Callable, *, gae_lambda_key: str | None,
                           use_critic: bool, optimizer: str, optimizer_eps: float,
                           progress: Callable[[int], None] | None = None):
    """``train(key, hyperparams=None)`` doing one gradient step of ``loss_fn`` per rollout.

    ``loss_fn(policy, hp) -> loss(params, batch)``. With ``gae_lambda_key=None`` the advantages
    use lambda = 1 (discounted returns minus the critic's values).
    """
    policy = build_policy(config)

    def setup(hp: Mapping[str, Any]) -> OnPolicySetup:
        schedule = linear_schedule(hp["learning_rate"], config.num_updates, 1, config.anneal_lr)
        tx = make_optimizer(schedule, hp["max_grad_norm"], eps=optimizer_eps, kind=optimizer)
        step_fn = gradient_step(loss_fn(policy, hp), tx)

        def learn(key, params, opt_state, rollout):
            (params, opt_state), metrics = step_fn((params, opt_state), rollout.batch(policy))
            return params, opt_state, metrics

        return OnPolicySetup(tx, learn, 1.0 if gae_lambda_key is None else hp[gae_lambda_key],
                             use_critic=use_critic, lr_schedule=schedule)

    return as_train(on_policy_program(config, policy, setup, progress=progress))


def make_train(config: A2CConfig, *, progress: Callable[[int], None] | None = None):
    """Returns ``train(key, hyperparams=None) -> TrainResult`` for ``config``.

    Metrics (each ``[num_updates]``): ``total_loss``, ``policy_loss``, ``value_loss``,
    ``entropy``, the episode statistics, ``explained_variance``, ``learning_rate``.
    """
    if not isinstance(config, A2CConfig):
        raise TypeError(f"make_train needs an A2CConfig, got {type(config).__name__}")
    return make_single_step_train(
        config,
        lambda policy, hp: actor_critic_loss(
            policy, hp, normalize_advantages=config.normalize_advantages),
        gae_lambda_key="gae_lambda", use_critic=True, optimizer=config.optimizer,
        optimizer_eps=config.optimizer_eps, progress=progress,
    )
