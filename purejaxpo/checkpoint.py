"""Checkpoints: save a training run every N updates, resume it exactly, load a trained policy.

A run is split into ``init(key, hyperparams) -> TrainState`` and ``run(state, num_updates) ->
(state, metrics)`` (:class:`~purejaxpo.algos.base.Program`; every ``make_train`` result carries
them as ``train.init`` / ``train.run``). :func:`run_with_checkpoints` runs the updates in chunks
and, after each chunk, saves with orbax:

* ``state``: every leaf of the (possibly vmapped) :class:`~purejaxpo.algos.base.TrainState`:
  parameters, optimiser state, environment state with its normaliser statistics, PRNG key,
  update index and hyperparameters. Leaves are stored flat (``leaf_00000``, ...) and put back
  into the tree that ``init`` builds for the config, so any optax or env state round-trips.
* ``history``: the metrics of every update so far (``[..., updates_done]``).
* ``meta``: JSON with the algorithm name, ``config.to_dict()``, the batch shape and the step.

``config.json`` at the top of the directory holds the same static description, so
:func:`load` rebuilds the policy from the directory alone.

Resuming is bitwise exact: ``run`` is the same compiled chunk whether or not the process was
restarted in between, and the PRNG key and update index are part of the state. orbax writes each
step to a temporary directory and renames it when complete (an atomic rename on a local file
system), so a process killed mid-save leaves at most an unfinished temporary directory, which
is never listed as a step: the latest complete checkpoint is what resumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import partial
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CONFIG_FILE = "config.json"
FORMAT = 1


def make_program(algo: str, config, *, progress: Callable[[int], None] | None = None):
    """The :class:`~purejaxpo.algos.base.Program` (``init``, ``run``) of ``algo`` for ``config``."""
    from purejaxpo.algos import ALGORITHMS

    _, make_train = ALGORITHMS[algo]
    return make_train(config, progress=progress).program


def config_from_dict(algo: str, values: Mapping[str, Any]):
    """The validated config of ``algo`` from ``config.to_dict()`` output (e.g. read from JSON)."""
    from purejaxpo.algos import ALGORITHMS

    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r} is invalid: must be one of {sorted(ALGORITHMS)}")
    config_cls, _ = ALGORITHMS[algo]
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in values.items() if k in names})


def describe(algo: str, config, **extra) -> dict[str, Any]:
    """The JSON-ready static description saved with every checkpoint."""
    return {"format": FORMAT, "algo": algo, "config": config.to_dict(), **extra}


def _write_json_atomic(path: str, data: Mapping[str, Any]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _flat(tree) -> dict[str, Any]:
    return {f"leaf_{i:05d}": leaf for i, leaf in enumerate(jax.tree_util.tree_leaves(tree))}


def _unflat(treedef, flat: Mapping[str, Any]):
    leaves = [flat[f"leaf_{i:05d}"] for i in range(treedef.num_leaves)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _manager(directory: str, *, max_to_keep: int | None = 2, read_only: bool = False):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=not read_only,  # reading never writes: no save is ever called on it
        enable_async_checkpointing=False,  # a save returns once the step is finalised
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                 item_names=("state", "history", "meta"))


def latest_step(directory: str) -> int | None:
    """The newest complete checkpoint step in ``directory`` (None if there is none)."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory, read_only=True) as manager:
        return manager.latest_step()


def all_steps(directory: str) -> list[int]:
    """Every complete checkpoint step in ``directory``, ascending."""
    if not os.path.isdir(directory):
        return []
    with _manager(directory, read_only=True) as manager:
        return sorted(manager.all_steps())


def save(manager, step: int, state, metrics: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Saves ``state`` (any pytree), the metrics so far and ``meta`` as checkpoint ``step``."""
    import orbax.checkpoint as ocp

    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_flat(state)),
        history=ocp.args.StandardSave({k: np.asarray(v) for k, v in metrics.items()}),
        meta=ocp.args.JsonSave({**meta, "step": int(step)}),
    ))
    manager.wait_until_finished()


def _restore(manager, step: int):
    import orbax.checkpoint as ocp

    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(),
        history=ocp.args.StandardRestore(),
        meta=ocp.args.JsonRestore(),
    ))
    return out["state"], out["history"], out["meta"]


class Checkpoint(NamedTuple):
    """A loaded checkpoint.

    Attributes:
      algo: algorithm name (a key of ``purejaxpo.algos.ALGORITHMS``).
      config: the rebuilt, validated config.
      state: the :class:`~purejaxpo.algos.base.TrainState`, leaves ``[*batch_shape, ...]``.
      metrics: numpy arrays ``[*batch_shape, step]``, every update so far.
      meta: the saved JSON (``batch_shape``, ``step`` and what the writer added).
      step: updates done.
    """

    algo: str
    config: Any
    state: Any
    metrics: dict[str, np.ndarray]
    meta: dict[str, Any]
    step: int


def load(directory: str, step: int | None = None) -> Checkpoint:
    """Loads checkpoint ``step`` (default: the latest complete one) from ``directory`` alone.

    The tree structure comes from the saved config (``init`` traced abstractly, nothing run).
    Raises ``FileNotFoundError`` if the directory has no complete checkpoint.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory!r} does not exist")
    with _manager(directory, read_only=True) as manager:
        if step is None:
            step = manager.latest_step()
        if step is None or step not in manager.all_steps():
            raise FileNotFoundError(
                f"no complete checkpoint{'' if step is None else f' at step {step}'} in {directory!r}")
        flat, metrics, meta = _restore(manager, step)
    algo = meta["algo"]
    config = config_from_dict(algo, meta["config"])
    program = make_program(algo, config)
    treedef = jax.tree_util.tree_structure(jax.eval_shape(program.init, jax.random.PRNGKey(0)))
    state = _unflat(treedef, {k: jnp.asarray(v) for k, v in flat.items()})
    metrics = {k: np.asarray(v) for k, v in metrics.items()}
    return Checkpoint(algo, config, state, metrics, meta, int(step))


def run_with_checkpoints(
    init_fn: Callable[[], Any],
    run_fn: Callable[[Any, int], tuple[Any, Mapping[str, Any]]],
    total_updates: int,
    *,
    every: int | None = None,
    directory: str | None = None,
    resume: bool = False,
    meta: Mapping[str, Any] | None = None,
    on_chunk: Callable[[int, int, dict[str, np.ndarray]], None] | None = None,
    max_to_keep: int | None = 2,
):
    """Runs ``total_updates`` updates in chunks of ``every``, checkpointing after each chunk.

    The hook the CLI's ``train`` (and a sweep) uses. The caller chooses the batching: for
    seeds, ``init_fn = lambda: jax.vmap(train.init)(keys)`` and ``run_fn =
    jax.vmap(train.run, in_axes=(0, None))``-like (see :func:`batched_run`); for a sweep also
    vmap over hyperparameters.

    Args:
      init_fn: ``() -> state``, the initial (batched) ``TrainState``; jitted here. On resume it
        is only traced abstractly, for the tree structure and shapes.
      run_fn: ``(state, num_updates) -> (state, metrics)``; metrics ``[*batch, num_updates]``.
        Jitted here with ``num_updates`` static (at most two compiles: ``every`` and the rest).
      total_updates: updates of the whole run.
      every: updates per chunk (default: all in one chunk).
      directory: checkpoint directory (None: no checkpoints, just chunked running).
      resume: continue from the latest complete checkpoint in ``directory``; its ``meta``
        must match ``meta`` (same algorithm and config). Without it, ``directory`` must not
        already hold checkpoints.
      meta: JSON-ready description saved with each checkpoint (see :func:`describe`); also
        written to ``directory/config.json``.
      on_chunk: host callback ``(start, stop, chunk_metrics)`` after each chunk (and after
        its checkpoint), e.g. to append log rows; on resume it is first called with the
        restored metrics ``(0, step, metrics)``.
      max_to_keep: checkpoints kept (oldest deleted); None keeps all.

    Returns:
      ``(state, metrics)``: final state and numpy metrics ``[*batch, total_updates]``.

    Raises:
      ValueError: naming the flag (``--checkpoint-every``, ``--checkpoint-dir``, ``--resume``).
    """
    if every is None:
        every = total_updates
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"--checkpoint-every={every!r} is invalid: must be an integer >= 1")
    if resume and directory is None:
        raise ValueError("--resume needs --checkpoint-dir")
    meta = dict(meta or {})
    manager = None
    if directory is not None:
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(f"--checkpoint-dir={directory!r} is invalid: not a directory")
        manager = _manager(directory, max_to_keep=max_to_keep)
    try:
        return _run_chunks(init_fn, run_fn, total_updates, every, manager, directory, resume,
                           meta, on_chunk)
    finally:
        if manager is not None:
            manager.close()


def _mismatch(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    for name in ("algo", "batch_shape"):
        if name in wanted and saved.get(name) != wanted[name]:
            return f"{name} {saved.get(name)!r} != {wanted[name]!r}"
    old, new = saved.get("config", {}), wanted.get("config", {})
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            return f"config.{name} {old.get(name)!r} != {new.get(name)!r}"
    return None


def _run_chunks(init_fn, run_fn, total_updates, every, manager, directory, resume, meta,
                on_chunk):
    metrics: dict[str, np.ndarray] | None = None
    latest = manager.latest_step() if manager is not None else None
    if latest is not None and not resume:
        raise ValueError(f"--checkpoint-dir={directory!r} already holds checkpoints (latest "
                         f"step {latest}): pass --resume to continue, or use a new directory")
    if latest is not None:
        flat, saved_metrics, saved_meta = _restore(manager, latest)
        problem = _mismatch(saved_meta, meta)
        if problem:
            raise ValueError(f"--resume: the checkpoint in {directory!r} is of another run "
                             f"({problem})")
        abstract = jax.eval_shape(init_fn)
        treedef = jax.tree_util.tree_structure(abstract)
        state = _unflat(treedef, {k: jnp.asarray(v) for k, v in flat.items()})
        for got, want in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(abstract)):
            if got.shape != want.shape or got.dtype != want.dtype:
                raise ValueError(f"--resume: the checkpoint in {directory!r} does not fit this "
                                 f"run ({got.shape} {got.dtype} vs {want.shape} {want.dtype})")
        metrics = {k: np.asarray(v) for k, v in saved_metrics.items()}
        done = int(latest)
        if on_chunk is not None:
            on_chunk(0, done, metrics)
    else:
        state = jax.jit(init_fn)()
        done = 0
    if directory is not None:
        _write_json_atomic(os.path.join(directory, CONFIG_FILE), meta)

    compiled: dict[int, Callable] = {}
    while done < total_updates:
        n = min(every, total_updates - done)
        if n not in compiled:
            compiled[n] = jax.jit(partial(run_fn, num_updates=n))
        state, chunk = compiled[n](state)
        chunk = {k: np.asarray(v) for k, v in chunk.items()}
        metrics = chunk if metrics is None else {
            k: np.concatenate([metrics[k], chunk[k]], axis=-1) for k in chunk}
        start, done = done, done + n
        if manager is not None:
            save(manager, done, state, metrics, meta)
        if on_chunk is not None:
            on_chunk(start, done, chunk)
    if metrics is None:  # total_updates == 0
        metrics = {}
    return state, metrics


def batched_run(run: Callable, num_batch_axes: int = 1) -> Callable:
    """``run(state, num_updates)`` vmapped over ``num_batch_axes`` leading axes of the state."""

    def batched(state, num_updates):
        fn = partial(run, num_updates=num_updates)
        for _ in range(num_batch_axes):
            fn = jax.vmap(fn)
        return fn(state)

    return batched


def evaluate(key, algo: str, config, params, env_state=None, *, num_episodes: int,
             greedy: bool = False) -> tuple[jax.Array, jax.Array]:
    """Plays ``num_episodes`` episodes (one per environment) with a trained policy.

    Observations are normalised with the training run's frozen statistics when ``env_state``
    (the training environments' state) carries them.

    Args:
      key: PRNG key (resets, actions, env steps).
      algo, config: as saved in the checkpoint.
      params: the policy's parameters (unbatched).
      env_state: ``TrainState.env.env_state`` of the run (or None: no normalisation).
      num_episodes: episodes to play.
      greedy: act with the distribution's mode instead of sampling.

    Returns:
      ``(returns, finished)``, each ``[num_episodes]``: undiscounted episode returns and
      whether the episode ended within the env's time limit (``max_steps_in_episode``).
    """
    from purejaxpo.algos.base import build_policy
    from purejaxpo.envs import NormalizeObservation, make, make_vec_env
    from purejaxpo.envs.wrappers import NormalizeObservationState
    from purejaxpo.networks import reset_memory

    del algo
    policy = build_policy(config)
    env, env_params = make(config.env)
    venv = make_vec_env(env, env_params, num_episodes)
    obs_rms = env_state.obs_rms if isinstance(env_state, NormalizeObservationState) else None
    normalizer = NormalizeObservation(venv)
    max_steps = int(getattr(env_params, "max_steps_in_episode", 1000))

    def observe(obs):
        return obs if obs_rms is None else normalizer.normalize(obs, obs_rms)

    def step(carry, step_key):
        state, obs, memory, returns, finished = carry
        k_act, k_env = jax.random.split(step_key)
        x = observe(obs)
        if policy.recurrent:
            memory = policy.step(params, memory, x)
            dist = policy.head_distribution(params, memory)
        else:
            dist = policy.distribution(params, x)
        action = dist.mode() if greedy else dist.sample(seed=k_act)
        obs, state, reward, terminated, truncated, _ = venv.step(k_env, state,
                                                                 policy.env_action(action))
        done = jnp.logical_or(terminated, truncated)
        returns = returns + jnp.where(finished, 0.0, reward)
        return (state, obs, reset_memory(memory, done), returns,
                jnp.logical_or(finished, done)), None

    k_reset, k_run = jax.random.split(key)
    obs, state = venv.reset(k_reset)
    carry = (state, obs, policy.initial_state(num_episodes), jnp.zeros(num_episodes, jnp.float32),
             jnp.zeros(num_episodes, bool))
    (_, _, _, returns, finished), _ = jax.lax.scan(step, carry, jax.random.split(k_run, max_steps))
    return returns, finished


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
