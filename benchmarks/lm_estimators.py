"""Advantage estimators for language-model RL, side by side: GRPO, Dr. GRPO, RLOO, REINFORCE++
and PPO with a value head, on 3-digit addition from the same early-stopped SFT policy, at an
equal number of generated completions (128 per step: GRPO-family 16 prompts x 8, PPO 32 x 4).

Each run is the CLI exactly as a user would type it (a subprocess writing ``--json``):

* SFT: ``purejaxpo lm sft --task addition --stop-exact-match 0.2 --set log_every=25`` (skipped
  when ``runs/lm/sft`` already holds a policy; ``--fresh-sft`` redoes it);
* ``purejaxpo lm grpo --init SFT --steps N`` with ``--estimator grpo`` (default),
  ``--loss dr_grpo``, ``--estimator rloo``, ``--estimator reinforce_pp``;
* ``purejaxpo lm ppo --init SFT --steps N`` (and with ``--set critic=shared``: the value head
  on the policy's trunk).

Writes ``benchmarks/results/lm/<name>.{md,json,png}`` (``--name``, default ``estimators``: one
current result per comparison, which a rerun overwrites) and each run's JSON as
``<name>_<estimator>.json``: held-out greedy exact match (512
prompts) before and after, the gain in points, run and wall time, and exact match against
generated completions and against run time in one plot.

Usage::

    .venv/bin/python benchmarks/lm_estimators.py               # 1000 steps each (~20 min, 2 CPUs)
    .venv/bin/python benchmarks/lm_estimators.py --steps 3000 --only rloo reinforce_pp \
        --name estimators_3000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lm_results import OUT, RUNS, run_cli  # noqa: E402  (the same subprocess runner)
COMPLETIONS_PER_STEP = 128

# name -> (command, extra flags)
RUNS_TABLE = {
    "grpo": ("grpo", []),
    "dr_grpo": ("grpo", ["--loss", "dr_grpo"]),
    "rloo": ("grpo", ["--estimator", "rloo"]),
    "reinforce_pp": ("grpo", ["--estimator", "reinforce_pp"]),
    "ppo": ("ppo", []),
    "ppo_shared": ("ppo", ["--set", "critic=shared"]),
}


def cli(path_name: str, *args: str) -> dict:
    return run_cli(OUT / f"{path_name}.json", *args)


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, d in results.items():
        steps = [r["step"] for r in d["curve"]]
        em = [r["heldout_exact_match"] for r in d["curve"]]
        axes[0].plot([s * COMPLETIONS_PER_STEP for s in steps], em, marker="o", ms=3, label=name)
        # Run time at each evaluation, assuming steps at an even pace (run_s covers them all).
        per_step = d["run_s"] / max(d["steps"], 1)
        axes[1].plot([s * per_step for s in steps], em, marker="o", ms=3, label=name)
    axes[0].set_xlabel("generated completions")
    axes[1].set_xlabel("run time, s (compilation and evaluation excluded)")
    for ax in axes:
        ax.set_ylabel("greedy exact match, 512 held-out prompts")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    axes[0].set_title("3-digit addition from one early-stopped SFT policy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000, help="RL steps per estimator")
    p.add_argument("--only", nargs="*", choices=list(RUNS_TABLE), default=list(RUNS_TABLE))
    p.add_argument("--fresh-sft", action="store_true", help="redo the SFT run")
    p.add_argument("--name", default="estimators",
                   help="output name: <name>.md/.json/.png and <name>_<estimator>.json")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sft_dir = RUNS / "sft"
    if args.fresh_sft or not (sft_dir / "policy.json").exists():
        cli(f"{args.name}_sft", "sft", "--task", "addition", "--stop-exact-match", "0.2",
            "--set", "log_every=25", "--out", str(sft_dir))
    results = {}
    for name in args.only:
        command, flags = RUNS_TABLE[name]
        results[name] = cli(f"{args.name}_{name}", command, "--task", "addition",
                            "--init", str(sft_dir), "--steps", str(args.steps), *flags)
    device = next(iter(results.values()))["device"]
    lines = [f"# Advantage estimators on 3-digit addition ({time.strftime('%Y-%m-%d')}, {device})",
             "", f"From one early-stopped SFT policy, {args.steps} steps of "
             f"{COMPLETIONS_PER_STEP} generated completions each; greedy exact match on the "
             "task's 512 held-out prompts. Written by `benchmarks/lm_estimators.py`.", "",
             "| estimator | command | exact match before | after | gain (points) | run s | "
             "wall s | completion tokens/s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, d in results.items():
        command, flags = RUNS_TABLE[name]
        gain = 100 * (d["exact_match_after"] - d["exact_match_before"])
        lines.append(f"| {name} | `lm {command} {' '.join(flags)}`".rstrip() +
                     f" | {d['exact_match_before']:.3f} | {d['exact_match_after']:.3f} | "
                     f"{gain:+.1f} | {d['run_s']:.0f} | {d['wall_s']:.0f} | "
                     f"{d['tokens_per_s']:,.0f} |")
    lines += ["", f"![estimators]({args.name}.png)", ""]
    (OUT / f"{args.name}.md").write_text("\n".join(lines))
    (OUT / f"{args.name}.json").write_text(json.dumps(
        {"steps": args.steps, "runs": {k: {"exact_match_before": d["exact_match_before"],
                                           "exact_match_after": d["exact_match_after"],
                                           "run_s": d["run_s"], "wall_s": d["wall_s"],
                                           "curve": d["curve"]} for k, d in results.items()}},
        indent=1))
    plot(results, OUT / f"{args.name}.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
