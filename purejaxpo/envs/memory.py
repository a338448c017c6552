"""A memory task: recall a cue shown once, after a delay (a one-armed T-maze).

``CueRecall-v0`` (gymnax 1.0 API, so every wrapper here works on it). An episode is
``delay + 2`` steps:

* step 0: the observation shows the cue, one of ``num_cues`` values, one-hot, with the
  "cue" flag set;
* steps 1 .. ``delay``: the observation is all zeros (the cue is gone);
* step ``delay + 1``: the "query" flag is set; the action taken here is the agent's answer:
  reward +1 if it equals the cue, ``wrong_reward`` (default -1) otherwise, and the episode
  terminates.

Actions before the query do nothing and give reward 0. Observation layout (float32,
``num_cues + 2``): ``[one_hot(cue) at step 0, is_cue_step, is_query_step]``.

A feed-forward policy sees the same observation at the query whatever the cue, so it can only
guess: its best expected return is ``(1 + (num_cues - 1) * wrong_reward) / num_cues``, 0 for
two cues and rewards +-1. A policy with memory can score 1 on every episode.

References: the T-maze of Bakker, "Reinforcement Learning with Long Short-Term Memory", 2001;
bsuite's memory_length (Osband et al., 2020).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class CueRecallState(environment.EnvState):
    cue: jax.Array  # int32 scalar in [0, num_cues)
    time: jax.Array  # int32 steps taken in this episode


@struct.dataclass
class CueRecallParams(environment.EnvParams):
    """Pytree leaves, so they can be vmapped (e.g. a batch of delays).

    Attributes:
      delay: blank steps between the cue and the query (>= 0).
      wrong_reward: reward for a wrong answer (+1 for a right one).
      max_steps_in_episode: time limit; longer than an episode, so it never cuts one.
    """

    delay: int = 4
    wrong_reward: float = -1.0
    max_steps_in_episode: int = 1000


class CueRecall(environment.Environment[CueRecallState, CueRecallParams]):
    """Cue recall after a delay: see the module docstring.

    Args:
      num_cues: number of distinct cues and of actions (static: it sets the spaces' shapes).
    """

    def __init__(self, num_cues: int = 2):
        super().__init__()
        if isinstance(num_cues, bool) or not isinstance(num_cues, int) or num_cues < 2:
            raise ValueError(f"num_cues={num_cues!r} is invalid: must be an integer >= 2")
        self.num_cues = num_cues

    @property
    def default_params(self) -> CueRecallParams:
        return CueRecallParams()

    def step_env(self, key, state: CueRecallState, action, params: CueRecallParams):
        del key
        query = state.time == params.delay + 1
        correct = jnp.asarray(action).astype(jnp.int32) == state.cue
        reward = jnp.where(query, jnp.where(correct, 1.0, params.wrong_reward), 0.0)
        state = state.replace(time=state.time + 1)
        info: dict[str, Any] = {"discount": jnp.where(query, 0.0, 1.0)}
        return (
            jax.lax.stop_gradient(self.get_obs(state, params)),
            jax.lax.stop_gradient(state),
            reward.astype(jnp.float32),
            query,
            info,
        )

    def reset_env(self, key, params: CueRecallParams):
        cue = jax.random.randint(key, (), 0, self.num_cues, dtype=jnp.int32)
        state = CueRecallState(cue=cue, time=jnp.int32(0))
        return self.get_obs(state, params), state

    def get_obs(self, state: CueRecallState, params: CueRecallParams | None = None,
                key=None) -> jax.Array:
        params = self.default_params if params is None else params
        cue_step = state.time == 0
        query_step = state.time == params.delay + 1
        cue = jax.nn.one_hot(state.cue, self.num_cues, dtype=jnp.float32) * cue_step
        flags = jnp.stack([cue_step, query_step]).astype(jnp.float32)
        return jnp.concatenate([cue, flags])

    def is_terminated(self, state: CueRecallState, params: CueRecallParams) -> jax.Array:
        return state.time > params.delay + 1

    @property
    def name(self) -> str:
        return "CueRecall-v0"

    @property
    def num_actions(self) -> int:
        return self.num_cues

    def action_space(self, params: CueRecallParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_cues)

    def observation_space(self, params: CueRecallParams) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.num_cues + 2,), dtype=jnp.float32)

    def state_space(self, params: CueRecallParams) -> spaces.Dict:
        return spaces.Dict({
            "cue": spaces.Discrete(self.num_cues),
            "time": spaces.Discrete(params.max_steps_in_episode),
        })
