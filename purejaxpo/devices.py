"""Independent runs (seeds, a sweep's settings) split over devices.

:func:`vmap_runs` is ``jax.vmap`` over a leading run axis, split evenly over devices with
``jax.shard_map``: each device runs its share as one vmapped program, nothing crosses devices.
:func:`run_devices` says which devices a number of runs is split over. On several GPUs this is
data parallelism over runs; on a CPU, where JAX makes one device for the whole machine, the
CPU backend asks for one device per core (:func:`purejaxpo.backends.cpu.use_cpu_cores`), and
the same split keeps every core busy (PPO on CartPole-v1, 16 seeds, 2-core CPU: about 11.5 s
on one device, 5.3 s on two).

A run's result is a function of its key, its config and the machine, which includes the number
of devices the runs are split over: XLA compiles a vmap of 8 runs and one of 16 to different
kernels, whose float rounding differs in the last bits. Checkpointing, chunking and resuming
with the same devices keep it bitwise.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from purejaxpo import backends

AXIS = "runs"
"""The mesh axis name of the run axis."""


def run_devices(num_runs: int, devices: Sequence[Any] | None = None) -> list:
    """The devices ``num_runs`` independent runs are split over by :func:`vmap_runs`: the
    first ``d`` of ``devices`` (default ``jax.local_devices()``), ``d`` the most that divides
    ``num_runs`` evenly (16 runs on 3 devices: 2; 7 runs: 1)."""
    import jax

    if isinstance(num_runs, bool) or not isinstance(num_runs, int) or num_runs < 1:
        raise ValueError(f"num_runs={num_runs!r} is invalid: must be an integer >= 1")
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices=[] is invalid: must hold at least one device")
    count = max(d for d in range(1, len(devices) + 1) if num_runs % d == 0)
    return devices[:count]


def shard_runs(fn: Callable, devices: Sequence[Any]) -> Callable:
    """``fn`` (whose arguments and outputs all have a leading run axis) run with that axis split
    evenly over ``devices`` by ``jax.shard_map``: each device calls ``fn`` on its share."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.array(list(devices)), (AXIS,))
    # check_vma=False: the algorithms' scans start carries from constants (no per-device
    # variance annotations), and every run is independent, so nothing crosses devices.
    return jax.shard_map(fn, mesh=mesh, in_specs=PartitionSpec(AXIS),
                         out_specs=PartitionSpec(AXIS), check_vma=False)


def vmap_runs(fn: Callable, num_runs: int, devices: Sequence[Any] | None = None) -> Callable:
    """``jax.vmap(fn)`` over ``num_runs`` runs, split evenly over devices (:func:`run_devices`).

    Every positional argument of the returned function (each leaf of it) has the leading run
    axis ``[num_runs, ...]``, and so do the outputs. On one device it is exactly
    ``jax.vmap(fn)`` (traced through the active backend's ``trace_runs`` hook, told how many
    runs one program holds: :mod:`purejaxpo.backends`); on several, each device runs
    ``num_runs / d`` of the runs as one vmapped program (:func:`shard_runs`). Jit it (or its
    caller) as usual::

        cpu.enable()   # on a CPU, first thing: one JAX device per core (purejaxpo.backends.cpu)
        train = make_train(PPOConfig(env="CartPole-v1"))
        keys = jax.random.split(jax.random.PRNGKey(0), 16)
        result = jax.jit(vmap_runs(train, 16))(keys)   # 8 seeds per core on 2 cores
    """
    devices = run_devices(num_runs, devices)
    import jax

    batched = backends.active().trace_runs(jax.vmap(fn), num_runs // len(devices))
    if len(devices) == 1:
        return batched
    return shard_runs(batched, devices)


