"""Sampling with tools enabled but never called against sampling without tools.

The tool loop adds per-step bookkeeping to the decoding scan (a queue of observation tokens, the
open call's tokens) and a ``lax.cond`` that runs the tool only on steps where some sequence
closes a call. This measures what that costs when no sequence ever calls: the same model,
prompts and key, the calculator enabled with a call-opening token the model cannot emit (an id
outside its vocabulary), so every step pays the bookkeeping and none runs the tool.

    .venv/bin/python benchmarks/bench_tools_sampling.py [--repeats 30]

Writes ``benchmarks/results/tools_sampling.md``: median seconds per ``generate`` call
(compiled once each, interleaved repeats) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from purejaxpo.lm.tasks import make_task
from purejaxpo.lm.model import TransformerConfig, init_params
from purejaxpo.lm.sampling import generate
from purejaxpo.lm.tools import ToolUse, calculator_for
from purejaxpo.settings import device_description

OUT = Path(__file__).resolve().parent / "results" / "tools_sampling.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128, help="sequences (16 prompts x 8)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    task = make_task("multiply", tools="calculator")
    vocab = task.tokenizer.size
    model = TransformerConfig(vocab_size=vocab, num_layers=args.layers, width=args.width,
                              num_heads=4, max_len=32)
    params = init_params(jax.random.PRNGKey(0), model)
    batch = task.sample(jax.random.PRNGKey(1), args.batch)
    calc = calculator_for(task)
    never = ToolUse(calc.tool, call_open=vocab, call_close=calc.call_close,
                    result_close=calc.result_close, error=calc.error)
    n = task.answer_len

    def make(tools):
        return jax.jit(lambda key: generate(
            key, params, model, batch.prompts, batch.prompt_valid, max_new_tokens=n,
            eos_id=task.tokenizer.eos_id, pad_id=task.tokenizer.pad_id, tools=tools).tokens)

    fns = {"without tools": make(None), "tools enabled, never called": make(never)}
    times = {name: [] for name in fns}
    for name, fn in fns.items():
        fn(jax.random.PRNGKey(0)).block_until_ready()  # compile
    for i in range(args.repeats):
        for name, fn in fns.items():  # interleaved
            key = jax.random.PRNGKey(i)
            start = time.perf_counter()
            fn(key).block_until_ready()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["tools enabled, never called"] / med["without tools"]
    same = bool(jnp.all(fns["without tools"](jax.random.PRNGKey(0))
                        == fns["tools enabled, never called"](jax.random.PRNGKey(0))))
    lines = [
        "# Sampling with the calculator enabled but never called vs without tools",
        "",
        f"{args.batch} sequences x {n} new tokens, model width {args.width} x {args.layers} "
        f"layers (vocabulary {vocab}), median of {args.repeats} interleaved calls each.",
        "",
        "| sampling | median ms per call |",
        "|---|---|",
        *[f"| {name} | {1000 * m:.2f} |" for name, m in med.items()],
        "",
        f"Ratio (tools / none): {ratio:.3f}; identical tokens: {same}. "
        f"Device: {device_description()}.",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
