"""Pure, vectorised environment wrappers.

Every wrapper has the same two methods as :class:`VecEnv`:

* ``reset(key) -> (obs, state)``
* ``step(key, state, action) -> (obs, state, reward, terminated, truncated, info)``

with batched arrays ``[B, ...]`` for B environments. Each wrapper's state is a pytree holding the
wrapped state in ``inner``, so the whole stack can live in a ``lax.scan`` carry. Environments
reset automatically; ``info["final_observation"]`` is the observation that ended the episode
(before the reset), which is what a truncated step must bootstrap from.

Wrappers may be built inside a traced function with traced settings (``NormalizeReward``'s
``gamma``), which is how the discount stays sweepable.

``stack.freeze(state)`` gives the same stack with every normaliser's statistics fixed to those
in ``state`` (a state of a stack built the same way, e.g. a training run's, with any number of
environments): they normalise as in training but never update, which is how a trained policy
is evaluated.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces


class VecEnv:
    """B copies of a gymnax environment, stepped together with ``jax.vmap``.

    Observations are cast to float32; discrete actions are ``[B]`` int32, continuous ones
    ``[B, A]``.
    """

    def __init__(self, env, env_params, num_envs: int):
        self.env = env
        self.env_params = env_params
        self.num_envs = num_envs
        self.observation_space = env.observation_space(env_params)
        self.action_space = env.action_space(env_params)

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return tuple(self.observation_space.shape)

    @property
    def is_discrete(self) -> bool:
        return isinstance(self.action_space, spaces.Discrete)

    def reset(self, key, group_size: int = 1):
        """Resets every env; ``[B, *obs_shape]`` observations and the batched state.

        With ``group_size = G`` the B envs form B / G groups of G consecutive envs that share
        a reset key, so each group starts from one identical initial state (as GRPO needs).
        """
        if self.num_envs % group_size:
            raise ValueError(f"group_size={group_size} is invalid: must divide num_envs = {self.num_envs}")
        keys = jnp.repeat(jax.random.split(key, self.num_envs // group_size), group_size, axis=0)
        obs, state = jax.vmap(self.env.reset, in_axes=(0, None))(keys, self.env_params)
        return obs.astype(jnp.float32), state

    def freeze(self, state) -> "VecEnv":
        """Nothing to freeze: the environments keep no statistics."""
        del state
        return self

    def step(self, key, state, action):
        keys = jax.random.split(key, self.num_envs)
        obs, state, reward, terminated, truncated, info = jax.vmap(
            self.env.step, in_axes=(0, 0, 0, None)
        )(keys, state, action, self.env_params)
        info = dict(info)
        info["final_observation"] = info["final_observation"].astype(jnp.float32)
        return (
            obs.astype(jnp.float32),
            state,
            reward.astype(jnp.float32),
            terminated.astype(bool),
            truncated.astype(bool),
            info,
        )


class Wrapper:
    """Base class: forwards everything it does not override to the wrapped environment."""

    state_type: type | None = None  # the state this wrapper's reset/step return

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (e.g. during copying): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def freeze(self, state) -> "Wrapper":
        """A copy of this stack whose normalisers use the statistics in ``state``, never updated.

        ``state`` is a state of a stack built the same way (the same wrappers in the same
        order), e.g. the training environments' state in a checkpoint; only its statistics are
        used, so its number of environments does not matter. Raises ``ValueError`` if a level
        of ``state`` is not the state of the wrapper at that level.
        """
        if self.state_type is not None and not isinstance(state, self.state_type):
            raise ValueError(f"{type(self).__name__}.freeze: the state at this level is a "
                             f"{type(state).__name__}, not a {self.state_type.__name__}: it "
                             f"is not a state of this wrapper stack")
        frozen = copy.copy(self)
        frozen.inner = self.inner.freeze(state.inner)
        return frozen


@struct.dataclass
class EpisodeStatisticsState:
    inner: Any
    episode_return: jax.Array  # [B] running undiscounted return of the current episode
    episode_length: jax.Array  # [B] int32 steps in the current episode


class EpisodeStatistics(Wrapper):
    """Reports completed episodes' returns and lengths (of the raw, unnormalised reward).

    Adds to ``info``: ``episode_done`` ``[B]`` bool, and ``episode_return`` /
    ``episode_length`` ``[B]``, meaningful where ``episode_done`` is true.
    Place it below any reward normalisation so that returns stay in the task's units.
    """

    state_type = EpisodeStatisticsState

    def reset(self, key, group_size: int = 1):
        obs, inner = self.inner.reset(key, group_size)
        batch = obs.shape[0]
        return obs, EpisodeStatisticsState(
            inner, jnp.zeros(batch, jnp.float32), jnp.zeros(batch, jnp.int32)
        )

    def step(self, key, state, action):
        obs, inner, reward, terminated, truncated, info = self.inner.step(key, state.inner, action)
        episode_return = state.episode_return + reward
        episode_length = state.episode_length + 1
        done = jnp.logical_or(terminated, truncated)
        info = dict(info)
        info["episode_done"] = done
        info["episode_return"] = episode_return
        info["episode_length"] = episode_length
        state = EpisodeStatisticsState(
            inner,
            jnp.where(done, 0.0, episode_return),
            jnp.where(done, 0, episode_length),
        )
        return obs, state, reward, terminated, truncated, info


@struct.dataclass
class RunningMeanStd:
    """Running mean and variance, merged batch by batch (Chan et al.'s parallel algorithm)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape) -> "RunningMeanStd":
        return cls(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.float32(1e-4))

    def update(self, batch: jax.Array) -> "RunningMeanStd":
        """Merges a batch ``[N, *shape]``."""
        batch_mean = jnp.mean(batch, axis=0)
        batch_var = jnp.var(batch, axis=0)
        batch_count = batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count
        m2 = m2 + jnp.square(delta) * self.count * batch_count / total
        return RunningMeanStd(mean, m2 / total, total)


@struct.dataclass
class NormalizeObservationState:
    inner: Any
    obs_rms: RunningMeanStd


class NormalizeObservation(Wrapper):
    """Normalises observations with running statistics, then clips them to ``[-clip, clip]``.

    The statistics are part of the state (and so of checkpoints); ``info["final_observation"]``
    is normalised with the same statistics as ``obs``.

    Attributes:
      statistics: None while the statistics update (training); a :class:`RunningMeanStd` to
        normalise with, unchanged, instead (see :meth:`freeze`).
    """

    state_type = NormalizeObservationState

    def __init__(self, inner, clip: float = 10.0, eps: float = 1e-8,
                 statistics: RunningMeanStd | None = None):
        super().__init__(inner)
        self.clip = clip
        self.eps = eps
        self.statistics = statistics

    def freeze(self, state) -> "NormalizeObservation":
        frozen = super().freeze(state)
        frozen.statistics = state.obs_rms
        return frozen

    def normalize(self, obs: jax.Array, rms: RunningMeanStd) -> jax.Array:
        return jnp.clip((obs - rms.mean) / jnp.sqrt(rms.var + self.eps), -self.clip, self.clip)

    def reset(self, key, group_size: int = 1):
        obs, inner = self.inner.reset(key, group_size)
        if self.statistics is None:
            rms = RunningMeanStd.create(obs.shape[1:]).update(obs)
        else:
            rms = self.statistics
        return self.normalize(obs, rms), NormalizeObservationState(inner, rms)

    def step(self, key, state, action):
        obs, inner, reward, terminated, truncated, info = self.inner.step(key, state.inner, action)
        if self.statistics is None:
            rms = state.obs_rms.update(obs)
        else:
            rms = self.statistics
        info = dict(info)
        info["final_observation"] = self.normalize(info["final_observation"], rms)
        obs = self.normalize(obs, rms)
        return obs, NormalizeObservationState(inner, rms), reward, terminated, truncated, info


@struct.dataclass
class NormalizeRewardState:
    inner: Any
    return_rms: RunningMeanStd
    discounted_return: jax.Array  # [B]


class NormalizeReward(Wrapper):
    """Scales rewards by the running std of the discounted return (as Gymnasium's wrapper).

    ``gamma`` may be a traced value (it is the agent's discount, and so sweepable).

    Attributes:
      statistics: None while the statistics update (training); a :class:`RunningMeanStd` of
        the discounted return to scale with, unchanged, instead (see :meth:`freeze`).
    """

    state_type = NormalizeRewardState

    def __init__(self, inner, gamma, clip: float = 10.0, eps: float = 1e-8,
                 statistics: RunningMeanStd | None = None):
        super().__init__(inner)
        self.gamma = gamma
        self.clip = clip
        self.eps = eps
        self.statistics = statistics

    def freeze(self, state) -> "NormalizeReward":
        frozen = super().freeze(state)
        frozen.statistics = state.return_rms
        return frozen

    def reset(self, key, group_size: int = 1):
        obs, inner = self.inner.reset(key, group_size)
        rms = RunningMeanStd.create(()) if self.statistics is None else self.statistics
        return obs, NormalizeRewardState(inner, rms, jnp.zeros(obs.shape[0], jnp.float32))

    def step(self, key, state, action):
        obs, inner, reward, terminated, truncated, info = self.inner.step(key, state.inner, action)
        discounted = state.discounted_return * self.gamma + reward
        if self.statistics is None:
            rms = state.return_rms.update(discounted)
        else:
            rms = self.statistics
        reward = jnp.clip(reward / jnp.sqrt(rms.var + self.eps), -self.clip, self.clip)
        done = jnp.logical_or(terminated, truncated)
        state = NormalizeRewardState(inner, rms, jnp.where(done, 0.0, discounted))
        return obs, state, reward, terminated, truncated, info


def make_vec_env(
    env,
    env_params,
    num_envs: int,
    *,
    normalize_obs: bool = False,
    normalize_reward: bool = False,
    gamma=0.99,
):
    """The standard training stack: VecEnv -> EpisodeStatistics -> [NormalizeReward] -> [NormalizeObservation]."""
    venv = EpisodeStatistics(VecEnv(env, env_params, num_envs))
    if normalize_reward:
        venv = NormalizeReward(venv, gamma)
    if normalize_obs:
        venv = NormalizeObservation(venv)
    return venv
