"""Running a program with checkpoints: updates in chunks, a save after each, exact resume.

A run is split into ``init(key, hyperparams) -> TrainState`` and ``run(state, num_updates) ->
(state, metrics)`` (:class:`~purejaxpo.algos.base.Program`; every ``make_train`` result carries
them as ``train.init`` / ``train.run``). :func:`run_with_checkpoints` runs the updates in chunks
and saves after each chunk (:mod:`purejaxpo.checkpoint.store`), with ``config.json`` at the top
of the directory holding the run's static description.

Resuming is bitwise exact: ``run`` is the same compiled chunk whether or not the process was
restarted in between, and the PRNG key and update index are part of the state. The saved state
is checked against the tree that ``init`` builds (traced abstractly with ``jax.eval_shape``)
before it is used (:func:`~purejaxpo.checkpoint.formats.restore_state`).
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Any, Callable, Mapping

import jax
import numpy as np

from purejaxpo.checkpoint.formats import CONFIG_FILE, describe, format_of, mismatch, restore_state
from purejaxpo.checkpoint.store import open_manager, restore, save, write_json_atomic
from purejaxpo.devices import run_devices, vmap_runs


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
        manager = open_manager(directory, max_to_keep=max_to_keep)
    try:
        return _run_chunks(init_fn, run_fn, total_updates, every, manager, directory, resume,
                           meta, on_chunk, on_state, {} if timings is None else timings)
    finally:
        if manager is not None:
            manager.close()


def _run_chunks(init_fn, run_fn, total_updates, every, manager, directory, resume, meta,
                on_chunk, on_state, timings):
    metrics: dict[str, np.ndarray] | None = None
    latest = manager.latest_step() if manager is not None else None
    if latest is not None and not resume:
        raise ValueError(f"directory={directory!r} already holds checkpoints (latest step "
                         f"{latest}): pass resume=True to continue, or use a new directory")
    if latest is not None:
        flat, saved_metrics, saved_meta = restore(manager, latest)
        problem = mismatch(saved_meta, meta)
        if problem:
            raise ValueError(f"resume=True: the checkpoint in {directory!r} is of another run "
                             f"({problem})")
        state = restore_state(jax.eval_shape(init_fn), flat, format_of(saved_meta, flat),
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
        write_json_atomic(os.path.join(directory, CONFIG_FILE), meta)

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
