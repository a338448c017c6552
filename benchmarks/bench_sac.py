"""Benchmark purejaxpo's SAC against rejax's SAC and sbx's SAC on Pendulum-v1, same settings.

Settings (all sides; rejax's SAC config for Pendulum, ``configs/gymnax/pendulum.yaml`` of its
repository, without its observation normalisation): 1 env, 1e4 env steps per seed, buffer 1e4
(the whole run), minibatch 256, gradient steps from the 257th env step on (after 256 steps of
data), one gradient step per env step (9,744 per seed on every side), Adam lr 1e-2 for actor,
critics and temperature, gamma 0.99, tau 0.02 (rejax's polyak 0.98), 64 x 64 SiLU (= swish) MLPs
for the actor and each of two critics, learned temperature from 1 towards target entropy
-action_dim = -1, no gradient clipping, no observation or reward normalisation.

Each run is a fresh subprocess. Two phases:

1. *single*: one seed per run, the three implementations interleaved (purejaxpo, rejax, sbx,
   purejaxpo, ...) for ``--repeats`` rounds (seed ``base_seed + round``): compile time, run
   time, final return, deterministic evaluation return; medians over the rounds.
2. *vmap*: ``--vmap-seeds`` (16) seeds vmapped in one program, purejaxpo and rejax interleaved
   for ``--vmap-repeats`` rounds: run time per seed and final return. sbx has no vmapped mode;
   its per-seed time from phase 1 stands beside them.

Ratios are ``other_run_s / purejaxpo_run_s`` per seed (> 1: purejaxpo is faster).

What each number is:

* compile: purejaxpo and rejax compile ahead of time (``jit(...).lower().compile()``); sbx
  compiles inside ``learn()`` (each model instance compiles its own jitted functions), so its
  runner first warms up a throwaway model, then times ``learn()`` of the real one and measures
  the compilation inside it with ``jax.monitoring`` events (tracing, lowering, XLA compile).
* run time: training only, without compilation: the compiled program for purejaxpo and rejax
  (neither evaluates inside it here), ``learn()`` wall time minus its compilation for sbx.
* final return: the mean return of the training episodes that ended in the last 5% of a seed's
  env steps (steps 9,501-10,000: 3 episodes of 200 steps): purejaxpo's own ``final_return``;
  counters added to rejax's train state by ``_rejax_runner.py``; SB3's ``Monitor`` for sbx.
* evaluation return: ``--eval-episodes`` (10) episodes per seed with the deterministic policy
  (``tanh`` of the Gaussian mean), after training, untimed: ``purejaxpo eval CKPT --greedy``;
  ``_rejax_runner.py``'s deterministic act through rejax's ``evaluate_single``; sbx's
  ``evaluate_policy(deterministic=True)``. ``purejaxpo eval`` needs a checkpoint, so for each
  phase-1 round purejaxpo trains the same seed a second time with ``--checkpoint-dir`` (untimed)
  and the table shows that run's final return beside the timed one's (they match when the
  checkpointed run reproduces the timed run). Phase 2 evaluates purejaxpo only with
  ``--vmap-eval`` (one more 16-seed run).

Differences between the sides that no setting removes:

* Environment: purejaxpo uses gymnax 1.0's Pendulum-v1, rejax gymnax 0.0.9's (rejax 0.1.3
  needs it), sbx gymnasium's (NumPy, stepped from Python). Same dynamics, reward and 200-step
  limit.
* Time limits: purejaxpo and sbx bootstrap through a truncation from the true final
  observation; rejax (gymnax 0.0.9's single ``done``) treats it as a termination.
* Warm-up actions: purejaxpo (257 steps) and sbx (256 steps) act uniformly at random before
  learning; rejax acts with its untrained policy from the first step.
* Update order per gradient step: purejaxpo critics, actor, temperature, target; sbx critics,
  target, actor, temperature; rejax actor, critics, temperature, target.
* Temperature loss: purejaxpo and sbx ``-log(alpha) * (log_prob + target_entropy)``; rejax
  ``-alpha * (log_prob + target_entropy)`` (gradient scaled by alpha).
* Log-std clip: purejaxpo [-5, 2], rejax [-10, 2], sbx [-20, 2]. Initialisation: purejaxpo
  orthogonal (gain sqrt 2, heads 0.01 / 1.0), rejax and sbx flax's lecun-normal default.
* sbx runs one seed per process and cannot vmap; its environment loop and replay buffer are
  Python and NumPy (and torch tensors in SB3's buffer sampling), so its time per step includes
  Python overhead that the two all-JAX programs do not have.

Environments: purejaxpo in the main one (``.venv``); rejax and sbx each in their own, because
rejax 0.1.3 needs gymnax 0.0.9 and sbx pulls torch::

    python3 -m venv .venv-rejax && .venv-rejax/bin/pip install -r benchmarks/requirements-rejax.txt
    python3 -m venv .venv-sbx && .venv-sbx/bin/pip install -r benchmarks/requirements-sbx.txt

All sides get the same ``XLA_FLAGS`` (the caller's) and run jax/jaxlib 0.10.2.

Before each run the driver waits (up to ``--wait-idle`` seconds, default 15 here: this
benchmark is meant to run on a shared 2-core machine) for the CPUs to go idle, and it records per
run how much CPU other processes used meanwhile (``foreign_cpu``, in cores) and the load
averages at the start and the end: runs with a large value were disturbed.

Results go to ``benchmarks/results/sac.{json,md}`` (``sac_vmap_eval.{json,md}`` with
``--vmap-eval``), overwriting the current result (git keeps the earlier ones).

Usage::

    .venv/bin/python benchmarks/bench_sac.py                      # 3 rounds + 16-seed round
    .venv/bin/python benchmarks/bench_sac.py --repeats 5 --vmap-repeats 3 --vmap-eval
    .venv/bin/python benchmarks/bench_sac.py --only purejaxpo,rejax --skip-vmap
    .venv/bin/python benchmarks/bench_sac.py --repeats 0 --vmap-eval --only purejaxpo
                                          # purejaxpo's 16 seeds with deterministic evaluation
    .venv/bin/python benchmarks/bench_sac.py --repeats 1 --total-timesteps 2000 \\
        --vmap-seeds 2 --results-dir /tmp/sac_smoke                 # a quick check of the plumbing
    .venv/bin/python benchmarks/bench_sac.py --render benchmarks/results/sac.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench_common as bench  # noqa: E402
from _bench_common import fmt, median  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REJAX_RUNNER = ROOT / "benchmarks" / "_rejax_runner.py"
SBX_RUNNER = ROOT / "benchmarks" / "_sbx_runner.py"
IMPLS = ("purejaxpo", "rejax", "sbx")
ENV = "Pendulum-v1"

# The benchmark's settings, once; each side's spelling is derived below.
SAC = {
    "num_envs": 1,
    "buffer_size": 10_000,
    "minibatch_size": 256,
    "data_before_learning": 256,  # first gradient step after env step 257
    "learning_rate": 1e-2,
    "gamma": 0.99,
    "tau": 0.02,
    "hidden_sizes": "64,64",
    "activation": "silu",  # rejax's yaml says swish: flax's nn.swish is nn.silu
}


def purejaxpo_settings() -> dict[str, str]:
    """``--set`` values for ``purejaxpo train sac``. Its gradient phase runs in the update whose
    steps reach ``learning_starts``, so ``learning_starts = 257`` learns from step 257 on, as
    rejax's ``fill_buffer = 256`` and sbx's ``learning_starts = 256`` do."""
    return {
        "num_steps": "1",
        "utd_ratio": "1",
        "buffer_size": str(SAC["buffer_size"]),
        "minibatch_size": str(SAC["minibatch_size"]),
        "learning_starts": str(SAC["data_before_learning"] + 1),
        "learning_rate": str(SAC["learning_rate"]),
        "gamma": str(SAC["gamma"]),
        "tau": str(SAC["tau"]),
        "hidden_sizes": SAC["hidden_sizes"],
        "activation": SAC["activation"],
        "init_temperature": "1.0",
        "learn_temperature": "true",
    }


def rejax_flags() -> list[str]:
    """``_rejax_runner.py --algo sac`` flags (rejax field names in its docstring)."""
    return [
        "--algo", "sac",
        "--num-envs", str(SAC["num_envs"]),
        "--buffer-size", str(SAC["buffer_size"]),
        "--batch-size", str(SAC["minibatch_size"]),
        "--fill-buffer", str(SAC["data_before_learning"]),
        "--learning-rate", str(SAC["learning_rate"]),
        "--gamma", str(SAC["gamma"]),
        "--polyak", str(round(1.0 - SAC["tau"], 12)),
        "--hidden-sizes", SAC["hidden_sizes"],
        "--activation", SAC["activation"],
    ]


def sbx_flags() -> list[str]:
    """``_sbx_runner.py`` flags (sbx's ``SAC`` arguments in its docstring)."""
    return [
        "--buffer-size", str(SAC["buffer_size"]),
        "--batch-size", str(SAC["minibatch_size"]),
        "--learning-starts", str(SAC["data_before_learning"]),
        "--learning-rate", str(SAC["learning_rate"]),
        "--gamma", str(SAC["gamma"]),
        "--tau", str(SAC["tau"]),
        "--hidden-sizes", SAC["hidden_sizes"],
        "--activation", SAC["activation"],
    ]


# --------------------------------------------------------------------------------------------
# The three sides. Each returns one row for the results file.


def _row(impl: str, child: dict, data: dict, **extra) -> dict:
    return {
        "impl": impl, "cmd": child["cmd"], **bench.child_meta(child), "ok": True,
        "compile_s": data.get("compile_s"),
        "run_s": data.get("run_s"),
        "final_return": data.get("final_return"),
        "final_return_per_seed": data.get("final_return_per_seed"),
        "eval_return": data.get("eval_return"),
        "eval_return_per_seed": data.get("eval_return_per_seed"),
        **extra,
    }


def _purejaxpo_cmd(args, seeds: int, seed: int) -> list[str]:
    cmd = [args.purejaxpo_python, "-m", "purejaxpo", "train", "sac", "--env", ENV,
           "--seeds", str(seeds), "--seed", str(seed),
           "--total-timesteps", str(args.total_timesteps), "--num-envs", str(SAC["num_envs"]),
           "--no-progress"]  # its progress bar is fed by host callbacks: not for timing
    for k, v in purejaxpo_settings().items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def _mean_final(data: dict):
    fr = data.get("mean_final_return")
    return None if fr is None or (isinstance(fr, float) and math.isnan(fr)) else fr


def run_purejaxpo(args, env, seeds: int, seed: int, evaluate: bool) -> dict:
    child = bench.run_child_json(_purejaxpo_cmd(args, seeds, seed), cwd=ROOT, env=env,
                                 timeout=args.timeout)
    data = child["json"]
    if data is None:
        return bench.failed_run("purejaxpo", child)
    row = _row("purejaxpo", child, {**data, "final_return": _mean_final(data),
                                     "final_return_per_seed": data.get("final_return")})
    if evaluate:
        row.update(_purejaxpo_eval(args, env, seeds, seed))
    return row


def _purejaxpo_eval(args, env, seeds: int, seed: int) -> dict:
    """Untimed: the same seeds trained again with ``--checkpoint-dir``, then ``purejaxpo eval
    --greedy``. Returns the evaluation fields of a row (``eval_error`` where it failed)."""
    with tempfile.TemporaryDirectory(prefix="bench_sac_ck_") as tmp:
        ck = str(Path(tmp) / "ck")
        train = bench.run_child_json(_purejaxpo_cmd(args, seeds, seed) + ["--checkpoint-dir", ck],
                                     cwd=ROOT, env=env, timeout=args.timeout)
        if train["json"] is None:
            return {"eval_error": bench.tail(train["stderr"] or train["stdout"])}
        ev = bench.run_child_json(
            [args.purejaxpo_python, "-m", "purejaxpo", "eval", ck, "--greedy",
             "--episodes", str(args.eval_episodes), "--seed", str(seed + 1)],
            cwd=ROOT, env=env, timeout=args.timeout)
        if ev["json"] is None:
            return {"eval_error": bench.tail(ev["stderr"] or ev["stdout"])}
    return {
        "eval_return": ev["json"]["mean_return"],
        "eval_return_per_seed": [r["mean_return"] for r in ev["json"]["runs"]],
        "eval_train_final_return": _mean_final(train["json"]),
        "eval_wall_s": train["wall_s"] + ev["wall_s"],
    }


def run_rejax(args, env, seeds: int, seed: int) -> dict:
    cmd = [args.rejax_python, str(REJAX_RUNNER), "--env", ENV,
           "--total-timesteps", str(args.total_timesteps), "--seeds", str(seeds),
           "--seed", str(seed), "--eval-episodes", str(args.eval_episodes), *rejax_flags()]
    child = bench.run_child_json_line(cmd, cwd=ROOT, env=env, timeout=args.timeout)
    if child["json"] is None:
        return bench.failed_run("rejax", child)
    return _row("rejax", child, child["json"])


def run_sbx(args, env, seed: int) -> dict:
    cmd = [args.sbx_python, str(SBX_RUNNER), "--env", ENV,
           "--total-timesteps", str(args.total_timesteps), "--seed", str(seed),
           "--eval-episodes", str(args.eval_episodes), *sbx_flags()]
    child = bench.run_child_json_line(cmd, cwd=ROOT, env=env, timeout=args.timeout)
    data = child["json"]
    if data is None:
        return bench.failed_run("sbx", child)
    return _row("sbx", child, data, learn_s=data.get("learn_s"), warmup_s=data.get("warmup_s"),
                warmup_compile_s=data.get("warmup_compile_s"),
                gradient_steps_per_seed=data.get("gradient_steps_per_seed"))


# --------------------------------------------------------------------------------------------
# Summary and output.


def summarise(runs: list[dict], impl: str) -> dict | None:
    mine = [r for r in runs if r["impl"] == impl]
    if not mine:
        return None
    s = bench.summarise_runs(mine)
    ok = [r for r in mine if r.get("ok")]
    foreign = s.pop("max_foreign_cpu")  # keeps it the last key
    seeds = ok[0]["seeds"] if ok else None
    per_seed = [r["run_s"] / r["seeds"] for r in ok if r.get("run_s")]
    finals = [r.get("final_return") for r in ok]
    evals = [r.get("eval_return") for r in ok]
    out = {
        **s,
        "seeds_per_run": seeds,
        "run_s_per_seed": median(per_seed),
        "total_s_per_seed": median([((r.get("compile_s") or 0.0) + r["run_s"]) / r["seeds"]
                                    for r in ok if r.get("run_s")]),
        "final_return": median(finals),
        "final_return_min": min((x for x in finals if x is not None), default=None),
        "final_return_max": max((x for x in finals if x is not None), default=None),
        "eval_return": median(evals),
        "eval_return_min": min((x for x in evals if x is not None), default=None),
        "eval_return_max": max((x for x in evals if x is not None), default=None),
        "max_foreign_cpu": foreign,
    }
    if impl == "sbx":
        out["learn_s"] = median([r.get("learn_s") for r in ok])
        out["warmup_compile_s"] = median([r.get("warmup_compile_s") for r in ok])
    return out


def ratios(summary: dict, reference: dict | None = None) -> dict:
    """``other / purejaxpo`` of the per-seed run time (and compile + run) for each other impl
    in ``summary``; ``reference`` supplies impls missing there (sbx in the vmap phase)."""
    ours = summary.get("purejaxpo")
    out = {}
    if not ours:
        return out
    for impl in IMPLS[1:]:
        s = summary.get(impl) or (reference or {}).get(impl)
        if not s:
            continue
        out[impl] = {
            "run_s_per_seed": bench.ratio(s["run_s_per_seed"], ours["run_s_per_seed"]),
            "total_s_per_seed": bench.ratio(s["total_s_per_seed"], ours["total_s_per_seed"]),
        }
    return out


def summaries(runs: list[dict]):
    """``(summary, ratios, phase-1 table, phase-2 table)`` of some runs; a phase without runs
    gets an empty table."""
    summary, rats, tables = {}, {}, []
    for phase in ("single", "vmap"):
        mine = [x for x in runs if x["phase"] == phase]
        s = {i: summarise(mine, i) for i in IMPLS}
        summary[phase] = {k: v for k, v in s.items() if v}
    rats["single"] = ratios(summary["single"])
    rats["vmap"] = ratios(summary["vmap"], reference={"sbx": summary["single"].get("sbx")})
    for phase, note in (("single", None),
                        ("vmap", "sbx: its one-seed runs of phase 1; it cannot vmap")):
        tables.append(table(summary[phase], rats[phase], vmap_note=note)
                      if summary[phase] else [])
    return summary, rats, tables[0], tables[1]


def render(path: str) -> int:
    """Rewrites the ``.md`` beside a results ``.json`` of this script from the JSON alone."""
    json_path = Path(path)
    results = json.loads(json_path.read_text())
    summary, rats, t1, t2 = summaries(results["runs"])
    results.update(summary=summary, ratios=rats)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(markdown(results, t1, t2))
    print(f"wrote {json_path.with_suffix('.md')}")
    return 0


def _range(s: dict, key: str, spec: str) -> str:
    lo, hi = s.get(f"{key}_min"), s.get(f"{key}_max")
    if s.get(key) is None:
        return "n/a"
    if lo is None or hi is None or lo == hi:
        return fmt(s[key], spec)
    return f"{fmt(s[key], spec)} ({fmt(lo, spec)} to {fmt(hi, spec)})"


def table(summary: dict, rat: dict, *, vmap_note: str | None = None) -> list[str]:
    lines = [
        "| impl | seeds/run | ok/runs | compile s | run s | run s (min-max) | run s per seed "
        "| final return | eval return (deterministic) | max foreign CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for impl in IMPLS:
        s = summary.get(impl)
        if s is None:
            continue
        lines.append(
            f"| {impl} | {s['seeds_per_run'] or 'n/a'} | {s['ok']}/{s['runs']} "
            f"| {fmt(s['compile_s'])} | {fmt(s['run_s'])} "
            f"| {fmt(s['run_s_min'])}-{fmt(s['run_s_max'])} | {fmt(s['run_s_per_seed'])} "
            f"| {_range(s, 'final_return', '.1f')} | {_range(s, 'eval_return', '.1f')} "
            f"| {fmt(s['max_foreign_cpu'])} |"
        )
    lines.append("")
    for impl, r in rat.items():
        note = f" ({vmap_note})" if vmap_note and impl not in summary else ""
        lines.append(
            f"- {impl} / purejaxpo, run s per seed: **{fmt(r['run_s_per_seed'], '.2f')}**; "
            f"compile + run per seed: {fmt(r['total_s_per_seed'], '.2f')}{note}"
        )
    lines.append("")
    lines.append("Ratios > 1: purejaxpo is faster. Medians over the runs; ranges are min to max "
                 "over runs (each run's value is the mean over its seeds).")
    return lines


def _parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="purejaxpo SAC vs rejax SAC vs sbx SAC on Pendulum-v1 (interleaved, medians)."
    )
    p.add_argument("--repeats", type=int, default=3, help="phase-1 rounds (default 3)")
    p.add_argument("--vmap-repeats", type=int, default=1, help="phase-2 rounds (default 1)")
    p.add_argument("--vmap-seeds", type=int, default=16, help="seeds per phase-2 run (16)")
    p.add_argument("--skip-vmap", action="store_true", help="phase 1 only")
    p.add_argument("--vmap-eval", action="store_true",
                   help="phase 2: also evaluate purejaxpo (a second, checkpointed 16-seed run)")
    p.add_argument("--total-timesteps", type=int, default=10_000)
    p.add_argument("--eval-episodes", type=int, default=10,
                   help="deterministic evaluation episodes per seed (default 10)")
    p.add_argument("--base-seed", type=int, default=0,
                   help="phase-1 round r uses seed base_seed + r; phase 2 base_seed + 100 + r")
    p.add_argument("--only", default=",".join(IMPLS),
                   help="comma-separated implementations to run (default all three)")
    p.add_argument("--no-purejaxpo-eval", action="store_true",
                   help="skip purejaxpo's untimed checkpointed run and greedy evaluation")
    p.add_argument("--purejaxpo-python", default=sys.executable)
    p.add_argument("--rejax-python", default=".venv-rejax/bin/python")
    p.add_argument("--sbx-python", default=".venv-sbx/bin/python")
    bench.add_run_options(p, wait_idle=15.0, results_dir=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--render", metavar="JSON",
                   help="run nothing: rewrite the .md of this results JSON (and its summary)")
    args = p.parse_args(argv)
    args.only = [i.strip() for i in args.only.split(",") if i.strip()]
    bad = [i for i in args.only if i not in IMPLS]
    if bad or not args.only:
        p.error(f"--only: choose from {','.join(IMPLS)} (got {bad or 'nothing'})")
    return args


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _check_python(impl: str, python: str) -> bool:
    if Path(python).exists():
        return True
    req = f"benchmarks/requirements-{impl}.txt"
    print(f"{impl} python not found: {python}\ncreate it with: python3 -m venv .venv-{impl} && "
          f".venv-{impl}/bin/pip install -r {req}", file=sys.stderr)
    return False


def main(argv=None) -> int:
    args = _parse_args(argv)
    if args.render:
        return render(args.render)
    for impl in ("purejaxpo", "rejax", "sbx"):
        setattr(args, f"{impl}_python",
                bench.resolve_python(getattr(args, f"{impl}_python"), ROOT))
    impls = [i for i in IMPLS if i in args.only]
    if any(not _check_python(i, getattr(args, f"{i}_python")) for i in impls if i != "purejaxpo"):
        return 2
    env = dict(os.environ)

    dists = {
        "purejaxpo": ("jax", "jaxlib", "flax", "optax", "gymnax", "flashbax", "purejaxpo"),
        "rejax": ("jax", "jaxlib", "flax", "optax", "gymnax", "distrax", "rejax"),
        "sbx": ("jax", "jaxlib", "flax", "optax", "gymnasium", "sbx-rl", "stable_baselines3",
                "torch", "tfp-nightly"),
    }
    versions = {i: bench.probe_versions(getattr(args, f"{i}_python"), dists[i], cwd=ROOT, env=env)
                for i in impls}
    machine = bench.machine_info()
    load_start = _loadavg()
    print(f"machine: {machine['cpu_model'] or machine['processor']}, {machine['cpu_count']} CPUs, "
          f"load average {load_start}; XLA_FLAGS={env.get('XLA_FLAGS', '')!r}")
    for impl, v in versions.items():
        print(f"{impl} env: " + ", ".join(f"{k} {x}" for k, x in v.items()))

    def one(phase: str, r: int, impl: str, seeds: int, seed: int) -> dict:
        busy = bench.wait_idle(args.wait_idle, args.idle_threshold) if args.wait_idle > 0 else None
        print(f"[{phase} {r + 1}] {impl} ({seeds} seed(s) from {seed}) ...", end=" ", flush=True)
        if impl == "purejaxpo":
            evaluate = not args.no_purejaxpo_eval and (phase == "single" or args.vmap_eval)
            res = run_purejaxpo(args, env, seeds, seed, evaluate)
        elif impl == "rejax":
            res = run_rejax(args, env, seeds, seed)
        else:
            res = run_sbx(args, env, seed)
        res.update(phase=phase, repeat=r, seeds=seeds, seed=seed, busy_cores_before=busy,
                   loadavg_after=_loadavg())
        if res.get("ok"):
            print(f"compile {fmt(res['compile_s'])} s, run {fmt(res['run_s'])} s, "
                  f"final {fmt(res['final_return'], '.1f')}, eval {fmt(res['eval_return'], '.1f')}"
                  f", foreign cpu {fmt(res['foreign_cpu'])} cores"
                  + (f"\n  eval failed: {res['eval_error']}" if res.get("eval_error") else ""),
                  flush=True)
        else:
            print(f"FAILED (rc={res['rc']}):\n{res.get('error', '')}", flush=True)
        return res

    runs: list[dict] = []
    for r in range(args.repeats):
        for impl in impls:
            runs.append(one("single", r, impl, 1, args.base_seed + r))
    vmap_impls = [i for i in impls if i != "sbx"]
    if not args.skip_vmap and vmap_impls:
        for r in range(args.vmap_repeats):
            for impl in vmap_impls:
                runs.append(one("vmap", r, impl, args.vmap_seeds, args.base_seed + 100 + r))

    summary, rats, t1, t2 = summaries(runs)
    if t1:
        print("\nphase 1: one seed per run\n" + "\n".join(t1))
    if t2:
        print(f"\nphase 2: {args.vmap_seeds} seeds vmapped per run\n" + "\n".join(t2))

    settings = {
        "env": ENV,
        **SAC,
        "total_timesteps": args.total_timesteps,
        "eval_episodes": args.eval_episodes,
        "final_window_steps": math.ceil(0.05 * args.total_timesteps),
        "purejaxpo_set": purejaxpo_settings(),
        "rejax_flags": rejax_flags(),
        "sbx_flags": sbx_flags(),
        "repeats": args.repeats,
        "vmap_repeats": 0 if args.skip_vmap else args.vmap_repeats,
        "vmap_seeds": args.vmap_seeds,
        "vmap_eval": args.vmap_eval,
        "wait_idle_s": args.wait_idle,
        "xla_flags": env.get("XLA_FLAGS", ""),
    }
    results = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine, "loadavg_start": load_start, "loadavg_end": _loadavg()},
        "versions": versions,
        "settings": settings,
        "summary": summary,
        "ratios": rats,
        "runs": runs,
    }
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "sac_vmap_eval" if args.vmap_eval else "sac"  # one current result of each mode
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(markdown(results, t1, t2))
    print(f"\nwrote {json_path} and {md_path.name}")
    return 0 if all(r.get("ok") for r in runs) else 1


# --------------------------------------------------------------------------------------------
# Markdown.


def _settings_table(s: dict) -> list[str]:
    ls = s["data_before_learning"]
    rows = [
        ("environment", "gymnax 1.0 `Pendulum-v1`", "gymnax 0.0.9 `Pendulum-v1`",
         "gymnasium `Pendulum-v1` (`DummyVecEnv`, `Monitor`)"),
        ("envs x env steps per seed", f"`--num-envs 1`, `num_steps=1`, "
         f"`--total-timesteps {s['total_timesteps']}`",
         f"`num_envs=1`, `total_timesteps={s['total_timesteps']}`",
         f"1 env, `learn({s['total_timesteps']})`, `train_freq=1`"),
        ("gradient steps", "`utd_ratio=1`", "`num_epochs=1`", "`gradient_steps=1`"),
        ("first gradient step after env step", f"{ls + 1}: `learning_starts={ls + 1}`",
         f"{ls + 1}: `fill_buffer={ls}`", f"{ls + 1}: `learning_starts={ls}`"),
        ("actions before learning", f"uniform random ({ls + 1} steps)", "the untrained policy",
         f"uniform random ({ls} steps)"),
        ("buffer / minibatch", f"{s['buffer_size']} / {s['minibatch_size']}",
         "`buffer_size` / `batch_size`", "`buffer_size` / `batch_size`"),
        ("lr actor, critics, temperature", f"{s['learning_rate']} (`learning_rate`; "
         "`q_learning_rate` unset)", "`learning_rate` (one Adam)", "`learning_rate`"),
        ("gamma / tau", f"{s['gamma']} / {s['tau']}", f"`gamma` / `polyak={1 - s['tau']:g}`",
         "`gamma` / `tau`"),
        ("networks", f"{s['hidden_sizes']} `{s['activation']}`, orthogonal init",
         "`hidden_layer_sizes`, `activation` (lecun-normal)",
         "`net_arch`, `activation_fn` (lecun-normal)"),
        ("temperature", "learned from 1, target -1, loss in log alpha",
         "learned from 1, target -1, loss in alpha", "`ent_coef='auto'` (1), target -1, log alpha"),
        ("log-std clip", "[-5, 2]", "[-10, 2]", "[-20, 2]"),
        ("time-limit truncation", "bootstraps (true final obs)", "treated as termination",
         "bootstraps (`handle_timeout_termination`)"),
        ("update order", "critics, actor, temperature, target",
         "actor, critics, temperature, target", "critics, target, actor, temperature"),
        ("gradient clipping / normalisation", "none (`max_grad_norm` 1e6) / none",
         "none (`inf`) / none (`normalize_observations=False`)", "none / none"),
    ]
    lines = ["| setting | purejaxpo | rejax | sbx |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return lines


def markdown(results: dict, t1: list[str], t2: list[str]) -> str:
    m, s, v = results["machine"], results["settings"], results["versions"]
    sbx = results["summary"]["single"].get("sbx")
    lines = [
        "# SAC on Pendulum-v1: purejaxpo vs rejax vs sbx",
        "",
        f"Measured {results['timestamp']} by `benchmarks/bench_sac.py` "
        f"({', '.join(results['versions'])}): each run a fresh process; phase 1: "
        f"{s['repeats']} interleaved round(s) of one seed per run; phase 2: "
        f"{s['vmap_repeats']} round(s) of {s['vmap_seeds']} seeds vmapped in one program; "
        "medians.",
        "",
        "## Machine",
        "",
        *bench.machine_markdown(m),
        f"- **Shared**: other jobs (a long benchmark and other engineers' work) ran on the same "
        f"{m['cpu_count']} cores throughout; load average (1, 5, 15 min) "
        f"{_load(m.get('loadavg_start'))} at the start and {_load(m.get('loadavg_end'))} at the "
        "end. The driver waited up to "
        f"{s['wait_idle_s']:.0f} s for idle CPUs before each run and records each run's "
        "foreign CPU: the absolute times are slower and noisier than on an idle machine, and "
        "the interleaving spreads the disturbance over all sides.",
    ]
    for impl, x in v.items():
        lines.append(f"- {impl} side: " + ", ".join(f"{k} {val}" for k, val in x.items()))
    lines.append(f"- `XLA_FLAGS` (all sides): `{s['xla_flags'] or '(unset)'}`")
    lines += [
        "",
        "## Settings",
        "",
        f"rejax's SAC config for Pendulum-v1 (its `configs/gymnax/pendulum.yaml`) without its "
        f"observation normalisation (purejaxpo's SAC refuses it, sbx's SAC has none): "
        f"{s['total_timesteps']} env steps per seed, "
        f"{s['total_timesteps'] - s['data_before_learning']:,} gradient steps per seed on every "
        f"side, deterministic evaluation over {s['eval_episodes']} episodes per seed.",
        "",
        *_settings_table(s),
        "",
        "Differences no setting removes: the environment implementation (same dynamics, reward "
        "and 200-step limit), rejax's handling of the time limit as a termination, rejax's "
        "policy actions (not random ones) before learning, the order of the updates within a "
        "gradient step, rejax's temperature loss in alpha, the log-std clip ranges and the "
        "initialisation (table above); sbx steps its environment and replay buffer from Python "
        "(SB3), one seed per process, and cannot vmap.",
        "",
        "How each number is measured (details in the docstrings of `bench_sac.py`, "
        "`_rejax_runner.py`, `_sbx_runner.py`):",
        "",
        "- *compile*: ahead of time for purejaxpo and rejax; for sbx the JAX compilation inside "
        "`learn()` of the timed model (`jax.monitoring` events), after a warm-up model of the "
        "same settings had compiled the functions shared between instances"
        + (f" (the warm-up's compilation: {fmt(sbx['warmup_compile_s'])} s, median; a cold sbx "
           "process compiles about the sum of the two)" if sbx else "") + ".",
        "- *run*: training only, compilation excluded, no evaluation inside: the compiled "
        "program (purejaxpo, rejax); sbx's `learn()` wall time minus its compilation.",
        f"- *final return*: mean return of the training episodes that ended in the last 5% of "
        f"the env steps ({s['final_window_steps']} steps: {_episodes_in_window(s)} episodes of "
        "200 steps per seed), on every side.",
        f"- *eval return*: {s['eval_episodes']} episodes per seed acting with `tanh(mean)`, "
        "untimed. purejaxpo's needs a checkpoint, so each phase-1 round trains its seed again "
        "with `--checkpoint-dir` and runs `purejaxpo eval --greedy` (column "
        "'ckpt run final' in the runs table: equal to the timed run's when it reproduced it)"
        + ("." if s["vmap_eval"] else "; phase 2 does not evaluate purejaxpo (`--repeats 0 "
                                       "--vmap-eval --only purejaxpo` does, into "
                                       "`sac_vmap_eval.md`)."),
        "",
        "## Results",
    ]
    if t1:
        lines += ["", "### Phase 1: one seed per run", "", *t1]
    if t2:
        lines += ["", f"### Phase 2: {s['vmap_seeds']} seeds vmapped in one program", "", *t2]
    lines += [
        "",
        "## Runs",
        "",
        "| phase | round | impl | seeds | ok | compile s | run s | final return | eval return "
        "| ckpt run final | foreign CPU (cores) | load avg after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        load = r.get("loadavg_after")
        lines.append(
            f"| {r['phase']} | {r['repeat'] + 1} | {r['impl']} | {r['seeds']} "
            f"| {'yes' if r.get('ok') else 'no'} | {fmt(r.get('compile_s'))} "
            f"| {fmt(r.get('run_s'))} | {fmt(r.get('final_return'), '.1f')} "
            f"| {fmt(r.get('eval_return'), '.1f')} "
            f"| {fmt(r.get('eval_train_final_return'), '.1f')} "
            f"| {fmt(r.get('foreign_cpu'))} | {fmt(load[0] if load else None, '.1f')} |"
        )
    lines.append("")
    lines.append(bench.foreign_cpu_note(m["cpu_count"]))
    return "\n".join(lines) + "\n"


def _episodes_in_window(s: dict) -> int:
    total, window = s["total_timesteps"], s["final_window_steps"]
    return total // 200 - (total - window) // 200  # Pendulum-v1 episodes: 200 steps


def _load(x) -> str:
    return "n/a" if not x else ", ".join(f"{v:.1f}" for v in x)


if __name__ == "__main__":
    sys.exit(main())
