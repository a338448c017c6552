"""Checkpoints: save a training run every N updates, resume it exactly, load a trained policy.

A run is split into ``init(key, hyperparams) -> TrainState`` and ``run(state, num_updates) ->
(state, metrics)`` (:class:`~purejaxpo.algos.base.Program`; every ``make_train`` result carries
them as ``train.init`` / ``train.run``). :func:`run_with_checkpoints` runs the updates in chunks
and, after each chunk, saves with orbax:

* ``state``: every leaf of the (possibly vmapped) :class:`~purejaxpo.algos.base.TrainState`:
  parameters, optimiser state, environment state with its normaliser statistics, PRNG key,
  update index and hyperparameters. Each leaf is stored under its tree path
  (:func:`leaf_path`: ``params/actor/params/Dense_0/kernel``, ``opt_state/1/0/mu/actor/...``,
  ``env/env_state/obs_rms/mean``, ``key``, ...), so any optax or env state round-trips.
* ``history``: the metrics of every update so far (``[..., updates_done]``).
* ``meta``: JSON with the on-disk ``format``, the algorithm name, ``config.to_dict()``, the
  batch shape and the step.

``config.json`` at the top of the directory holds the same static description, so
:func:`load` rebuilds the policy from the directory alone.

Restoring (:func:`load`, and resuming in :func:`run_with_checkpoints`) checks every saved leaf
against the tree that ``init`` builds for the config (traced abstractly with
``jax.eval_shape``): the same paths, and at each path the same shape and dtype. A checkpoint
written for another config or by another version of the code is refused with a ``ValueError``
naming the first leaf that does not fit; it is never put into the wrong slots.

On-disk formats (``meta["format"]``, :data:`FORMAT`):

* 2 (written now): leaves keyed by tree path.
* 1 (read only): leaves keyed by position (``leaf_00000``, ...) in the order of
  ``jax.tree_util.tree_leaves``. Read by position, with the same count, shape and dtype check;
  an error names the leaf's index and the path expected there.

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
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo.devices import run_devices, vmap_runs

CONFIG_FILE = "config.json"
FORMAT = 2
"""The on-disk format written: 2 keys each state leaf by its tree path; 1 (read only) by position."""
POSITIONAL_FORMAT = 1


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


def _key_name(entry) -> str:
    """One step of a tree path as text: a dict key, a field name or a sequence index."""
    tu = jax.tree_util
    if isinstance(entry, tu.DictKey):
        return str(entry.key)
    if isinstance(entry, tu.GetAttrKey):
        return entry.name
    if isinstance(entry, tu.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, tu.FlattenedIndexKey):
        return str(entry.key)
    raise TypeError(f"unsupported pytree key {entry!r} ({type(entry).__name__})")


def leaf_path(path) -> str:
    """The name a leaf is stored under: its ``tree_flatten_with_path`` keys joined by ``/``.

    ``DictKey`` gives the key, ``GetAttrKey`` (NamedTuple and dataclass fields) the name,
    ``SequenceKey`` the index: e.g. ``opt_state/1/0/mu/actor/params/Dense_0/kernel``.
    """
    return "/".join(_key_name(entry) for entry in path)


def leaf_paths(tree) -> list[tuple[str, Any]]:
    """``(path, leaf)`` for every leaf of ``tree``, in ``tree_leaves`` order."""
    return [(leaf_path(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def flatten_state(tree) -> dict[str, Any]:
    """``{path: leaf}`` for every leaf of ``tree`` (what a checkpoint stores; format 2)."""
    flat: dict[str, Any] = {}
    for path, leaf in leaf_paths(tree):
        if path in flat:
            raise ValueError(f"two leaves of the state have the same path {path!r}")
        flat[path] = leaf
    return flat


def _positional_name(index: int) -> str:
    return f"leaf_{index:05d}"


def _is_positional(flat: Mapping[str, Any]) -> bool:
    return bool(flat) and all(
        k.startswith("leaf_") and k[5:].isdigit() and len(k) == 10 for k in flat)


def _spec(x) -> str:
    return f"shape {tuple(np.shape(x))} dtype {np.dtype(x.dtype).name}"


def _fits(got, want) -> bool:
    return (tuple(np.shape(got)) == tuple(want.shape)
            and np.dtype(got.dtype) == np.dtype(want.dtype))


RENAMED = (("actor/params/MLP_0/", "actor/params/"),)
"""Parameter paths that changed, ``(old, new)`` path fragments: a Gaussian actor's layers were
nested in an ``MLP_0`` module before policies were built from parts (the values are the same
layers; format 1 checkpoints, by position, were not affected)."""


def _renamed(flat: Mapping[str, Any], wanted) -> dict[str, Any]:
    """``flat`` with each saved path that the run does not have, but has under its new name
    (:data:`RENAMED`), moved there."""
    out = dict(flat)
    for path in list(out):
        if path in wanted:
            continue
        new = path
        for old_part, new_part in RENAMED:
            new = new.replace(old_part, new_part)
        if new != path and new in wanted and new not in out:
            out[new] = out.pop(path)
    return out


def restore_state(abstract, flat: Mapping[str, Any], fmt: int = FORMAT, *, where: str = "the checkpoint"):
    """The state tree of ``abstract`` filled from a checkpoint's leaves, after checking them.

    Args:
      abstract: the tree the run expects (``jax.eval_shape`` of its ``init``): structure,
        shapes and dtypes.
      flat: the saved leaves, ``{path: array}`` (format 2) or ``{"leaf_00000": array, ...}``
        (format 1).
      fmt: the checkpoint's format (``meta["format"]``).
      where: how error messages name the checkpoint.

    Raises:
      ValueError: a saved leaf is missing, unexpected, or of another shape or dtype than the
        run's; the message names the first such leaf (its path, or for format 1 its index and
        the path expected there) and both shapes and dtypes.
    """
    expected = leaf_paths(abstract)
    treedef = jax.tree_util.tree_structure(abstract)
    if fmt > FORMAT:
        raise ValueError(f"{where} has format {fmt}, newer than this version of purejaxpo "
                         f"reads (format <= {FORMAT})")
    if fmt == POSITIONAL_FORMAT:
        if flat and not _is_positional(flat):
            raise ValueError(f"{where} says format 1 but its leaves are not named leaf_00000, ...")
        if len(flat) != len(expected):
            raise ValueError(f"{where} does not fit this run: it holds {len(flat)} leaves "
                             f"(format 1, stored by position), the run's state has "
                             f"{len(expected)}")
        leaves = []
        for i, (path, want) in enumerate(expected):
            got = flat.get(_positional_name(i))
            if got is None:
                raise ValueError(f"{where} does not fit this run: leaf {i} "
                                 f"({_positional_name(i)}, expected path {path!r}) is missing")
            if not _fits(got, want):
                raise ValueError(f"{where} does not fit this run: leaf {i} (format 1, stored by "
                                 f"position; the run expects path {path!r} there) has "
                                 f"{_spec(got)} in the checkpoint, the run expects {_spec(want)}")
            leaves.append(jnp.asarray(got))
        return jax.tree_util.tree_unflatten(treedef, leaves)

    wanted = {path for path, _ in expected}
    flat = _renamed(flat, wanted)
    problems = []
    for path, want in expected:
        if path not in flat:
            problems.append(f"leaf {path!r} ({_spec(want)}) is missing from the checkpoint")
        elif not _fits(flat[path], want):
            problems.append(f"leaf {path!r} has {_spec(flat[path])} in the checkpoint, the run "
                            f"expects {_spec(want)}")
    for path in sorted(set(flat) - wanted):
        problems.append(f"the checkpoint has an unexpected leaf {path!r} ({_spec(flat[path])}) "
                        f"that the run's state does not have")
    if problems:
        more = f" (and {len(problems) - 1} more mismatching leaves)" if len(problems) > 1 else ""
        raise ValueError(f"{where} does not fit this run: {problems[0]}{more}")
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(flat[path]) for path, _ in expected])


def _batched(abstract, batch_shape):
    """``abstract`` with ``batch_shape`` leading axes on every leaf."""
    batch_shape = tuple(batch_shape)
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct((*batch_shape, *x.shape), x.dtype), abstract)


def _format_of(meta: Mapping[str, Any], flat: Mapping[str, Any]) -> int:
    fmt = meta.get("format")
    if fmt is None:  # a caller's meta without describe(): tell by the names
        return POSITIONAL_FORMAT if _is_positional(flat) else FORMAT
    return int(fmt)


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
    """Saves ``state`` (any pytree), the metrics so far and ``meta`` as checkpoint ``step``.

    The state's leaves are stored under their tree paths (:func:`flatten_state`); the saved
    meta gets ``format`` (:data:`FORMAT`) and ``step``.
    """
    import orbax.checkpoint as ocp

    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(flatten_state(state)),
        history=ocp.args.StandardSave({k: np.asarray(v) for k, v in metrics.items()}),
        meta=ocp.args.JsonSave({**meta, "format": FORMAT, "step": int(step)}),
    ))
    manager.wait_until_finished()


def _restore(manager, step: int):
    """``(state, history, meta)`` of checkpoint ``step``, each array where it was saved.

    A checkpoint written with its arrays over other devices than this process has (e.g. by
    ``purejaxpo train`` with its seeds split over 2 CPU devices, resumed in a process with one:
    :mod:`purejaxpo.devices`) is restored onto this process's first device instead.
    """
    import orbax.checkpoint as ocp

    def restore(state_args, history_args):
        out = manager.restore(step, args=ocp.args.Composite(
            state=state_args, history=history_args, meta=ocp.args.JsonRestore()))
        return out["state"], out["history"], out["meta"]

    try:
        return restore(ocp.args.StandardRestore(), ocp.args.StandardRestore())
    except ValueError as err:
        if "topology" not in str(err).lower():
            raise
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def on_this_device(item: str):
        path = os.path.join(str(manager.directory), str(step), item)
        metadata = ocp.StandardCheckpointHandler().metadata(Path(path))
        return ocp.args.StandardRestore(jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here), dict(metadata),
            is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype")))

    return restore(on_this_device("state"), on_this_device("history"))


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

    The tree structure comes from the saved config (``init`` traced abstractly, nothing run,
    with the saved ``batch_shape`` as leading axes); every saved leaf is checked against it
    (see :func:`restore_state`).

    Raises:
      FileNotFoundError: the directory has no complete checkpoint (at ``step``).
      ValueError: the saved state does not fit the tree that the saved config builds with this
        version of the code (names the first leaf that does not fit).
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
    abstract = jax.eval_shape(program.init, jax.random.PRNGKey(0))
    fmt = _format_of(meta, flat)
    batch_shape = meta.get("batch_shape")
    if batch_shape is None:  # not recorded: the extra leading axes of the first leaf
        path, want = leaf_paths(abstract)[0]
        saved = flat.get(_positional_name(0) if fmt == POSITIONAL_FORMAT else path)
        shape = np.shape(saved) if saved is not None else ()
        batch_shape = shape[:max(0, len(shape) - len(want.shape))]
    state = restore_state(_batched(abstract, batch_shape), flat, fmt,
                          where=f"the checkpoint at step {step} in {directory!r}")
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
    on_state: Callable[[int, Any], bool | None] | None = None,
    timings: dict[str, float] | None = None,
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
        must match ``meta`` (same algorithm and config), and its state must fit the tree
        ``init_fn`` builds (every leaf's path, shape and dtype: see :func:`restore_state`).
        Without it, ``directory`` must not already hold checkpoints.
      meta: JSON-ready description saved with each checkpoint (see :func:`describe`); also
        written to ``directory/config.json``.
      on_chunk: host callback ``(start, stop, chunk_metrics)`` after each chunk (and after
        its checkpoint), e.g. to append log rows; on resume it is first called with the
        restored metrics ``(0, step, metrics)``.
      max_to_keep: checkpoints kept (oldest deleted); None keeps all.
      on_state: host callback ``(updates_done, state)`` after each chunk (after its
        checkpoint and ``on_chunk``), e.g. a held-out evaluation of the parameters; returning
        True ends the run there (early stopping: the returned metrics then stop at that
        chunk).
      timings: a dict to fill with ``compile_s`` (each chunk length is compiled ahead of its
        first run) and ``run_s`` (running chunks, compilation, saving and callbacks excluded).

    Returns:
      ``(state, metrics)``: final state and numpy metrics ``[*batch, total_updates]``.

    Raises:
      ValueError: naming the argument (``every=``, ``directory=``, ``resume=True``): an
        invalid ``every``, ``resume`` without a directory, a directory that already holds
        checkpoints without ``resume``, or a checkpoint of another run on resume.
    """
    if every is None:
        every = total_updates
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r} is invalid: must be an integer >= 1")
    if resume and directory is None:
        raise ValueError("resume=True needs a checkpoint directory (directory=None)")
    meta = dict(meta or {})
    manager = None
    if directory is not None:
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(f"directory={directory!r} is invalid: not a directory")
        manager = _manager(directory, max_to_keep=max_to_keep)
    try:
        return _run_chunks(init_fn, run_fn, total_updates, every, manager, directory, resume,
                           meta, on_chunk, on_state, {} if timings is None else timings)
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
                on_chunk, on_state, timings):
    metrics: dict[str, np.ndarray] | None = None
    latest = manager.latest_step() if manager is not None else None
    if latest is not None and not resume:
        raise ValueError(f"directory={directory!r} already holds checkpoints (latest step "
                         f"{latest}): pass resume=True to continue, or use a new directory")
    if latest is not None:
        flat, saved_metrics, saved_meta = _restore(manager, latest)
        problem = _mismatch(saved_meta, meta)
        if problem:
            raise ValueError(f"resume=True: the checkpoint in {directory!r} is of another run "
                             f"({problem})")
        state = restore_state(jax.eval_shape(init_fn), flat, _format_of(saved_meta, flat),
                              where=f"resume=True: the checkpoint at step {latest} in "
                                    f"{directory!r}")
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
    timings.update(compile_s=0.0, run_s=0.0)
    while done < total_updates:
        n = min(every, total_updates - done)
        if n not in compiled:
            start_s = time.perf_counter()
            compiled[n] = jax.jit(partial(run_fn, num_updates=n)).lower(state).compile()
            timings["compile_s"] += time.perf_counter() - start_s
        start_s = time.perf_counter()
        state, chunk = jax.block_until_ready(compiled[n](state))
        timings["run_s"] += time.perf_counter() - start_s
        chunk = {k: np.asarray(v) for k, v in chunk.items()}
        metrics = chunk if metrics is None else {
            k: np.concatenate([metrics[k], chunk[k]], axis=-1) for k in chunk}
        start, done = done, done + n
        if manager is not None:
            save(manager, done, state, metrics, meta)
        if on_chunk is not None:
            on_chunk(start, done, chunk)
        if on_state is not None and on_state(done, state):
            break
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


def run_seeds_with_checkpoints(algo: str, config, train, keys, *, seed: int, every=None,
                               directory: str | None = None, resume: bool = False,
                               on_chunk=None, timings: dict[str, float] | None = None):
    """:func:`run_with_checkpoints` for ``train`` vmapped over seeds, as ``train --seeds``.

    The seeds are split over devices as ``train --seeds`` splits them
    (:func:`purejaxpo.devices.vmap_runs`), so a checkpointed run gives the same results.

    ``keys`` ``[seeds, 2]`` are the seeds' keys, split from ``PRNGKey(seed)``; the checkpoint's
    metadata records the algorithm, config, seed count and ``seed``, so a resume with any
    other checks fails. Returns ``(state, metrics)`` like :func:`run_with_checkpoints`.
    """
    seeds = len(keys)

    def run_fn(state, num_updates):
        return vmap_runs(partial(train.run, num_updates=num_updates), seeds)(state)

    return run_with_checkpoints(
        lambda: vmap_runs(train.init, seeds)(keys), run_fn, config.num_updates,
        every=every, directory=directory, resume=resume, on_chunk=on_chunk, timings=timings,
        meta=describe(algo, config, batch_shape=[seeds], seeds=seeds, seed=seed,
                      split_over_devices=len(run_devices(seeds))))


def evaluation_env(config, num_episodes: int, env_state=None):
    """The training stack of ``config`` (``make_vec_env``) for ``num_episodes`` environments.

    Its normalisers (if ``config`` has any) use the statistics of ``env_state``, the training
    environments' state, frozen (see ``Wrapper.freeze``), wherever they sit in the stack.

    Raises:
      ValueError: ``config`` normalises observations or rewards and ``env_state`` is None.
    """
    from purejaxpo.envs import make, make_vec_env

    env, env_params = make(config.env)
    normalize_obs = bool(getattr(config, "normalize_obs", False))
    normalize_reward = bool(getattr(config, "normalize_reward", False))
    venv = make_vec_env(env, env_params, num_episodes, normalize_obs=normalize_obs,
                        normalize_reward=normalize_reward, gamma=getattr(config, "gamma", 0.99))
    if env_state is None:
        if normalize_obs or normalize_reward:
            raise ValueError("the config normalises observations or rewards: evaluating needs the "
                             "training run's env_state for its normaliser statistics")
        return venv, env_params
    return venv.freeze(env_state), env_params


def _first_episodes(traj):
    """``(returns, finished)`` ``[B]`` of each environment's first episode in a rollout.

    The return is the raw undiscounted one (``EpisodeStatistics``, below any reward
    normalisation); an episode still running at the end counts every step's reward.
    """
    done = traj.episode_done
    finished = jnp.any(done, axis=0)
    first = jnp.argmax(done, axis=0)  # the first done step (0 if none)
    at_first = jnp.take_along_axis(traj.episode_return, first[None], axis=0)[0]
    return jnp.where(finished, at_first, traj.episode_return[-1]), finished


def evaluate(key, algo: str, config, params, env_state=None, *, num_episodes: int,
             greedy: bool = False) -> tuple[jax.Array, jax.Array]:
    """Plays ``num_episodes`` episodes (one per environment) with a trained policy.

    The environments are the training stack (``make_vec_env`` with the config's normalisers)
    with the training run's normaliser statistics frozen (:func:`evaluation_env`), and the
    policy runs through the training rollout (:func:`purejaxpo.rollout.collect`) for the env's
    time limit; greedily it acts with its distribution's mode (:class:`~purejaxpo.rollout.Greedy`).

    Args:
      key: PRNG key (resets, actions, env steps).
      algo, config: as saved in the checkpoint.
      params: the policy's parameters (unbatched).
      env_state: ``TrainState.env.env_state`` of the run (its normaliser statistics; any
        number of environments). None is allowed only for a config without normalisers.
      num_episodes: episodes to play.
      greedy: act with the distribution's mode instead of sampling.

    Returns:
      ``(returns, finished)``, each ``[num_episodes]``: undiscounted episode returns in the
      task's reward units, and whether the episode ended within the env's time limit
      (``max_steps_in_episode``); an unfinished episode's return sums every step played.
    """
    from purejaxpo.algos.base import build_policy
    from purejaxpo.rollout import EnvCarry, Greedy, collect

    del algo
    policy = build_policy(config)
    venv, env_params = evaluation_env(config, num_episodes, env_state)
    max_steps = int(getattr(env_params, "max_steps_in_episode", 1000))
    k_reset, k_run = jax.random.split(key)
    obs, state = venv.reset(k_reset)
    carry = EnvCarry(state, obs, policy.initial_state(num_episodes))
    _, traj = collect(k_run, venv, Greedy(policy) if greedy else policy, params, carry, max_steps)
    return _first_episodes(traj)


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
