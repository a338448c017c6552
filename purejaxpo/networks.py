"""Actor-critic networks (flax) and their action distributions (distrax).

The actor and the critic are separate MLPs with orthogonal initialisation (the PPO
"implementation details": gain sqrt(2) in hidden layers, 0.01 for the policy head, 1.0 for the
value head). Their parameters live in one dict ``{"actor": ..., "critic": ...}``, so one
optimiser updates both and either can be applied alone: the rollout only runs the actor, and
values are computed afterwards for the whole ``[T, B]`` batch at once.

:class:`RecurrentActorCritic` puts a GRU torso under the same heads, for tasks that need memory.

Both follow one policy protocol, which the rollout and the update use:

* ``initial_state(num_envs)``: the per-environment memory at the start of a run (``()`` for a
  feed-forward policy, zeros ``[B, H]`` for a GRU); :func:`reset_memory` zeroes it where an
  episode ended;
* ``act(key, params, state, obs) -> (state, action, log_prob)``: one step of a rollout;
* ``rollout_values(params, traj) -> (values, next_values)``: the critic over a rollout ``[T, B]``;
* ``evaluate(params, minibatch) -> (distribution, value)``: the policy and critic over a
  minibatch (flat transitions, or whole sequences for a recurrent policy, see ``recurrent``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Sequence

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
        return self.head_distribution(params, self._flat(obs))

    def value(self, params, obs) -> jax.Array:
        """V(obs), ``[..., *obs_shape] -> [...]``."""
        return self.head_value(params, self._flat(obs))

    def head_distribution(self, params, features) -> distrax.Distribution:
        """The actor head on flat inputs ``[..., D]`` (observations, or a torso's features)."""
        out = self.actor.apply(params["actor"], features)
        if self.continuous:
            mean, log_std = out
            return distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))
        return distrax.Categorical(logits=out)

    def head_value(self, params, features) -> jax.Array:
        """The critic head on flat inputs ``[..., D] -> [...]``."""
        return self.critic.apply(params["critic"], features)[..., 0]

    # The policy protocol shared with RecurrentActorCritic (see the module docstring).

    recurrent: ClassVar[bool] = False  # True: the update needs whole sequences (Rollout.batch)

    def initial_state(self, num_envs: int) -> Any:
        """Memory carried through rollouts: none."""
        return ()

    def act(self, key, params, state, obs):
        """Samples actions for observations ``[B, *obs_shape]``: ``(state, action, log_prob)``."""
        action, log_prob = self.distribution(params, obs).sample_and_log_prob(seed=key)
        return state, action, log_prob

    def rollout_values(self, params, traj):
        """``(V(obs_t), V(final_obs_t))``, each ``[T, B]``, for a rollout (a ``Transition``)."""
        return self.value(params, traj.obs), self.value(params, traj.final_obs)

    def evaluate(self, params, minibatch):
        """``(pi(.|obs), V(obs))`` for transitions ``minibatch["obs"]`` ``[N, *obs_shape]``."""
        return self.distribution(params, minibatch["obs"]), self.value(params, minibatch["obs"])

    def env_action(self, action):
        """The action to send to the env: continuous actions clipped to the env's bounds."""
        if self.continuous:
            return jnp.clip(action, jnp.asarray(self.action_low), jnp.asarray(self.action_high))
        return action


def reset_memory(state, done):
    """Zeroes a policy's per-environment memory where an episode ended.

    Args:
      state: pytree of ``[B, ...]`` leaves (``()`` for a feed-forward policy: returned as is).
      done: ``[B]`` bool, the episode ended at this step (terminated or truncated).
    """
    keep = 1.0 - done.astype(jnp.float32)
    return jax.tree_util.tree_map(
        lambda h: h * keep.reshape(keep.shape + (1,) * (h.ndim - keep.ndim)).astype(h.dtype), state
    )


def episode_starts(done):
    """``[T, B]`` reset flags from ``[T, B]`` done flags: true at t where step t-1 ended an episode.

    The first step's flag is false: a rollout's initial memory was already reset by
    :func:`reset_memory` at the end of the previous rollout.
    """
    return jnp.concatenate([jnp.zeros_like(done[:1]), done[:-1]], axis=0)


class GRUTorso(nn.Module):
    """One step of ``[..., D] -> Dense(H) -> activation -> GRU(H)``: ``(hidden, obs) -> (hidden, out)``.

    Orthogonal initialisation throughout (QR-free, see :func:`orthogonal`), including the GRU's
    recurrent kernels, whose flax default would be jax's QR-based initialiser.
    """

    size: int
    activation: str = "tanh"

    @nn.compact
    def __call__(self, hidden, x):
        x = nn.Dense(self.size, kernel_init=orthogonal(np.sqrt(2.0)),
                     bias_init=nn.initializers.zeros)(x)
        x = ACTIVATIONS[self.activation](x)
        cell = nn.GRUCell(features=self.size, kernel_init=orthogonal(1.0),
                          recurrent_kernel_init=orthogonal(1.0))
        return cell(hidden, x)


@dataclasses.dataclass(frozen=True)
class RecurrentActorCritic(ActorCritic):
    """An actor-critic with memory: a shared GRU torso under :class:`ActorCritic`'s heads.

    The torso (an embedding layer and a GRU cell of ``gru_size`` units) is shared: its output
    feeds the actor MLP and the critic MLP (``hidden_sizes``), so one hidden state per
    environment is carried, and the critic's gradient shapes the memory too. Parameters are
    ``{"torso": ..., "actor": ..., "critic": ...}``.

    The hidden state is zeroed at episode boundaries: multiplied by ``1 - done`` of the previous
    step, in the rollout (:func:`reset_memory`) and in the update's unroll (:meth:`unroll`),
    identically, so recomputed log-probabilities match the rollout's.

    Attributes:
      gru_size: H, width of the embedding and of the GRU state.
    """

    gru_size: int = 64

    recurrent: ClassVar[bool] = True

    @property
    def torso(self) -> nn.Module:
        return GRUTorso(self.gru_size, self.activation)

    def init(self, key) -> dict:
        """Parameters ``{"torso": ..., "actor": ..., "critic": ...}``."""
        k_torso, k_actor, k_critic = jax.random.split(key, 3)
        obs = self._flat(jnp.zeros((1, *self.obs_shape), jnp.float32))
        hidden = jnp.zeros((1, self.gru_size), jnp.float32)
        return {
            "torso": self.torso.init(k_torso, hidden, obs),
            "actor": self.actor.init(k_actor, hidden),
            "critic": self.critic.init(k_critic, hidden),
        }

    def initial_state(self, num_envs: int) -> jax.Array:
        """Zeros ``[B, H]``."""
        return jnp.zeros((num_envs, self.gru_size), jnp.float32)

    def step(self, params, hidden, obs) -> jax.Array:
        """The next hidden state ``[..., H]`` after ``obs`` ``[..., *obs_shape]`` (no reset)."""
        hidden, _ = self.torso.apply(params["torso"], hidden, self._flat(obs))
        return hidden

    def act(self, key, params, hidden, obs):
        """One rollout step for ``[B, ...]``: ``(hidden, action, log_prob)``."""
        hidden = self.step(params, hidden, obs)
        action, log_prob = self.head_distribution(params, hidden).sample_and_log_prob(seed=key)
        return hidden, action, log_prob

    def unroll(self, params, hidden, obs, resets) -> jax.Array:
        """Runs the GRU over sequences.

        Args:
          params: the parameters.
          hidden: ``[B, H]`` state before the first step.
          obs: ``[T, B, *obs_shape]`` observations.
          resets: ``[T, B]`` bool, true where ``obs[t]`` starts an episode (memory zeroed first).

        Returns:
          ``[T, B, H]``: the state after each step (the heads' input).
        """

        def body(h, inputs):
            obs_t, reset_t = inputs
            h = self.step(params, reset_memory(h, reset_t), obs_t)
            return h, h

        return jax.lax.scan(body, hidden, (obs, resets))[1]

    def rollout_values(self, params, traj):
        """``(values, next_values)`` ``[T, B]`` by unrolling from the rollout's initial state.

        ``next_values[t]`` is V of ``final_obs[t]`` after the state of step t (not reset), so a
        truncated episode bootstraps from its own memory.
        """
        done = jnp.logical_or(traj.terminated, traj.truncated)
        hiddens = self.unroll(params, traj.agent_state, traj.obs, episode_starts(done))
        next_hiddens = self.step(params, hiddens, traj.final_obs)
        return self.head_value(params, hiddens), self.head_value(params, next_hiddens)

    def evaluate(self, params, minibatch):
        """Policy and values over whole sequences, env-major as the update's minibatches.

        ``minibatch``: ``obs`` ``[N, T, *obs_shape]``, ``resets`` ``[N, T]`` and
        ``agent_state`` ``[N, H]`` (each sequence's initial state). Returns
        ``(distribution, value)`` over ``[N, T]``.
        """
        time_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
        hiddens = self.unroll(params, minibatch["agent_state"], time_major(minibatch["obs"]),
                              time_major(minibatch["resets"]))
        hiddens = time_major(hiddens)
        return self.head_distribution(params, hiddens), self.head_value(params, hiddens)
