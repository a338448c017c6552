"""Collecting time-major rollouts from vectorised environments (shared by all RL algorithms)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purejaxpo import backends
from purejaxpo.networks import reset_memory


class Transition(NamedTuple):
    """One rollout, every field time-major ``[T, B, ...]``.

    Attributes:
      obs: observation the action was taken in (normalised, if the env normalises).
      action: the sampled action (unclipped, for continuous policies).
      log_prob: log pi_old(action | obs) under the policy that collected the data.
      reward: reward of the step (normalised, if the env normalises rewards).
      terminated: the episode ended for real at this step.
      truncated: a time limit cut the episode at this step.
      final_obs: observation after the step, before any automatic reset: bootstrap from it.
      episode_done, episode_return, episode_length: episode statistics (raw reward units);
        return and length are meaningful where ``episode_done``.
      agent_state: the policy's memory at the start of the rollout (``[B, H]`` for a GRU, not
        time-major; ``()`` for a feed-forward policy): an update unrolls the whole sequence from
        it (``policy.unroll`` with the episode starts gives every step's memory again).
    """

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array
    episode_done: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    agent_state: Any = ()


class EnvCarry(NamedTuple):
    """What a rollout carries from one update to the next.

    Attributes:
      env_state: the vectorised environments' state.
      obs: ``[B, *obs_shape]`` current observations.
      agent_state: the policy's memory for the next step (``policy.initial_state(B)`` at the
        start of a run; ``()`` for a feed-forward policy).
    """

    env_state: object
    obs: jax.Array
    agent_state: Any = ()


def policy_distribution(policy, params, state, obs):
    """``(state, pi(.|obs))`` for ``[B, *obs_shape]`` observations: one step of ``policy``.

    A recurrent policy first advances its memory ``state`` with ``obs`` (as its ``act`` does);
    a feed-forward one returns ``state`` unchanged.
    """
    if policy.recurrent:
        state = policy.step(params, state, obs)
        return state, policy.head_distribution(params, state)
    return state, policy.distribution(params, obs)


@dataclasses.dataclass(frozen=True)
class Greedy:
    """``policy`` acting with the mode of its distribution instead of a sample.

    It has the policy protocol's acting part (``act``, ``initial_state``, ``env_action``,
    ``recurrent``), so :func:`collect` runs it like any policy: e.g. to evaluate a trained
    policy greedily. ``act`` ignores its key; the log-probability is that of the mode.
    """

    policy: Any

    @property
    def recurrent(self) -> bool:
        return self.policy.recurrent

    def initial_state(self, num_envs: int):
        return self.policy.initial_state(num_envs)

    def act(self, key, params, state, obs):
        del key
        state, dist = policy_distribution(self.policy, params, state, obs)
        action = dist.mode()
        return state, action, dist.log_prob(action)

    def env_action(self, action):
        return self.policy.env_action(action)


def collect(key, venv, policy, params, carry: EnvCarry, num_steps: int):
    """Runs ``policy`` for ``num_steps`` steps in every environment of ``venv``.

    Feed-forward and recurrent policies share this loop through the policy protocol of
    :mod:`purejaxpo.networks`: ``policy.act`` takes and returns the memory in
    ``carry.agent_state``, which is zeroed where an episode ends (``reset_memory``).

    Args:
      key: PRNG key.
      venv: a vectorised environment stack (``purejaxpo.envs.make_vec_env``).
      policy: an :class:`~purejaxpo.networks.ActorCritic` or
        :class:`~purejaxpo.networks.RecurrentActorCritic` (only its actor, and torso, run).
      params: the policy's parameters.
      carry: environment state, current observations and the policy's memory.
      num_steps: T, steps per environment (static).

    Returns:
      ``(carry, transitions)`` with transitions ``[T, B, ...]``.
    """

    def step(carry: EnvCarry, step_key):
        k_act, k_env = jax.random.split(step_key)
        agent_state, action, log_prob = policy.act(k_act, params, carry.agent_state, carry.obs)
        obs, env_state, reward, terminated, truncated, info = venv.step(
            k_env, carry.env_state, policy.env_action(action)
        )
        transition = Transition(
            obs=carry.obs,
            action=action,
            log_prob=log_prob,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=info["final_observation"],
            episode_done=info["episode_done"],
            episode_return=info["episode_return"],
            episode_length=info["episode_length"],
        )
        done = jnp.logical_or(terminated, truncated)
        return EnvCarry(env_state, obs, reset_memory(agent_state, done)), transition

    keys = jax.random.split(backends.active().loop_key(key), num_steps)
    new_carry, traj = jax.lax.scan(step, carry, keys)
    return new_carry, traj._replace(agent_state=carry.agent_state)


def episode_metrics(traj: Transition) -> dict[str, jax.Array]:
    """Statistics of the episodes completed during a rollout (scalars).

    ``episode_return`` and ``episode_length`` are NaN when no episode ended in the rollout;
    ``episode_return_sum`` and ``episode_count`` are always defined and let a caller average
    over several updates exactly.
    """
    return episode_statistics(traj.episode_done, traj.episode_return, traj.episode_length)


def episode_statistics(done, returns, lengths) -> dict[str, jax.Array]:
    """:func:`episode_metrics` from any shape of ``done`` (bool), ``returns`` and ``lengths``
    (same shape; only entries where ``done`` count)."""
    done = done.astype(jnp.float32)
    count = jnp.sum(done)
    ret_sum = jnp.sum(jnp.where(done > 0, returns, 0.0))
    len_sum = jnp.sum(jnp.where(done > 0, lengths, 0).astype(jnp.float32))
    safe = jnp.maximum(count, 1.0)
    return {
        "episode_return_sum": ret_sum,
        "episode_count": count,
        "episode_return": jnp.where(count > 0, ret_sum / safe, jnp.nan),
        "episode_length": jnp.where(count > 0, len_sum / safe, jnp.nan),
    }
