"""Group Relative Policy Optimisation on environments: critic-free, group-relative advantages.

Every update resets the ``num_envs`` environments as ``num_envs / group_size`` groups: the
``group_size`` members of a group share a reset key, so they start from one identical initial
state and differ only in the actions sampled. Each member plays one episode (up to
``num_steps`` steps); its undiscounted return, compared with its group's through
:func:`purejaxpo.advantages.group_advantages`, is the advantage of every step of that episode.
The policy then takes ``num_epochs`` epochs of minibatch steps on the clipped surrogate plus
``beta`` times the k3 KL estimate to a frozen reference policy (the initial policy, refreshed
every ``ref_update_every`` updates when that is > 0). There is no value function.

The env-step budget counts every step run, including the steps that follow the end of an
episode inside the fixed ``num_steps`` horizon (they are masked out of the loss).

References:
  Shao et al., "DeepSeekMath" (GRPO), 2024; Liu et al., "Understanding R1-Zero-Like Training"
  (Dr. GRPO: ``advantage_scale="none"``), 2025.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import jax
import jax.numpy as jnp

from purejaxpo import advantages, losses
from purejaxpo.advantages import ADVANTAGE_SCALES
from purejaxpo.algos.base import (
    Program,
    TrainState,
    as_train,
    build_env,
    build_policy,
    per_run,
    progress_calls,
    run_updates,
)
from purejaxpo.config import RLConfig, _fail, check_bool, check_float, check_int
from purejaxpo.networks import PolicyParts
from purejaxpo.rollout import EnvCarry, collect, episode_statistics
from purejaxpo.update import (
    flatten_time_batch,
    gradient_step,
    linear_schedule,
    make_optimizer,
    run_epochs,
)

@dataclasses.dataclass(frozen=True, kw_only=True)
class GRPOConfig(RLConfig):
    """Environment-GRPO settings (see :class:`~purejaxpo.config.RLConfig` for the shared ones).

    ``num_steps`` is the episode horizon of one update; ``gamma`` is not used (returns are
    undiscounted episode returns).

    Attributes:
      group_size: G, episodes per group from one initial state; must divide ``num_envs``.
      num_epochs: passes over each batch of episodes (static).
      num_minibatches: minibatches per epoch over the ``num_envs * num_steps`` steps (static).
      clip_eps: clip range of the ratio below 1 (and above, unless ``clip_eps_high``)
        (sweepable).
      clip_eps_high: upper clip range (DAPO clip-higher); None means ``clip_eps``.
      beta: weight of the k3 KL to the reference policy (sweepable).
      ref_update_every: refresh the reference to the current policy every this many updates;
        0 keeps the initial policy.
      ent_coef: entropy bonus weight (sweepable).
      advantage_scale: ``std`` (GRPO) or ``none`` (Dr. GRPO: return minus group mean).
      adam_eps: Adam's epsilon.
    """

    # Tuned on CartPole-v1 (1e6 steps, 8 seeds: lr 5e-4 and 1e-3 reach 499.9, 2e-3 is unstable).
    num_envs: int = 16
    num_steps: int = 500
    learning_rate: float = 1e-3
    group_size: int = 4
    num_epochs: int = 4
    num_minibatches: int = 4
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    beta: float = 0.01
    ref_update_every: int = 10
    ent_coef: float = 0.0
    advantage_scale: str = "std"
    adam_eps: float = 1e-5

    SWEEPABLE: ClassVar[tuple[str, ...]] = RLConfig.SWEEPABLE + (
        "clip_eps", "clip_eps_high", "beta", "ent_coef",
    )

    def policy_parts(self) -> PolicyParts:
        """The actor alone (group-relative advantages need no critic); feed-forward only."""
        return PolicyParts(("actor",))

    def validate(self) -> None:
        super().validate()
        check_int("group_size", self.group_size, 2)
        if self.num_envs % self.group_size:
            _fail("num_envs", self.num_envs, f"must be a multiple of group_size = {self.group_size}")
        check_int("num_epochs", self.num_epochs)
        check_int("num_minibatches", self.num_minibatches)
        if self.batch_size % self.num_minibatches:
            _fail("num_minibatches", self.num_minibatches,
                  f"must divide num_envs * num_steps = {self.batch_size}")
        check_float("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True)
        if self.clip_eps_high is not None:
            check_float("clip_eps_high", self.clip_eps_high, 0.0, low_open=True)
        check_float("beta", self.beta, 0.0)
        check_int("ref_update_every", self.ref_update_every, 0)
        check_float("ent_coef", self.ent_coef, 0.0)
        if self.advantage_scale not in ADVANTAGE_SCALES:
            _fail("advantage_scale", self.advantage_scale, f"must be one of {list(ADVANTAGE_SCALES)}")
        check_float("adam_eps", self.adam_eps, 0.0, low_open=True)
        for name in ("normalize_obs", "normalize_reward"):
            check_bool(name, getattr(self, name))
            if getattr(self, name):
                _fail(name, True, "must be false for grpo (groups are compared in raw returns and "
                      "every update resets the envs)")


def first_episode_mask(terminated, truncated):
    """``[T, B]`` true at the steps of each env's first episode, up to and including its end."""
    done = jnp.logical_or(terminated, truncated).astype(jnp.int32)
    return (jnp.cumsum(done, axis=0) - done) == 0


def grpo_loss(policy, hp: Mapping[str, Any]):
    """``loss(params, minibatch) -> (loss, metrics)``; means over the steps where ``mask``."""

    def loss(params, mb):
        dist = policy.distribution(params, mb["obs"])
        log_prob = dist.log_prob(mb["action"])
        mask = mb["mask"]
        ratio = jnp.exp(log_prob - mb["log_prob"])
        surrogate = losses.clipped_surrogate(ratio, mb["advantages"], hp["clip_eps"],
                                             hp["clip_eps_high"])
        pg_loss = losses.masked_mean(surrogate, mask)
        kl = losses.masked_mean(losses.kl_k3(log_prob, mb["ref_log_prob"]), mask)
        ent = losses.masked_mean(dist.entropy(), mask)
        total = pg_loss + hp["beta"] * kl - hp["ent_coef"] * ent
        metrics = {
            "total_loss": total,
            "policy_loss": pg_loss,
            "kl_to_ref": kl,
            "entropy": ent,
            "approx_kl": losses.masked_mean(
                losses.kl_k3(jax.lax.stop_gradient(mb["log_prob"]), log_prob), mask),
            "clip_fraction": losses.masked_mean(
                losses.clip_fraction(ratio, hp["clip_eps"], hp["clip_eps_high"]), mask),
        }
        return total, jax.lax.stop_gradient(metrics)

    return loss


def make_train(config: GRPOConfig, *, progress: Callable[[int], None] | None = None):
    """Returns ``train(key, hyperparams=None) -> TrainResult`` for ``config``.

    Metrics (each ``[num_updates]``): ``episode_return``, ``episode_length`` (means over the
    episodes that ended within the horizon), ``episode_return_sum``, ``episode_count``,
    ``zero_spread_groups`` (fraction of groups whose returns were all equal: no signal),
    ``total_loss``, ``policy_loss``, ``kl_to_ref``, ``entropy``, ``approx_kl``,
    ``clip_fraction``, ``learning_rate``.
    """
    if not isinstance(config, GRPOConfig):
        raise TypeError(f"make_train needs a GRPOConfig, got {type(config).__name__}")
    policy = build_policy(config)
    steps_per_update = config.num_epochs * config.num_minibatches
    num_groups = config.num_envs // config.group_size

    def optimizer(hp):
        schedule = linear_schedule(hp["learning_rate"], config.num_updates, steps_per_update,
                                   config.anneal_lr)
        return schedule, make_optimizer(schedule, hp["max_grad_norm"], eps=config.adam_eps)

    def init(key, hyperparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = config.complete_hyperparams(hyperparams)
        _, tx = optimizer(hp)
        key, k_params = jax.random.split(key)
        params = policy.init(k_params)
        # No env carry: every update resets the environments. ``extra`` holds the reference.
        return per_run(TrainState(params, tx.init(params), (), key, jnp.zeros((), jnp.int32),
                                  hp, extra=params))

    def run(state: TrainState, num_updates: int):
        hp = state.hyperparams
        venv = build_env(config, hp["gamma"])
        schedule, tx = optimizer(hp)
        step_fn = gradient_step(grpo_loss(policy, hp), tx)

        def update(state: TrainState):
            params, ref_params, opt_state, key, index = (
                state.params, state.extra, state.opt_state, state.key, state.update)
            if config.ref_update_every > 0:
                refresh = index % config.ref_update_every == 0
                ref_params = jax.tree_util.tree_map(
                    lambda p, r: jnp.where(refresh, p, r), params, ref_params)
            key, k_reset, k_roll, k_epochs = jax.random.split(key, 4)
            obs, env_state = venv.reset(k_reset, config.group_size)
            _, traj = collect(k_roll, venv, policy, params, EnvCarry(env_state, obs),
                              config.num_steps)
            mask = first_episode_mask(traj.terminated, traj.truncated)  # [T, B]
            returns = jnp.sum(traj.reward * mask, axis=0)  # [B]
            finished = jnp.any(jnp.logical_and(traj.episode_done, mask), axis=0)
            group_returns = returns.reshape(num_groups, config.group_size)
            adv = advantages.group_advantages(group_returns, scale=config.advantage_scale)
            batch = flatten_time_batch({
                "obs": traj.obs, "action": traj.action, "log_prob": traj.log_prob,
                "ref_log_prob": policy.distribution(ref_params, traj.obs).log_prob(traj.action),
                "advantages": jnp.broadcast_to(adv.reshape(-1), mask.shape),
                "mask": mask,
            })
            (params, opt_state), loss_metrics = run_epochs(
                k_epochs, (params, opt_state), batch, step_fn,
                num_epochs=config.num_epochs, num_minibatches=config.num_minibatches,
            )
            metrics = {k: jnp.mean(v) for k, v in loss_metrics.items()}
            metrics.update(episode_statistics(finished, returns, jnp.sum(mask, axis=0)))
            metrics.update({
                "zero_spread_groups": jnp.mean(
                    jnp.all(group_returns == group_returns[:, :1], axis=1).astype(jnp.float32)),
                "learning_rate": schedule(index * steps_per_update),
            })
            return state._replace(params=params, extra=ref_params, opt_state=opt_state, key=key,
                                  update=index + 1), metrics

        return run_updates(update, state, num_updates, progress,
                           calls=progress_calls(config.total_timesteps))

    return as_train(Program(init, run, config.num_updates))
