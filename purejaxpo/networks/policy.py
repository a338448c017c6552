"""A :class:`Policy`: the actor (and critic) of a :class:`~purejaxpo.networks.spec.PolicySpec`
for an environment's spaces, and the policy protocol the rollout and the updates use.

Parameters are one dict: ``{"actor": ..., "critic": ...}`` with separate torsos, plus
``"torso"`` when shared, so one optimiser updates them all and the actor can be applied alone
(the rollout runs only the actor; values are computed afterwards for the whole ``[T, B]``
batch at once).

Every :class:`Policy` follows one protocol:

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
from typing import Any, Callable

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo.networks.distributions import DeterministicAction, SquashedGaussian
from purejaxpo.networks.layers import Branch, Trunk
from purejaxpo.networks.spec import PolicySpec

# Samples per chunk when a whole rollout goes through a network at once (rollout_values), as
# large as a typical minibatch. XLA's memory analysis of PPO on Breakout-MinAtar (CNN preset,
# CPU): 1024 envs x 128 steps, one run, 5.78 GiB of temporaries in one pass, 0.46 GiB in chunks
# of 8192; the preset's 64 envs with 16 runs vmapped, 5.78 GiB in chunks of 8192 (one pass),
# 1.14 GiB in chunks of 1024; 256 runs (the GPU suite's MinAtar section), 92.5 and 18.2 GiB.
ROLLOUT_CHUNK = 1024


def over_time(f: Callable, x):
    """``f`` over a time-major ``[T, B, ...]`` array, ``ROLLOUT_CHUNK`` samples at a time.

    ``f`` maps ``[..., *item]`` to ``[...]`` (any leading axes, as :meth:`Policy.value`). A
    rollout of at most ``ROLLOUT_CHUNK`` samples is one call (no loop); a larger one a loop over
    chunks of whole time steps, whose memory does not grow with T.
    """
    t, b = x.shape[:2]
    steps = max(1, ROLLOUT_CHUNK // b)
    if steps >= t:
        return f(x)
    return jax.lax.map(f, x, batch_size=steps)


@dataclasses.dataclass(frozen=True)
class Policy:
    """A policy (and critic) built from a :class:`PolicySpec` for an environment's spaces.

    Attributes:
      obs_shape: shape of one observation.
      num_actions: number of discrete actions (discrete policies).
      action_dim: size of the action vector (continuous policies); 0 for discrete.
      action_low, action_high: bounds the env accepts; sampled actions are clipped to them
        before stepping (the unclipped action is kept for the log-probability).
      spec: the network's description.
    """

    obs_shape: tuple[int, ...]
    num_actions: int = 0
    action_dim: int = 0
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    spec: PolicySpec = PolicySpec()

    def __post_init__(self):
        self.spec.check_observation(self.obs_shape)

    @classmethod
    def for_env(cls, venv, spec: PolicySpec = PolicySpec()) -> "Policy":
        """The policy that fits a vectorised environment's spaces (``ValueError`` if the torso
        cannot take its observations)."""
        space = venv.action_space
        obs_shape = tuple(venv.observation_shape)
        if venv.is_discrete:
            return cls(obs_shape, num_actions=int(space.n), spec=spec)
        low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape).reshape(-1)
        return cls(obs_shape, action_dim=int(np.prod(space.shape)),
                   action_low=tuple(float(v) for v in low),
                   action_high=tuple(float(v) for v in high), spec=spec)

    @property
    def continuous(self) -> bool:
        return self.action_dim > 0

    @property
    def recurrent(self) -> bool:
        """True: the update needs whole sequences (``Rollout.batch``)."""
        return self.spec.gru_size > 0

    @property
    def has_critic(self) -> bool:
        return "critic" in self.spec.parts.heads

    @property
    def actor_kind(self) -> str:
        """``categorical``, ``gaussian``, ``squashed_gaussian`` or ``deterministic``."""
        kind = self.spec.parts.actor
        if kind == "auto":
            return "gaussian" if self.continuous else "categorical"
        return kind

    @property
    def squashed(self) -> bool:
        """True: actions live in ``[-1, 1]`` and are scaled to the env's bounds."""
        return self.actor_kind in ("squashed_gaussian", "deterministic")

    # The modules.

    def _branch(self, name: str) -> Branch:
        spec = self.spec
        if name == "actor":
            kind = self.actor_kind
            head = "gaussian" if kind == "squashed_gaussian" else kind
            out = self.num_actions if kind == "categorical" else self.action_dim
        elif name in ("critic", "q"):
            head, out = "value", 1
        else:
            raise ValueError(f"unknown policy part {name!r}")
        if spec.shared:
            return Branch(None, spec.head_sizes, spec.activation, head, out, spec.log_std)
        return Branch(spec.conv, spec.hidden_sizes, spec.activation, head, out, spec.log_std)

    @property
    def torso(self) -> Trunk | None:
        """The shared torso (None with separate torsos)."""
        if not self.spec.shared:
            return None
        spec = self.spec
        return Trunk(spec.conv, spec.hidden_sizes, spec.activation, spec.gru_size)

    def _prepare(self, obs):
        """``[..., *obs_shape]`` -> the torso's input: flat ``[..., D]`` for an MLP, the
        observations as they are for a CNN."""
        if self.spec.torso == "cnn":
            return obs
        return obs.reshape(*obs.shape[: obs.ndim - len(self.obs_shape)], -1)

    def init(self, key) -> dict:
        """Parameters: ``{"torso"?: ..., "actor": ..., "critic"?: ...}``.

        The key is split into one key per group, in that order (torso first when shared).
        """
        names = self.spec.parts.heads
        torso = self.torso
        keys = jax.random.split(key, len(names) + (torso is not None))
        x = self._prepare(jnp.zeros((1, *self.obs_shape), jnp.float32))
        params = {}
        if torso is not None:
            k_torso, keys = keys[0], keys[1:]
            if self.recurrent:
                hidden = self.initial_state(1)
                params["torso"] = torso.init(k_torso, hidden, x)
                x = hidden
            else:
                params["torso"] = torso.init(k_torso, x)
                x = jax.eval_shape(torso.apply, params["torso"], x)
                x = jnp.zeros(x.shape, x.dtype)
        for name, k in zip(names, keys):
            if name == "q":  # num_q networks, stacked: each leaf [num_q, ...]
                xa = jnp.concatenate([x, jnp.zeros((1, self.action_dim), x.dtype)], -1)
                ks = jax.random.split(k, self.spec.parts.num_q)
                params[name] = jax.vmap(lambda kq: self._branch("q").init(kq, xa))(ks)
            else:
                params[name] = self._branch(name).init(k, x)
        return params

    def q_values(self, q_params, obs, action) -> jax.Array:
        """Q(obs, action) of every Q network: ``[..., *obs_shape], [..., A] -> [num_q, ...]``.

        ``q_params`` is ``params["q"]`` (or a target copy of it); ``action`` is in the actor's
        units (``[-1, 1]`` for a squashed actor).
        """
        x = jnp.concatenate([self._prepare(obs), action.astype(jnp.float32)], -1)
        return jax.vmap(lambda p: self._branch("q").apply(p, x))(q_params)

    def features(self, params, obs):
        """The heads' input for feed-forward observations ``[..., *obs_shape]``."""
        if self.recurrent:
            raise ValueError("a recurrent policy's features need its memory: use step/unroll")
        x = self._prepare(obs)
        if self.spec.shared:
            return self.torso.apply(params["torso"], x)
        return x

    def head_distribution(self, params, features) -> distrax.Distribution:
        """The actor head on the heads' input ``[..., F]`` (see :meth:`features`)."""
        out = self._branch("actor").apply(params["actor"], features)
        kind = self.actor_kind
        if kind == "squashed_gaussian":
            return SquashedGaussian(*out)
        if kind == "deterministic":
            return DeterministicAction(jnp.tanh(out))
        if kind == "gaussian":
            mean, log_std = out
            return distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))
        return distrax.Categorical(logits=out)

    def head_value(self, params, features) -> jax.Array:
        """The critic head on the heads' input: ``[..., F] -> [...]``."""
        return self._branch("critic").apply(params["critic"], features)

    def distribution(self, params, obs) -> distrax.Distribution:
        """The policy pi(.|obs) for feed-forward observations ``[..., *obs_shape]``."""
        return self.head_distribution(params, self.features(params, obs))

    def value(self, params, obs) -> jax.Array:
        """V(obs), ``[..., *obs_shape] -> [...]`` (feed-forward)."""
        return self.head_value(params, self.features(params, obs))

    # Memory.

    def initial_state(self, num_envs: int) -> Any:
        """Memory carried through rollouts: ``()``, or zeros ``[B, H]`` with a GRU."""
        if not self.recurrent:
            return ()
        return jnp.zeros((num_envs, self.spec.gru_size), jnp.float32)

    def step(self, params, hidden, obs) -> jax.Array:
        """The next hidden state ``[..., H]`` after ``obs`` ``[..., *obs_shape]`` (no reset)."""
        hidden, _ = self.torso.apply(params["torso"], hidden, self._prepare(obs))
        return hidden

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

    # The policy protocol (see the module docstring).

    def act(self, key, params, state, obs):
        """One rollout step for ``[B, *obs_shape]``: ``(state, action, log_prob)``."""
        if self.recurrent:
            state = self.step(params, state, obs)
            dist = self.head_distribution(params, state)
        else:
            dist = self.distribution(params, obs)
        action, log_prob = dist.sample_and_log_prob(seed=key)
        return state, action, log_prob

    def rollout_values(self, params, traj):
        """``(V(obs_t), V(final_obs_t))``, each ``[T, B]``, for a rollout (a ``Transition``).

        A recurrent policy unrolls from the rollout's initial state; ``next_values[t]`` is V
        of ``final_obs[t]`` after the state of step t (not reset), so a truncated episode
        bootstraps from its own memory.
        """
        if not self.recurrent:
            value = lambda obs: over_time(lambda o: self.value(params, o), obs)  # noqa: E731
            return value(traj.obs), value(traj.final_obs)
        done = jnp.logical_or(traj.terminated, traj.truncated)
        hiddens = self.unroll(params, traj.agent_state, traj.obs, episode_starts(done))
        next_hiddens = self.step(params, hiddens, traj.final_obs)
        return self.head_value(params, hiddens), self.head_value(params, next_hiddens)

    def evaluate(self, params, minibatch):
        """``(pi(.|obs), V(obs))`` over a minibatch (V is None without a critic).

        Feed-forward: transitions, ``minibatch["obs"]`` ``[N, *obs_shape]``, the torso run
        once for both heads. Recurrent: whole sequences, env-major as the update's
        minibatches: ``obs`` ``[N, T, *obs_shape]``, ``resets`` ``[N, T]`` and
        ``agent_state`` ``[N, H]`` (each sequence's initial state); ``[N, T]`` outputs.
        """
        if self.recurrent:
            time_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
            features = time_major(self.unroll(params, minibatch["agent_state"],
                                              time_major(minibatch["obs"]),
                                              time_major(minibatch["resets"])))
            dist = self.head_distribution(params, features)
            return dist, self.head_value(params, features) if self.has_critic else None
        features = self.features(params, minibatch["obs"])  # the prepared obs when separate
        value = self.head_value(params, features) if self.has_critic else None
        return self.head_distribution(params, features), value

    def env_action(self, action):
        """The action to send to the env: ``[-1, 1]`` actions of a squashed actor scaled to the
        env's bounds, other continuous actions clipped to them."""
        if self.squashed:
            low, high = jnp.asarray(self.action_low), jnp.asarray(self.action_high)
            return low + 0.5 * (jnp.clip(action, -1.0, 1.0) + 1.0) * (high - low)
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
