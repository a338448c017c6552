"""Checkpoints: save a training run every N updates, resume it exactly, load a trained policy.

* :mod:`~purejaxpo.checkpoint.store`: orbax I/O: :func:`save`, :func:`load` (a
  :class:`Checkpoint` rebuilt from the directory alone), :func:`latest_step`, :func:`all_steps`.
* :mod:`~purejaxpo.checkpoint.formats`: what is on disk: leaves by tree path
  (:func:`flatten_state`, :func:`leaf_path`), the metadata (:func:`describe`), the checks and
  migrations of :func:`restore_state` (format 1 by position, renamed paths).
* :mod:`~purejaxpo.checkpoint.runs`: :func:`run_with_checkpoints` runs a program's updates in
  chunks with a save after each and resumes bitwise exactly; :func:`run_seeds_with_checkpoints`
  does it for seeds split over devices as ``train --seeds`` does; :func:`batched_run`.
* :mod:`~purejaxpo.checkpoint.evaluation`: :func:`evaluate` a policy in its training
  environment stack with the normalisers frozen; :func:`evaluate_checkpoint` every run of one.

The algorithms by name (``config_from_dict``, ``make_program``) are :mod:`purejaxpo.algos`'s.
"""

from purejaxpo.checkpoint.evaluation import evaluate, evaluate_checkpoint, evaluation_env
from purejaxpo.checkpoint.formats import (
    CONFIG_FILE,
    FORMAT,
    POSITIONAL_FORMAT,
    RENAMED,
    describe,
    flatten_state,
    leaf_path,
    leaf_paths,
    restore_state,
)
from purejaxpo.checkpoint.runs import batched_run, run_seeds_with_checkpoints, run_with_checkpoints
from purejaxpo.checkpoint.store import Checkpoint, all_steps, latest_step, load, save

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "POSITIONAL_FORMAT",
    "RENAMED",
    "Checkpoint",
    "all_steps",
    "batched_run",
    "describe",
    "evaluate",
    "evaluate_checkpoint",
    "evaluation_env",
    "flatten_state",
    "latest_step",
    "leaf_path",
    "leaf_paths",
    "load",
    "restore_state",
    "run_seeds_with_checkpoints",
    "run_with_checkpoints",
    "save",
]
