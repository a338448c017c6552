"""Physics control: brax and MuJoCo Playground environments behind the gymnax API.

``purejaxpo.envs.make("brax:ant")`` or ``make("playground:CartpoleBalance")`` returns
``(env, env_params)`` like any gymnax environment, so :class:`~purejaxpo.envs.VecEnv`, the
normalisation and statistics wrappers, ``make_vec_env`` and every algorithm work unchanged:

* ``env.reset(key, params) -> (obs, state)``: ``obs`` ``[obs_dim]`` float32.
* ``env.step(key, state, action, params) -> (obs, state, reward, terminated, truncated,
  info)``: ``action`` ``[act_dim]`` in ``[-1, 1]`` (clipped there), ``reward`` float32
  scalar, ``terminated`` / ``truncated`` bool scalars. The episode resets automatically from a
  fresh random initial state drawn with ``key``; ``info["final_observation"]`` ``[obs_dim]``
  is the observation before the reset, which a truncated step bootstraps from.
* ``env.observation_space(params)``: ``Box(-inf, inf, (obs_dim,))``;
  ``env.action_space(params)``: ``Box(-1, 1, (act_dim,))``.

``terminated`` is the environment's own ``done`` (e.g. the pendulum fell, the ant flipped);
``truncated`` is the time limit (``params.max_steps_in_episode``, set by the constructor's
``episode_length``: brax's benchmark length 1000 by default, Playground's own per task),
and is false on a step that also terminates. brax's training wrappers mark a time-limit end as
``done`` with ``info["truncation"]``; here the two stay apart, as our GAE needs.

Names:

* ``brax:<name>`` with ``<name>`` any ``brax.envs`` registry name (``ant``, ``hopper``,
  ``inverted_pendulum``, ...); ``brax:<name>@<backend>`` picks the physics pipeline, one of
  :data:`BRAX_BACKENDS`. The default is ``mjx``: MuJoCo's own dynamics written in JAX (those
  of MuJoCo's and Playground's reference tasks), the most faithful of the four, and on this
  CPU 2.6x faster than brax's own constructor default ``generalized`` on ant. ``spring`` is
  faster still (1.2x on ant, 2.2x on the pendulum) but is an approximate, impulse-based
  physics. Measured by ``benchmarks/bench_physics_envs.py --backends`` on this project's
  2-core AMD EPYC CPU (jax 0.10.2, brax 0.14.2; 64 envs, 1000 steps of random actions in one
  jitted scan, brax's own batched wrapper, median of 3 interleaved runs; env steps/s):

  ======================= ========== ============= ============ ==========
  env                     mjx        generalized   positional   spring
  ======================= ========== ============= ============ ==========
  ``ant``                 18,458     7,116         6,304        21,791
  ``inverted_pendulum``   135,037    87,338        88,176       300,893
  ======================= ========== ============= ============ ==========

* ``playground:<name>`` with ``<name>`` any ``mujoco_playground.registry`` name
  (``CartpoleBalance``, ``CheetahRun``, ``Go1JoystickFlatTerrain``, ...);
  ``playground:<name>@<impl>`` picks MJX's implementation, ``jax`` (default) or ``warp``.
  On this CPU ``CartpoleBalance`` ran 286,954 env steps/s with ``jax`` and 8,928 with
  ``warp`` (64 envs, 200 steps, one run each), so ``jax`` is the default; ``warp`` is meant
  for NVIDIA GPUs.
  Where a task's observation is a dict (locomotion tasks: ``state`` and
  ``privileged_state``), the policy and the critic both see ``obs["state"]``.

brax and mujoco_playground are optional (``pip install "purejaxpo[brax]"``,
``"purejaxpo[playground]"``) and imported only when such a name is made or validated:
``import purejaxpo`` never imports them.

Batching. brax's and Playground's own batched environment (``VmapWrapper``) is itself a
``jax.vmap`` of the single environment, so ``VecEnv``'s vmap over this adapter is the same
program apart from the reset: brax's ``AutoResetWrapper`` (and Playground's by default)
returns every finished episode to the one initial state it drew at the start, where this
adapter draws a new random initial state at every reset (computed at every step and selected
where an episode ended, as gymnax does). Measured as above (64 envs, 1000 steps, median of 3
interleaved runs; ``benchmarks/results/physics_envs.md``), env steps/s:

============================== ========= ================ ==========================
env                            adapter   native (cached)  native, fresh resets
============================== ========= ================ ==========================
``brax:ant``                   18,433    18,956           (brax has no such option)
``brax:inverted_pendulum``     132,749   135,938          (brax has no such option)
``playground:CartpoleBalance`` 552,104   693,482          562,850 (``full_reset``)
============================== ========= ================ ==========================

The vmap over the adapter is within 3% of the native batch on both brax tasks, and of
Playground's with the same fresh resets, so the adapter keeps ``VecEnv``. The native batch is faster only by resetting to a cached state,
which pays where a reset costs as much as a step (Playground's cartpole: one physics step per
control step); every episode then starts from the same state in each env, which this adapter
does not do.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import warnings
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from purejaxpo.backends.threefry import raw_key

BRAX_PREFIX = "brax:"
PLAYGROUND_PREFIX = "playground:"

BRAX_BACKENDS = ("mjx", "generalized", "positional", "spring")
"""brax's physics pipelines; the first is the default (see the module docstring)."""

PLAYGROUND_IMPLS = ("jax", "warp")
"""MJX implementations for Playground tasks; the first is the default."""

BRAX_EPISODE_LENGTH = 1000
"""brax's benchmark time limit (``brax.envs.training.wrap``'s default)."""

INSTALL = {
    "brax": 'pip install "purejaxpo[brax]"',
    "playground": 'pip install "purejaxpo[playground]"',
}
"""How to install each family's optional dependencies."""

_MODULES = {"brax": "brax", "playground": "mujoco_playground"}


def family(name: str) -> str | None:
    """``"brax"`` or ``"playground"`` if ``name`` has that prefix, else None."""
    if name.startswith(BRAX_PREFIX):
        return "brax"
    if name.startswith(PLAYGROUND_PREFIX):
        return "playground"
    return None


def is_installed(kind: str) -> bool:
    """Whether ``kind``'s (``"brax"`` / ``"playground"``) package can be imported (not imported here)."""
    return importlib.util.find_spec(_MODULES[kind]) is not None


def _require(kind: str, name: str, field: str) -> None:
    if not is_installed(kind):
        raise ValueError(
            f"{field}={name!r} needs the optional package {_MODULES[kind]!r}, which is not "
            f"installed: {INSTALL[kind]}"
        )


def parse(name: str, field: str = "env") -> tuple[str, str, str]:
    """Splits ``"brax:ant@positional"`` into ``("brax", "ant", "positional")``.

    The backend (brax) or implementation (Playground) defaults to the first of
    :data:`BRAX_BACKENDS` / :data:`PLAYGROUND_IMPLS`. Checks the syntax and the backend only,
    not whether the environment exists (:func:`validate` does). Raises ``ValueError`` naming
    ``field``.
    """
    kind = family(name)
    if kind is None:
        raise ValueError(f"{field}={name!r} is not a physics environment: must start with "
                         f"{BRAX_PREFIX!r} or {PLAYGROUND_PREFIX!r}")
    rest = name[len(kind) + 1:]
    env_name, _, backend = rest.partition("@")
    choices = BRAX_BACKENDS if kind == "brax" else PLAYGROUND_IMPLS
    what = "backend" if kind == "brax" else "implementation"
    if not env_name:
        raise ValueError(f"{field}={name!r} is invalid: no environment name after {kind + ':'!r}")
    if "@" in rest and backend not in choices:
        raise ValueError(f"{field}={name!r} is invalid: {what} {backend!r} must be one of "
                         f"{', '.join(choices)} (after '@')")
    return kind, env_name, backend or choices[0]


def names(kind: str) -> list[str]:
    """Every ``brax:`` or ``playground:`` name (default backend), e.g. ``["brax:ant", ...]``.

    Imports the package; raises ``ValueError`` with the install command if it is missing.
    """
    if kind not in _MODULES:
        raise ValueError(f"kind={kind!r} is invalid: must be one of {sorted(_MODULES)}")
    _require(kind, f"{kind}:", "env")
    return [f"{kind}:{n}" for n in _registry_names(kind)]


def _registry_names(kind: str) -> tuple[str, ...]:
    if kind == "brax":
        from brax import envs

        return tuple(envs._envs)  # brax keeps its registry here; get_environment reads it
    from mujoco_playground import registry

    return tuple(registry.ALL_ENVS)


def validate(name: str, field: str = "env") -> None:
    """Raises ``ValueError`` naming ``field`` if ``name`` is not a usable physics environment.

    A missing optional package gives the exact install command; an unknown environment name
    gives the closest names of that family.
    """
    kind, env_name, _ = parse(name, field)
    _require(kind, name, field)
    known = _registry_names(kind)
    if env_name in known:
        return
    close = difflib.get_close_matches(env_name, known, n=3, cutoff=0.5)
    if not close:
        close = [n for n in known if env_name.lower() in n.lower()][:3]
    hint = f" Did you mean {', '.join(repr(f'{kind}:{c}') for c in close)}?" if close else ""
    raise ValueError(f"{field}={name!r} is not a known {kind} environment.{hint} "
                     f"Valid names: {', '.join(f'{kind}:{n}' for n in known)}.")


@struct.dataclass
class PhysicsParams(environment.EnvParams):
    """Attributes:
      max_steps_in_episode: the time limit; an episode that reaches it is truncated.
    """

    max_steps_in_episode: int = BRAX_EPISODE_LENGTH


@struct.dataclass
class PhysicsState(environment.EnvState):
    inner: Any  # the library's own State: physics state, obs, reward, done, metrics, info
    time: jax.Array  # int32 steps taken in the current episode


class PhysicsEnv(environment.Environment[PhysicsState, PhysicsParams]):
    """A brax ``Env`` or a Playground ``MjxEnv`` (one environment) as a gymnax environment.

    Both libraries share one interface: ``reset(rng) -> State`` and
    ``step(State, action) -> State`` with ``State.obs``, ``.reward``, ``.done`` (float 0/1),
    and ``action_size``. See the module docstring for the API this class gives them.

    Args:
      inner: the library's environment, unbatched and without its training wrappers.
      name: the name it was made from (``"brax:ant"``).
      episode_length: time limit in env steps (the default params' ``max_steps_in_episode``).
      obs_key: for tasks whose observation is a dict, the entry the agent sees.
    """

    def __init__(self, inner, name: str, episode_length: int, obs_key: str | None = None):
        super().__init__()
        if isinstance(episode_length, bool) or not isinstance(episode_length, int) \
                or episode_length < 1:
            raise ValueError(f"episode_length={episode_length!r} is invalid: must be an "
                             f"integer >= 1")
        self.inner = inner
        self._name = name
        self.episode_length = episode_length
        self.obs_key = obs_key
        abstract = jax.eval_shape(inner.reset, jax.random.PRNGKey(0))
        obs = self._observation(abstract.obs)
        if len(obs.shape) != 1:
            raise ValueError(f"env={name!r} has observations of shape {tuple(obs.shape)}; "
                             f"only flat vector observations are supported")
        self.obs_dim = int(obs.shape[0])
        self.action_dim = int(inner.action_size)

    def _observation(self, obs):
        if isinstance(obs, dict):
            if self.obs_key is None or self.obs_key not in obs:
                raise ValueError(f"env={self._name!r} observes a dict with keys {sorted(obs)}; "
                                 f"obs_key={self.obs_key!r} must be one of them")
            obs = obs[self.obs_key]
        return obs

    @property
    def default_params(self) -> PhysicsParams:
        return PhysicsParams(max_steps_in_episode=self.episode_length)

    def reset_env(self, key, params: PhysicsParams):
        inner = self.inner.reset(raw_key(key))  # brax keeps keys raw in its state
        obs = self._observation(inner.obs).astype(jnp.float32)
        return obs, PhysicsState(inner=inner, time=jnp.int32(0))

    def reset(self, key, params: PhysicsParams | None = None):
        """``(obs [obs_dim] float32, state)`` of a fresh episode drawn with ``key``."""
        return self.reset_env(key, self.default_params if params is None else params)

    def step_env(self, key, state: PhysicsState, action, params: PhysicsParams):
        del key  # the dynamics are deterministic
        action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
        inner = self.inner.step(state.inner, action)
        obs = self._observation(inner.obs).astype(jnp.float32)
        reward = jnp.asarray(inner.reward, jnp.float32)
        terminated = jnp.asarray(inner.done) > 0.5
        return obs, PhysicsState(inner=inner, time=state.time + 1), reward, terminated, {}

    def step(self, key, state: PhysicsState, action, params: PhysicsParams | None = None):
        """One step with automatic reset; see the module docstring for what it returns.

        The reset state is computed every step and selected where the episode ended (as
        gymnax does), from a new random initial state drawn with ``key``.
        """
        params = self.default_params if params is None else params
        obs_st, state_st, reward, terminated, info = self.step_env(key, state, action, params)
        truncated = jnp.logical_and(state_st.time >= params.max_steps_in_episode,
                                    jnp.logical_not(terminated))
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = self.reset_env(key, params)

        # Keep the reset state's dtypes, so the state is the same pytree type step after step
        # (a library's step may return a Python float where its reset returns an array).
        def select(reset_leaf, step_leaf):
            reset_leaf = jnp.asarray(reset_leaf)
            return jnp.where(done, reset_leaf, step_leaf).astype(reset_leaf.dtype)

        state = jax.tree.map(select, state_re, state_st)
        obs = jnp.where(done, obs_re, obs_st)
        info = {**info, "discount": 1.0 - terminated.astype(jnp.float32),
                "final_observation": obs_st}
        return obs, state, reward, terminated, truncated, info

    def is_terminated(self, state: PhysicsState, params: PhysicsParams) -> jax.Array:
        return jnp.asarray(state.inner.done) > 0.5

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_actions(self) -> int:
        return self.action_dim

    def action_space(self, params: PhysicsParams | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.action_dim,), dtype=jnp.float32)

    def observation_space(self, params: PhysicsParams | None = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self.obs_dim,), dtype=jnp.float32)


@functools.lru_cache(maxsize=32)
def _load_brax(env_name: str, backend: str):
    from brax import envs

    with warnings.catch_warnings():
        # brax 0.14 warns at every model load that its own pipelines are no longer actively
        # maintained and points to MJX; the default backend here is MJX.
        warnings.filterwarnings("ignore", message="Brax System, piplines", category=UserWarning)
        return envs.get_environment(env_name, backend=backend)


@functools.lru_cache(maxsize=32)
def _load_playground(env_name: str, impl: str):
    from mujoco_playground import registry

    return registry.load(env_name, config_overrides={"impl": impl})


def make_brax(name: str, episode_length: int = BRAX_EPISODE_LENGTH) -> PhysicsEnv:
    """The adapter for ``brax:<name>[@<backend>]`` (see the module docstring)."""
    validate(name)
    _, env_name, backend = parse(name)
    return PhysicsEnv(_load_brax(env_name, backend), name, episode_length)


def make_playground(name: str, episode_length: int | None = None) -> PhysicsEnv:
    """The adapter for ``playground:<name>[@<impl>]``; ``episode_length`` None means the
    task's own (its default config's ``episode_length``)."""
    validate(name)
    _, env_name, impl = parse(name)
    if episode_length is None:
        from mujoco_playground import registry

        episode_length = int(registry.get_default_config(env_name).episode_length)
    return PhysicsEnv(_load_playground(env_name, impl), name, episode_length, obs_key="state")


def make(name: str, **kwargs) -> tuple[PhysicsEnv, PhysicsParams]:
    """``(env, env_params)`` for a ``brax:`` or ``playground:`` name.

    Keyword arguments go to :func:`make_brax` / :func:`make_playground` (``episode_length``).
    """
    kind = family(name)
    env = make_brax(name, **kwargs) if kind == "brax" else make_playground(name, **kwargs)
    return env, env.default_params
