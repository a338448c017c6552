"""Where the time goes in one PPO update and one GRPO step: XLA's cost analysis (flops, bytes),
the optimised HLO's instructions by kind, and the time per update alone and inside a scan.

* PPO: the CartPole-v1 preset (4 envs x 128 steps, 4 epochs x 4 minibatches, 64 x 64 actor
  and critic), one update = rollout + GAE + 16 minibatch Adam steps (``Program.run(state, 1)``);
* GRPO: the TRL benchmark's model (4 layers, width 128, learned positions, about 0.8M
  parameters), 8 prompts x 8 completions of the addition task's answer length, one step =
  sampling + rewards + log-probs + one Adam step.

Each is compiled ahead of time; "per call" is the median of 20 calls of the one-update program
from Python (dispatch included), "in a scan" the time of a 50-update ``run`` divided by 50.
The instruction counts by kind are of the program text (a loop that XLA keeps as a ``while``
counts once); "kernels run per update" counts each kernel as often as it runs (a loop body once
per trip), which is what a small program's time on a CPU follows.

Usage::

    .venv/bin/python benchmarks/profile_steps.py      # writes benchmarks/results/profile.md
"""

from __future__ import annotations

import collections
import re
import statistics
import sys
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"

KINDS = {  # HLO opcode -> what it is, for the summary
    "fusion": "fused elementwise / reduction kernels",
    "dot": "matrix products (unfused)",
    "convolution": "convolutions",
    "while": "loops kept as loops (scan, fori)",
    "custom-call": "library calls (e.g. LAPACK, oneDNN)",
    "copy": "copies",
    "dynamic-slice": "dynamic slices",
    "dynamic-update-slice": "dynamic updates",
    "rng-bit-generator": "random bits",
    "sort": "sorts",
    "gather": "gathers",
    "scatter": "scatters",
}


NOT_KERNELS = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast"}


def _computations(text: str) -> tuple[dict[str, list[str]], str]:
    """The HLO module's computations (name -> instruction lines) and its entry's name."""
    comps: dict[str, list[str]] = {}
    entry, name = "", None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            words = line.split()
            name = (words[1] if words[0] == "ENTRY" else words[0]).lstrip("%")
            entry = name if words[0] == "ENTRY" else entry
            comps[name] = []
        elif name is not None and line.startswith("  "):
            comps[name].append(line)
    return comps, entry


def _opcode(line: str) -> str | None:
    if "=" not in line:
        return None
    rhs = line.split("=", 1)[1].lstrip()
    if rhs.startswith("("):  # a tuple type: skip to its closing parenthesis
        depth = 0
        for i, ch in enumerate(rhs):
            depth += (ch == "(") - (ch == ")")
            if depth == 0:
                break
        rhs = rhs[i + 1:]
    else:
        rhs = rhs.split(" ", 1)[1] if " " in rhs else ""
    m = re.match(r"\s*([a-z][\w\-]*)\(", rhs)
    return m.group(1) if m else None


def hlo_counts(text: str) -> collections.Counter:
    """Instructions by opcode in an optimised HLO module's text (every computation)."""
    comps, _ = _computations(text)
    return collections.Counter(op for lines in comps.values() for line in lines
                               if (op := _opcode(line)) is not None)


def executed_kernels(text: str) -> int:
    """Kernels (instructions other than parameters, tuples, constants and bitcasts) one call
    of the optimised HLO module runs: a loop's body counts once per trip (XLA's
    ``known_trip_count``, 1 where unknown), a conditional its largest branch. On a CPU each
    kernel costs dispatch overhead, but kernels differ: a tiny copy about a microsecond, a
    small matrix product tens (``benchmarks/ppo_update_ab.py --trace``)."""
    comps, entry = _computations(text)

    def count(name: str) -> int:
        total = 0
        for line in comps.get(name, []):
            op = _opcode(line)
            if op is None or op in NOT_KERNELS:
                continue
            total += 1
            if op == "while":
                trips = re.search(r'known_trip_count":\{"n":"(\d+)"', line)
                body = re.search(r"body=%?([\w.\-]+)", line).group(1)
                total += (int(trips.group(1)) if trips else 1) * count(body)
            elif op == "call":
                total += count(re.search(r"to_apply=%?([\w.\-]+)", line).group(1))
            elif op == "conditional":
                branches = re.search(r"branch_computations=\{([^}]*)\}", line)
                names = ([b.strip().lstrip("%") for b in branches.group(1).split(",")]
                         if branches else re.findall(r"_computation=%?([\w.\-]+)", line))
                total += max((count(b) for b in names), default=0)
        return total

    return count(entry)


def cost(compiled) -> dict:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else {}
    return {"flops": float(analysis.get("flops", float("nan"))),
            "bytes": float(analysis.get("bytes accessed", float("nan")))}


def profile(name: str, run, state, per_scan: int = 50) -> dict:
    one = jax.jit(lambda s: run(s, 1)).lower(state).compile()
    many = jax.jit(lambda s: run(s, per_scan)).lower(state).compile()
    s = state
    for _ in range(3):
        s = jax.block_until_ready(one(s))[0]
    times = []
    for _ in range(20):
        t = time.perf_counter()
        s = jax.block_until_ready(one(s))[0]
        times.append(time.perf_counter() - t)
    jax.block_until_ready(many(state))
    t = time.perf_counter()
    jax.block_until_ready(many(state))
    scan_s = (time.perf_counter() - t) / per_scan
    counts = hlo_counts(one.as_text())
    return {"name": name, **cost(one), "per_call_s": statistics.median(times),
            "in_scan_s": scan_s, "instructions": sum(counts.values()), "counts": counts,
            "kernels_run": executed_kernels(one.as_text())}


def ppo() -> dict:
    from purejaxpo.algos.ppo import make_train
    from purejaxpo.presets import preset

    config = preset("ppo", "CartPole-v1")
    train = make_train(config)
    state = jax.jit(train.init)(jax.random.PRNGKey(0))
    out = profile("PPO update (CartPole preset)", train.run, state)
    out["work"] = f"{config.batch_size} env steps"
    out["work_per_s"] = config.batch_size / out["in_scan_s"]
    return out


def grpo() -> dict:
    from purejaxpo.lm.config import LMGRPOConfig, LMSFTConfig
    from purejaxpo.lm.grpo import grpo_program
    from purejaxpo.lm.model import init_params

    model = LMSFTConfig(num_layers=4, width=128, num_heads=4, mlp_ratio=4, max_len=32,
                        positions="learned").model_config()
    params = init_params(jax.random.PRNGKey(0), model)
    config = LMGRPOConfig(prompts_per_step=8, group_size=8, rewards=(("correct", 1.0),))
    program = grpo_program(config, params, model, config.make_task())
    state = jax.jit(program.init)(jax.random.PRNGKey(1))
    out = profile("GRPO step (0.8M-parameter model)", program.run, state)
    out["work"] = "64 completions"
    out["work_per_s"] = 64 / out["in_scan_s"]
    return out


def main() -> int:
    from purejaxpo.settings import device_description

    results = [ppo(), grpo()]
    kinds = list(KINDS)
    lines = [f"# One PPO update and one GRPO step ({time.strftime('%Y-%m-%d')}, "
             f"{device_description()})", "",
             "Written by `benchmarks/profile_steps.py`: XLA cost analysis of the compiled "
             "one-update program, its optimised HLO's instructions by kind, and time per update "
             "called from Python (median of 20) and inside a 50-update scan.", "",
             "| program | work | GFLOP | MB accessed | per call ms | in a scan ms | "
             "per s (scan) | kernels run per update | HLO instructions | "
             + " | ".join(kinds) + " |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(kinds)]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['work']} | {r['flops'] / 1e9:.3f} | {r['bytes'] / 1e6:.1f} | "
            f"{1e3 * r['per_call_s']:.2f} | {1e3 * r['in_scan_s']:.2f} | {r['work_per_s']:,.0f} | "
            f"{r['kernels_run']:,} | {r['instructions']} | " + " | ".join(str(r["counts"].get(k, 0)) for k in kinds)
            + " |")
    lines += ["", "Kinds: " + "; ".join(f"`{k}`: {v}" for k, v in KINDS.items()) + ".", "",
              "XLA's cost analysis counts the body of a loop kept as a `while` once, not once "
              "per trip, so the flops (and the GFLOP/s below) are lower bounds. `kernels run "
              "per update` counts the other way: every kernel (instruction other than "
              "parameters, tuples, constants and bitcasts) as often as it runs, a loop's body "
              "once per trip.", ""]
    for r in results:
        gflops = r["flops"] / r["in_scan_s"] / 1e9
        lines.append(f"- {r['name']}: at least {gflops:.2f} GFLOP/s in a scan "
                     f"({r['flops'] / 1e6:.1f} MFLOP per update); the most frequent "
                     "instructions: " + ", ".join(f"{k} {v}" for k, v in
                                                  r["counts"].most_common(6)) + ".")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
