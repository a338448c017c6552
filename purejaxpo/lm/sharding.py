"""Training a language model larger than one device: the parameters and the optimiser state
sharded over a one-axis device mesh (fully sharded, as FSDP / ZeRO-3 keep them), with JAX's
own sharding: the arrays carry ``NamedSharding``s, and ``jit`` (GSPMD) inserts the gathers and
partitions the computation.

    mesh = fsdp_mesh()                          # every device, axis "fsdp"
    state = shard_state(program.init(key), mesh)
    run = sharded_run(program, mesh, state)     # run(state, n) keeps every leaf's sharding
    state, metrics = run(state, 100)

Each array is split along its largest dimension that the number of devices divides (the
embedding along the vocabulary, a kernel along its wider side); arrays with no such dimension
(norm scales, biases of odd widths, scalars) are replicated. Results equal a single device's up
to float rounding (tests/test_sharding.py, on 8 forced CPU devices).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "fsdp"


def fsdp_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A one-axis mesh (``"fsdp"``) over ``devices`` (default: every device)."""
    return Mesh(np.array(list(jax.devices() if devices is None else devices)), (AXIS,))


def fsdp_spec(shape: tuple[int, ...], num_devices: int, *, min_size: int = 1024
              ) -> PartitionSpec:
    """How one array is split: its largest dimension that ``num_devices`` divides, over the
    mesh axis; replicated when none does or the array has fewer than ``min_size`` elements."""
    if num_devices == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    order = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in order:
        if shape[i] % num_devices == 0:
            return PartitionSpec(*([None] * i + [AXIS]))
    return PartitionSpec()


def state_shardings(state, mesh: Mesh, *, min_size: int = 1024):
    """A ``NamedSharding`` per leaf of ``state``: :func:`fsdp_spec` for the parameters, the
    optimiser state and the reference (``params``, ``opt_state``, ``ref`` of an
    :class:`~purejaxpo.lm.common.LMState`), replicated for the rest (key, step, settings)."""
    n = mesh.devices.size

    def spread(tree):
        return jax.tree_util.tree_map(
            lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), n, min_size=min_size)), tree)

    def same(tree):
        return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, PartitionSpec()), tree)

    return state._replace(params=spread(state.params), opt_state=spread(state.opt_state),
                          key=same(state.key), step=same(state.step),
                          hyperparams=same(state.hyperparams), ref=spread(state.ref))


def shard_state(state, mesh: Mesh, *, min_size: int = 1024):
    """``state`` placed on ``mesh`` by :func:`state_shardings`."""
    return jax.device_put(state, state_shardings(state, mesh, min_size=min_size))


def sharded_run(program, mesh: Mesh, state, *, min_size: int = 1024):
    """``run(state, n) -> (state, metrics)``: ``program.run`` compiled so that the returned
    state keeps :func:`state_shardings` (the metrics replicated)."""
    shardings = state_shardings(state, mesh, min_size=min_size)
    replicated = NamedSharding(mesh, PartitionSpec())
    compiled = {}

    def run(state, num_updates: int):
        if num_updates not in compiled:
            compiled[num_updates] = jax.jit(
                lambda s: program.run(s, num_updates), in_shardings=(shardings,),
                out_shardings=(shardings, replicated))
        return compiled[num_updates](state)

    return run
