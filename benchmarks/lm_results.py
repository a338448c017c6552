"""The language-model results in the README, reproduced with the documented commands.

1. ``purejaxpo lm sft --task addition --stop-exact-match 0.2 --set log_every=25``: an SFT run
   stopped early (validation exact match >= 0.2), the starting policy for RL.
2. ``purejaxpo lm grpo --init SFT``: GRPO with its defaults (2000 steps).
3. The other GRPO variants (``bnpo``, ``dr_grpo``, ``dapo``, ``gspo``) from the same start,
   ``--steps 1000`` each.
4. ``purejaxpo lm dpo --init SFT --loss L`` for every preference loss with its defaults (pairs:
   the SFT policy's own wrong answers as rejected; 1000 steps).

Each step is a subprocess running the CLI exactly as a user would; the JSON it writes is kept
under ``benchmarks/results/lm/``, and this script adds ``lm_results.md`` (tables) and
``lm_grpo.png`` (reward and held-out exact match against steps).

Usage::

    .venv/bin/python benchmarks/lm_results.py                 # everything (~30 min, 2 CPUs)
    .venv/bin/python benchmarks/lm_results.py --skip-variants --skip-dpo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "lm"
RUNS = ROOT / "runs" / "lm"
GRPO_VARIANTS = ("bnpo", "dr_grpo", "dapo", "gspo")
DPO_LOSSES = ("rpo", "sigmoid", "ipo", "hinge", "robust", "kto", "orpo", "simpo")


def cli(*args: str) -> dict:
    json_path = OUT / f"{args[0]}{'_' + args[args.index('--loss') + 1] if '--loss' in args else ''}.json"
    return run_cli(json_path, *args)


def run_cli(json_path: Path, *args: str) -> dict:
    """``purejaxpo lm ARGS --json JSON_PATH`` in a subprocess, as a user runs it; the JSON it
    wrote, with the wall time (``wall_s``) added."""
    cmd = [sys.executable, "-m", "purejaxpo", "lm", *args, "--json", str(json_path), "--no-progress"]
    print("$ purejaxpo lm " + " ".join(args), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    data = json.loads(json_path.read_text())
    data["wall_s"] = time.perf_counter() - start
    json_path.write_text(json.dumps(data, indent=1))
    return data


def plot(sft: dict, grpo: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = grpo["curve"][1:]
    steps = [r["step"] for r in rows]
    ax = axes[0]
    ax.plot(steps, [r["reward"] for r in rows], label="total reward (correct + 0.5 digits)")
    ax.plot(steps, [r["reward/correct"] for r in rows], label="reward: correct (sampled, T=1)")
    ax.plot(steps, [r["reward/digits"] for r in rows], label="reward: digits")
    ax.set_xlabel("GRPO step")
    ax.set_title("GRPO training reward (mean per 100 steps)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot([r["step"] for r in grpo["curve"]], [r["heldout_exact_match"] for r in grpo["curve"]],
            marker="o", ms=3, label="GRPO")
    ax.axhline(sft["exact_match_after"], color="gray", ls="--", label="SFT start")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("greedy exact match, 512 held-out prompts")
    ax.set_ylim(0, 1)
    ax.set_title("3-digit addition: held-out exact match")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--skip-variants", action="store_true")
    p.add_argument("--skip-dpo", action="store_true")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sft_dir, grpo_dir = RUNS / "sft", RUNS / "grpo"

    sft = cli("sft", "--task", "addition", "--stop-exact-match", "0.2", "--set", "log_every=25",
              "--out", str(sft_dir))
    grpo = cli("grpo", "--task", "addition", "--init", str(sft_dir), "--out", str(grpo_dir))
    plot(sft, grpo, OUT / "lm_grpo.png")

    lines = ["# Language-model results (3-digit addition)", "",
             f"Machine: {grpo['device']}. Greedy exact match on the task's 512 held-out prompts.",
             "", "| run | steps | exact match before | after | run s | tokens/s |",
             "|---|---:|---:|---:|---:|---:|"]

    def row(name, d):
        lines.append(f"| {name} | {d['steps']} | {d['exact_match_before']:.3f} | "
                     f"{d['exact_match_after']:.3f} | {d['run_s']:.1f} | {d['tokens_per_s']:,.0f} |")

    row("SFT (stopped at validation exact match >= 0.2)", sft)
    row("GRPO (defaults)", grpo)
    if not args.skip_variants:
        for loss in GRPO_VARIANTS:
            row(f"GRPO --loss {loss}", cli("grpo", "--task", "addition", "--init", str(sft_dir),
                                           "--loss", loss, "--steps", "1000"))
    if not args.skip_dpo:
        lines += ["", "## Preference losses (same SFT start, same pairs, 1000 steps of 64 pairs)",
                  "", "| loss | beta | pref. accuracy before | after | exact match before | after "
                  "| chosen log-prob change | rejected log-prob change | run s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for loss in DPO_LOSSES:
            d = cli("dpo", "--task", "addition", "--init", str(sft_dir), "--loss", loss)
            lines.append(
                f"| {loss} | {d['config']['beta']} | {d['pref_accuracy_before']:.3f} | "
                f"{d['pref_accuracy']:.3f} | {d['exact_match_before']:.3f} | "
                f"{d['exact_match_after']:.3f} | {d['chosen_logp_delta']:+.2f} | "
                f"{d['rejected_logp_delta']:+.2f} | {d['run_s']:.1f} |")
    (OUT / "lm_results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
