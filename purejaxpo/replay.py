"""The replay buffer of the off-policy algorithms: flashbax's item buffer, as pure state.

A run's buffer is part of its :class:`~purejaxpo.algos.base.TrainState` (so checkpoints save
it and a resumed run samples exactly what the uninterrupted one would). It is flashbax's
(InstaDeep's JAX replay library) item buffer: circular (the oldest transitions are
overwritten), uniform sampling with replacement over the transitions stored so far, pure
``init``/``add``/``sample`` functions that work under ``jax.vmap`` over seeds (one buffer per
run, tested in ``tests/test_replay.py``).

Each stored item is one :class:`Stored` transition; ``next_obs`` is the true next
observation (for a truncated episode, the one the time limit cut, not the reset one), and
both episode-end flags are kept, so the Bellman target can bootstrap through truncations
(:func:`purejaxpo.td.bellman_target`).

Memory: ``buffer_size x (2 x obs_size + action_size + 1) x 4 + 2 x buffer_size`` bytes per
run (float32 observations, actions and rewards, two bool flags), times the number of runs
that share a device (:func:`buffer_bytes`). :func:`check_fits` refuses, before anything
compiles, a configuration whose buffers would not fit the memory the device reports.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import flashbax as fbx
import jax
import jax.numpy as jnp


class Stored(NamedTuple):
    """One transition as the buffer keeps it (``[N, ...]`` when a batch).

    Attributes:
      obs: observation the action was taken in.
      action: the action, in the actor's ``[-1, 1]`` units for continuous actions.
      reward: the step's reward.
      next_obs: the true next observation (before any automatic reset).
      terminated: the episode ended for real (no bootstrap).
      truncated: a time limit cut the episode (bootstrap from ``next_obs``).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    truncated: jax.Array


def example(obs_shape: tuple[int, ...], action_shape: tuple[int, ...],
            action_dtype=jnp.float32) -> Stored:
    """A zero transition of the stored shapes (what the buffer is initialised from)."""
    obs = jnp.zeros(obs_shape, jnp.float32)
    false = jnp.zeros((), bool)
    return Stored(obs, jnp.zeros(action_shape, action_dtype), jnp.zeros((), jnp.float32), obs,
                  false, false)


def make_buffer(buffer_size: int, sample_size: int):
    """flashbax's item buffer of ``buffer_size`` transitions, sampling ``sample_size`` at a time
    and taking transitions in batches ``[N, ...]`` (``add``)."""
    return fbx.make_item_buffer(max_length=buffer_size, min_length=1,
                                sample_batch_size=sample_size, add_batches=True)


def transition_bytes(obs_size: int, action_size: int) -> int:
    """Bytes of one stored transition (float32 obs twice, action, reward; two bools)."""
    return 4 * (2 * obs_size + action_size + 1) + 2


def buffer_bytes(buffer_size: int, obs_size: int, action_size: int, runs: int = 1) -> int:
    """Bytes of ``runs`` buffers of ``buffer_size`` transitions."""
    return runs * buffer_size * transition_bytes(obs_size, action_size)


def device_memory(device=None) -> int | None:
    """Bytes of memory ``device`` reports (its ``bytes_limit``), or the host's RAM for a CPU
    device that reports none; None when neither is known."""
    device = device or jax.devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001  (backends without memory statistics)
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if device.platform == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return None


MEMORY_FRACTION = 0.8
"""The share of a device's memory the replay buffers may take (the rest: networks, XLA)."""


def check_fits(buffer_size: int, obs_size: int, action_size: int, runs: int,
               device=None) -> None:
    """Raises ``ValueError`` if ``runs`` buffers would not fit in the device's memory.

    The limit is :data:`MEMORY_FRACTION` of :func:`device_memory`; nothing is checked when the
    device reports no memory.
    """
    limit = device_memory(device)
    if limit is None:
        return
    need = buffer_bytes(buffer_size, obs_size, action_size, runs)
    if need > MEMORY_FRACTION * limit:
        per_run = transition_bytes(obs_size, action_size)
        fit = max(0, int(MEMORY_FRACTION * limit // (per_run * runs)))
        raise ValueError(
            f"buffer_size={buffer_size} is invalid: {runs} run(s) of {buffer_size:,} "
            f"transitions x {per_run} bytes need {need / 2**30:.1f} GiB, more than "
            f"{MEMORY_FRACTION:.0%} of the {limit / 2**30:.1f} GiB the device reports; use "
            f"buffer_size <= {fit:,}, fewer runs at a time (sweep chunk_size), or more devices")


def obs_size(obs_shape: tuple[int, ...]) -> int:
    return int(math.prod(obs_shape))


def add_rollout(buffer, state, traj: Any) -> Any:
    """Adds a rollout's ``[T, B]`` transitions (a :class:`~purejaxpo.rollout.Transition`) to
    the buffer state, time step by time step."""
    flat = lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])  # noqa: E731
    items = Stored(traj.obs, traj.action, traj.reward, traj.final_obs, traj.terminated,
                   traj.truncated)
    return buffer.add(state, jax.tree_util.tree_map(flat, items))
