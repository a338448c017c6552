"""Throughput of purejaxpo's GRPO and DPO trainers against Hugging Face TRL on the same CPU.

Same tiny model on both sides, built from a config with random weights (nothing downloaded):
GPT-2-style decoder, 4 layers, width 128, 4 heads, 32 learned positions, tied embeddings,
15-token vocabulary (0.8M parameters); fp32. Task: 3-digit addition, 8-token prompts,
completions of at most 5 tokens (4 reversed digits + EOS).

* GRPO: 8 prompts x 8 completions = 64 completions per step, temperature 1, exact-match reward,
  loss ``grpo``, one optimisation epoch per generated batch, with ``beta`` 0.04 (reference model
  run every step) and 0 (no reference). Measure: generated completion tokens per second
  (``completions/step x mean length / step time``), including generation, reward, advantages,
  reference pass and the update.
* DPO: 64 pairs per step (prompt + chosen/rejected answer, max length 16), sigmoid loss,
  beta 0.1, reference log-probs computed every step on both sides (TRL's default; purejaxpo
  can also precompute them once, reported separately). Measure: pairs per second.

purejaxpo runs a compiled ``lax.scan`` of ``--steps`` steps (its normal training mode) after a
warm-up compile; TRL runs ``--warmup`` untimed steps, then times each step with a callback.
purejaxpo's worker sets XLA's CPU vector width as the ``purejaxpo lm`` commands do
(``purejaxpo.backends.cpu.use_wide_vectors``: 512 bits where the CPU has AVX-512; since
2026-12-02, commit 4db9b17; earlier results ran at XLA's default width). Every measurement is a
fresh subprocess; the sides are interleaved (purejaxpo, TRL, purejaxpo,
TRL, ...) and the table reports medians and the ratio purejaxpo / TRL (> 1: purejaxpo faster).

TRL runs in its own environment (CPU PyTorch)::

    python3 -m venv .venv-trl && .venv-trl/bin/pip install -r benchmarks/requirements-trl.txt

Usage::

    .venv/bin/python benchmarks/bench_lm_vs_trl.py            # 3 repeats of each
    .venv/bin/python benchmarks/bench_lm_vs_trl.py --only purejaxpo --repeats 1
    .venv/bin/python benchmarks/bench_lm_vs_trl.py --worker grpo --beta 0   # one measurement

Results: ``benchmarks/results/lm_vs_trl.{json,md}``, overwriting the current result (git keeps
the earlier ones; ``--results-dir`` writes a trial run elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench_common as bench  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRL_PYTHON = ROOT / ".venv-trl" / "bin" / "python"
RESULTS = ROOT / "benchmarks" / "results"

MODEL = dict(num_layers=4, width=128, num_heads=4, mlp_ratio=4, max_len=32, positions="learned")
PROMPTS_PER_STEP, GROUP_SIZE, PAIRS_PER_STEP = 8, 8, 64
PROMPT_TOKENS = 8  # "a0 a1 a2 + b0 b1 b2 =" (as _trl_common.PROMPT_TOKENS)


# -- purejaxpo side -------------------------------------------------------------------------


def _context(completion_length: int) -> int:
    """The model's context (GPT-2 ``n_positions``, our ``max_len``) for a completion length:
    the benchmark's 32 up to 24 new tokens, else 64 (the same width, a longer context)."""
    return 32 if PROMPT_TOKENS + completion_length <= 32 else 64


def _timed_chunks(program, steps: int, repeats: int = 3) -> list[tuple[float, dict]]:
    """``(seconds, metrics)`` of ``repeats`` runs of ``steps`` steps of ``program`` (a trainer's
    :class:`~purejaxpo.algos.base.Program`, the loop the trainers run), each continuing from
    the last, after one untimed run: compilation and XLA's set-up of a new program on its
    first run are excluded, as a long training run amortises them."""
    import functools
    import time

    import jax
    import numpy as np

    state = jax.jit(program.init)(jax.random.PRNGKey(1))
    run = jax.jit(functools.partial(program.run, num_updates=steps)).lower(state).compile()
    state, _ = jax.block_until_ready(run(state))  # warm up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(run(state))
        out.append((time.perf_counter() - start, jax.tree_util.tree_map(np.asarray, metrics)))
    return out


def _purejaxpo_grpo(beta: float, steps: int, completion_length: int = 5) -> dict:
    import jax

    from purejaxpo.lm.config import LMGRPOConfig, LMSFTConfig
    from purejaxpo.lm.grpo import grpo_program
    from purejaxpo.lm.model import count_params, init_params

    model = LMSFTConfig(**{**MODEL, "max_len": _context(completion_length)}).model_config()
    params = init_params(jax.random.PRNGKey(0), model)
    config = LMGRPOConfig(loss="grpo", prompts_per_step=PROMPTS_PER_STEP, group_size=GROUP_SIZE,
                        beta=beta, rewards=(("correct", 1.0),), learning_rate=1e-6,
                        max_new_tokens=completion_length, steps=steps)
    program = grpo_program(config, params, model, config.make_task())
    runs = _timed_chunks(program, steps)
    times = [run_s / steps for run_s, _ in runs]
    tokens = [float(metrics["completion_tokens"].mean()) for _, metrics in runs]
    step_s = statistics.median(times)
    return {"framework": "purejaxpo", "kind": "grpo", "beta": beta, "params": count_params(params),
            "step_s": times, "median_step_s": step_s,
            "completion_tokens_per_step": statistics.median(tokens),
            "completion_tokens_per_s": statistics.median(tokens) / step_s,
            "completions_per_step": PROMPTS_PER_STEP * GROUP_SIZE, "jax": jax.__version__,
            "completion_length": completion_length, "max_len": model.max_len,
            "device": str(jax.devices()[0])}


def _purejaxpo_dpo(steps: int, precompute: bool) -> dict:
    import jax

    from purejaxpo.lm.config import LMDPOConfig, LMSFTConfig
    from purejaxpo.lm.dpo import dpo_program
    from purejaxpo.lm.model import init_params
    from purejaxpo.lm.pairs import synthetic_pairs

    model = LMSFTConfig(**MODEL).model_config()
    params = init_params(jax.random.PRNGKey(0), model)
    config = LMDPOConfig(loss="sigmoid", beta=0.1, batch_size=PAIRS_PER_STEP,
                       precompute_ref=precompute, learning_rate=1e-6, steps=steps)
    pairs = synthetic_pairs(jax.random.PRNGKey(2), config.make_task(), 4096)
    # the reference's log-probs of the pairs (precompute) are made by init, untimed
    program = dpo_program(config, params, model, pairs)
    times = [run_s / steps for run_s, _ in _timed_chunks(program, steps)]
    step_s = statistics.median(times)
    return {"framework": "purejaxpo", "kind": "dpo", "precompute_ref": precompute,
            "step_s": times, "median_step_s": step_s, "pairs_per_s": PAIRS_PER_STEP / step_s,
            "jax": jax.__version__}


# -- driver -----------------------------------------------------------------------------------


def _run(cmd: list[str], env=None) -> dict:
    child = bench.run_child_json(cmd, cwd=ROOT, env=env)
    if child["json"] is None:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{child['stderr'][-3000:]}")
    return child["json"]


def _ours(kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return _run(cmd)


def _trl(kind: str, steps: int, **kw) -> dict:
    script = ROOT / "benchmarks" / f"_trl_{kind}_runner.py"
    cmd = [str(TRL_PYTHON), str(script), "--steps", str(steps)]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return _run(cmd)


def _case_name(kind: str, kw: dict) -> str:
    if kind != "grpo":
        return kind
    name = f"grpo beta={kw['beta']}"
    n = kw["completion_length"]
    return name if n == 5 else f"{name}, completions <= {n} tokens (context {_context(n)})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", choices=["grpo", "dpo"], help="one purejaxpo measurement")
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--precompute", type=int, default=0)
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=["purejaxpo", "trl"])
    p.add_argument("--results-dir", default=str(RESULTS),
                   help="folder of lm_vs_trl.{json,md} (default: the committed result, "
                        "overwritten)")
    p.add_argument("--json", help="(worker) write the measurement here")
    p.add_argument("--completion-length", type=int, default=5,
                   help="(worker) GRPO's completion length")
    p.add_argument("--completion-lengths", default="5,32",
                   help="GRPO completion lengths to compare (the model's context is 32 up to 24 "
                        "new tokens, else 64); default 5,32, as the committed result")
    args = p.parse_args()

    if args.worker:
        # As the `purejaxpo lm` commands do (cli._early_cpu_settings).
        from purejaxpo.backends import cpu

        wide = cpu.use_wide_vectors(quiet=True)
        cpu.enable(fused_loops=False, wide_vectors=False, cpu_devices=None, quiet=True)
        out = (_purejaxpo_grpo(args.beta, args.steps, args.completion_length)
               if args.worker == "grpo"
               else _purejaxpo_dpo(args.steps, bool(args.precompute)))
        out.update(wide_vectors_added=bool(wide), xla_flags=os.environ.get("XLA_FLAGS", ""))
        with open(args.json, "w") as f:
            json.dump(out, f)
        return 0

    lengths = [int(n) for n in args.completion_lengths.split(",")]
    cases = [("grpo", {"beta": b, "completion_length": n}) for n in lengths for b in (0.04, 0.0)]
    cases.append(("dpo", {}))
    runs: dict[str, list] = {}
    for _ in range(args.repeats):
        for kind, kw in cases:
            name = _case_name(kind, kw)
            if args.only != "trl":
                runs.setdefault(f"purejaxpo {name}", []).append(
                    _ours(kind, steps=args.steps, **kw))
                print(f"purejaxpo {name}: {runs[f'purejaxpo {name}'][-1]['median_step_s']:.4f} s/step",
                      flush=True)
            if args.only != "purejaxpo":
                trl_kw = dict(kw)
                if kind == "grpo":
                    trl_kw["positions"] = _context(kw["completion_length"])
                runs.setdefault(f"trl {name}", []).append(_trl(kind, args.steps, **trl_kw))
                print(f"trl {name}: {runs[f'trl {name}'][-1]['median_step_s']:.4f} s/step",
                      flush=True)
        if args.only != "trl":
            runs.setdefault("purejaxpo dpo precomputed-ref", []).append(
                _ours("dpo", steps=args.steps, precompute=1))

    def med(name, key):
        return statistics.median(r[key] for r in runs[name]) if name in runs else None

    rows = []
    for kind, kw in cases:
        name = _case_name(kind, kw)
        key = "completion_tokens_per_s" if kind == "grpo" else "pairs_per_s"
        ours, theirs = med(f"purejaxpo {name}", key), med(f"trl {name}", key)
        rows.append({"case": name, "unit": key, "purejaxpo": ours, "trl": theirs,
                     "purejaxpo_step_s": med(f"purejaxpo {name}", "median_step_s"),
                     "trl_step_s": med(f"trl {name}", "median_step_s"),
                     "ratio": ours / theirs if ours and theirs else None})
    if "purejaxpo dpo precomputed-ref" in runs:
        ours = med("purejaxpo dpo precomputed-ref", "pairs_per_s")
        theirs = med("trl dpo", "pairs_per_s")
        rows.append({"case": "dpo (purejaxpo: reference log-probs precomputed)",
                     "unit": "pairs_per_s", "purejaxpo": ours, "trl": theirs,
                     "purejaxpo_step_s": med("purejaxpo dpo precomputed-ref", "median_step_s"),
                     "trl_step_s": med("trl dpo", "median_step_s"),
                     "ratio": ours / theirs if ours and theirs else None})
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cpu": bench.cpu_description(), "repeats": args.repeats, "steps": args.steps,
              "rows": rows, "runs": runs}
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lm_vs_trl.json").write_text(json.dumps(result, indent=1))
    lines = [f"Machine: {result['cpu']}; {args.repeats} interleaved runs each, medians.", "",
             "| case | unit | purejaxpo | TRL | ratio | purejaxpo s/step | TRL s/step |",
             "|---|---|---:|---:|---:|---:|---:|"]
    fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
    for r in rows:
        lines.append(f"| {r['case']} | {r['unit']} | {fmt(r['purejaxpo'], ',.0f')} | "
                     f"{fmt(r['trl'], ',.0f')} | {fmt(r['ratio'], '.2f')} | "
                     f"{fmt(r['purejaxpo_step_s'], '.4f')} | {fmt(r['trl_step_s'], '.4f')} |")
    (out / "lm_vs_trl.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
