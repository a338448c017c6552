"""Twin Delayed DDPG: a deterministic actor, twin Q networks, target policy smoothing and
delayed actor and target updates.

Each gradient step (on a replay minibatch, see :mod:`purejaxpo.algos.offpolicy`):

* Q networks: ``0.5 * sum_i mean((Q_i(s, a) - y)^2)``, ``y = r + gamma * (1 - terminated) *
  min_i Q'_i(s', a')`` with the smoothed target action ``a' = clip(mu'(s') + clip(eps, -c,
  c), -1, 1)``, ``eps ~ N(0, policy_noise)`` (:func:`purejaxpo.td.smoothed_target_action`);
* every ``policy_delay`` gradient steps: the actor (``-mean Q_1(s, mu(s))``), then the
  target actor and Q networks (Polyak at rate ``tau``).

Exploration adds ``N(0, exploration_noise)`` to the actor's action (in ``[-1, 1]`` units).

References:
  Fujimoto et al., "Addressing Function Approximation Error in Actor-Critic Methods", 2018.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Mapping

import jax
import jax.numpy as jnp

from purejaxpo import td
from purejaxpo.algos.base import as_train, build_policy
from purejaxpo.algos.offpolicy import (OffPolicyConfig, OffPolicySetup, adam, group_step,
                                       off_policy_program)
from purejaxpo.config import check_float, check_int
from purejaxpo.networks import PolicyParts


@dataclasses.dataclass(frozen=True, kw_only=True)
class TD3Config(OffPolicyConfig):
    """TD3 settings (see :class:`~purejaxpo.algos.offpolicy.OffPolicyConfig` for the shared
    ones). Noise scales are in the actor's ``[-1, 1]`` action units.

    Attributes:
      policy_noise: std of the target policy smoothing noise (sweepable).
      noise_clip: the smoothing noise is clipped to ``[-noise_clip, noise_clip]`` (sweepable).
      exploration_noise: std of the Gaussian noise added to actions while collecting
        (sweepable).
      policy_delay: gradient steps per actor and target update (static).
    """

    learning_rate: float = 1e-3
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    exploration_noise: float = 0.1
    policy_delay: int = 2

    SWEEPABLE: ClassVar[tuple[str, ...]] = OffPolicyConfig.SWEEPABLE + (
        "policy_noise", "noise_clip", "exploration_noise")

    def validate(self) -> None:
        super().validate()
        check_float("policy_noise", self.policy_noise, 0.0)
        check_float("noise_clip", self.noise_clip, 0.0)
        check_float("exploration_noise", self.exploration_noise, 0.0)
        check_int("policy_delay", self.policy_delay)

    def policy_parts(self) -> PolicyParts:
        """A deterministic actor and twin Q networks, each with its own MLP torso."""
        return PolicyParts(heads=("actor", "q"), shared_torso=False, actor="deterministic")


def make_train(config: TD3Config, *, progress: Callable[[int], None] | None = None):
    """Returns ``train(key, hyperparams=None) -> TrainResult`` for ``config`` (with
    ``train.init`` / ``train.run``).

    Parameters: ``{"actor", "q" (twin, stacked [2, ...])}``; targets of both. Metrics (each
    ``[num_updates]``, means over the update's gradient steps, 0 before ``learning_starts``):
    ``q_loss``, ``actor_loss`` (at the delayed steps; 0 between them), ``q_mean``,
    ``learning``, and the episode statistics.
    """
    if not isinstance(config, TD3Config):
        raise TypeError(f"make_train needs a TD3Config, got {type(config).__name__}")
    policy = build_policy(config)

    def setup(hp: Mapping[str, jax.Array]) -> OffPolicySetup:
        clip = hp["max_grad_norm"]
        txs = {"actor": adam(hp["learning_rate"], clip), "q": adam(hp["q_learning_rate"], clip)}

        def mu(actor_params, obs):
            return policy.distribution({"actor": actor_params}, obs).mode()

        def explore(key, params, obs):
            action = mu(params["actor"], obs)
            noise = hp["exploration_noise"] * jax.random.normal(key, action.shape)
            return jnp.clip(action + noise, -1.0, 1.0)

        def step(group, loss_fn, params, opt_state):
            return group_step(txs, group, loss_fn, params, opt_state)

        def learn(key, params, opt_state, target, grad_steps, b):
            next_a = td.smoothed_target_action(key, mu(target["actor"], b.next_obs),
                                               hp["policy_noise"], hp["noise_clip"])
            next_q = jnp.min(policy.q_values(target["q"], b.next_obs, next_a), axis=0)
            y = jax.lax.stop_gradient(
                td.bellman_target(b.reward, next_q, b.terminated, hp["gamma"]))

            def q_loss(q_params):
                q = policy.q_values(q_params, b.obs, b.action)
                return 0.5 * jnp.sum(jnp.mean((q - y) ** 2, axis=-1)), jnp.mean(q)

            params, opt_state, q_l, q_mean = step("q", q_loss, params, opt_state)

            def actor_loss(actor_params):
                return -jnp.mean(policy.q_values(params["q"], b.obs,
                                                 mu(actor_params, b.obs))[0]), ()

            delayed = (grad_steps + 1) % config.policy_delay == 0
            new_params, new_opt, a_l, _ = step("actor", actor_loss, params, opt_state)
            new_target = td.polyak(target, {"actor": new_params["actor"],
                                            "q": new_params["q"]}, hp["tau"])
            keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
                lambda n, o: jnp.where(delayed, n, o), new, old)
            params, opt_state = keep(new_params, params), keep(new_opt, opt_state)
            target = keep(new_target, target)
            metrics = {"q_loss": q_l, "actor_loss": jnp.where(delayed, a_l, 0.0),
                       "q_mean": q_mean}
            return params, opt_state, target, metrics

        def initial_target(params):
            return {"actor": params["actor"], "q": params["q"]}

        return OffPolicySetup(txs, policy.init, initial_target, explore, learn)

    return as_train(off_policy_program(config, policy, setup, progress=progress))
