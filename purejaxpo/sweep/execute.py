"""Running the groups of a sweep plan: the run axis vmapped, chunked and sharded over devices,
and the per-run outputs assembled into a :class:`~purejaxpo.sweep.results.SweepResult`.

Shared by the environment algorithms' sweeps (:mod:`purejaxpo.sweep.program`) and the
language-model trainers' (:mod:`purejaxpo.sweep.lm`).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxpo import backends
from purejaxpo.devices import AXIS as _AXIS
from purejaxpo.devices import shard_runs
from purejaxpo.sweep.plan import SweepPlan
from purejaxpo.sweep.results import SweepResult


def make_program(run: Callable, mesh: Mesh, chunk_size: int | None) -> Callable:
    """``program(keys [R, 2], hps {name: [R]}) -> outputs [R, ...]``, sharded over ``mesh``.

    Each device gets ``R / num_devices`` runs (``R`` must be a multiple) and runs them
    ``chunk_size`` at a time (``jax.lax.map`` over ``jax.vmap``; ``chunk_size`` must divide the
    per-device count), or all at once when ``chunk_size`` is None.
    """

    trace_runs = backends.active().trace_runs  # the backend's hook (identity by default)

    def local(keys, hps):
        if chunk_size is None or chunk_size >= keys.shape[0]:
            return trace_runs(jax.vmap(run), keys.shape[0])(keys, hps)
        return trace_runs(
            lambda k, h: jax.lax.map(lambda xs: run(*xs), (k, h), batch_size=chunk_size),
            chunk_size)(keys, hps)

    return shard_runs(local, mesh.devices.flat)


def _global_array(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _to_host(tree) -> Any:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def process0_log(log: Callable[[str], None] | None) -> Callable[[str], None]:
    """``log`` on process 0 of a multi-host run, silence elsewhere (and for ``log=None``)."""
    return log if (log is not None and jax.process_index() == 0) else (lambda _: None)


def check_positive_ints(**values) -> None:
    """ValueError naming the first value that is neither None nor an integer >= 1."""
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{name}={value!r} is invalid: must be an integer >= 1")


def run_groups(plan: SweepPlan, make_run: Callable, *, chunk_size: int | None,
               devices: Sequence[Any] | None, log: Callable[[str], None] | None,
               describe: Callable[[Any], str]):
    """Compiles and runs each group of ``plan`` (configurations with equal static settings):
    ``make_run(config) -> run(key, hp) -> outputs`` is vmapped over the group's runs, sharded
    over ``devices`` and chunked (:func:`make_program`).

    Returns:
      ``(groups, compile_s, run_s, num_devices)``: per group, ``(runs, outputs)`` with
      ``runs`` the ``(configuration, seed)`` of each output row (padding dropped) and the
      outputs on the host (NumPy, ``[len(runs), ...]``).
    """
    check_positive_ints(chunk_size=chunk_size)
    devices = list(jax.devices() if devices is None else devices)
    mesh = Mesh(np.array(devices), (_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(_AXIS))
    num_devices = len(devices)
    say = process0_log(log)
    say(plan.describe() + f", {num_devices} device(s), {jax.process_count()} process(es)")

    for indices in plan.groups:  # replay buffers (SAC, TD3) must fit: refuse before compiling
        check_memory = getattr(plan.configs[indices[0]], "check_memory", None)
        if check_memory is not None:
            at_once = -(-len(indices) * plan.seeds // num_devices)
            check_memory(at_once if chunk_size is None else min(chunk_size, at_once), devices[0])
    compile_s = run_s = 0.0
    groups = []
    for g, indices in enumerate(plan.groups):
        config = plan.configs[indices[0]]
        runs = [(c, s) for c in indices for s in range(plan.seeds)]
        per_device = -(-len(runs) // num_devices)
        chunk = None if chunk_size is None else min(chunk_size, per_device)
        if chunk is not None:
            per_device = -(-per_device // chunk) * chunk
        padded = runs + [runs[0]] * (per_device * num_devices - len(runs))
        keys = np.stack([plan.seed_keys[s] for _, s in padded])
        hps = [plan.configs[c].hyperparams() for c, _ in padded]
        hps = {k: np.stack([np.asarray(h[k], np.float32) for h in hps]) for k in hps[0]}
        say(f"  compilation {g + 1}/{plan.num_compilations}: {len(indices)} configuration(s), "
            f"{len(runs)} runs (+{len(padded) - len(runs)} padding), {describe(config)}")

        program = make_program(make_run(config), mesh, chunk)
        args = (_global_array(keys, sharding),
                {k: _global_array(v, sharding) for k, v in hps.items()})
        start = time.perf_counter()
        compiled = jax.jit(program).lower(*args).compile()
        compile_s += time.perf_counter() - start
        start = time.perf_counter()
        out = _to_host(jax.block_until_ready(compiled(*args)))
        run_s += time.perf_counter() - start
        groups.append((runs, jax.tree_util.tree_map(lambda x: x[:len(runs)], out)))
    return groups, compile_s, run_s, num_devices


def assemble_result(plan: SweepPlan, per_run: Sequence[Mapping[str, Any]], *, score: str,
                    curve: str, compile_s: float, run_s: float, num_devices: int,
                    unit: str = "env steps") -> SweepResult:
    """The :class:`SweepResult` of ``per_run`` (one dict per run, configuration-major, with
    ``metrics`` ``{name: [W]}``, ``final`` (the score), ``steps`` ``[W]``, ``group`` and
    ``diverged_at`` (-1: none)): the table, and every metric NaN-padded to the longest run."""
    import pandas as pd

    width = max(len(r["steps"]) for r in per_run)

    def pad(x):
        return np.concatenate([x, np.full(width - len(x), np.nan)])

    names = list(per_run[0]["metrics"])
    metrics = {k: np.stack([pad(r["metrics"][k]) for r in per_run]) for k in names}
    rows = []
    for c, ov in enumerate(plan.overrides):
        for s in range(plan.seeds):
            r = per_run[c * plan.seeds + s]
            at = r["diverged_at"]
            rows.append({"config": c, **{n: ov[n] for n in plan.swept}, "seed": s,
                         score: r["final"], "compilation": r["group"],
                         "diverged_at_update": at + 1 if at >= 0 else None})
    table = pd.DataFrame(rows, columns=["config", *plan.swept, "seed", score,
                                        "compilation", "diverged_at_update"])
    table["diverged_at_update"] = table["diverged_at_update"].astype("Int64")
    return SweepResult(
        table=table, curves=metrics[curve], metrics=metrics,
        env_steps=np.stack([pad(r["steps"]) for r in per_run]), plan=plan,
        compile_s=compile_s, run_s=run_s, num_compilations=plan.num_compilations,
        device_count=num_devices, process_count=jax.process_count(), score=score, unit=unit)


def warn_diverged(result: SweepResult, say: Callable[[str], None]) -> None:
    """Says how many runs diverged, if any."""
    table = result.table
    diverged = table[table["diverged_at_update"].notna()]
    if len(diverged):
        say(f"warning: {len(diverged)} of {len(table)} run(s) diverged (non-finite loss or "
            f"parameters); their {result.score} is NaN (column diverged_at_update)")
