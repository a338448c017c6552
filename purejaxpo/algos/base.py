"""The skeleton every on-policy algorithm shares: environments, networks, the run itself."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from purejaxpo import advantages
from purejaxpo.config import RLConfig
from purejaxpo.envs import make, make_vec_env
from purejaxpo.metrics import NONFINITE, nonfinite
from purejaxpo.networks import Policy, episode_starts
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


def build_policy(config: RLConfig) -> Policy:
    """The policy that ``config`` describes (:meth:`~purejaxpo.config.RLConfig.policy_spec`:
    torso, memory, heads) for ``config.env``'s spaces, built without tracing anything.

    ``ValueError`` if the torso cannot take the environment's observations (e.g. a CNN on flat
    ones), before anything compiles.
    """
    env, env_params = make(config.env)
    return Policy.for_env(make_vec_env(env, env_params, 1), config.policy_spec())


PROGRESS_CALLS = (10, 100)
"""The fewest and the most host calls a run makes to feed a progress display."""

PROGRESS_STEPS_PER_CALL = 50_000
"""Env steps (per run) between progress calls, within :data:`PROGRESS_CALLS`."""


def progress_calls(total_timesteps: int) -> int:
    """How many times a run of ``total_timesteps`` env steps calls the host for its progress.

    One call per :data:`PROGRESS_STEPS_PER_CALL` env steps, at least 10 and at most 100. Each
    call costs about 0.3 ms of host round trip (measured on a 2-core CPU), so even a short run
    (PPO CartPole, 5e5 steps in about 3 s: 10 calls) spends about 0.1% of its time on it.
    """
    low, high = PROGRESS_CALLS
    return int(min(high, max(low, total_timesteps // PROGRESS_STEPS_PER_CALL)))


def scan_updates(update: Callable, carry, num_updates: int,
                 progress: Callable[[int], None] | None = None, *,
                 calls: int = PROGRESS_CALLS[1]):
    """Runs ``update(carry) -> (carry, metrics)`` ``num_updates`` times in one ``lax.scan``.

    ``progress``, if given, is called on the host with the number of updates done, through
    ``jax.debug.callback``, every ``ceil(num_updates / calls)`` updates and after the last
    one: at most about ``calls`` host calls a run (see :func:`progress_calls`), so a progress
    bar costs well under 1% of a run, and it never changes results. Under ``vmap`` it may be
    called once per batch element with the same count.
    """
    every = max(1, -(-num_updates // calls))

    def report(done):
        jax.lax.cond((done % every == 0) | (done == num_updates),
                     lambda d: jax.debug.callback(progress, d), lambda d: None, done)

    def body(carry, index):
        carry, metrics = update(carry)
        if progress is not None:
            report(index + 1)
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
        seqs["agent_state"] = self.traj.agent_state
        return seqs

    def batch(self, policy) -> dict[str, Any]:
        """:meth:`sequence_batch` for a recurrent ``policy``, :meth:`flat_batch` otherwise."""
        return self.sequence_batch() if policy.recurrent else self.flat_batch()


class TrainState(NamedTuple):
    """Everything a run carries from one update to the next: what a checkpoint saves.

    ``init(key, hyperparams) -> TrainState`` and ``run(state, num_updates) -> (state,
    metrics)`` (see :class:`Program`) are pure and jit-able; under ``jax.vmap`` every leaf gets
    a leading batch axis.

    Attributes:
      params: network parameters.
      opt_state: the optimiser's state.
      env: the environments' carry (:class:`~purejaxpo.rollout.EnvCarry`: env state with any
        normaliser statistics, current observations, the policy's memory); ``()`` for an
        algorithm that resets its environments every update (GRPO).
      key: the run's PRNG key for the next update.
      update: int32, updates done so far.
      hyperparams: the complete sweepable settings (float32 scalars) the run uses.
      extra: algorithm-specific state (GRPO: the reference parameters); ``()`` when none.
    """

    params: Any
    opt_state: Any
    env: Any
    key: jax.Array
    update: jax.Array
    hyperparams: dict[str, jax.Array]
    extra: Any = ()


def per_run(state: TrainState) -> TrainState:
    """``state`` with every leaf tied to the run's key, so that ``vmap`` batches every leaf.

    Why: under ``jax.vmap`` over seeds, a leaf of ``init``'s state that does not depend on the
    key (the optimiser's step count, the update counter, the hyperparameters) stays unbatched
    inside a fused ``run(init(key), n)``, and XLA compiles the ops on it as scalar kernels; the
    same state restored from a checkpoint, or made by a separate ``init`` program, has a seed
    axis on every leaf, and those ops become vector kernels. The two round differently: Adam's
    bias correction ``1 - b ** count`` is an ``f32[]`` ``power`` in the one program and an
    ``f32[seeds]`` ``power`` in the other, and the last bit it differs in grows into different
    returns. Tying every leaf to the (per-seed) key gives both programs the same batched ops,
    so a plain run, a chunked or checkpointed one and a resumed one agree bitwise. The values
    are unchanged (``where(true, x, x)``), and an unbatched run is not affected.
    """
    key = state.key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    word = jnp.ravel(key)[0]
    tie = word == word  # true, but carries the key's batch axis
    tied = jax.tree_util.tree_map(lambda x: jnp.where(tie, x, x), state._replace(key=()))
    return tied._replace(key=state.key)


class Program(NamedTuple):
    """A training run in two pure pieces, so it can be checkpointed and resumed.

    Attributes:
      init: ``init(key, hyperparams=None) -> TrainState`` (missing hyperparameters are filled
        from the config).
      run: ``run(state, num_updates) -> (state, metrics)``, ``num_updates`` static; metrics
        ``[num_updates]``. ``run(run(s, a)[0], b)`` continues exactly as ``run(s, a + b)``.
      num_updates: updates of a whole run (``config.num_updates``).
    """

    init: Callable
    run: Callable
    num_updates: int

    def train(self, key, hyperparams=None) -> TrainResult:
        """The whole run: ``run(init(key, hyperparams), num_updates)``."""
        state, metrics = self.run(self.init(key, hyperparams), self.num_updates)
        return TrainResult(state.params, metrics)


def as_train(program: Program) -> Callable:
    """``train(key, hyperparams=None) -> TrainResult`` for ``program``.

    The function also carries the pieces: ``train.init``, ``train.run`` and ``train.program``.
    """

    def train(key, hyperparams=None) -> TrainResult:
        return program.train(key, hyperparams)

    train.init = program.init
    train.run = program.run
    train.program = program
    return train


def run_updates(update: Callable, state: TrainState, num_updates: int,
                progress: Callable[[int], None] | None = None, *,
                calls: int = PROGRESS_CALLS[1]):
    """Scans ``update(state) -> (state, metrics)`` over ``num_updates`` updates.

    Adds the ``nonfinite`` metric (:func:`purejaxpo.metrics.nonfinite` of the parameters and
    every metric whose name contains ``loss``): a diverged run is detected inside the program,
    with no host sync, and :func:`purejaxpo.metrics.divergence` reads the first update where
    it happened from the metrics.

    The hyperparameters are not carried through the scan (``update`` closes over them), so a
    whole run traced with constant hyperparameters compiles exactly as before the split.
    """

    def checked(state):
        state, metrics = update(state)
        losses = [v for k, v in metrics.items() if "loss" in k]
        return state, {**metrics, NONFINITE: nonfinite(state.params, losses)}

    hp = state.hyperparams
    carry, metrics = scan_updates(checked, state._replace(hyperparams=()), num_updates, progress,
                                  calls=calls)
    return carry._replace(hyperparams=hp), metrics


class OnPolicySetup(NamedTuple):
    """An algorithm's part of :func:`on_policy_program`, built from the hyperparameters.

    Attributes:
      tx: the optax optimiser whose state ``learn`` carries.
      learn: ``learn(key, params, opt_state, rollout: Rollout) -> (params, opt_state,
        metrics)``; ``metrics`` is a dict of scalars.
      gae_lambda: GAE lambda (may be traced).
      use_critic: compute values and bootstrap from them; without it values are zeros, so the
        advantages are plain discounted returns, cut at the end of the rollout.
      lr_schedule: ``update_index -> learning rate``, reported as the ``learning_rate`` metric.
    """

    tx: Any
    learn: Callable
    gae_lambda: Any
    use_critic: bool = True
    lr_schedule: Callable | None = None


def on_policy_program(config: RLConfig, policy: Policy,
                      setup: Callable[[dict], OnPolicySetup], *,
                      progress: Callable[[int], None] | None = None) -> Program:
    """The run every on-policy algorithm shares, as ``init`` and ``run`` pieces.

    Each update: rollout, values, GAE, the algorithm's ``learn``.

    Args:
      config: shapes (``num_envs``, ``num_steps``, ``num_updates``) and the env.
      policy: the policy (feed-forward or recurrent: any policy with the protocol of
        :mod:`purejaxpo.networks`).
      setup: ``setup(hp) -> OnPolicySetup`` from the complete traced hyperparameters
        (``hp["gamma"]`` is used here too).
      progress: host callback after every update (see :func:`scan_updates`), with the count of
        updates done in the current ``run`` call.

    Returns:
      a :class:`Program`; its metrics ``[num_updates]`` are ``learn``'s, the episode
      statistics, ``explained_variance`` and ``learning_rate``.
    """

    def init(key, hyperparams=None) -> TrainState:
        hp = config.complete_hyperparams(hyperparams)
        parts = setup(hp)
        venv = build_env(config, hp["gamma"])
        key, k_params, k_env = jax.random.split(key, 3)
        params = policy.init(k_params)
        obs, env_state = venv.reset(k_env)
        env_carry = EnvCarry(env_state, obs, policy.initial_state(config.num_envs))
        return per_run(TrainState(params, parts.tx.init(params), env_carry, key,
                                  jnp.zeros((), jnp.int32), hp))

    def run(state: TrainState, num_updates: int):
        hp = state.hyperparams
        parts = setup(hp)
        venv = build_env(config, hp["gamma"])

        def critic(params, traj):
            if parts.use_critic:
                return policy.rollout_values(params, traj)  # V(obs_t), V(final_obs_t)
            zeros = jnp.zeros(traj.reward.shape, jnp.float32)
            return zeros, zeros

        def update(state: TrainState):
            key, k_roll, k_learn = jax.random.split(state.key, 3)
            params = state.params
            env_carry, traj = collect(k_roll, venv, policy, params, state.env, config.num_steps)
            values, next_values = critic(params, traj)
            adv, targets = advantages.gae(
                traj.reward, values, next_values, traj.terminated,
                traj.truncated, hp["gamma"], parts.gae_lambda,
            )
            rollout = Rollout(traj, values, adv, targets)
            params, opt_state, metrics = parts.learn(k_learn, params, state.opt_state, rollout)
            metrics = dict(metrics)
            metrics.update(episode_metrics(traj))
            metrics["explained_variance"] = explained_variance(values, targets)
            if parts.lr_schedule is not None:
                metrics["learning_rate"] = parts.lr_schedule(state.update)
            return state._replace(params=params, opt_state=opt_state, env=env_carry, key=key,
                                  update=state.update + 1), metrics

        return run_updates(update, state, num_updates, progress,
                           calls=progress_calls(config.total_timesteps))

    return Program(init, run, config.num_updates)
