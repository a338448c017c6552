"""SAC and TD3 on Pendulum-v1 (and SAC on brax's inverted pendulum) from their presets.

Each (algorithm, environment) runs all its seeds in one program (``jit(vmap(train))``), then
plays each seed's policy greedily (the mean action: ``purejaxpo eval --greedy``). Written:

* ``benchmarks/results/offpolicy.md``: mean final return (episodes completed in the last 5% of env
  steps) and its range over seeds, the greedy evaluation return, compile and run time, the anchors;
* ``benchmarks/results/offpolicy.png``: return against env steps, mean over seeds with the range as
  a band;
* ``benchmarks/results/offpolicy.json``: everything, with each seed's return binned to 50 points
  (no per-update metrics); a later partial rerun plots the runs it keeps from these.

Anchors (RL Zoo, Stable-Baselines3, Pendulum-v1 at 2e4 env steps): SAC -157 +/- 89, TD3 -152.
brax's inverted pendulum needs ``pip install "purejaxpo[brax]"`` (skipped without it).
Usage::

    .venv/bin/python benchmarks/offpolicy.py
    .venv/bin/python benchmarks/offpolicy.py --only sac:Pendulum-v1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning_curves import passed, plot, run_one, select_runs  # noqa: E402

from _bench_common import cpu_description  # noqa: E402
from learning_curves import device_description  # noqa: E402

from purejaxpo.envs import physics  # noqa: E402
from purejaxpo.presets import preset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EVAL_EPISODES = 10

# (algo, env, seeds, threshold on the mean final return, rule); steps from the preset.
RUNS = [
    ("sac", "Pendulum-v1", 8, -200.0, "mean"),
    ("td3", "Pendulum-v1", 8, -200.0, "mean"),
    ("sac", "brax:inverted_pendulum", 4, 900.0, "mean"),
]
ANCHORS = {("sac", "Pendulum-v1"): "-157 +/- 89", ("td3", "Pendulum-v1"): "-152"}


def line(r) -> str:
    ev = r["eval_return"]
    return (f"| {r['algo']} | {r['env']} | {r['seeds']} | {r['total_timesteps']:,} | "
            f"{r['mean']:.1f} | {r['min']:.1f} to {r['max']:.1f} | "
            f"{sum(ev) / len(ev):.1f} | {ANCHORS.get((r['algo'], r['env']), '-')} | "
            f"mean >= {r['threshold']:g}: {'pass' if r['passed'] else 'FAIL'} | "
            f"{r['compile_s']:.1f} | {r['run_s']:.1f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", metavar="ALGO:ENV", help="run just these pairs")
    p.add_argument("--results-dir", default=str(RESULTS),
                   help="folder of offpolicy.{md,json,png} (default: the committed result, "
                        "overwritten)")
    args = p.parse_args(argv)
    runs = select_runs(p, RUNS, args.only)
    machine = f"{cpu_description()}; {device_description()}"
    out = Path(args.results_dir) / "offpolicy"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, notes = [], []
    if args.only and out.with_suffix(".json").exists():  # keep the runs not redone
        redo = {(a, e) for a, e, *_ in runs}
        rows = [r for r in json.loads(out.with_suffix(".json").read_text())["runs"]
                if (r["algo"], r["env"]) not in redo]
    for algo, env, seeds, threshold, rule in runs:
        kind = physics.family(env)
        if kind is not None and not physics.is_installed(kind):
            notes.append(f"- skipped {algo} on {env}: {physics.INSTALL[kind]}")
            continue
        steps = preset(algo, env).total_timesteps
        print(f"{algo} on {env}: {seeds} seeds x {steps:,} steps", flush=True)
        row = run_one(algo, env, seeds, steps, eval_episodes=EVAL_EPISODES)
        row.update(threshold=threshold, passed=passed(row, threshold, rule))
        rows.append(row)
        print(line(row), flush=True)
    order = {(a, e): i for i, (a, e, *_) in enumerate(RUNS)}
    rows.sort(key=lambda r: order.get((r["algo"], r["env"]), len(RUNS)))
    md = [f"# SAC and TD3 ({time.strftime('%Y-%m-%d')})", "", f"Machine: {machine}.", "",
          "`final_return`: mean return of the episodes completed in each seed's last 5% of env "
          f"steps; greedy: each seed's mean over {EVAL_EPISODES} episodes with the mean action, "
          "then the mean over seeds. All seeds of a row run in one program. Written by "
          "`benchmarks/offpolicy.py`.", "",
          "| algo | env | seeds | env steps per seed | mean final_return | seed range | "
          "greedy return | RL Zoo | threshold | compile s | run s |",
          "|---|---|---|---|---|---|---|---|---|---|---|", *(line(r) for r in rows), "",
          *notes, "", f"![learning curves]({out.name}.png)", ""]
    out.with_suffix(".md").write_text("\n".join(md))
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "runs": rows}))
    if rows:
        plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}.md")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
