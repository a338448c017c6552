"""Soft Actor-Critic: a squashed-Gaussian actor, twin Q networks with Polyak-averaged
targets, and an automatically tuned entropy temperature.

Each gradient step (on a replay minibatch, see :mod:`purejaxpo.algos.offpolicy`):

* Q networks: ``0.5 * sum_i mean((Q_i(s, a) - y)^2)`` with the soft Bellman target
  ``y = r + gamma * (1 - terminated) * (min_i Q'_i(s', a') - alpha * log pi(a'|s'))``,
  ``a' ~ pi(.|s')`` (:func:`purejaxpo.td.bellman_target`; truncations bootstrap);
* actor: ``mean(alpha * log pi(a|s) - min_i Q_i(s, a))``, ``a ~ pi(.|s)`` reparameterised,
  with the Q networks just updated;
* temperature: :func:`purejaxpo.td.temperature_loss` towards ``target_entropy``;
* targets: Polyak averaging at rate ``tau`` (:func:`purejaxpo.td.polyak`).

Example, 8 seeds in one program::

    train = make_train(SACConfig(env="Pendulum-v1"))
    result = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), 8))

References:
  Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018.
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
from purejaxpo.config import _fail, check_bool, check_float
from purejaxpo.networks import PolicyParts


@dataclasses.dataclass(frozen=True, kw_only=True)
class SACConfig(OffPolicyConfig):
    """SAC settings (see :class:`~purejaxpo.algos.offpolicy.OffPolicyConfig` for the shared
    ones).

    Attributes:
      init_temperature: the entropy temperature alpha at the start (sweepable).
      learn_temperature: tune alpha towards ``target_entropy`` (else it stays fixed).
      target_entropy: the entropy alpha aims the policy at; None: ``-action_dim`` (static).
      log_std: ``"state"`` (default: a dense layer of the features, clipped to
        ``networks.LOG_STD_RANGE``) or ``"free"``.
    """

    init_temperature: float = 1.0
    learn_temperature: bool = True
    target_entropy: float | None = None
    log_std: str = "state"

    SWEEPABLE: ClassVar[tuple[str, ...]] = OffPolicyConfig.SWEEPABLE + ("init_temperature",)

    def validate(self) -> None:
        super().validate()
        check_float("init_temperature", self.init_temperature, 0.0, low_open=True)
        check_bool("learn_temperature", self.learn_temperature)
        if self.target_entropy is not None:
            if isinstance(self.target_entropy, bool):
                _fail("target_entropy", self.target_entropy, "must be a number or unset")
            check_float("target_entropy", self.target_entropy, -1e6)

    def policy_parts(self) -> PolicyParts:
        """A squashed-Gaussian actor and twin Q networks, each with its own MLP torso."""
        return PolicyParts(heads=("actor", "q"), shared_torso=False, actor="squashed_gaussian")


def make_train(config: SACConfig, *, progress: Callable[[int], None] | None = None):
    """Returns ``train(key, hyperparams=None) -> TrainResult`` for ``config`` (with
    ``train.init`` / ``train.run``, as for every algorithm here).

    Parameters: ``{"actor", "q" (twin, stacked [2, ...]), "log_alpha"}``. Metrics (each
    ``[num_updates]``, means over the update's gradient steps, 0 before ``learning_starts``):
    ``q_loss``, ``actor_loss``, ``temperature_loss``, ``temperature``, ``entropy`` (``-mean
    log pi``), ``q_mean``, ``learning``, and the episode statistics.
    """
    if not isinstance(config, SACConfig):
        raise TypeError(f"make_train needs a SACConfig, got {type(config).__name__}")
    policy = build_policy(config)
    target_entropy = (-float(policy.action_dim) if config.target_entropy is None
                      else float(config.target_entropy))

    def setup(hp: Mapping[str, jax.Array]) -> OffPolicySetup:
        clip = hp["max_grad_norm"]
        txs = {"actor": adam(hp["learning_rate"], clip), "q": adam(hp["q_learning_rate"], clip),
               "log_alpha": adam(hp["learning_rate"], clip)}

        def init_params(key):
            return {**policy.init(key), "log_alpha": jnp.log(hp["init_temperature"])}

        def explore(key, params, obs):
            return policy.distribution(params, obs).sample(key)

        def step(group, loss_fn, params, opt_state):
            return group_step(txs, group, loss_fn, params, opt_state)

        def learn(key, params, opt_state, target, grad_steps, b):
            del grad_steps
            k_next, k_pi = jax.random.split(key)
            alpha = jnp.exp(params["log_alpha"])
            next_a, next_logp = policy.distribution(params, b.next_obs).sample_and_log_prob(
                k_next)
            next_q = jnp.min(policy.q_values(target, b.next_obs, next_a), axis=0)
            y = jax.lax.stop_gradient(td.bellman_target(
                b.reward, next_q - alpha * next_logp, b.terminated, hp["gamma"]))

            def q_loss(q_params):
                q = policy.q_values(q_params, b.obs, b.action)
                return 0.5 * jnp.sum(jnp.mean((q - y) ** 2, axis=-1)), jnp.mean(q)

            params, opt_state, q_l, q_mean = step("q", q_loss, params, opt_state)

            def actor_loss(actor_params):
                a, logp = policy.distribution({"actor": actor_params}, b.obs) \
                    .sample_and_log_prob(k_pi)
                q = jnp.min(policy.q_values(params["q"], b.obs, a), axis=0)
                return jnp.mean(alpha * logp - q), logp

            params, opt_state, a_l, logp = step("actor", actor_loss, params, opt_state)

            def alpha_loss(log_alpha):
                return td.temperature_loss(log_alpha, logp, target_entropy), ()

            new_params, new_opt, t_l, _ = step("log_alpha", alpha_loss, params, opt_state)
            if config.learn_temperature:
                params, opt_state = new_params, new_opt
            target = td.polyak(target, params["q"], hp["tau"])
            metrics = {"q_loss": q_l, "actor_loss": a_l, "temperature_loss": t_l,
                       "temperature": alpha, "entropy": -jnp.mean(logp), "q_mean": q_mean}
            return params, opt_state, target, metrics

        return OffPolicySetup(txs, init_params, lambda params: params["q"], explore, learn)

    return as_train(off_policy_program(config, policy, setup, progress=progress))
