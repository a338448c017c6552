"""Training logs written from the host: one row per update (per run) as CSV or JSON lines.

Rows are written after a run, or after each checkpoint chunk (the CLI's ``--log``), never from
inside the compiled program, so logging cannot change results. Columns: ``run`` (index of the
seed, or of the run in a flattened sweep batch), ``update`` (1-based), ``env_steps`` (per run,
at the end of that update) and every metric (NaN written as empty in CSV, null in JSON).

TensorBoard is optional: :func:`write_tensorboard` uses ``tensorboardX`` if it is installed and
otherwise says so and writes nothing (purejaxpo does not depend on it).
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Iterator, Mapping

import numpy as np

FORMATS = (".csv", ".jsonl")


def check_log_path(path: str, name: str = "path") -> str:
    """Returns the format (``.csv`` or ``.jsonl``) of ``path``; ValueError naming ``name``."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{name}={path!r} is invalid: must end in .csv or .jsonl")
    return ext


def rows(metrics: Mapping[str, np.ndarray], batch_size: int, *, start: int = 0) -> Iterator[dict]:
    """One dict per (update, run) from metrics ``[*batch, num_updates]``, update-major.

    Args:
      metrics: numpy arrays, the update axis last (any leading batch axes are flattened into
        the ``run`` index).
      batch_size: env steps per update of one run (``num_envs * num_steps``).
      start: updates done before these metrics (a later chunk of a run).
    """
    names = sorted(metrics)
    if not names:
        return
    flat = {k: np.asarray(metrics[k]).reshape(-1, np.shape(metrics[k])[-1]) for k in names}
    num_runs, num_updates = flat[names[0]].shape
    for u in range(num_updates):
        update = start + u + 1
        for r in range(num_runs):
            row = {"run": r, "update": update, "env_steps": update * batch_size}
            for k in names:
                v = flat[k][r, u]
                row[k] = v.item() if hasattr(v, "item") else v
            yield row


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class LogWriter:
    """Appends rows to a ``.csv`` or ``.jsonl`` file (the header is written with the first rows).

    ``LogWriter(path).write(metrics, batch_size, start=...)`` per chunk; creating it truncates
    the file, so a resumed run first writes the restored metrics again.
    """

    def __init__(self, path: str):
        self.path = path
        self.format = check_log_path(path)
        self.columns: list[str] | None = None
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        open(path, "w").close()

    def write(self, metrics: Mapping[str, np.ndarray], batch_size: int, *, start: int = 0) -> None:
        with open(self.path, "a", newline="") as f:
            if self.format == ".jsonl":
                for row in rows(metrics, batch_size, start=start):
                    f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
                return
            writer = None
            for row in rows(metrics, batch_size, start=start):
                if writer is None:
                    if self.columns is None:
                        self.columns = list(row)
                        csv.writer(f).writerow(self.columns)
                    writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
                writer.writerow({k: ("" if _clean(v) is None else v) for k, v in row.items()})


def write_log(path: str, metrics: Mapping[str, np.ndarray], batch_size: int) -> None:
    """Writes a whole run's metrics ``[*batch, num_updates]`` to ``path`` (.csv or .jsonl)."""
    LogWriter(path).write(metrics, batch_size)


def read_log(path: str) -> list[dict]:
    """Reads a log written here back as a list of dicts (CSV values as floats, empty as NaN)."""
    if check_log_path(path) == ".jsonl":
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    with open(path, newline="") as f:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()}
                for row in csv.DictReader(f)]


def write_tensorboard(logdir: str, metrics: Mapping[str, np.ndarray], batch_size: int) -> bool:
    """Writes scalars per run to ``logdir/run_<i>`` if ``tensorboardX`` is installed.

    Returns False (and writes nothing) when it is not.
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return False
    by_run: dict[int, list[dict]] = {}
    for row in rows(metrics, batch_size):
        by_run.setdefault(row["run"], []).append(row)
    for run, run_rows in by_run.items():
        with SummaryWriter(os.path.join(logdir, f"run_{run}")) as writer:
            for row in run_rows:
                for k, v in row.items():
                    if k not in ("run", "update", "env_steps") and _clean(v) is not None:
                        writer.add_scalar(k, v, row["env_steps"])
    return True
