"""Sampling speed of this checkout against an earlier revision, at the LM benchmark's shapes.

``purejaxpo.lm.sampling.generate`` on the model of ``bench_lm_vs_trl.py`` (GPT-2 style, 4
layers, width 128, 4 heads, learned positions, 15-token vocabulary, random weights): 64
sequences of 8 prompt tokens, 5 new tokens (context 32, the GRPO benchmark's shape) and 32 new
tokens (context 64); 64 distinct prompts, and GRPO's batch of 8 prompts x 8 completions
(``prompt_group=8`` where the tree's ``generate`` has it: the prompt prefilled once per
group). Every measurement is a fresh process (compile, then ``--calls`` timed calls,
median per call; the calls' keys made before the timing since 2026-12-02, earlier results
timed each key's construction too); the two trees are interleaved (this one, the baseline, this one, ...) and the
table reports the median over ``--repeats`` processes and baseline / this (> 1: this is faster).

The baseline is checked out with ``git worktree`` into a temporary directory and imported from
there (``PYTHONPATH``), in the same virtual environment::

    .venv/bin/python benchmarks/bench_sampling.py --baseline c0ef9de --repeats 5
    .venv/bin/python benchmarks/bench_sampling.py --shapes 5x8 --repeats 15

(``--shapes 5x8``: only the GRPO benchmark's shape, more processes for the same minutes.)

Writes ``benchmarks/results/sampling.{json,md}`` (the two commits compared are in them),
overwriting the current result (git keeps the earlier ones; ``--results-dir`` writes a trial run
elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench_common as bench  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHAPES = ((5, 32, 1), (5, 32, 8), (32, 64, 1), (32, 64, 8))  # (new tokens, context, group)
BATCH, PROMPT = 64, 8


def worker(new_tokens: int, context: int, group: int, calls: int) -> dict:
    """Times ``generate`` in this process (whatever ``purejaxpo`` imports from)."""
    import inspect

    import jax
    import jax.numpy as jnp
    import numpy as np

    import purejaxpo

    try:  # the CPU settings: purejaxpo.backends.cpu, or purejaxpo.devices in older trees
        from purejaxpo.backends import cpu
    except ImportError:
        from purejaxpo import devices as cpu

    # The `purejaxpo lm` commands' CPU setting, where the tree has it (c0ef9de has not): export
    # XLA_FLAGS=--xla_cpu_prefer_vector_width=512 to give both trees the same vectors.
    wide = hasattr(cpu, "use_wide_vectors") and cpu.use_wide_vectors()
    if hasattr(cpu, "enable"):  # the CPU hooks (noise drawn ahead), as the `lm` commands
        cpu.enable(fused_loops=False, wide_vectors=False, cpu_devices=None)
    from purejaxpo.lm.model import TransformerConfig, init_params
    from purejaxpo.lm.sampling import generate

    cfg = TransformerConfig(vocab_size=15, num_layers=4, width=128, num_heads=4, mlp_ratio=4,
                            max_len=context, positions="learned")
    params = init_params(jax.random.PRNGKey(0), cfg)
    prompts = jax.random.randint(jax.random.PRNGKey(1), (BATCH // group, PROMPT), 3, 15)
    prompts = jnp.repeat(prompts, group, axis=0)
    valid = jnp.ones((BATCH, PROMPT), bool)
    shared = group > 1 and "prompt_group" in inspect.signature(generate).parameters
    extra = {"prompt_group": group} if shared else {}
    sample = jax.jit(lambda key, p: generate(key, p, cfg, prompts, valid,
                                             max_new_tokens=new_tokens, eos_id=2,
                                             pad_id=0, **extra).tokens)
    t0 = time.perf_counter()
    jax.block_until_ready(sample(jax.random.PRNGKey(2), params))
    compile_s = time.perf_counter() - t0
    # The keys are made before the timing: building a key from an integer is a dispatch of its
    # own (about 0.5 ms here), not sampling (a GRPO step splits its keys inside the program).
    keys = jax.block_until_ready([jax.random.PRNGKey(3 + i) for i in range(calls)])
    times = []
    for key in keys:
        t0 = time.perf_counter()
        jax.block_until_ready(sample(key, params))
        times.append(time.perf_counter() - t0)
    return {"new_tokens": new_tokens, "context": context, "group": group,
            "prompt_group_used": shared, "wide_vectors_added": bool(wide),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "compile_s": compile_s,
            "median_ms": 1e3 * float(np.median(times)), "min_ms": 1e3 * min(times),
            "purejaxpo": str(Path(purejaxpo.__file__).parent), "jax": jax.__version__}


def _measure(tree: Path, new_tokens: int, context: int, group: int, calls: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, __file__, "--worker", str(new_tokens), str(context), str(group),
           "--calls", str(calls)]
    child = bench.run_child_json(cmd, cwd=tree, env=env, timeout=900)
    if child["json"] is None:
        raise RuntimeError(f"{' '.join(cmd)} in {tree} failed:\n{bench.tail(child['stderr'])}")
    return {**child["json"], "foreign_cpu": child["foreign_cpu"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default="c0ef9de", help="git revision to compare against")
    p.add_argument("--repeats", type=int, default=5, help="processes per tree and shape")
    p.add_argument("--calls", type=int, default=30, help="timed calls per process")
    p.add_argument("--results-dir", default=str(RESULTS),
                   help="folder of sampling.{json,md} (default: the committed result, overwritten)")
    p.add_argument("--shapes", default=",".join(f"{n}x{g}" for n, _, g in SHAPES),
                   help="comma-separated NEW_TOKENSxGROUP of the shapes to time (default all: "
                        "%(default)s); 5x8 is the GRPO benchmark's")
    p.add_argument("--worker", nargs=3, type=int, metavar=("NEW_TOKENS", "CONTEXT", "GROUP"),
                   help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    known = {f"{n}x{g}": (n, ctx, g) for n, ctx, g in SHAPES}
    unknown = sorted(set(args.shapes.split(",")) - set(known))
    if unknown:
        p.error(f"--shapes: unknown {unknown}; known: {sorted(known)}")
    shapes = [known[name] for name in known if name in args.shapes.split(",")]
    if args.worker:
        Path(args.json).write_text(json.dumps(worker(*args.worker, args.calls)))
        return 0

    rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    here = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()
    runs: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="bench_sampling_") as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), rev], cwd=ROOT,
                       capture_output=True, check=True)
        try:
            for r in range(args.repeats):
                for n, ctx, g in shapes:
                    for name, tree in (("this", ROOT), ("baseline", base)):
                        m = _measure(tree, n, ctx, g, args.calls)
                        runs.setdefault(f"{name} {n} {g}", []).append(m)
                        print(f"[{r + 1}/{args.repeats}] {name:8s} {n:2d} tokens, groups of "
                              f"{g}: {m['median_ms']:.1f} ms", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                           capture_output=True)

    rows = []
    for n, ctx, g in shapes:
        ours = [m["median_ms"] for m in runs[f"this {n} {g}"]]
        then = [m["median_ms"] for m in runs[f"baseline {n} {g}"]]
        rows.append({"new_tokens": n, "context": ctx, "group": g,
                     "this_ms": statistics.median(ours), "baseline_ms": statistics.median(then),
                     "speedup": statistics.median(then) / statistics.median(ours),
                     "this_range": [min(ours), max(ours)],
                     "baseline_range": [min(then), max(then)]})
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cpu": bench.cpu_description(), "this": here, "baseline": rev,
              "repeats": args.repeats, "calls": args.calls, "batch": BATCH, "prompt": PROMPT,
              "rows": rows, "runs": runs}
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    added = any(m.get("wide_vectors_added") for k, ms in runs.items() if k.startswith("this")
                for m in ms)
    (out / "sampling.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# Sampling speed: {here} against {rev}",
        "",
        f"{result['date']}, {result['cpu']}; `generate` on the GRPO benchmark's model (0.8M "
        f"parameters), {BATCH} sequences of {PROMPT} prompt tokens; median ms per call of "
        f"{args.calls} calls in each fresh process, then the median over {args.repeats} "
        "interleaved processes per tree (range over processes). "
        "Written by `benchmarks/bench_sampling.py`.",
        "",
        f"`XLA_FLAGS` given to both trees: `{os.environ.get('XLA_FLAGS') or '(unset)'}`; "
        f"this tree added `--xla_cpu_prefer_vector_width=512` itself (as its `lm` commands "
        f"do): {'yes' if added else 'no'}.",
        "",
        f"| new tokens | context | prompts x completions | {rev} ms | {here} ms | speedup |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['new_tokens']} | {r['context']} | {BATCH // r['group']} x {r['group']} "
            f"| {r['baseline_ms']:.1f} "
            f"({r['baseline_range'][0]:.1f}-{r['baseline_range'][1]:.1f}) | {r['this_ms']:.1f} "
            f"({r['this_range'][0]:.1f}-{r['this_range'][1]:.1f}) | {r['speedup']:.2f}x |")
    (out / "sampling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
