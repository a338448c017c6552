"""Tool use learned by RL: GRPO with the calculator available against the same GRPO without it,
on 3-digit x 2-digit multiplication, from one SFT policy trained mostly on direct answers.

1. ``purejaxpo lm sft --task multiply --task-arg tool_traces=0.1 --tools calculator --steps S``:
   90% of the SFT answers are direct (``4 5 6 * 7 8 = 3 5 5 6 8 <eos>``), 10% a trace with a
   calculator call; the policy learns the format and that a call exists, not to rely on it.
2. ``purejaxpo lm grpo --init SFT --tools calculator --steps N``: the calculator runs inside
   the compiled sampling loop; rewards correct=1, digits=0.5 on the final answer.
3. ``purejaxpo lm grpo --init SFT --tools none --steps N``: the same budget, no tool.

Writes ``benchmarks/results/lm/tools.{md,json,png}``: held-out greedy exact match (512
prompts, with the tool where the run has it) before and after, the gain in points, and curves
of exact match and calls per completion against GRPO steps.

Usage::

    .venv/bin/python benchmarks/lm_tools.py                 # ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/lm_tools.py --sft-steps 200 --steps 100   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lm_results import OUT, RUNS, run_cli  # noqa: E402  (the same subprocess runner)


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, data in runs.items():
        axes[0].plot([r["step"] for r in data["curve"]],
                     [r["heldout_exact_match"] for r in data["curve"]], marker="o", ms=3,
                     label=name)
    axes[0].set_xlabel("GRPO step")
    axes[0].set_ylabel("greedy exact match, 512 held-out prompts")
    axes[0].set_ylim(0, 1)
    axes[0].set_title("3-digit x 2-digit multiplication")
    axes[0].legend(fontsize=8)
    rows = runs["with the calculator"]["curve"][1:]
    axes[1].plot([r["step"] for r in rows], [r["tool/calls"] for r in rows],
                 label="calls per completion (sampled)")
    axes[1].plot([r["step"] for r in rows], [r["tool/malformed_rate"] for r in rows],
                 label="malformed-call rate")
    axes[1].set_xlabel("GRPO step")
    axes[1].set_title("tool use during GRPO (mean per log interval)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=200, help="GRPO steps per run")
    parser.add_argument("--traces", type=float, default=0.1,
                        help="fraction of SFT answers shown with a calculator call")
    parser.add_argument("--name", default="tools")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sft_dir = RUNS / f"{args.name}_sft"
    sft = run_cli(OUT / f"{args.name}_sft.json", "sft", "--task", "multiply", "--task-arg",
                  f"tool_traces={args.traces}", "--tools", "calculator", "--steps",
                  str(args.sft_steps), "--set", "log_every=50", "--out", str(sft_dir))
    runs = {}
    for name, tools in (("with the calculator", "calculator"), ("without a tool", "none")):
        runs[name] = run_cli(OUT / f"{args.name}_grpo_{tools}.json", "grpo", "--init",
                             str(sft_dir), "--tools", tools, "--steps", str(args.steps),
                             "--set", "log_every=50")
    with_tool, without = runs["with the calculator"], runs["without a tool"]
    gain = 100 * (with_tool["exact_match_after"] - without["exact_match_after"])
    lines = [
        "# Tool use learned by GRPO: 3-digit x 2-digit multiplication",
        "",
        f"SFT: {args.sft_steps} steps, {args.traces:.0%} of answers with a calculator call; "
        f"held-out exact match (greedy, calculator available) {sft['exact_match_after']:.3f}.",
        f"GRPO: {args.steps} steps from that policy, 16 prompts x 8 completions per step, "
        "rewards correct=1 + digits=0.5 on the final answer.",
        "",
        "| GRPO run | exact match before | after | gain (points) | calls per completion "
        "(last interval) | run s | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, data in runs.items():
        calls = data["curve"][-1].get("tool/calls")
        lines.append(
            f"| {name} | {data['exact_match_before']:.3f} | {data['exact_match_after']:.3f} | "
            f"{100 * (data['exact_match_after'] - data['exact_match_before']):+.1f} | "
            f"{'-' if calls is None else f'{calls:.2f}'} | {data['run_s']:.0f} | "
            f"{data['wall_s']:.0f} |")
    lines += ["", f"With the calculator minus without, after the same budget: {gain:+.1f} points.",
              f"Device: {with_tool['device']}."]
    (OUT / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (OUT / f"{args.name}.json").write_text(json.dumps(
        {"sft": sft, "runs": runs, "gain_points": gain, "settings": vars(args)}, indent=1))
    plot(runs, OUT / f"{args.name}.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
