"""Trust Region Policy Optimisation, discrete and continuous.

Each update collects a rollout ``[T, B]``, computes GAE with the critic, and then

1. takes one natural-gradient step on the actor: the surrogate's gradient ``g``, the direction
   ``x ~ F^-1 g`` by conjugate gradient on Fisher-vector products, the step
   ``sqrt(2 max_kl / x^T F x) x``, and a backtracking line search that keeps the mean KL from
   the old policy within ``max_kl`` and requires the surrogate to improve
   (:mod:`purejaxpo.trust_region`);
2. fits the critic to the lambda-returns with its own Adam optimiser, ``vf_epochs`` epochs of
   ``vf_minibatches`` shuffled minibatches (the shared :func:`~purejaxpo.update.run_epochs`).

The run is one ``train(key, hyperparams)`` built on the shared
:func:`~purejaxpo.algos.base.on_policy_program`, so::

    train = make_train(TRPOConfig(env="CartPole-v1"))
    result = jax.jit(jax.vmap(train))(jax.random.split(key, 8))        # 8 seeds, one compile
    sweep = jax.jit(jax.vmap(train, in_axes=(None, 0)))(key, {"max_kl": jnp.array([0.01, 0.02])})

References:
  Schulman et al., "Trust Region Policy Optimization", 2015; Schulman et al.,
  "High-Dimensional Continuous Control Using Generalized Advantage Estimation", 2016 (TRPO with
  GAE and a separately fitted value function, the variant implemented here).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import jax
import jax.numpy as jnp
import optax

from purejaxpo import advantages, losses, trust_region
from purejaxpo.algos.base import (
    OnPolicySetup,
    Rollout,
    as_train,
    build_policy,
    on_policy_program,
)
from purejaxpo.config import RLConfig, _fail, check_bool, check_float, check_int
from purejaxpo.networks import PolicyParts
from purejaxpo.update import gradient_step, linear_schedule, make_optimizer, run_epochs


@dataclasses.dataclass(frozen=True, kw_only=True)
class TRPOConfig(RLConfig):
    """TRPO settings (see :class:`~purejaxpo.config.RLConfig` for the shared ones).

    ``learning_rate``, ``anneal_lr`` and ``max_grad_norm`` apply to the value function's
    optimiser; the policy step size is set by ``max_kl`` alone.

    Attributes:
      gae_lambda: GAE lambda (sweepable).
      max_kl: trust-region radius, the largest mean KL(pi_old || pi_new) a step may have
        (sweepable).
      damping: Tikhonov damping added to the Fisher matrix in conjugate gradient (sweepable).
      backtrack_coef: line-search shrink factor per backtrack, in (0, 1) (sweepable).
      num_backtracks: step fractions tried, ``backtrack_coef ** k`` for ``k < num_backtracks``
        (static).
      cg_iters: conjugate-gradient iterations (Fisher-vector products) per update (static).
      cg_residual_tol: conjugate gradient stops early below this squared residual norm.
      vf_epochs: passes of the value-function fit over each rollout (static).
      vf_minibatches: minibatches per value-function epoch; must divide
        ``num_envs * num_steps`` (static).
      normalize_advantages: normalise advantages over the whole rollout before the policy step.
      adam_eps: epsilon of the value function's Adam.
    """

    learning_rate: float = 1e-3
    anneal_lr: bool = False
    gae_lambda: float = 0.97
    max_kl: float = 0.01
    damping: float = 0.1
    backtrack_coef: float = 0.8
    num_backtracks: int = 10
    cg_iters: int = 10
    cg_residual_tol: float = 1e-10
    vf_epochs: int = 5
    vf_minibatches: int = 8
    normalize_advantages: bool = True
    adam_eps: float = 1e-5

    SWEEPABLE: ClassVar[tuple[str, ...]] = RLConfig.SWEEPABLE + (
        "gae_lambda", "max_kl", "damping", "backtrack_coef",
    )

    def policy_parts(self) -> PolicyParts:
        """Actor and critic, with separate torsos: the trust region is over the actor's
        parameters alone, and the critic is fitted apart. Feed-forward only."""
        return PolicyParts(shared_torso=False)

    def validate(self) -> None:
        super().validate()
        check_float("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_float("max_kl", self.max_kl, 0.0, low_open=True)
        check_float("damping", self.damping, 0.0)
        check_float("backtrack_coef", self.backtrack_coef, 0.0, 1.0, low_open=True,
                    high_open=True)
        check_int("num_backtracks", self.num_backtracks)
        check_int("cg_iters", self.cg_iters)
        check_float("cg_residual_tol", self.cg_residual_tol, 0.0)
        check_int("vf_epochs", self.vf_epochs)
        check_int("vf_minibatches", self.vf_minibatches)
        if self.batch_size % self.vf_minibatches:
            _fail("vf_minibatches", self.vf_minibatches,
                  f"must divide num_envs * num_steps = {self.batch_size}")
        check_bool("normalize_advantages", self.normalize_advantages)
        check_float("adam_eps", self.adam_eps, 0.0, low_open=True)


def _value_loss(policy):
    """``loss(params, minibatch) -> (loss, metrics)``: the critic's squared error on ``[N]``."""

    def loss(params, mb):
        v_loss = jnp.mean(losses.value_loss(policy.value(params, mb["obs"]), mb["targets"]))
        return v_loss, {"value_loss": v_loss}

    return loss


def policy_step(policy, params, batch: Mapping[str, jax.Array], hp: Mapping[str, Any],
                config: TRPOConfig):
    """One trust-region step on the actor for a flat batch ``[N]``.

    Args:
      policy: the :class:`~purejaxpo.networks.ActorCritic`.
      params: ``{"actor": ..., "critic": ...}``; only the actor changes.
      batch: ``obs [N, ...]``, ``action [N, ...]``, ``log_prob [N]`` (of the policy that
        collected the data, i.e. ``params``), ``advantages [N]``.
      hp: traced hyperparameters (``max_kl``, ``damping``, ``backtrack_coef``).
      config: static settings.

    Returns:
      ``(params, metrics)`` with scalar metrics ``policy_loss`` (minus the surrogate at the new
      parameters), ``entropy`` (of the old policy), ``approx_kl`` (exact mean KL of the step
      taken), ``step_fraction``, ``line_search_accepted``, ``surrogate_improvement``,
      ``expected_improvement``.
    """
    obs, action = batch["obs"], batch["action"]
    adv = batch["advantages"]
    if config.normalize_advantages:
        adv = advantages.normalize(adv)
    old_actor = jax.lax.stop_gradient(params["actor"])
    old_dist = policy.distribution({"actor": old_actor}, obs)

    def dist(actor):
        return policy.distribution({"actor": actor}, obs)

    def surrogate(actor):  # mean importance-weighted advantage, to maximise
        ratio = jnp.exp(dist(actor).log_prob(action) - batch["log_prob"])
        return jnp.mean(ratio * adv)

    def mean_kl(actor):  # KL(pi_old || pi_actor), old held fixed
        return jnp.mean(old_dist.kl_divergence(dist(actor)))

    def fvp(v):
        return trust_region.fisher_vector_product(mean_kl, old_actor, v, hp["damping"])

    grad = jax.grad(surrogate)(old_actor)
    direction = trust_region.conjugate_gradient(fvp, grad, config.cg_iters, config.cg_residual_tol)
    full_step, expected = trust_region.natural_gradient_step(grad, direction, fvp(direction),
                                                             hp["max_kl"])
    actor, info = trust_region.backtracking_line_search(
        surrogate, mean_kl, old_actor, full_step, expected, hp["max_kl"], hp["backtrack_coef"],
        config.num_backtracks,
    )
    metrics = {
        "policy_loss": -surrogate(actor),
        "entropy": jnp.mean(old_dist.entropy()),
        "approx_kl": info.kl,
        "step_fraction": info.step_fraction,
        "line_search_accepted": info.accepted,
        "surrogate_improvement": info.improvement,
        "expected_improvement": info.expected_improvement,
    }
    return {**params, "actor": actor}, metrics


def make_train(config: TRPOConfig, *, progress: Callable[[int], None] | None = None):
    """Returns ``train(key, hyperparams=None) -> TrainResult`` for ``config``.

    ``hyperparams`` is a dict of sweepable settings (``config.hyperparams()`` when None; missing
    names are filled from ``config``). Both arguments can be batched with ``jax.vmap``.
    ``progress(updates_done)`` is called on the host after every update when given.

    Metrics (each ``[num_updates]``): ``episode_return``, ``episode_length`` (mean over the
    episodes completed in that update's rollout, NaN if none), ``episode_return_sum``,
    ``episode_count``, ``policy_loss``, ``entropy``, ``approx_kl`` (mean KL of the accepted
    step, 0 if rejected), ``step_fraction`` (of the full natural-gradient step; 0 if rejected),
    ``line_search_accepted`` (0 or 1), ``surrogate_improvement``, ``expected_improvement``,
    ``value_loss`` (mean over the value fit's epochs and minibatches), ``explained_variance``
    (of the critic that computed the advantages), ``learning_rate`` (the value function's).
    """
    if not isinstance(config, TRPOConfig):
        raise TypeError(f"make_train needs a TRPOConfig, got {type(config).__name__}")
    policy = build_policy(config)
    vf_steps_per_update = config.vf_epochs * config.vf_minibatches

    def setup(hp: Mapping[str, Any]) -> OnPolicySetup:
        schedule = linear_schedule(hp["learning_rate"], config.num_updates, vf_steps_per_update,
                                   config.anneal_lr)
        # One optimiser state over both networks, but only the critic is ever moved by it: the
        # actor moves by the trust-region step alone.
        tx = optax.multi_transform(
            {"critic": make_optimizer(schedule, hp["max_grad_norm"], eps=config.adam_eps),
             "actor": optax.set_to_zero()},
            {"actor": "actor", "critic": "critic"},
        )
        vf_step = gradient_step(_value_loss(policy), tx)

        def learn(key, params, opt_state, rollout: Rollout):
            batch = rollout.flat_batch()
            params, metrics = policy_step(policy, params, batch, hp, config)
            (params, opt_state), vf_metrics = run_epochs(
                key, (params, opt_state), batch, vf_step,
                num_epochs=config.vf_epochs, num_minibatches=config.vf_minibatches,
            )
            metrics.update({k: jnp.mean(v) for k, v in vf_metrics.items()})
            return params, opt_state, metrics

        return OnPolicySetup(tx, learn, hp["gae_lambda"],
                             lr_schedule=lambda i: schedule(i * vf_steps_per_update))

    return as_train(on_policy_program(config, policy, setup, progress=progress))
