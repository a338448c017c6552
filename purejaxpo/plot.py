"""Figures from result JSON files (matplotlib, Agg backend: no display needed).

* A train result (``purejaxpo train --json``: ``curves.episode_return`` ``[seeds][updates]`` and
  ``config``): learning curves, the mean over seeds with a 95% confidence band (normal
  approximation, ``1.96 * std / sqrt(n)``), against env steps. Several files are drawn on one
  set of axes.
* A sweep result (``purejaxpo sweep --json``: ``runs`` with each swept setting and
  ``final_return``): with two swept settings a heatmap of the mean final return over seeds;
  with one, final return against it (every seed and the mean); with more, parallel coordinates
  coloured by final return.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

_RUN_KEYS = {"config", "seed", "final_return", "compilation", "run"}


def kind(data: Mapping[str, Any]) -> str:
    """``"train"`` or ``"sweep"``; ValueError for anything else."""
    if "runs" in data:
        return "sweep"
    if "curves" in data and "episode_return" in data["curves"]:
        return "train"
    raise ValueError("RESULTS is invalid: expected a train JSON (curves.episode_return) or a "
                     "sweep JSON (runs)")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _as_float(rows) -> np.ndarray:
    return np.array([[math.nan if v is None else float(v) for v in row] for row in rows],
                    dtype=np.float64)


def mean_and_ci(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds ``[seeds, T] -> [T]`` and the 95% half-width (NaNs ignored)."""
    n = np.sum(np.isfinite(curves), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        mean = np.nanmean(curves, axis=0)
        std = np.nanstd(curves, axis=0, ddof=1) if curves.shape[0] > 1 else np.zeros_like(mean)
        half = np.where(n > 1, 1.96 * std / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, half


class _quiet:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def plot_train(results: Sequence[Mapping[str, Any]], out: str, *, labels=None) -> None:
    """Learning curves of one or more train JSONs (see the module docstring) to ``out``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, data in enumerate(results):
        curves = _as_float(data["curves"]["episode_return"])
        cfg = data.get("config", {})
        per_update = int(cfg.get("num_envs", 1)) * int(cfg.get("num_steps", 1))
        steps = np.arange(1, curves.shape[1] + 1) * per_update
        mean, half = mean_and_ci(curves)
        label = labels[i] if labels else (
            f"{data.get('algo', '?')} {data.get('env', '')} ({curves.shape[0]} seeds)")
        line, = ax.plot(steps, mean, label=label, lw=1.5)
        ax.fill_between(steps, mean - half, mean + half, color=line.get_color(), alpha=0.25,
                        lw=0)
    ax.set_xlabel("env steps (per seed)")
    ax.set_ylabel("episode return")
    ax.set_title("mean over seeds, 95% confidence band")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(fig, out)


def swept_names(data: Mapping[str, Any]) -> list[str]:
    """The swept settings of a sweep JSON (``swept``, or the numeric columns of ``runs``)."""
    if data.get("swept"):
        return list(data["swept"])
    names = []
    for k, v in data["runs"][0].items():
        if k not in _RUN_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool):
            names.append(k)
    return names


def _log_scale(values: np.ndarray) -> bool:
    v = values[np.isfinite(values)]
    return v.size > 1 and np.all(v > 0) and v.max() / v.min() >= 20


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def plot_sweep(data: Mapping[str, Any], out: str) -> None:
    """Final return against the swept settings of a sweep JSON (see the module docstring)."""
    names = swept_names(data)
    if not names:
        raise ValueError("RESULTS is invalid: the sweep JSON has no swept settings")
    runs = data["runs"]
    final = np.array([math.nan if r.get("final_return") is None else float(r["final_return"])
                      for r in runs])
    values = {n: np.array([math.nan if r.get(n) is None else float(r[n]) for r in runs])
              for n in names}
    plt = _pyplot()
    title = f"{data.get('algo', '')} {data.get('env', '')}: final return".strip()
    if len(names) == 2:
        a, b = names
        xs, ys = np.unique(values[a]), np.unique(values[b])
        grid = np.full((len(ys), len(xs)), math.nan)
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                sel = (values[a] == x) & (values[b] == y) & np.isfinite(final)
                if sel.any():
                    grid[i, j] = final[sel].mean()
        fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 3, 0.8 * len(ys) + 2.5))
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(xs)), [_fmt(x) for x in xs])
        ax.set_yticks(range(len(ys)), [_fmt(y) for y in ys])
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        for i in range(len(ys)):
            for j in range(len(xs)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                            color="w")
        fig.colorbar(im, ax=ax, label="mean final return over seeds")
        ax.set_title(title)
    elif len(names) == 1:
        (a,) = names
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter(values[a], final, s=12, alpha=0.5, label="each seed")
        xs = np.unique(values[a][np.isfinite(values[a])])
        with _quiet():
            means = [np.nanmean(np.where(values[a] == x, final, np.nan)) for x in xs]
        ax.plot(xs, means, "o-", color="C1", label="mean over seeds")
        if _log_scale(values[a]):
            ax.set_xscale("log")
        ax.set_xlabel(a)
        ax.set_ylabel("final return")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_title(title)
    else:  # parallel coordinates, each axis scaled to [0, 1] (log where values span decades)
        fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 4.5))
        scaled = []
        for n in names:
            v = values[n]
            if _log_scale(v):
                v = np.log10(v)
            lo, hi = np.nanmin(v), np.nanmax(v)
            scaled.append((v - lo) / (hi - lo) if hi > lo else np.full_like(v, 0.5))
        scaled = np.stack(scaled, axis=1)
        finite = final[np.isfinite(final)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        cmap = plt.get_cmap("viridis")
        norm = plt.Normalize(lo, hi if hi > lo else lo + 1)
        for row, f in zip(scaled, final):
            color = cmap(norm(f)) if np.isfinite(f) else (0.7, 0.7, 0.7, 0.5)
            ax.plot(range(len(names)), row, color=color, alpha=0.7, lw=1)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_yticks([0, 1], ["min", "max"])
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label="final return")
        ax.set_title(title)
    _save(fig, out)


def _save(fig, out: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_files(paths: Sequence[str], out: str) -> str:
    """Reads result JSON files and draws them to ``out``; returns the kind drawn.

    Several train files are overlaid; a sweep file must come alone.
    """
    datas = []
    for p in paths:
        with open(p) as f:
            datas.append(json.load(f))
    kinds = {kind(d) for d in datas}
    if kinds == {"train"}:
        plot_train(datas, out)
        return "train"
    if len(datas) != 1:
        raise ValueError("RESULTS is invalid: give one sweep JSON, or one or more train JSONs")
    plot_sweep(datas[0], out)
    return "sweep"
