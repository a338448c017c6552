"""Evaluating a trained policy: episodes in the training environment stack, normalisers frozen."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo.algos.base import build_policy
from purejaxpo.checkpoint.store import Checkpoint
from purejaxpo.envs import make, make_vec_env
from purejaxpo.rollout import EnvCarry, Greedy, collect


def evaluation_env(config, num_episodes: int, env_state=None):
    """The training stack of ``config`` (``make_vec_env``) for ``num_episodes`` environments.

    Its normalisers (if ``config`` has any) use the statistics of ``env_state``, the training
    environments' state, frozen (see ``Wrapper.freeze``), wherever they sit in the stack.

    Raises:
      ValueError: ``config`` normalises observations or rewards and ``env_state`` is None.
    """
    env, env_params = make(config.env)
    normalize_obs = bool(getattr(config, "normalize_obs", False))
    normalize_reward = bool(getattr(config, "normalize_reward", False))
    venv = make_vec_env(env, env_params, num_episodes, normalize_obs=normalize_obs,
                        normalize_reward=normalize_reward, gamma=getattr(config, "gamma", 0.99))
    if env_state is None:
        if normalize_obs or normalize_reward:
            raise ValueError("the config normalises observations or rewards: evaluating needs the "
                             "training run's env_state for its normaliser statistics")
        return venv, env_params
    return venv.freeze(env_state), env_params


def first_episodes(traj):
    """``(returns, finished)`` ``[B]`` of each environment's first episode in a rollout.

    The return is the raw undiscounted one (``EpisodeStatistics``, below any reward
    normalisation); an episode still running at the end counts every step's reward.
    """
    done = traj.episode_done
    finished = jnp.any(done, axis=0)
    first = jnp.argmax(done, axis=0)  # the first done step (0 if none)
    at_first = jnp.take_along_axis(traj.episode_return, first[None], axis=0)[0]
    return jnp.where(finished, at_first, traj.episode_return[-1]), finished


def evaluate(key, algo: str, config, params, env_state=None, *, num_episodes: int,
             greedy: bool = False) -> tuple[jax.Array, jax.Array]:
    """Plays ``num_episodes`` episodes (one per environment) with a trained policy.

    The environments are the training stack (``make_vec_env`` with the config's normalisers)
    with the training run's normaliser statistics frozen (:func:`evaluation_env`), and the
    policy runs through the training rollout (:func:`purejaxpo.rollout.collect`) for the env's
    time limit; greedily it acts with its distribution's mode (:class:`~purejaxpo.rollout.Greedy`).

    Args:
      key: PRNG key (resets, actions, env steps).
      algo, config: as saved in the checkpoint.
      params: the policy's parameters (unbatched).
      env_state: ``TrainState.env.env_state`` of the run (its normaliser statistics; any
        number of environments). None is allowed only for a config without normalisers.
      num_episodes: episodes to play.
      greedy: act with the distribution's mode instead of sampling.

    Returns:
      ``(returns, finished)``, each ``[num_episodes]``: undiscounted episode returns in the
      task's reward units, and whether the episode ended within the env's time limit
      (``max_steps_in_episode``); an unfinished episode's return sums every step played.
    """
    del algo
    policy = build_policy(config)
    venv, env_params = evaluation_env(config, num_episodes, env_state)
    max_steps = int(getattr(env_params, "max_steps_in_episode", 1000))
    k_reset, k_run = jax.random.split(key)
    obs, state = venv.reset(k_reset)
    carry = EnvCarry(state, obs, policy.initial_state(num_episodes))
    _, traj = collect(k_run, venv, Greedy(policy) if greedy else policy, params, carry, max_steps)
    return first_episodes(traj)


def evaluate_checkpoint(ckpt: Checkpoint, key, *, num_episodes: int, greedy: bool = False):
    """:func:`evaluate` for every run in a (possibly vmapped) checkpoint.

    Returns ``(returns, finished)``, each ``[num_runs, num_episodes]`` numpy (one run when the
    checkpoint is unbatched); every run uses the same evaluation key.
    """
    batch_shape = tuple(ckpt.meta.get("batch_shape", ()))
    num_runs = int(np.prod(batch_shape)) if batch_shape else 1
    env = ckpt.state.env
    env_state = env.env_state if hasattr(env, "env_state") else None
    tree = (ckpt.state.params, env_state)
    tree = jax.tree_util.tree_map(lambda x: jnp.reshape(x, (num_runs, *x.shape[len(batch_shape):])),
                                  tree)
    fn = jax.jit(jax.vmap(lambda p, s: evaluate(key, ckpt.algo, ckpt.config, p, s,
                                                num_episodes=num_episodes, greedy=greedy)))
    returns, finished = fn(*tree)
    return np.asarray(returns), np.asarray(finished)
