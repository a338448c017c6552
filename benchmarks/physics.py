"""PPO on physics control (brax, MuJoCo Playground) from the presets, on this machine.

Runs each (algorithm, environment) of :data:`RUNS` with its preset (``purejaxpo/presets.py``,
its own ``total_timesteps``), all seeds vmapped in one program, and writes to
``benchmarks/results/`` (overwriting the current result; git keeps the earlier ones):

* ``physics.md``: final return per run (mean and range over seeds), compile and run time and
  env steps per second (all seeds together) on this machine, and the threshold where there is
  one;
* ``physics.png``: return against env steps, one panel per environment (mean over seeds, band
  from the lowest to the highest seed);
* ``physics.json``: everything, configs and each seed's return binned to 50 points included
  (no per-update metrics); ``--only`` plots the runs it keeps from these.

It needs the extras (``pip install -e ".[dev,playground]"`` has both); a run whose package is
missing is skipped with a note. Exits with status 1 if a threshold is missed. Usage::

    .venv/bin/python benchmarks/physics.py                          # about 25 min on 2 cores
    .venv/bin/python benchmarks/physics.py --only ppo:brax:ant     # redo one; keeps the rest
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from purejaxpo.backends import cpu

cpu.enable(quiet=True)  # as `purejaxpo train` on a CPU; before JAX starts

import numpy as np  # noqa: E402

from _bench_common import cpu_description
from learning_curves import passed, run_one, select_runs
from purejaxpo.envs import physics
from purejaxpo.presets import preset
from purejaxpo.settings import device_description

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# (algo, env, seeds, threshold or None, rule): as in learning_curves.py; None only records.
RUNS = [
    ("ppo", "brax:inverted_pendulum", 4, 950.0, "mean"),
    ("ppo", "brax:inverted_double_pendulum", 2, None, "mean"),
    ("ppo", "brax:ant", 2, None, "mean"),
    ("ppo", "playground:CartpoleBalance", 2, None, "mean"),
]


def plot(rows, path: Path) -> None:
    """One panel per run: mean return over seeds (a bin without a finished episode in some seed
    is left out, and the line joins the bins around it; 1000-step episodes that all end
    together leave many such bins), band from the lowest to the highest seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False)
    for ax, r in zip(axes[0], rows):
        x = np.asarray(r["curve_steps"], np.float64)
        y = np.asarray(r["curves"], np.float64)
        keep = np.isfinite(y).all(0)
        mean, lo, hi = y[:, keep].mean(0), y[:, keep].min(0), y[:, keep].max(0)
        line, = ax.plot(x[keep], mean, marker=".", label=f"{r['algo']} ({r['seeds']} seeds)")
        ax.fill_between(x[keep], lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_title(r["env"])
        ax.set_xlabel("env steps per seed")
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("purejaxpo PPO from the presets: mean over seeds, band from lowest to highest seed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table_line(row) -> str:
    """One markdown row of the results table."""
    threshold = row["threshold"]
    result = ("-" if threshold is None else
              f"mean >= {threshold:g}: {'pass' if row['passed'] else 'FAIL'}")
    return (f"| {row['algo']} | {row['env']} | {row['seeds']} | {row['total_timesteps']:,} | "
            f"{row['first_return']:.1f} | {row['mean']:.1f} | {row['min']:.1f} to "
            f"{row['max']:.1f} | {result} | {row['compile_s']:.1f} | {row['run_s']:.1f} | "
            f"{row['steps_per_s']:,.0f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", metavar="ALGO:ENV", help="run just these pairs")
    p.add_argument("--results-dir", default=str(RESULTS),
                   help="folder of physics.{md,json,png} (default: the committed result, "
                        "overwritten)")
    args = p.parse_args(argv)
    runs = select_runs(p, RUNS, args.only)

    machine = f"{cpu_description()}; {device_description()}"
    print(f"{len(runs)} runs on {machine}", flush=True)
    rows, lines, notes, ok = [], [], [], True
    for algo, env, seeds, threshold, rule in runs:
        kind = physics.family(env)
        if kind is not None and not physics.is_installed(kind):
            notes.append(f"- skipped {algo} on {env}: {physics.INSTALL[kind]}")
            print(notes[-1], flush=True)
            continue
        steps = preset(algo, env).total_timesteps
        row = run_one(algo, env, seeds, steps)
        curves = np.asarray(row["curves"], np.float64)
        with np.errstate(all="ignore"):
            first = np.nanmean(curves[:, : max(1, curves.shape[1] // 10)])
        row.update(first_return=float(first), threshold=threshold, rule=rule,
                   passed=None if threshold is None else passed(row, threshold, rule))
        ok &= row["passed"] is not False
        rows.append(row)
        line = table_line(row)
        lines.append(line)
        print(line, flush=True)

    out = Path(args.results_dir) / "physics"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.only and out.with_suffix(".json").exists():  # keep the runs not redone
        done = {(r["algo"], r["env"]) for r in rows}
        kept = [r for r in json.loads(out.with_suffix(".json").read_text())["runs"]
                if (r["algo"], r["env"]) not in done]
        order = {(a, e): i for i, (a, e, *_) in enumerate(RUNS)}
        rows = sorted(kept + rows, key=lambda r: order.get((r["algo"], r["env"]), len(RUNS)))
        lines = [table_line(r) for r in rows]
    header = ["| algo | env | seeds | env steps per seed | return, first 10% | mean final_return "
              "| seed range | threshold | compile s | run s | env steps/s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    md = [f"# PPO on physics control ({time.strftime('%Y-%m-%d')})", "",
          f"Machine: {machine}.", "",
          "`final_return`: mean return of the episodes completed in each seed's last 5% of env "
          "steps; `return, first 10%`: the same over the first tenth of the run (all seeds). "
          "env steps/s: all seeds together, training included (rollout and updates), over the "
          "run time. Written by `benchmarks/physics.py`.", "", *header, *lines, "", *notes, "",
          f"![learning curves]({out.name}.png)", ""]
    out.with_suffix(".md").write_text("\n".join(md))
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "runs": rows}))
    if rows:
        plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}.md, .json, .png; {'thresholds met' if ok else 'A THRESHOLD WAS MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
