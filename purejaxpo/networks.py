"""Actor-critic networks (flax) and their action distributions (distrax).

The actor and the critic are separate MLPs with orthogonal initialisation (the PPO
"implementation details": gain sqrt(2) in hidden layers, 0.01 for the policy head, 1.0 for the
value head). Their parameters live in one dict ``{"actor": ..., "critic": ...}``, so one
optimiser updates both and either can be applied alone: the rollout only runs the actor, and
values are computed afterwards for the whole ``[T, B]`` batch at once.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS: dict[str, Callable] = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
}


def orthogonal(scale: float = 1.0):
    """Orthogonal kernel initialiser for ``[fan_in, fan_out]`` kernels, without QR.

    Draws the same matrices as ``jax.nn.initializers.orthogonal(scale)`` (up to float32
    rounding): the Q factor, with a positive-diagonal R, of a standard normal matrix, computed by
    Gram-Schmidt orthogonalisation (each column projected out twice, "CGS2") in plain matmuls.

    Why not jax's own: under ``jit(vmap(...))``, e.g. one network per seed, its QR becomes a
    batched LAPACK call, and jaxlib 0.10's CPU runtime can deadlock on it (see
    :mod:`purejaxpo._xla_safety`). Matmuls and a ``fori_loop`` cannot, and cost nothing at init.
    """

    def init(key, shape, dtype=jnp.float32):
        if len(shape) != 2:
            raise ValueError(f"orthogonal init needs a 2-D kernel shape, got {shape}")
        n_rows, n_cols = shape
        m, n = max(n_rows, n_cols), min(n_rows, n_cols)
        a = jax.random.normal(key, (m, n), jnp.float32)

        def add_column(j, q):
            v = jax.lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False)
            for _ in range(2):  # re-orthogonalise once: float32 stays orthogonal to ~1e-6
                v = v - q @ (q.T @ v)
            return jax.lax.dynamic_update_index_in_dim(q, v / jnp.linalg.norm(v), j, axis=1)

        q = jax.lax.fori_loop(0, n, add_column, jnp.zeros((m, n), jnp.float32))
        if n_rows < n_cols:
            q = q.T
        return (scale * q).astype(dtype)

    return init


class MLP(nn.Module):
    """``[..., D] -> [..., out_dim]`` multi-layer perceptron with orthogonal initialisation."""

    hidden_sizes: Sequence[int]
    out_dim: int
    activation: str = "tanh"
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        for size in self.hidden_sizes:
            x = nn.Dense(
                size,
                kernel_init=orthogonal(np.sqrt(2.0)),
                bias_init=nn.initializers.zeros,
            )(x)
            x = act(x)
        return nn.Dense(
            self.out_dim,
            kernel_init=orthogonal(self.out_scale),
            bias_init=nn.initializers.zeros,
        )(x)


class GaussianHead(nn.Module):
    """Mean from an MLP, state-independent log-std as a free parameter."""

    hidden_sizes: Sequence[int]
    action_dim: int
    activation: str = "tanh"
    init_log_std: float = 0.0

    @nn.compact
    def __call__(self, x):
        mean = MLP(self.hidden_sizes, self.action_dim, self.activation, out_scale=0.01)(x)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,)
        )
        return mean, jnp.broadcast_to(log_std, mean.shape)


@dataclasses.dataclass(frozen=True)
class ActorCritic:
    """A policy and a value function over flat observations.

    Attributes:
      obs_shape: shape of one observation.
      num_actions: number of discrete actions (discrete policies).
      action_dim: size of the action vector (continuous policies); 0 for discrete.
      action_low, action_high: bounds the env accepts; sampled actions are clipped to them
        before stepping (the unclipped action is kept for the log-probability).
      hidden_sizes, activation: MLP shape, shared by actor and critic.
    """

    obs_shape: tuple[int, ...]
    num_actions: int = 0
    action_dim: int = 0
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"

    @property
    def continuous(self) -> bool:
        return self.action_dim > 0

    @classmethod
    def for_env(cls, venv, hidden_sizes=(64, 64), activation="tanh") -> "ActorCritic":
        """Builds the network that fits a vectorised environment's spaces."""
        space = venv.action_space
        obs_shape = tuple(venv.observation_shape)
        if venv.is_discrete:
            return cls(obs_shape, num_actions=int(space.n), hidden_sizes=tuple(hidden_sizes),
                       activation=activation)
        low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape).reshape(-1)
        return cls(
            obs_shape,
            action_dim=int(np.prod(space.shape)),
            action_low=tuple(float(v) for v in low),
            action_high=tuple(float(v) for v in high),
            hidden_sizes=tuple(hidden_sizes),
            activation=activation,
        )

    @property
    def actor(self) -> nn.Module:
        if self.continuous:
            return GaussianHead(self.hidden_sizes, self.action_dim, self.activation)
        return MLP(self.hidden_sizes, self.num_actions, self.activation, out_scale=0.01)

    @property
    def critic(self) -> nn.Module:
        return MLP(self.hidden_sizes, 1, self.activation, out_scale=1.0)

    def init(self, key) -> dict:
        """Parameters ``{"actor": ..., "critic": ...}``."""
        k_actor, k_critic = jax.random.split(key)
        dummy = jnp.zeros((1, *self.obs_shape), jnp.float32)
        return {
            "actor": self.actor.init(k_actor, self._flat(dummy)),
            "critic": self.critic.init(k_critic, self._flat(dummy)),
        }

    def _flat(self, obs):
        return obs.reshape(*obs.shape[: obs.ndim - len(self.obs_shape)], -1)

    def distribution(self, params, obs) -> distrax.Distribution:
        """The policy pi(.|obs) for a batch of observations ``[..., *obs_shape]``."""
        out = self.actor.apply(params["actor"], self._flat(obs))
        if self.continuous:
            mean, log_std = out
            return distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))
        return distrax.Categorical(logits=out)

    def value(self, params, obs) -> jax.Array:
        """V(obs), ``[..., *obs_shape] -> [...]``."""
        return self.critic.apply(params["critic"], self._flat(obs))[..., 0]

    def env_action(self, action):
        """The action to send to the env: continuous actions clipped to the env's bounds."""
        if self.continuous:
            return jnp.clip(action, jnp.asarray(self.action_low), jnp.asarray(self.action_high))
        return action
