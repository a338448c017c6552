"""GRPO with LoRA on a larger pretrained-format checkpoint: the loader, adapters and GRPO step at
a realistic size, timed (issue: pretrained Llama/Qwen models).

    .venv-hf/bin/python benchmarks/make_tiny_checkpoints.py --large /tmp/llama100m  # once
    .venv/bin/python benchmarks/pretrained_grpo.py --model /tmp/llama100m [--steps 4]

Runs ``purejaxpo lm grpo --model DIR --data FILE --lora-rank 8`` (a fresh process, as a user
would) on generated sum prompts and writes its JSON and a markdown summary (parameters,
trained parameters, compile and run seconds, completion tokens per second, device) to
``benchmarks/results/pretrained_grpo.{json,md}`` (overwriting the current result). The model is
random, so rewards stay near zero: this measures speed, not learning.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a Hugging Face-format checkpoint dir")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=16, help="completion tokens")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--results-dir", default=str(RESULTS),
                        help="folder of pretrained_grpo.{json,md} (default: the committed "
                             "result, overwritten)")
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sums.jsonl"
        data.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n"
                                for a, b in ((rng.randint(0, 99), rng.randint(0, 99))
                                             for _ in range(200))))
        result = Path(tmp) / "grpo.json"
        cmd = [sys.executable, "-m", "purejaxpo", "lm", "grpo", "--model", args.model,
               "--data", str(data), "--lora-rank", str(args.lora_rank),
               "--steps", str(args.steps), "--set", f"log_every={args.steps}",
               "--set", f"prompts_per_step={args.prompts}", "--group-size",
               str(args.group_size), "--set", f"max_new_tokens={args.tokens}",
               "--set", "eval_prompts=8", "--no-progress", "--json", str(result)]
        print(" ".join(cmd))
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - start
        out = json.loads(result.read_text())
    out["wall_s"] = wall
    out["settings"] = vars(args)
    stem = Path(args.results_dir) / "pretrained_grpo"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2))
    tokens = args.steps * args.prompts * args.group_size * args.tokens
    lines = [
        "# GRPO with LoRA on a ~100M-parameter random Llama checkpoint",
        "",
        f"`{' '.join(cmd[2:]).replace(str(data), 'sums.jsonl')}`",
        "",
        "| parameters | trained (LoRA) | steps | completions/step | tokens/completion "
        "| run s | tokens/s | wall s (load + compile + run) | device |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {out['params']:,} | {out['trained_params']:,} | {out['steps']} | "
        f"{args.prompts * args.group_size} | {args.tokens} | {out['run_s']:.1f} | "
        f"{out['tokens_per_s']:,.0f} | {wall:.0f} | {out['device']} |",
        "",
        f"tokens/s counts generated completion tokens (at most {tokens:,} over the run) per "
        "second of the compiled steps (sampling, scoring, old and reference log-probs, one "
        "Adam step), compilation excluded. Measured "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}.",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
