"""Checkpoints on disk with orbax: save a state as one step, list the steps, load one back.

A step holds three items:

* ``state``: every leaf of the (possibly vmapped) state under its tree path
  (:func:`~purejaxpo.checkpoint.formats.flatten_state`);
* ``history``: the metrics of every update so far (``[..., updates_done]``);
* ``meta``: JSON with the on-disk ``format``, the algorithm name, ``config.to_dict()``, the
  batch shape and the step (:func:`~purejaxpo.checkpoint.formats.describe`).

orbax writes each step to a temporary directory and renames it when complete (an atomic rename
on a local file system), so a process killed mid-save leaves at most an unfinished temporary
directory, which is never listed as a step: the latest complete checkpoint is what loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import jax
import numpy as np

from purejaxpo.algos import config_from_dict, make_program
from purejaxpo.checkpoint.formats import (
    FORMAT,
    POSITIONAL_FORMAT,
    batched,
    flatten_state,
    format_of,
    leaf_paths,
    positional_name,
    restore_state,
)


def write_json_atomic(path: str, data: Mapping[str, Any]) -> None:
    """Writes ``data`` as JSON to ``path`` through a temporary file and a rename, so a reader
    never sees half a file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def open_manager(directory: str, *, max_to_keep: int | None = 2, read_only: bool = False):
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
    with open_manager(directory, read_only=True) as manager:
        return manager.latest_step()


def all_steps(directory: str) -> list[int]:
    """Every complete checkpoint step in ``directory``, ascending."""
    if not os.path.isdir(directory):
        return []
    with open_manager(directory, read_only=True) as manager:
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


def restore(manager, step: int):
    """``(state, history, meta)`` of checkpoint ``step``, each array where it was saved.

    A checkpoint written with its arrays over other devices than this process has (e.g. by
    ``purejaxpo train`` with its seeds split over 2 CPU devices, resumed in a process with one:
    :mod:`purejaxpo.devices`) is restored onto this process's first device instead.
    """
    import orbax.checkpoint as ocp

    def restore_with(state_args, history_args):
        out = manager.restore(step, args=ocp.args.Composite(
            state=state_args, history=history_args, meta=ocp.args.JsonRestore()))
        return out["state"], out["history"], out["meta"]

    try:
        return restore_with(ocp.args.StandardRestore(), ocp.args.StandardRestore())
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

    return restore_with(on_this_device("state"), on_this_device("history"))


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
    with open_manager(directory, read_only=True) as manager:
        if step is None:
            step = manager.latest_step()
        if step is None or step not in manager.all_steps():
            raise FileNotFoundError(
                f"no complete checkpoint{'' if step is None else f' at step {step}'} in {directory!r}")
        flat, metrics, meta = restore(manager, step)
    algo = meta["algo"]
    config = config_from_dict(algo, meta["config"])
    program = make_program(algo, config)
    abstract = jax.eval_shape(program.init, jax.random.PRNGKey(0))
    fmt = format_of(meta, flat)
    batch_shape = meta.get("batch_shape")
    if batch_shape is None:  # not recorded: the extra leading axes of the first leaf
        path, want = leaf_paths(abstract)[0]
        saved = flat.get(positional_name(0) if fmt == POSITIONAL_FORMAT else path)
        shape = np.shape(saved) if saved is not None else ()
        batch_shape = shape[:max(0, len(shape) - len(want.shape))]
    state = restore_state(batched(abstract, batch_shape), flat, fmt,
                          where=f"the checkpoint at step {step} in {directory!r}")
    metrics = {k: np.asarray(v) for k, v in metrics.items()}
    return Checkpoint(algo, config, state, metrics, meta, int(step))
