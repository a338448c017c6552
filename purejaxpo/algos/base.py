"""The skeleton every on-policy algorithm shares: environments, networks, the run itself."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from purejaxpo import advantages
from purejaxpo.config import RLConfig
from purejaxpo.envs import make, make_vec_env
from purejaxpo.networks import ActorCritic, RecurrentActorCritic, episode_starts
from purejaxpo.rollout import EnvCarry, Transition, collect, episode_metrics
from purejaxpo.update import explained_variance, flatten_time_batch


class TrainResult(NamedTuple):
    """What ``train`` returns.

    Attributes:
      params: final network parameters ``{"actor": ..., "critic": ...}``.
      metrics: dict of arrays ``[num_updates]`` (with a leading axis per ``vmap``).
    """

    params: Any
    metrics: dict[str, jax.Array]


def build_env(config: RLConfig, gamma):
    """The vectorised training environment for ``config`` (``gamma`` may be traced)."""
    env, env_params = make(config.env)
    return make_vec_env(
        env,
        env_params,
        config.num_envs,
        normalize_obs=config.normalize_obs,
        normalize_reward=config.normalize_reward,
        gamma=gamma,
    )


def build_policy(config: RLConfig) -> ActorCritic:
    """The actor-critic network that fits ``config.env`` (built without tracing anything).

    A :class:`~purejaxpo.networks.RecurrentActorCritic` when ``config`` has a ``gru_size``
    (e.g. ``RecurrentPPOConfig``), a feed-forward :class:`~purejaxpo.networks.ActorCritic`
    otherwise.
    """
    env, env_params = make(config.env)
    venv = make_vec_env(env, env_params, 1)
    policy = ActorCritic.for_env(venv, config.hidden_sizes, config.activation)
    gru_size = getattr(config, "gru_size", None)
    if gru_size is None:
        return policy
    return RecurrentActorCritic(**dataclasses.asdict(policy), gru_size=gru_size)


def scan_updates(update: Callable, carry, num_updates: int,
                 progress: Callable[[int], None] | None = None):
    """Runs ``update(carry) -> (carry, metrics)`` ``num_updates`` times in one ``lax.scan``.

    ``progress``, if given, is called on the host with the number of updates done after each
    update (through ``jax.debug.callback``; it never changes results). Under ``vmap`` it may be
    called once per batch element with the same count.
    """

    def body(carry, index):
        carry, metrics = update(carry)
        if progress is not None:
            jax.debug.callback(progress, index + 1)
        return carry, metrics

    return jax.lax.scan(body, carry, jnp.arange(num_updates))


class Rollout(NamedTuple):
    """A rollout with its critic values and advantages, every field time-major ``[T, B]``.

    Attributes:
      traj: the :class:`~purejaxpo.rollout.Transition` collected.
      values: V(obs_t) under the parameters that collected it (zeros without a critic).
      advantages: GAE advantages (``gae_lambda = 1``: discounted returns minus ``values``).
      targets: value targets, ``advantages + values``.
    """

    traj: Transition
    values: jax.Array
    advantages: jax.Array
    targets: jax.Array

    def flat_batch(self) -> dict[str, jax.Array]:
        """The fields an update needs, flattened to ``[T * B, ...]``."""
        return flatten_time_batch({
            "obs": self.traj.obs, "action": self.traj.action, "log_prob": self.traj.log_prob,
            "values": self.values, "advantages": self.advantages, "targets": self.targets,
        })

    def sequence_batch(self) -> dict[str, Any]:
        """The same fields as whole sequences, env-major, for recurrent policies.

        Returns ``[B, T, ...]`` fields (minibatches then split the env axis and keep time
        intact), ``resets`` ``[B, T]`` (true where step t starts an episode) and
        ``agent_state`` (each sequence's initial memory, ``[B, H]``).
        """
        done = jnp.logical_or(self.traj.terminated, self.traj.truncated)
        seqs = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), {
            "obs": self.traj.obs, "action": self.traj.action, "log_prob": self.traj.log_prob,
            "values": self.values, "advantages": self.advantages, "targets": self.targets,
            "resets": episode_starts(done),
        })
        seqs["agent_state"] = jax.tree_util.tree_map(lambda x: x[0], self.traj.agent_state)
        return seqs

    def batch(self, policy) -> dict[str, Any]:
        """:meth:`sequence_batch` for a recurrent ``policy``, :meth:`flat_batch` otherwise."""
        return self.sequence_batch() if policy.recurrent else self.flat_batch()


def on_policy_train(config: RLConfig, hp, policy: ActorCritic, tx, learn: Callable, *,
                    key, gae_lambda, use_critic: bool = True, lr_schedule: Callable | None = None,
                    progress: Callable[[int], None] | None = None) -> TrainResult:
    """The run every on-policy algorithm shares: rollout, values, GAE, ``learn``, repeated.

    Args:
      config: shapes (``num_envs``, ``num_steps``, ``num_updates``) and the env.
      hp: traced hyperparameters; ``hp["gamma"]`` is used here.
      policy: the actor-critic (feed-forward or recurrent: any policy with the protocol of
        :mod:`purejaxpo.networks`).
      tx: the optax optimiser whose state ``learn`` carries.
      learn: ``learn(key, params, opt_state, rollout: Rollout) -> (params, opt_state, metrics)``,
        the algorithm's own part; ``metrics`` is a dict of scalars.
      key: PRNG key of the run.
      gae_lambda: GAE lambda (may be traced).
      use_critic: compute values and bootstrap from them; without it values are zeros, so the
        advantages are plain discounted returns, cut at the end of the rollout.
      lr_schedule: ``update_index -> learning rate``, reported as the ``learning_rate`` metric.
      progress: host callback after every update (see :func:`scan_updates`).

    Returns:
      final parameters and metrics ``[num_updates]``: ``learn``'s, the episode statistics,
      ``explained_variance`` and ``learning_rate``.
    """
    venv = build_env(config, hp["gamma"])
    key, k_params, k_env = jax.random.split(key, 3)
    params = policy.init(k_params)
    obs, env_state = venv.reset(k_env)
    env_carry = EnvCarry(env_state, obs, policy.initial_state(config.num_envs))
    carry = (params, tx.init(params), env_carry, key, jnp.zeros((), jnp.int32))

    def critic(params, traj):
        if use_critic:
            return policy.rollout_values(params, traj)  # V(obs_t), V(final_obs_t)
        zeros = jnp.zeros(traj.reward.shape, jnp.float32)
        return zeros, zeros

    def update(carry):
        params, opt_state, env_carry, key, index = carry
        key, k_roll, k_learn = jax.random.split(key, 3)
        env_carry, traj = collect(k_roll, venv, policy, params, env_carry, config.num_steps)
        values, next_values = critic(params, traj)
        adv, targets = advantages.gae(
            traj.reward, values, next_values, traj.terminated,
            traj.truncated, hp["gamma"], gae_lambda,
        )
        rollout = Rollout(traj, values, adv, targets)
        params, opt_state, metrics = learn(k_learn, params, opt_state, rollout)
        metrics = dict(metrics)
        metrics.update(episode_metrics(traj))
        metrics["explained_variance"] = explained_variance(values, targets)
        if lr_schedule is not None:
            metrics["learning_rate"] = lr_schedule(index)
        return (params, opt_state, env_carry, key, index + 1), metrics

    (params, *_), metrics = scan_updates(update, carry, config.num_updates, progress)
    return TrainResult(params, metrics)
