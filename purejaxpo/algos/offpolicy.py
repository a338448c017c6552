"""The skeleton the off-policy algorithms (SAC, TD3) share: config, replay, the run itself.

A run is the same :class:`~purejaxpo.algos.base.Program` as for the on-policy algorithms
(``init(key, hyperparams) -> TrainState``, ``run(state, n) -> (state, metrics)``), so the CLI,
sweeps, checkpoints, logs and plots take it unchanged. One *update* of it:

1. ``num_steps`` steps in each of ``num_envs`` environments (``batch_size`` transitions),
   actions uniform in ``[-1, 1]`` until ``learning_starts`` env steps, then from the
   algorithm's exploration policy, through the shared rollout
   (:func:`purejaxpo.rollout.collect`);
2. the transitions go into the run's replay buffer (:mod:`purejaxpo.replay`: flashbax, pure
   state inside the :class:`~purejaxpo.algos.base.TrainState`, so a checkpoint holds it);
3. once ``learning_starts`` env steps are done, ``gradient_steps`` (``utd_ratio x
   batch_size``) gradient steps, each on a fresh uniform sample of ``minibatch_size``
   transitions, through the algorithm's ``learn``.

Hyperparameters that may be swept (``learning_rate``, ``q_learning_rate``, ``tau``,
``gamma``, and the algorithm's own) are traced; buffer and batch sizes, ``utd_ratio`` and
``learning_starts`` are static.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxpo import replay
from purejaxpo.algos.base import Program, TrainState, build_env, per_run, progress_calls, run_updates
from purejaxpo.config import RLConfig, _fail, check_float, check_int
from purejaxpo.envs import make
from purejaxpo.networks import Policy
from purejaxpo.rollout import EnvCarry, collect, episode_metrics
from purejaxpo.update import make_optimizer


@dataclasses.dataclass(frozen=True, kw_only=True)
class OffPolicyConfig(RLConfig):
    """Settings SAC and TD3 share (see :class:`~purejaxpo.config.RLConfig` for the rest).

    The defaults are Stable-Baselines3's (and sbx's): Adam at 3e-4, buffer 1e6, minibatch
    256, tau 0.005, gamma 0.99, one gradient step per env step, 256 x 256 ReLU networks.

    Attributes:
      num_envs: environments stepped in parallel per run (static).
      num_steps: steps per environment between gradient phases (static); one update does
        ``num_envs * num_steps`` env steps.
      learning_rate: the actor's (and SAC's temperature's) Adam step size (sweepable).
      q_learning_rate: the Q networks' step size; None: ``learning_rate`` (sweepable).
      max_grad_norm: global gradient-norm clip; the default 1e6 does not clip in practice (as
        SB3, sbx and rejax, which do not clip) (sweepable).
      buffer_size: transitions a run's replay buffer holds (static); see
        :mod:`purejaxpo.replay` for its memory.
      minibatch_size: transitions per gradient step (static).
      learning_starts: env steps (per run) of uniform random actions before the first
        gradient step (static).
      utd_ratio: gradient steps per env step (update-to-data ratio); ``utd_ratio *
        num_envs * num_steps`` must be a whole number >= 1 (static).
      tau: Polyak averaging rate of the target networks (sweepable).
    """

    env: str = "Pendulum-v1"
    total_timesteps: int = 20_000
    num_envs: int = 1
    num_steps: int = 1
    learning_rate: float = 3e-4
    q_learning_rate: float | None = None
    anneal_lr: bool = False
    max_grad_norm: float = 1e6
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    buffer_size: int = 1_000_000
    minibatch_size: int = 256
    learning_starts: int = 1_000
    utd_ratio: float = 1.0
    tau: float = 0.005

    SWEEPABLE: ClassVar[tuple[str, ...]] = RLConfig.SWEEPABLE + ("q_learning_rate", "tau")
    SWEEPABLE_FALLBACKS: ClassVar[dict[str, str]] = {
        **RLConfig.SWEEPABLE_FALLBACKS, "q_learning_rate": "learning_rate"}

    def validate(self) -> None:
        super().validate()
        env, env_params = make(self.env)
        if not hasattr(env.action_space(env_params), "low"):
            _fail("env", self.env, "must have continuous (Box) actions for SAC and TD3")
        if self.q_learning_rate is not None:
            check_float("q_learning_rate", self.q_learning_rate, 0.0, low_open=True)
        check_int("minibatch_size", self.minibatch_size)
        check_int("buffer_size", self.buffer_size)
        least = max(self.minibatch_size, self.batch_size)
        if self.buffer_size < least:
            _fail("buffer_size", self.buffer_size,
                  f"must be >= max(minibatch_size, num_envs * num_steps) = {least}")
        check_int("learning_starts", self.learning_starts, 0)
        check_float("utd_ratio", self.utd_ratio, 0.0, low_open=True)
        steps = self.utd_ratio * self.batch_size
        if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
            _fail("utd_ratio", self.utd_ratio,
                  f"times num_envs * num_steps = {self.batch_size} must be a whole number "
                  f">= 1 of gradient steps per update")
        check_float("tau", self.tau, 0.0, 1.0, low_open=True)
        for name in ("normalize_obs", "normalize_reward"):
            if getattr(self, name):
                _fail(name, True, "must be false for SAC and TD3 (the replay buffer would "
                      "mix observations and rewards normalised with different statistics)")
        if self.anneal_lr:
            _fail("anneal_lr", True, "must be false for SAC and TD3 (constant step sizes)")

    @property
    def gradient_steps(self) -> int:
        """Gradient steps per update: ``utd_ratio * num_envs * num_steps``."""
        return int(round(self.utd_ratio * self.batch_size))

    def check_memory(self, runs: int, device=None) -> None:
        """``ValueError`` if ``runs`` replay buffers at once would not fit on ``device``
        (:func:`purejaxpo.replay.check_fits`); called by sweeps before compiling."""
        env, env_params = make(self.env)
        obs_shape = env.observation_space(env_params).shape
        action_shape = env.action_space(env_params).shape
        replay.check_fits(self.buffer_size, replay.obs_size(obs_shape),
                          replay.obs_size(action_shape), runs, device)


class OffPolicyExtra(NamedTuple):
    """An off-policy run's :attr:`TrainState.extra <purejaxpo.algos.base.TrainState>`.

    Attributes:
      target: the target networks' parameters (the algorithm's choice of groups).
      buffer: the replay buffer's state (flashbax).
      grad_steps: int32, gradient steps done (TD3's delayed updates count them).
    """

    target: Any
    buffer: Any
    grad_steps: jax.Array


class OffPolicySetup(NamedTuple):
    """An algorithm's part of :func:`off_policy_program`, built from the hyperparameters.

    Attributes:
      txs: ``{group: optax optimiser}``, one per parameter group (``params[group]``).
      init_params: ``key -> params`` (the policy's, plus any of the algorithm's own).
      target: ``params -> target`` parameters at the start of a run.
      explore: ``(key, params, obs [B, ...]) -> action [B, A]`` in ``[-1, 1]``: how the
        algorithm acts while it collects data.
      learn: ``(key, params, opt_state, target, grad_steps, batch) -> (params, opt_state,
        target, metrics)``, one gradient step on a sampled :class:`~purejaxpo.replay.Stored`
        minibatch ``[N, ...]``; ``metrics`` a dict of scalars.
    """

    txs: dict[str, Any]
    init_params: Callable
    target: Callable
    explore: Callable
    learn: Callable


def adam(learning_rate, max_grad_norm):
    """Adam (epsilon 1e-8, as PyTorch's and SB3's) at a constant, possibly traced, rate."""
    return make_optimizer(lambda _: learning_rate, max_grad_norm, eps=1e-8)


def group_step(txs, group: str, loss_fn: Callable, params: dict, opt_state: dict):
    """One optimiser step on ``params[group]`` alone.

    ``loss_fn(params[group]) -> (loss, aux)``; returns ``(params, opt_state, loss, aux)``
    with only ``group`` changed (``txs[group]`` its optimiser).
    """
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params[group])
    updates, new_opt = txs[group].update(grads, opt_state[group], params[group])
    new = optax.apply_updates(params[group], updates)
    return {**params, group: new}, {**opt_state, group: new_opt}, loss, aux


@dataclasses.dataclass(frozen=True)
class Explorer:
    """The acting part of the policy protocol for collecting off-policy data.

    ``params`` passed to :meth:`act` is ``(params, warmup)``: while ``warmup`` (a traced
    bool) actions are uniform in ``[-1, 1]``, otherwise ``explore``'s.
    """

    policy: Policy
    explore: Callable

    recurrent: ClassVar[bool] = False

    def initial_state(self, num_envs: int):
        return ()

    def act(self, key, params, state, obs):
        params, warmup = params
        k_act, k_random = jax.random.split(key)
        action = self.explore(k_act, params, obs)
        random = jax.random.uniform(k_random, action.shape, minval=-1.0, maxval=1.0)
        action = jnp.where(warmup, random, action)
        return state, action, jnp.zeros(action.shape[:-1])

    def env_action(self, action):
        return self.policy.env_action(action)


def off_policy_program(config: OffPolicyConfig, policy: Policy,
                       setup: Callable[[dict], OffPolicySetup], *,
                       progress: Callable[[int], None] | None = None) -> Program:
    """The run SAC and TD3 share, as ``init`` and ``run`` pieces (see the module docstring).

    Returns:
      a :class:`~purejaxpo.algos.base.Program`; its metrics ``[num_updates]`` are ``learn``'s
      (means over the update's gradient steps; 0 before ``learning_starts``), the episode
      statistics and ``learning`` (1.0 once gradient steps run).
    """
    buffer = replay.make_buffer(config.buffer_size, config.minibatch_size)
    example = replay.example(policy.obs_shape, (policy.action_dim,))

    def init(key, hyperparams=None) -> TrainState:
        hp = config.complete_hyperparams(hyperparams)
        parts = setup(hp)
        venv = build_env(config, hp["gamma"])
        key, k_params, k_env = jax.random.split(key, 3)
        params = parts.init_params(k_params)
        opt_state = {name: tx.init(params[name]) for name, tx in parts.txs.items()}
        obs, env_state = venv.reset(k_env)
        extra = OffPolicyExtra(parts.target(params), buffer.init(example),
                               jnp.zeros((), jnp.int32))
        return per_run(TrainState(params, opt_state, EnvCarry(env_state, obs), key,
                                  jnp.zeros((), jnp.int32), hp, extra))

    def run(state: TrainState, num_updates: int):
        # Opaque to XLA: in a fused ``run(init(key))`` with the config's hyperparameters they
        # are constants, and XLA folds them into the update (e.g. a division by a constant
        # becomes a multiplication by its reciprocal), which rounds differently from the same
        # run resumed from a checkpoint, where they are data; seen on SAC Pendulum seeds.
        hp = jax.lax.optimization_barrier(state.hyperparams)
        parts = setup(hp)
        venv = build_env(config, hp["gamma"])
        explorer = Explorer(policy, parts.explore)

        def gradient_phase(carry, buffer_state, key):
            def grad_step(carry, k):
                params, opt_state, target, n = carry
                k_sample, k_learn = jax.random.split(k)
                batch = buffer.sample(buffer_state, k_sample).experience
                params, opt_state, target, metrics = parts.learn(
                    k_learn, params, opt_state, target, n, batch)
                return (params, opt_state, target, n + 1), metrics

            carry, metrics = jax.lax.scan(grad_step, carry,
                                          jax.random.split(key, config.gradient_steps))
            return carry, {k: jnp.mean(v) for k, v in metrics.items()}

        def update(state: TrainState):
            key, k_roll, k_learn = jax.random.split(state.key, 3)
            extra = state.extra
            warmup = state.update * config.batch_size < config.learning_starts
            env_carry, traj = collect(k_roll, venv, explorer, (state.params, warmup),
                                      state.env, config.num_steps)
            buffer_state = replay.add_rollout(buffer, extra.buffer, traj)
            learning = (state.update + 1) * config.batch_size >= config.learning_starts
            carry = (state.params, state.opt_state, extra.target, extra.grad_steps)
            _, shapes = jax.eval_shape(gradient_phase, carry, buffer_state, k_learn)
            skip = lambda c, b, k: (c, jax.tree_util.tree_map(  # noqa: E731
                lambda s: jnp.zeros(s.shape, s.dtype), shapes))
            carry, metrics = jax.lax.cond(learning, gradient_phase, skip, carry, buffer_state,
                                          k_learn)
            params, opt_state, target, grad_steps = carry
            metrics = {**metrics, **episode_metrics(traj),
                       "learning": learning.astype(jnp.float32)}
            extra = OffPolicyExtra(target, buffer_state, grad_steps)
            return state._replace(params=params, opt_state=opt_state, env=env_carry, key=key,
                                  update=state.update + 1, extra=extra), metrics

        return run_updates(update, state, num_updates, progress,
                           calls=progress_calls(config.total_timesteps))

    return Program(init, run, config.num_updates)
