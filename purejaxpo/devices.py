"""CPU settings that make runs faster without changing what they compute: independent runs
split over devices, one JAX CPU device per core, and small loops compiled to one kernel.

Why: on a CPU, JAX makes one device for the whole machine, and a program of many small runs
(seeds, a sweep's settings) vmapped as one batch keeps only about one core busy. XLA:CPU runs a
program's kernels one after another, handing only large ones to other threads, and an RL run's
kernels are small (products of a few hundred rows by 64 columns). Measured on a 2-core CPU
(jax 0.10.2): PPO on CartPole-v1, 16 seeds vmapped, about 11.5 s on one device and 5.3 s on
two, each device running 8 of the seeds; throughput over seeds on one device stops growing at
about 16 (``experiments/results/bench_scale.md``). A single run gains nothing from devices (it
is one program on one device) and loses nothing: its large products still use every core.

So:

* :func:`use_cpu_cores` asks JAX for one CPU device per core. It must run before JAX starts its
  CPU backend (before the first array is made or function run); the ``purejaxpo train`` and
  ``purejaxpo sweep`` commands call it (``--cpu-devices``). An explicit choice
  (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or ``jax_num_cpu_devices``) is kept.
* :func:`vmap_runs` is ``jax.vmap`` over a leading run axis, split evenly over devices with
  ``jax.shard_map``: each device runs its share as one vmapped program, nothing crosses
  devices. :func:`run_devices` says which devices a number of runs is split over.
* :func:`use_fused_loops` lets XLA:CPU compile small loops (a rollout's ``scan``) into single
  kernels, which helps a single run too (``--no-fused-loops`` in the commands).

Results depend on these settings only in the last bits: XLA compiles a vmap of 8 runs and one
of 16 to different kernels, whose float rounding differs (as a vmap of 8 seeds and one of 16
already did), and a fused loop sums in another order. A run's result is a function of its key,
its config and the machine, which includes the number of devices the runs are split over and
the flags; checkpointing, chunking and resuming with the same settings keep it bitwise.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Sequence

AXIS = "runs"
"""The mesh axis name of the run axis."""


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _explicit_cpu_device_count() -> int | None:
    import jax

    value = jax.config.jax_num_cpu_devices
    if value is not None and value >= 0:
        return int(value)
    for flag in os.environ.get("XLA_FLAGS", "").split():
        if flag.startswith("--xla_force_host_platform_device_count="):
            try:
                return int(flag.split("=", 1)[1])
            except ValueError:
                return None
    return None


def use_cpu_cores(count: int | None = None, *, quiet: bool = False) -> int:
    """Asks JAX for ``count`` CPU devices (default: one per core, :func:`cpu_cores`).

    Call it before JAX starts its CPU backend, i.e. before any JAX array is made or function
    run (importing jax and purejaxpo is fine; importing gymnax or ``purejaxpo.algos`` is not:
    gymnax makes arrays when imported). With ``count=None`` an explicit earlier choice
    (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or the ``jax_num_cpu_devices``
    config) is kept, and a backend already started is left as it is, with a ``UserWarning``
    if it has fewer devices than cores (``quiet=True``: no warning).

    Returns:
      the number of CPU devices JAX has or will have.

    Raises:
      ValueError: ``count`` is not an integer >= 1.
      RuntimeError: an explicit ``count`` differs from the devices of a CPU backend that has
        already started.
    """
    import jax
    from jax._src import xla_bridge

    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or count < 1):
        raise ValueError(f"count={count!r} is invalid: must be an integer >= 1 (or None: one "
                         f"device per core)")
    if xla_bridge.backends_are_initialized():
        have = len(jax.devices("cpu"))
        if count is not None and count != have:
            raise RuntimeError(
                f"use_cpu_cores(count={count}): JAX's CPU backend has already started with "
                f"{have} device(s); call it before any JAX array is made or function run")
        if (count is None and not quiet and have < cpu_cores()
                and _explicit_cpu_device_count() is None):
            warnings.warn(
                f"use_cpu_cores() came after JAX's CPU backend started (something made an "
                f"array or ran a function, or gymnax was imported): keeping {have} device(s) "
                f"for {cpu_cores()} cores; call it first thing", UserWarning, stacklevel=2)
        return have
    if count is None:
        explicit = _explicit_cpu_device_count()
        if explicit is not None:
            return explicit
        count = cpu_cores()
    jax.config.update("jax_num_cpu_devices", count)
    return count


FUSED_LOOP_BYTES = 1 << 20
"""Loops touching fewer bytes than this are compiled into one kernel by :func:`use_fused_loops`."""

_THRESHOLD_OPTION = "xla_cpu_small_while_loop_byte_threshold"
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_VECTOR_FLAG = "--xla_cpu_prefer_vector_width"
_FUSED_LOOP_JAXLIBS = ((0, 10), (0, 11))
"""jaxlib versions (major, minor) whose XLA knows these flags (an unknown flag aborts XLA)."""


def cpu_has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this machine's CPU has AVX-512 (``avx512f`` among the ``/proc/cpuinfo`` flags;
    False where that file does not exist, as on macOS or Windows)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and "avx512f" in line.split() for line in f)
    except OSError:
        return False


def fused_loop_flags(max_bytes: int = FUSED_LOOP_BYTES,
                     wide_vectors: bool | None = None) -> list[str]:
    """The ``XLA_FLAGS`` :func:`use_fused_loops` adds (``wide_vectors``: add the 512-bit
    vector width; None: where :func:`cpu_has_avx512`)."""
    wide = cpu_has_avx512() if wide_vectors is None else wide_vectors
    return [f"--xla_backend_extra_options={_THRESHOLD_OPTION}={max_bytes}",
            f"{_YNN_FLAG}=individual_dot"] + ([f"{_VECTOR_FLAG}=512"] if wide else [])


def use_fused_loops(max_bytes: int = FUSED_LOOP_BYTES, *, quiet: bool = False) -> bool:
    """Lets XLA:CPU compile each small loop (a rollout's ``scan``) into a single kernel, and
    its own loop code use the CPU's widest vectors.

    A ``lax.scan`` on XLA:CPU normally runs as a loop of kernels dispatched one by one, and a
    CartPole rollout step is about 60 tiny kernels (0.1-1 us each, far more than the step's
    arithmetic). XLA has a pass that compiles a whole loop into one kernel instead, for loops
    touching fewer bytes than a threshold (1 kB by default) and holding no library call. This
    adds these ``XLA_FLAGS`` before JAX starts:

    * ``--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=max_bytes``;
    * ``--xla_cpu_experimental_ynn_fusion_type=individual_dot``: the YNNPACK library keeps the
      matrix products but no longer takes the reductions, which would make the rollout a loop
      with library calls (its dense layers over a few envs multiply and sum:
      :func:`purejaxpo.networks.small_rows_dot`);
    * ``--xla_cpu_prefer_vector_width=512`` where the CPU has AVX-512
      (:func:`cpu_has_avx512`): XLA's own kernels (the fused loops, elementwise work, the
      optimiser) use 512-bit vectors instead of its default 256. One PPO CartPole update took
      1.52 ms against 1.75 (2-core AMD EPYC, ``experiments/ppo_update_ab.py``, three
      interleaved processes each, medians of 20 calls). A ``--xla_cpu_prefer_vector_width`` of
      your own in ``XLA_FLAGS`` is kept.

    The flags change how programs are compiled, not what they compute, except that a
    reduction compiled by XLA instead of YNNPACK, or with other vectors, may sum in another
    order (last-bit differences). Nothing is changed if ``XLA_FLAGS`` already sets either loop
    flag (your choice wins), if the installed jaxlib is not one whose XLA is known to have
    them (an unknown flag aborts XLA), or if JAX has already started its backends (XLA reads
    the flags once; a ``UserWarning`` says so unless ``quiet``). ``purejaxpo train``,
    ``sweep`` and ``bench`` call it (``--no-fused-loops`` turns it off).

    Returns:
      True if the flags were added by this call.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes={max_bytes!r} is invalid: must be an integer >= 1")
    flags = os.environ.get("XLA_FLAGS", "")
    if _THRESHOLD_OPTION in flags or _YNN_FLAG in flags:
        return False
    keep_width = _VECTOR_FLAG in flags  # the user's vector width wins
    return _add_xla_flags(lambda: fused_loop_flags(max_bytes, False if keep_width else None),
                          "use_fused_loops() came after JAX started its backends: XLA_FLAGS "
                          "are read once, so loops stay as they were; call it first thing",
                          quiet)


def _add_xla_flags(flags: Callable[[], list[str]], late: str, quiet: bool) -> bool:
    """Appends ``flags()`` to ``XLA_FLAGS`` if the installed jaxlib's XLA is known to have them
    (:data:`_FUSED_LOOP_JAXLIBS`: an unknown flag aborts XLA) and JAX's backends have not
    started (else warns ``late`` unless ``quiet``); True if added."""
    import jaxlib
    from jax._src import xla_bridge

    parts = jaxlib.__version__.split(".")
    if tuple(int(p) for p in parts[:2] if p.isdigit()) not in _FUSED_LOOP_JAXLIBS:
        return False
    if xla_bridge.backends_are_initialized():
        if not quiet:
            warnings.warn(late, UserWarning, stacklevel=3)
        return False
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *flags()]).strip()
    return True


def use_wide_vectors(*, quiet: bool = False) -> bool:
    """Lets XLA:CPU's own kernels use 512-bit vectors on a CPU with AVX-512, alone (without
    :func:`use_fused_loops`' loop settings, which slow a transformer's sampling: the library
    then takes no elementwise work with its products).

    Adds ``--xla_cpu_prefer_vector_width=512`` to ``XLA_FLAGS`` before JAX starts, where
    :func:`cpu_has_avx512` and the installed jaxlib is one whose XLA is known to have the flag,
    unless ``XLA_FLAGS`` sets a width already (yours wins: ``=256`` is XLA's default) or JAX
    has started its backends (a ``UserWarning`` unless ``quiet``). The ``purejaxpo lm``
    commands call it. Kernels may round differently (last bits), not compute otherwise.

    Returns:
      True if the flag was added by this call.
    """
    if _VECTOR_FLAG in os.environ.get("XLA_FLAGS", "") or not cpu_has_avx512():
        return False
    return _add_xla_flags(lambda: [f"{_VECTOR_FLAG}=512"],
                          "use_wide_vectors() came after JAX started its backends: XLA_FLAGS "
                          "are read once; call it first thing", quiet)


def fused_loops_active() -> bool:
    """Whether this process's XLA compiles small loops to one kernel (:func:`use_fused_loops`'s
    threshold is in ``XLA_FLAGS``) and JAX's default backend is the CPU."""
    import jax

    return _THRESHOLD_OPTION in os.environ.get("XLA_FLAGS", "") and jax.default_backend() == "cpu"


def traced_with_runs(fn: Callable, runs: int) -> Callable:
    """``fn`` traced with :func:`purejaxpo.networks.runs_per_program` ``runs`` when loops are
    fused on a CPU (:func:`fused_loops_active`), so that a rollout over few envs and runs is
    written for one kernel; ``fn`` unchanged otherwise."""
    if not fused_loops_active():
        return fn
    from purejaxpo.networks import runs_per_program

    def traced(*args):
        with runs_per_program(runs):
            return fn(*args)

    return traced


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
    ``jax.vmap(fn)`` (traced with the run count, :func:`traced_with_runs`); on several, each
    device runs ``num_runs / d`` of the runs as one vmapped program (:func:`shard_runs`). Jit
    it (or its caller) as usual::

        use_cpu_cores()                      # first, before JAX starts: one device per core
        train = make_train(PPOConfig(env="CartPole-v1"))
        keys = jax.random.split(jax.random.PRNGKey(0), 16)
        result = jax.jit(vmap_runs(train, 16))(keys)   # 8 seeds per core on 2 cores
    """
    devices = run_devices(num_runs, devices)
    import jax

    batched = traced_with_runs(jax.vmap(fn), num_runs // len(devices))
    if len(devices) == 1:
        return batched
    return shard_runs(batched, devices)


def parse_cpu_devices(text: str) -> int | None:
    """The ``--cpu-devices`` flag: ``auto`` (None: one per core) or an integer >= 1."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--cpu-devices={text!r} is invalid: must be 'auto' or an integer >= 1")
    return value


def add_cpu_args(parser) -> None:
    """Adds ``--cpu-devices`` (read with :func:`parse_cpu_devices`) and ``--no-fused-loops``
    to an ``argparse`` parser."""
    parser.add_argument(
        "--cpu-devices", default="auto", metavar="N|auto",
        help="JAX CPU devices to split the runs over (default auto: one per core, unless "
             "XLA_FLAGS sets a count); has no effect on a GPU or TPU")
    parser.add_argument(
        "--no-fused-loops", dest="fused_loops", action="store_false",
        help="keep XLA:CPU's default of one kernel per operation inside loops (default: small "
             "loops such as a rollout compile to one kernel, see purejaxpo.devices)")
