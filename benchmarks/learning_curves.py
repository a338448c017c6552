"""Learning curves and the issue thresholds for every classic algorithm, from the presets.

Runs each (algorithm, environment) below with its CLI preset (``purejaxpo/presets.py``), all
seeds vmapped in one program, then writes

* ``benchmarks/results/learning_curves.md``: a table of final returns (mean, min, max over seeds),
  times, and pass/fail against the threshold,
* ``benchmarks/results/learning_curves.png``: return against env steps per environment, mean over
  seeds with a band from the lowest to the highest seed,
* ``benchmarks/results/learning_curves.json``: everything, with each seed's return binned to 50
  points (no per-update metrics); a later partial rerun plots the runs it keeps from these.

It exits with status 1 if any threshold is missed. Usage::

    .venv/bin/python benchmarks/learning_curves.py                      # all (~30 min, 2 CPUs)
    .venv/bin/python benchmarks/learning_curves.py --only a2c:CartPole-v1 trpo:Pendulum-v1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from purejaxpo.backends import cpu

cpu.enable(quiet=True)  # as `purejaxpo train` on a CPU; before JAX starts (gymnax starts it)

import jax  # noqa: E402
import numpy as np

from purejaxpo import checkpoint
from purejaxpo.algos import ALGORITHMS
from purejaxpo.cli.train import ProgressBar
from purejaxpo.metrics import final_return
from purejaxpo.presets import preset
from purejaxpo.settings import device_description
from purejaxpo.timing import compile_and_run

ROOT = Path(__file__).resolve().parents[1]

# (algo, env, seeds, env steps per seed, threshold, rule): "mean" compares the mean over seeds,
# "every" each seed, "below" requires the mean to stay under the threshold (a control).
RUNS = [
    ("ppo", "CartPole-v1", 16, 500_000, 475.0, "every"),
    ("a2c", "CartPole-v1", 8, 500_000, 475.0, "mean"),
    ("trpo", "CartPole-v1", 8, 500_000, 475.0, "mean"),
    ("reinforce", "CartPole-v1", 8, 1_000_000, 400.0, "mean"),
    ("grpo", "CartPole-v1", 8, 1_000_000, 450.0, "mean"),
    ("ppo", "Acrobot-v1", 8, 500_000, -100.0, "mean"),
    ("a2c", "Acrobot-v1", 8, 500_000, -100.0, "mean"),
    ("trpo", "Acrobot-v1", 8, 500_000, -100.0, "mean"),
    ("ppo", "Pendulum-v1", 8, 1_000_000, -250.0, "mean"),
    ("trpo", "Pendulum-v1", 8, 1_000_000, -300.0, "mean"),
    ("ppo_rnn", "CueRecall-v0", 8, 100_000, 0.9, "every"),
    ("ppo", "CueRecall-v0", 8, 100_000, 0.5, "below"),
]


def binned_curve(metrics, batch_size: int, bins: int = 50):
    """Per seed, the mean return of the episodes completed in each of ``bins`` equal windows.

    Returns ``(steps [bins], returns [seeds, bins])``; NaN where no episode ended in a window.
    """
    sums = np.asarray(metrics["episode_return_sum"], np.float64)
    counts = np.asarray(metrics["episode_count"], np.float64)
    n = sums.shape[-1]
    edges = np.linspace(0, n, min(bins, n) + 1).astype(int)
    s = np.stack([sums[:, a:b].sum(-1) for a, b in zip(edges[:-1], edges[1:])], -1)
    c = np.stack([counts[:, a:b].sum(-1) for a, b in zip(edges[:-1], edges[1:])], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        returns = np.where(c > 0, s / np.maximum(c, 1), np.nan)
    return edges[1:] * batch_size, returns


def greedy_returns(algo, config, params, episodes: int, seed: int = 0) -> np.ndarray:
    """Each seed's mean return over ``episodes`` evaluation episodes with the distribution's
    mode (``purejaxpo eval --greedy``), ``[seeds]``; ``params`` have a leading seed axis."""
    from purejaxpo.checkpoint import evaluate

    key = jax.random.PRNGKey(10_000 + seed)
    fn = jax.jit(jax.vmap(lambda p: evaluate(key, algo, config, p, num_episodes=episodes,
                                             greedy=True)[0]))
    return np.asarray(fn(params), np.float64).mean(-1)


def run_one(algo, env, seeds, steps, seed=0, *, eval_episodes: int = 0,
            progress: bool = False, checkpoint_dir: str | None = None,
            checkpoint_every: int | None = None):
    """One preset run of ``seeds`` seeds in one program; with ``eval_episodes``, also each
    seed's greedy evaluation return (``eval_return``; configs without normalisers only);
    ``progress``: a bar of updates on stderr (the results are the same without it).

    With ``checkpoint_dir``, the run goes in chunks of ``checkpoint_every`` updates, saved
    there after each, and continues from the latest checkpoint found there (a run stopped by
    the end of a session picks up where it was: the results are bitwise those of one
    unbroken run). ``resumed_at_update`` then says where this process began, and
    ``compile_s``, ``run_s`` and ``steps_per_s`` cover this process's updates only.
    """
    config = preset(algo, env, total_timesteps=steps)
    bar = ProgressBar(config.num_updates, f"{algo} {env}", progress)
    train = ALGORITHMS[algo][1](config, progress=bar if progress else None)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    resumed_at = 0
    try:
        if checkpoint_dir is None:
            result, compile_s, run_s = compile_and_run(jax.vmap(train), keys)
            metrics, params = result.metrics, result.params
        else:
            resumed_at = checkpoint.latest_step(checkpoint_dir) or 0
            bar.offset = resumed_at

            def on_chunk(start, stop, chunk):
                bar.offset = stop

            timings = {}
            state, metrics = checkpoint.run_seeds_with_checkpoints(
                algo, config, train, keys, seed=seed, every=checkpoint_every,
                directory=checkpoint_dir, resume=resumed_at > 0, on_chunk=on_chunk,
                timings=timings)
            params, compile_s, run_s = state.params, timings["compile_s"], timings["run_s"]
    finally:
        bar.close()
    metrics = jax.tree_util.tree_map(np.asarray, metrics)
    finals = final_return(metrics)
    x, curves = binned_curve(metrics, config.batch_size)
    extra = {}
    if eval_episodes:
        extra["eval_return"] = greedy_returns(algo, config, params, eval_episodes,
                                              seed).tolist()
    if checkpoint_dir is not None:
        extra["resumed_at_update"] = resumed_at
    return {**extra,
        "algo": algo, "env": env, "seeds": seeds, "total_timesteps": steps,
        "final_return": finals.tolist(), "mean": float(np.nanmean(finals)),
        "min": float(np.nanmin(finals)), "max": float(np.nanmax(finals)),
        "compile_s": compile_s, "run_s": run_s,
        "steps_per_s": (seeds * (config.num_updates - resumed_at) * config.batch_size / run_s
                        if run_s > 0 else float("nan")),
        "config": config.to_dict(), "curve_steps": x.tolist(), "curves": curves.tolist(),
    }


def passed(row, threshold, rule) -> bool:
    finals = np.asarray(row["final_return"], np.float64)
    if rule == "every":
        return bool(np.all(finals >= threshold))
    if rule == "below":
        return bool(np.nanmean(finals) < threshold)
    return bool(np.nanmean(finals) >= threshold)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in rows))
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for r in (r for r in rows if r["env"] == env):
            x = np.asarray(r["curve_steps"])
            y = np.asarray(r["curves"], np.float64)
            with np.errstate(all="ignore"):
                mean, lo, hi = np.nanmean(y, 0), np.nanmin(y, 0), np.nanmax(y, 0)
            line, = ax.plot(x, mean, label=f"{r['algo']} ({r['seeds']} seeds)")
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_title(env)
        ax.set_xlabel("env steps per seed")
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("purejaxpo: mean over seeds, band from lowest to highest seed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def select_runs(parser: argparse.ArgumentParser, runs, only):
    """The rows of ``runs`` (``(algo, env, ...)``) named by ``--only ALGO:ENV ...`` (all when
    None); an unknown pair is a usage error."""
    if not only:
        return runs
    wanted = set(only)
    unknown = wanted - {f"{a}:{e}" for a, e, *_ in runs}
    if unknown:
        parser.error(f"--only: unknown pairs {sorted(unknown)}")
    return [r for r in runs if f"{r[0]}:{r[1]}" in wanted]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", metavar="ALGO:ENV", help="run just these pairs")
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"),
                   help="folder of learning_curves.{md,json,png} (default: the committed "
                        "result, overwritten)")
    args = p.parse_args(argv)
    runs = select_runs(p, RUNS, args.only)

    rows, lines, ok = [], [], True
    device = device_description()
    print(f"{len(runs)} runs on {device}", flush=True)
    for algo, env, seeds, steps, threshold, rule in runs:
        row = run_one(algo, env, seeds, steps)
        row.update(threshold=threshold, rule=rule, passed=passed(row, threshold, rule))
        ok &= row["passed"]
        rows.append(row)
        sign = {"every": "every seed >=", "mean": "mean >=", "below": "mean <"}[rule]
        line = (f"| {algo} | {env} | {seeds} | {steps:,} | {row['mean']:.2f} | "
                f"{row['min']:.2f} to {row['max']:.2f} | {sign} {threshold:g} | "
                f"{'pass' if row['passed'] else 'FAIL'} | {row['compile_s']:.1f} | "
                f"{row['run_s']:.1f} |")
        lines.append(line)
        print(line, flush=True)

    out = Path(args.results_dir) / "learning_curves"
    out.parent.mkdir(parents=True, exist_ok=True)
    header = ["| algo | env | seeds | env steps per seed | mean final_return | seed range | "
              "threshold | result | compile s | run s |", "|---|---|---|---|---|---|---|---|---|---|"]
    md = [f"# Learning curves ({time.strftime('%Y-%m-%d')}, {device})", "",
          "`final_return`: mean return of the episodes completed in each seed's last 5% of env "
          "steps. Written by `benchmarks/learning_curves.py`.", "", *header, *lines, "",
          f"![learning curves]({out.name}.png)", ""]
    out.with_suffix(".md").write_text("\n".join(md))
    out.with_suffix(".json").write_text(json.dumps({"device": device, "runs": rows}))
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}.md, .json, .png; {'all thresholds met' if ok else 'SOME THRESHOLDS MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
