"""Probe environments: tiny tasks whose exact value function and optimal policy are known.

Each probe isolates one piece of an RL algorithm, so that a failure points at it (after Andy
Jones, "Debugging RL, Without the Agonizing Pain", 2021). An agent that trains on a probe for a
few thousand steps must end with the values and the policy below; ``gamma`` is the agent's
discount. Every observation is a float32 vector of shape ``[1]``; an episode lasts one step
unless stated, and ends by termination (never by the time limit).

Each probe also comes as a one-pixel image, ``[1, 1, 1]`` (the same name with ``Image``
before ``-v0``, e.g. ``ProbeObsRewardImage-v0``), so that a CNN torso is probed the same way.

=============================== ======= ================ =====================================
name                            actions observation      exact answer
=============================== ======= ================ =====================================
``ProbeConstant-v0``            1       0                V(0) = 1
``ProbeObsReward-v0``           1       -1 or +1         V(o) = o
``ProbeTwoStep-v0``             1       0, then 1        V(0) = gamma, V(1) = 1
``ProbeActionReward-v0``        2       0                pi(1 | 0) = 1, V(0) = 1
``ProbeActionObsReward-v0``     2       -1 or +1         pi(1 | +1) = pi(0 | -1) = 1, V = 1
``ProbeContinuousActionReward`` [-2, 2] 0                a = 0.5, V(0) = 0
``ProbeContinuousActionObs...`` [-2, 2] -1 or +1         a = 0.5 o, V(o) = 0
=============================== ======= ================ =====================================

What each one tests:

1. ``ProbeConstant-v0``: reward +1, then the episode terminates. The critic must fit a
   constant and must not bootstrap through a termination (V = 1, not 1 / (1 - gamma)).
2. ``ProbeObsReward-v0``: the reward equals the observation, -1 or +1 with equal chance. The
   critic must use its input (V(o) = o; a critic that ignores it ends near 0).
3. ``ProbeTwoStep-v0``: observation 0 with reward 0, then observation 1 with reward +1 and
   termination. Discounting and the step to the next state's value (or the carried return):
   V(0) = gamma and V(1) = 1.
4. ``ProbeActionReward-v0``: reward +1 for action 1, -1 for action 0. The policy gradient's
   sign: the policy must pick action 1 (and V of a policy picking 1 with probability p is
   2p - 1, which tends to 1).
5. ``ProbeActionObsReward-v0``: observation -1 or +1; reward +1 for the matching action (1 for
   +1, 0 for -1), -1 otherwise. The policy must condition on the observation, and the critic
   and actor must see the same observation (e.g. no off-by-one between them): V = 2p - 1 at
   each observation, p the probability of the matching action.
6. ``ProbeContinuousActionReward-v0``: action ``a`` in [-2, 2] (clipped), reward
   ``-(a - 0.5) ** 2``: a Gaussian policy's mean must move to 0.5, its std shrink; a policy
   of mean m and std s (ignoring the clip) has V = -(m - 0.5)^2 - s^2, which tends to 0.
   The bounds are wide so that clipping barely bends the objective: with bounds [-1, 1], a
   Gaussian of std 0.7 does best with its mean near 1.2 (actions clipped at 1 lose at most
   0.25, those clipped at -1 lose 2.25), and an algorithm that shrinks its std slowly would
   rightly settle there; with [-2, 2] the best mean is 0.53 at std 0.7 and 0.5 below 0.4.
7. ``ProbeContinuousActionObsReward-v0``: observation o in {-1, +1}, action in [-2, 2], reward
   ``-(a - 0.5 o) ** 2``: the Gaussian mean must follow the observation (a = 0.5 o).

Actions that cannot matter (probes 1-3) still come from a discrete space of one action, so
every algorithm can run on every probe; such a policy's log-probability is always 0.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


ACTION_BOUND = 2.0
"""Continuous probes' actions lie in ``[-ACTION_BOUND, ACTION_BOUND]`` (clipped there)."""


@struct.dataclass
class ProbeState(environment.EnvState):
    sign: jax.Array  # float32 scalar, -1 or +1 (1 for probes whose observation is fixed)
    time: jax.Array  # int32 steps taken in this episode


@struct.dataclass
class ProbeParams(environment.EnvParams):
    """Attributes:
      max_steps_in_episode: time limit; longer than any probe episode, so it never cuts one.
    """

    max_steps_in_episode: int = 10


class Probe(environment.Environment[ProbeState, ProbeParams]):
    """Shared machinery: a probe defines its length, observation, reward and action space.

    Subclasses set ``NAME``, ``LENGTH`` (steps per episode), ``RANDOM_SIGN`` (observation
    sign drawn at reset) and ``NUM_ACTIONS`` (discrete) or ``CONTINUOUS``, and implement
    :meth:`reward`.
    """

    NAME: str = ""
    IMAGE: bool = False  # observations [1, 1, 1] instead of [1]
    LENGTH: int = 1
    RANDOM_SIGN: bool = False
    NUM_ACTIONS: int = 1
    CONTINUOUS: bool = False

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams()

    def reward(self, state: ProbeState, action) -> jax.Array:
        """The reward of taking ``action`` in ``state`` (before the step's time increment)."""
        raise NotImplementedError

    def step_env(self, key, state: ProbeState, action, params: ProbeParams):
        del key
        reward = self.reward(state, action)
        state = state.replace(time=state.time + 1)
        terminated = state.time >= self.LENGTH
        info: dict[str, Any] = {"discount": jnp.where(terminated, 0.0, 1.0)}
        return (
            jax.lax.stop_gradient(self.get_obs(state, params)),
            jax.lax.stop_gradient(state),
            jnp.asarray(reward, jnp.float32).reshape(()),
            terminated,
            info,
        )

    def reset_env(self, key, params: ProbeParams):
        if self.RANDOM_SIGN:
            sign = jnp.where(jax.random.bernoulli(key), 1.0, -1.0).astype(jnp.float32)
        else:
            sign = jnp.float32(1.0)
        state = ProbeState(sign=sign, time=jnp.int32(0))
        return self.get_obs(state, params), state

    def get_obs(self, state: ProbeState, params: ProbeParams | None = None,
                key=None) -> jax.Array:
        """``[sign]`` for the random-sign probes, ``[time]`` otherwise (0, then 1 in TwoStep).

        The observation after an episode's last step (``final_observation``, never acted on)
        repeats the last one, so every observation stays in the observation space and a critic
        that wrongly bootstraps through a termination drifts to 1 / (1 - gamma) times the value.
        """
        if self.RANDOM_SIGN:
            obs = state.sign
        else:
            obs = jnp.minimum(state.time, self.LENGTH - 1).astype(jnp.float32)
        return obs.reshape(self._obs_shape)

    @property
    def _obs_shape(self) -> tuple[int, ...]:
        return (1, 1, 1) if self.IMAGE else (1,)

    def is_terminated(self, state: ProbeState, params: ProbeParams) -> jax.Array:
        return state.time >= self.LENGTH

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def num_actions(self) -> int:
        """Discrete actions; 1 (the action's size) for a continuous probe, as gymnax's Pendulum."""
        return 1 if self.CONTINUOUS else self.NUM_ACTIONS

    def action_space(self, params: ProbeParams | None = None):
        if self.CONTINUOUS:
            return spaces.Box(-ACTION_BOUND, ACTION_BOUND, (1,), dtype=jnp.float32)
        return spaces.Discrete(self.NUM_ACTIONS)

    def observation_space(self, params: ProbeParams) -> spaces.Box:
        low = -1.0 if self.RANDOM_SIGN else 0.0
        return spaces.Box(low, 1.0, self._obs_shape, dtype=jnp.float32)

    def state_space(self, params: ProbeParams) -> spaces.Dict:
        return spaces.Dict({
            "sign": spaces.Box(-1.0, 1.0, (), dtype=jnp.float32),
            "time": spaces.Discrete(params.max_steps_in_episode),
        })


def _continuous_action(action) -> jax.Array:
    return jnp.clip(jnp.asarray(action, jnp.float32).reshape(-1)[0], -ACTION_BOUND, ACTION_BOUND)


class ProbeConstant(Probe):
    """One step, observation 0, reward +1, terminates: V(0) = 1 exactly."""

    NAME = "ProbeConstant-v0"

    def reward(self, state, action):
        return jnp.float32(1.0)


class ProbeObsReward(Probe):
    """One step, observation o in {-1, +1} (equally likely), reward o: V(o) = o exactly."""

    NAME = "ProbeObsReward-v0"
    RANDOM_SIGN = True

    def reward(self, state, action):
        return state.sign


class ProbeTwoStep(Probe):
    """Two steps: observation 0 and reward 0, then observation 1, reward +1 and termination.

    V(0) = gamma and V(1) = 1 exactly.
    """

    NAME = "ProbeTwoStep-v0"
    LENGTH = 2

    def reward(self, state, action):
        return jnp.where(state.time == 1, 1.0, 0.0)


class ProbeActionReward(Probe):
    """One step, observation 0, two actions: reward +1 for action 1, -1 for action 0.

    Optimal policy: action 1 always; V(0) = 2 pi(1|0) - 1, 1 at the optimum.
    """

    NAME = "ProbeActionReward-v0"
    NUM_ACTIONS = 2

    def reward(self, state, action):
        return jnp.where(jnp.asarray(action).astype(jnp.int32) == 1, 1.0, -1.0)


class ProbeActionObsReward(Probe):
    """One step, observation o in {-1, +1}, two actions: +1 for the action matching o, else -1.

    Action 1 matches +1 and action 0 matches -1. Optimal policy: pi(1|+1) = pi(0|-1) = 1;
    V(o) = 2 pi(match|o) - 1, 1 at the optimum.
    """

    NAME = "ProbeActionObsReward-v0"
    RANDOM_SIGN = True
    NUM_ACTIONS = 2

    def reward(self, state, action):
        match = jnp.asarray(action).astype(jnp.int32) == (state.sign > 0).astype(jnp.int32)
        return jnp.where(match, 1.0, -1.0)


class ProbeContinuousActionReward(Probe):
    """One step, observation 0, action a in [-2, 2] (clipped), reward -(a - 0.5)^2.

    Optimal policy: a = 0.5; V(0) = 0 at the optimum, E[-(a - 0.5)^2] under the policy.
    """

    NAME = "ProbeContinuousActionReward-v0"
    CONTINUOUS = True
    TARGET = 0.5

    def reward(self, state, action):
        return -jnp.square(_continuous_action(action) - self.TARGET)


class ProbeContinuousActionObsReward(Probe):
    """One step, observation o in {-1, +1}, action a in [-2, 2] (clipped), reward -(a - 0.5 o)^2.

    Optimal policy: a = 0.5 o; V(o) = 0 at the optimum, E[-(a - 0.5 o)^2] under the policy.
    """

    NAME = "ProbeContinuousActionObsReward-v0"
    RANDOM_SIGN = True
    CONTINUOUS = True
    TARGET = 0.5

    def reward(self, state, action):
        return -jnp.square(_continuous_action(action) - self.TARGET * state.sign)


def _image(cls: type[Probe]) -> type[Probe]:
    """``cls`` with ``[1, 1, 1]`` observations, named ``...Image-v0``."""
    name = cls.NAME.replace("-v0", "Image-v0")
    return type(cls.__name__ + "Image", (cls,), {"NAME": name, "IMAGE": True,
                                                  "__doc__": f"{cls.NAME} as a 1x1 image."})


_FLAT = (ProbeConstant, ProbeObsReward, ProbeTwoStep, ProbeActionReward, ProbeActionObsReward,
         ProbeContinuousActionReward, ProbeContinuousActionObsReward)

PROBES: dict[str, type[Probe]] = {
    cls.NAME: cls for cls in (*_FLAT, *(_image(c) for c in _FLAT))
}
"""Every probe environment, by name (each flat one and its image twin)."""
