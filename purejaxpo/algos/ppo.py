"""Proximal Policy Optimisation (clipped surrogate), discrete and continuous.

One call of ``train(key, hyperparams)`` is a whole run: rollouts over vectorised envs, GAE,
``num_epochs`` epochs of shuffled minibatches, all inside ``lax.scan``, so that::

    train = make_train(PPOConfig(env="CartPole-v1"))
    result = jax.jit(jax.vmap(train))(jax.random.split(key, 16))   # 16 seeds, one compile

References:
  Schulman et al., "Proximal Policy Optimization Algorithms", 2017; Huang et al., "The 37
  Implementation Details of Proximal Policy Optimization", 2022.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import jax
import jax.numpy as jnp

from purejaxpo import advantages, losses
from purejaxpo.algos.base import OnPolicySetup, as_train, build_policy, on_policy_program
from purejaxpo.config import RLConfig, _fail, check_bool, check_float, check_int
from purejaxpo.networks import PolicyParts
from purejaxpo.update import gradient_step, linear_schedule, make_optimizer, run_epochs


@dataclasses.dataclass(frozen=True, kw_only=True)
class PPOConfig(RLConfig):
    """PPO settings (see :class:`~purejaxpo.config.RLConfig` for the shared ones).

    Attributes:
      num_epochs: passes over each rollout (static).
      num_minibatches: minibatches per epoch; must divide ``num_envs * num_steps`` (static).
      gae_lambda: GAE lambda (sweepable).
      clip_eps: clip range of the ratio, below 1 (and above, unless ``clip_eps_high``)
        (sweepable).
      clip_eps_high: upper clip range (DAPO clip-higher); None means ``clip_eps``.
      ent_coef: entropy bonus weight (sweepable).
      vf_coef: value-loss weight (sweepable).
      clip_value_loss: clip the value update to ``clip_eps`` around the old values.
      normalize_advantages: normalise advantages per minibatch.
      adam_eps: Adam's epsilon.
    """

    num_epochs: int = 4
    num_minibatches: int = 4
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    clip_value_loss: bool = True
    normalize_advantages: bool = True
    adam_eps: float = 1e-5

    SWEEPABLE: ClassVar[tuple[str, ...]] = RLConfig.SWEEPABLE + (
        "gae_lambda", "clip_eps", "clip_eps_high", "ent_coef", "vf_coef",
    )

    def validate(self) -> None:
        super().validate()
        check_int("num_epochs", self.num_epochs)
        check_int("num_minibatches", self.num_minibatches)
        if self.batch_size % self.num_minibatches:
            _fail("num_minibatches", self.num_minibatches,
                  f"must divide num_envs * num_steps = {self.batch_size}")
        check_float("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_float("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True)
        if self.clip_eps_high is not None:
            check_float("clip_eps_high", self.clip_eps_high, 0.0, low_open=True)
        check_float("ent_coef", self.ent_coef, 0.0)
        check_float("vf_coef", self.vf_coef, 0.0)
        check_bool("clip_value_loss", self.clip_value_loss)
        check_bool("normalize_advantages", self.normalize_advantages)
        check_float("adam_eps", self.adam_eps, 0.0, low_open=True)
        if self.gru_size and self.num_envs % self.num_minibatches:
            _fail("num_minibatches", self.num_minibatches,
                  f"must divide num_envs = {self.num_envs} with a GRU policy (minibatches "
                  f"are whole sequences)")

    def policy_parts(self) -> PolicyParts:
        """Actor and critic; feed-forward or recurrent (whole-sequence minibatches)."""
        return PolicyParts(memory=True)


def ppo_loss(policy, hp: Mapping[str, Any], config: PPOConfig):
    """``loss(params, minibatch) -> (loss, metrics)`` for one minibatch.

    The minibatch is ``[N]`` transitions, or ``[N, T]`` whole sequences for a recurrent policy
    (``policy.evaluate`` unrolls them); every mean is over all its elements.
    """

    def loss(params, mb):
        dist, value = policy.evaluate(params, mb)
        log_prob = dist.log_prob(mb["action"])
        entropy = dist.entropy()
        adv = mb["advantages"]
        if config.normalize_advantages:
            adv = advantages.normalize(adv)
        log_ratio = log_prob - mb["log_prob"]
        ratio = jnp.exp(log_ratio)
        pg_loss = jnp.mean(losses.clipped_surrogate(ratio, adv, hp["clip_eps"], hp["clip_eps_high"]))
        v_loss = jnp.mean(losses.value_loss(
            value, mb["targets"], mb["values"],
            hp["clip_eps"] if config.clip_value_loss else None,
        ))
        ent = jnp.mean(entropy)
        total = pg_loss + hp["vf_coef"] * v_loss - hp["ent_coef"] * ent
        metrics = {
            "total_loss": total,
            "policy_loss": pg_loss,
            "value_loss": v_loss,
            "entropy": ent,
            "approx_kl": jnp.mean(losses.kl_k3(jax.lax.stop_gradient(mb["log_prob"]), log_prob)),
            "clip_fraction": jnp.mean(losses.clip_fraction(ratio, hp["clip_eps"], hp["clip_eps_high"])),
        }
        return total, jax.lax.stop_gradient(metrics)

    return loss


def make_train(config: PPOConfig, *, progress: Callable[[int], None] | None = None):
    """Returns ``train(key, hyperparams=None) -> TrainResult`` for ``config``.

    ``hyperparams`` is a dict of sweepable settings (``config.hyperparams()`` when None; missing
    names are filled from ``config``). Both arguments can be batched with ``jax.vmap``.
    ``progress(updates_done)`` is called on the host after every update when given.
    ``train.init(key, hyperparams)`` and ``train.run(state, num_updates)`` are the run in two
    pieces (:class:`~purejaxpo.algos.base.Program`), for checkpointing and resuming.

    Metrics (each ``[num_updates]``): ``episode_return``, ``episode_length`` (mean over the
    episodes completed in that update's rollout, NaN if none), ``episode_return_sum``,
    ``episode_count``, ``total_loss``, ``policy_loss``, ``value_loss``, ``entropy``,
    ``approx_kl``, ``clip_fraction`` (means over epochs and minibatches),
    ``explained_variance``, ``learning_rate``.
    """
    if not isinstance(config, PPOConfig):
        raise TypeError(f"make_train needs a PPOConfig, got {type(config).__name__}")
    policy = build_policy(config)
    steps_per_update = config.num_epochs * config.num_minibatches

    def setup(hp: Mapping[str, Any]) -> OnPolicySetup:
        schedule = linear_schedule(hp["learning_rate"], config.num_updates, steps_per_update,
                                   config.anneal_lr)
        tx = make_optimizer(schedule, hp["max_grad_norm"], eps=config.adam_eps)
        step_fn = gradient_step(ppo_loss(policy, hp, config), tx)

        def learn(key, params, opt_state, rollout):
            (params, opt_state), metrics = run_epochs(
                key, (params, opt_state), rollout.batch(policy), step_fn,
                num_epochs=config.num_epochs, num_minibatches=config.num_minibatches,
            )
            return params, opt_state, {k: jnp.mean(v) for k, v in metrics.items()}

        return OnPolicySetup(tx, learn, hp["gae_lambda"],
                             lr_schedule=lambda i: schedule(i * steps_per_update))

    return as_train(on_policy_program(config, policy, setup, progress=progress))
