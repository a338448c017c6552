"""Benchmark purejaxpo's PPO against rejax's PPO (and PureJaxRL's) on CartPole-v1 with identical
settings.

Settings (every side): 4 envs x 128 steps per rollout, 4 epochs, 4 minibatches, lr 2.5e-4 with
linear annealing, gamma 0.99, GAE lambda 0.95, clip 0.2, entropy 0.01, value 0.5, max grad norm
0.5, 64x64 tanh MLP, no observation/reward normalisation, 5e5 env steps by default.

Each run is a fresh subprocess, the implementations are interleaved (purejaxpo, rejax[,
purejaxrl], purejaxpo, rejax, ...), and the table shows medians: compile time, run time after
compilation, final return, env steps/s, and rejax_run_s / purejaxpo_run_s (> 1 means purejaxpo is
faster), with PureJaxRL also purejaxrl_run_s / purejaxpo_run_s and purejaxrl_run_s / rejax_run_s.

* purejaxpo runs through its CLI in the main environment:
  ``python -m purejaxpo train ppo ... --json PATH``.
* rejax 0.1.3 needs gymnax 0.0.9 (it unpacks five values from ``env.step``), which clashes with
  purejaxpo's gymnax 1.0, so it runs in its own environment through ``_rejax_runner.py``::

      python3 -m venv .venv-rejax
      .venv-rejax/bin/pip install -r benchmarks/requirements-rejax.txt

* PureJaxRL (``--purejaxrl-dir DIR``; skipped by default) is not on PyPI and its code is not part
  of this repository: ``git clone https://github.com/luchris429/purejaxrl DIR``. Its
  ``make_train`` runs through ``_purejaxrl_runner.py`` in the rejax environment
  (``--purejaxrl-python``), which has what it needs (gymnax 0.0.9, flax, optax, distrax; its
  ``wrappers.py`` also imports brax, which the runner replaces by a stand-in, as PPO never uses
  it).

All sides get the same ``XLA_FLAGS`` (the caller's). ``--safe-scheduler`` adds
``--xla_cpu_enable_concurrency_optimized_scheduler=false`` to all; purejaxpo and rejax do not
need it (purejaxpo's networks draw orthogonal weights without LAPACK QR, rejax's use lecun-normal
init; see ``purejaxpo.backends.cpu.use_safe_scheduler``), and it slows both. PureJaxRL does need it with more than
one seed: its orthogonal init is a batched LAPACK QR under ``vmap``, which hangs on jaxlib 0.10.x
with 2 CPU threads, so ``_purejaxrl_runner.py`` adds the flag itself when ``--seeds`` > 1 (its
runs record the ``XLA_FLAGS`` they used).

Results go to ``benchmarks/results/ppo_vs_rejax_1seed.{json,md}`` (``--seeds 1``) or
``ppo_vs_rejax_<N>seeds.{json,md}``, overwriting the current result of that seed count (git keeps
the earlier ones); the JSON keeps each run's summary, not its per-update return curve.

Run it on an otherwise idle machine: before each run the driver waits (up to ``--wait-idle``
seconds) for the CPUs to be idle, and it records, per run, how much CPU other processes used while
it ran (``foreign_cpu``, in cores); runs with a large value were disturbed.

Usage::

    .venv/bin/python benchmarks/bench_ppo_vs_rejax.py                 # 3 repeats each
    .venv/bin/python benchmarks/bench_ppo_vs_rejax.py --skip-purejaxpo --repeats 1
    .venv/bin/python benchmarks/bench_ppo_vs_rejax.py --purejaxrl-dir /tmp/purejaxrl --seeds 16
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench_common as bench  # noqa: E402
from _bench_common import fmt, median  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "benchmarks" / "_rejax_runner.py"
PUREJAXRL_RUNNER = ROOT / "benchmarks" / "_purejaxrl_runner.py"
IMPLS = ("purejaxpo", "rejax", "purejaxrl")
XLA_SAFE_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"

# The benchmark's PPO settings, in purejaxpo's config names (passed as `--set key=value`).
NUM_ENVS = 4
PPO_SETTINGS = {
    "num_steps": "128",
    "num_epochs": "4",
    "num_minibatches": "4",
    "learning_rate": "2.5e-4",
    "anneal_lr": "true",
    "gamma": "0.99",
    "gae_lambda": "0.95",
    "clip_eps": "0.2",
    "ent_coef": "0.01",
    "vf_coef": "0.5",
    "max_grad_norm": "0.5",
    "hidden_sizes": "64,64",
    "activation": "tanh",
    "normalize_obs": "false",
    "normalize_reward": "false",
}
# The same settings in _rejax_runner.py's flags (see its docstring for the rejax field names).
REJAX_SETTINGS = {
    "--num-envs": str(NUM_ENVS),
    "--num-steps": PPO_SETTINGS["num_steps"],
    "--num-epochs": PPO_SETTINGS["num_epochs"],
    "--num-minibatches": PPO_SETTINGS["num_minibatches"],
    "--learning-rate": PPO_SETTINGS["learning_rate"],
    "--gamma": PPO_SETTINGS["gamma"],
    "--gae-lambda": PPO_SETTINGS["gae_lambda"],
    "--clip-eps": PPO_SETTINGS["clip_eps"],
    "--ent-coef": PPO_SETTINGS["ent_coef"],
    "--vf-coef": PPO_SETTINGS["vf_coef"],
    "--max-grad-norm": PPO_SETTINGS["max_grad_norm"],
    "--hidden-sizes": PPO_SETTINGS["hidden_sizes"],
    "--activation": PPO_SETTINGS["activation"],
}


# --------------------------------------------------------------------------------------------
# The sides.


def _probe_versions(python: str, env: dict, side: str) -> dict:
    return bench.probe_versions(
        python, ("jax", "jaxlib", "flax", "optax", "gymnax", side), cwd=ROOT, env=env
    )


def _purejaxpo_help(python: str, env: dict) -> str | None:
    try:
        out = subprocess.run(
            [python, "-m", "purejaxpo", "train", "ppo", "--help"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
    except Exception:  # noqa: BLE001
        return None
    return out.stdout if out.returncode == 0 else None


def _run_purejaxpo(args, env, seed: int | None, no_progress: bool, timeout: float) -> dict:
    cmd = [
        args.purejaxpo_python, "-m", "purejaxpo", "train", "ppo",
        "--env", "CartPole-v1",
        "--seeds", str(args.seeds),
        "--total-timesteps", str(args.total_timesteps),
        "--num-envs", str(NUM_ENVS),
    ]
    for k, v in PPO_SETTINGS.items():
        cmd += ["--set", f"{k}={v}"]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if no_progress:  # its tqdm bar is fed by host callbacks: not for timing
        cmd += ["--no-progress"]
    cmd += args.purejaxpo_arg or []
    child = bench.run_child_json(cmd, cwd=ROOT, env=env, timeout=timeout)
    data = child["json"]
    if data is None:
        return _failed("purejaxpo", child)
    fr = data.get("final_return")
    per_seed = fr if isinstance(fr, list) else [fr]
    mean_fr = data.get("mean_final_return")
    if mean_fr is None and per_seed and None not in per_seed:
        mean_fr = statistics.fmean(per_seed)
    return _succeeded("purejaxpo", child, data, mean_fr, per_seed)


def _run_rejax(args, env, seed: int, timeout: float) -> dict:
    cmd = [
        args.rejax_python, str(RUNNER),
        "--env", "CartPole-v1",
        "--total-timesteps", str(args.total_timesteps),
        "--seeds", str(args.seeds),
        "--seed", str(seed),
        "--lr-schedule", args.rejax_lr_schedule,
        "--grad-clip", args.rejax_grad_clip,
    ]
    for k, v in REJAX_SETTINGS.items():
        cmd += [k, v]
    child = {**bench.run_child(cmd, cwd=ROOT, env=env, timeout=timeout), "cmd": cmd}
    line = next(
        (ln for ln in reversed(child["stdout"].splitlines()) if ln.startswith("{")), None
    )
    if child["rc"] != 0 or not line:
        return _failed("rejax", child)
    data = json.loads(line)
    return _succeeded(
        "rejax", child, data, data["final_return"], data.get("final_return_per_seed")
    )


def _run_purejaxrl(args, env, seed: int, timeout: float) -> dict:
    # _purejaxrl_runner.py runs PureJaxRL's make_train with the settings above (its docstring
    # maps them); it adds the safe scheduler flag itself when seeds > 1.
    cmd = [
        args.purejaxrl_python, str(PUREJAXRL_RUNNER),
        "--purejaxrl-dir", args.purejaxrl_dir,
        "--total-timesteps", str(args.total_timesteps),
        "--seeds", str(args.seeds),
        "--seed", str(seed),
    ]
    child = bench.run_child_json_line(cmd, cwd=ROOT, env=env, timeout=timeout)
    data = child["json"]
    if data is None:
        return _failed("purejaxrl", child)
    return _succeeded(
        "purejaxrl", child, data, data["final_return"], data.get("final_return_per_seed")
    )


def _succeeded(impl: str, child: dict, data: dict, final_return, per_seed) -> dict:
    return {
        "impl": impl, "cmd": child["cmd"], **bench.child_meta(child),
        "ok": True,
        "compile_s": data.get("compile_s"),
        "run_s": data.get("run_s"),
        "final_return": final_return,
        "final_return_per_seed": per_seed,
        "reported_steps_per_s": data.get("steps_per_s"),
        "device": data.get("device"),
        # The side's own JSON, less its return per update (hundreds of values per seed): the
        # results file keeps summaries; a curve is one rerun away.
        "raw": {k: v for k, v in data.items() if k != "curves"},
    }


def _failed(impl: str, child: dict) -> dict:
    return {"impl": impl, "cmd": child["cmd"], **bench.child_meta(child),
            "ok": False, "error": bench.tail(child["stderr"] or child["stdout"])}


# --------------------------------------------------------------------------------------------
# Summary and output.


def _summarise(runs: list[dict], impl: str, env_steps_per_seed: int, seeds: int) -> dict | None:
    mine = [r for r in runs if r["impl"] == impl]
    if not mine:
        return None
    summary = bench.summarise_runs(mine)
    ok = [r for r in mine if r.get("ok")]
    sps = [env_steps_per_seed * seeds / r["run_s"] for r in ok if r.get("run_s")]
    foreign = summary.pop("max_foreign_cpu")  # keeps it the last key
    extra = {}
    if impl == "purejaxrl":  # purejaxpo's definition of the final return, for comparison
        extra["final_return_window"] = median([r["raw"].get("final_return_window") for r in ok])
    return {
        **summary,
        "final_return": median([r.get("final_return") for r in ok]),
        **extra,
        "steps_per_s": median(sps),
        "max_foreign_cpu": foreign,
    }


def _ratios(summary: dict) -> dict:
    """Run-time ratios between the sides that ran (None where one is missing): rejax over
    purejaxpo always, the PureJaxRL ones only when PureJaxRL ran."""
    def run_s(impl):
        return (summary.get(impl) or {}).get("run_s")

    out = {"rejax_over_purejaxpo": bench.ratio(run_s("rejax"), run_s("purejaxpo"))}
    if "purejaxrl" in summary:
        out["purejaxrl_over_purejaxpo"] = bench.ratio(run_s("purejaxrl"), run_s("purejaxpo"))
        out["purejaxrl_over_rejax"] = bench.ratio(run_s("purejaxrl"), run_s("rejax"))
    return out


def _table(summary: dict, ratios: dict) -> list[str]:
    head = (
        "| impl | ok/runs | compile s (median) | run s (median) | run s (min-max) "
        "| final return (median) | env steps/s (median) |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for impl in IMPLS:
        s = summary.get(impl)
        if s is None:
            continue
        lines.append(
            f"| {impl} | {s['ok']}/{s['runs']} | {fmt(s['compile_s'])} | {fmt(s['run_s'])} "
            f"| {fmt(s['run_s_min'])}-{fmt(s['run_s_max'])} | {fmt(s['final_return'], '.1f')} "
            f"| {fmt(s['steps_per_s'], ',.0f')} |"
        )
    lines.append("")
    ratio = ratios["rejax_over_purejaxpo"]
    lines.append(
        f"rejax_run_s / purejaxpo_run_s = {fmt(ratio, '.3f')}"
        + ("" if ratio is None else "  (> 1: purejaxpo is faster)")
    )
    if "purejaxrl_over_purejaxpo" in ratios:
        ratio = ratios["purejaxrl_over_purejaxpo"]
        lines.append("")
        lines.append(
            f"purejaxrl_run_s / purejaxpo_run_s = {fmt(ratio, '.3f')}"
            + ("" if ratio is None else "  (> 1: purejaxpo is faster)")
        )
        ratio = ratios["purejaxrl_over_rejax"]
        lines.append("")
        lines.append(
            f"purejaxrl_run_s / rejax_run_s = {fmt(ratio, '.3f')}"
            + ("" if ratio is None else "  (> 1: rejax is faster)")
        )
    return lines


def _parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="purejaxpo PPO vs rejax PPO (and PureJaxRL's) on CartPole-v1 (interleaved, "
                    "medians)."
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per implementation (default 3)")
    p.add_argument("--total-timesteps", type=int, default=500_000)
    p.add_argument("--seeds", type=int, default=1, help="seeds per run, vmapped (default 1)")
    p.add_argument("--base-seed", type=int, default=0,
                   help="repeat r uses seed base_seed + r * seeds (rejax, PureJaxRL; purejaxpo "
                        "only if its CLI has --seed)")
    p.add_argument("--skip-rejax", action="store_true")
    p.add_argument("--skip-purejaxpo", action="store_true")
    p.add_argument("--rejax-python", default=".venv-rejax/bin/python")
    p.add_argument("--purejaxpo-python", default=sys.executable)
    p.add_argument("--purejaxpo-arg", action="append", metavar="ARG",
                   help="extra argument for purejaxpo's `train` (repeatable), e.g. "
                        "--purejaxpo-arg=--cpu-devices=1 --purejaxpo-arg=--no-fused-loops")
    p.add_argument("--purejaxrl-dir", default=None,
                   help="a PureJaxRL checkout (git clone https://github.com/luchris429/purejaxrl "
                        "DIR) to run as a third side; default: PureJaxRL is skipped")
    p.add_argument("--purejaxrl-python", default=".venv-rejax/bin/python",
                   help="interpreter for PureJaxRL (default: rejax's environment)")
    p.add_argument("--rejax-lr-schedule", choices=("linear", "constant"), default="linear",
                   help="linear (default) matches the benchmark; constant is stock rejax 0.1.3")
    p.add_argument("--rejax-grad-clip", choices=("elementwise", "global_norm"),
                   default="elementwise",
                   help="rejax 0.1.3 clips each gradient element (default, stock); "
                        "global_norm uses optax.clip_by_global_norm per network")
    p.add_argument("--safe-scheduler", action="store_true",
                   help=f"add {XLA_SAFE_FLAG} to XLA_FLAGS for all sides (off by default: "
                        "purejaxpo and rejax do not need it, and it slows both; PureJaxRL's "
                        "runner adds it itself when --seeds > 1)")
    bench.add_run_options(p, wait_idle=120.0, results_dir=str(ROOT / "benchmarks" / "results"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    args.skip_purejaxrl = args.purejaxrl_dir is None
    if args.skip_rejax and args.skip_purejaxpo and args.skip_purejaxrl:
        print("nothing to run: all sides skipped", file=sys.stderr)
        return 2
    args.rejax_python = bench.resolve_python(args.rejax_python, ROOT)
    args.purejaxpo_python = bench.resolve_python(args.purejaxpo_python, ROOT)
    args.purejaxrl_python = bench.resolve_python(args.purejaxrl_python, ROOT)
    if args.purejaxrl_dir is not None:
        args.purejaxrl_dir = str(Path(args.purejaxrl_dir).expanduser().resolve())

    env = dict(os.environ)
    if args.safe_scheduler and "xla_cpu_enable_concurrency_optimized_scheduler" not in env.get(
        "XLA_FLAGS", ""
    ):
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {XLA_SAFE_FLAG}".strip()

    batch = NUM_ENVS * int(PPO_SETTINGS["num_steps"])
    env_steps_per_seed = (args.total_timesteps // batch) * batch

    impls = [i for i in IMPLS if not getattr(args, f"skip_{i}")]
    versions = {}
    pjp_seed_flag = pjp_no_progress = False
    if "purejaxpo" in impls:
        versions["purejaxpo"] = _probe_versions(args.purejaxpo_python, env, "purejaxpo")
        help_text = _purejaxpo_help(args.purejaxpo_python, env)
        if help_text is None:
            print("warning: `python -m purejaxpo train ppo --help` failed", file=sys.stderr)
        pjp_seed_flag = help_text is not None and bool(re.search(r"--seed\b(?!s)", help_text))
        pjp_no_progress = help_text is not None and "--no-progress" in help_text
    if "rejax" in impls:
        if not Path(args.rejax_python).exists():
            print(f"rejax python not found: {args.rejax_python}\n"
                  "create it with: python3 -m venv .venv-rejax && "
                  ".venv-rejax/bin/pip install -r benchmarks/requirements-rejax.txt",
                  file=sys.stderr)
            return 2
        versions["rejax"] = _probe_versions(args.rejax_python, env, "rejax")
    if "purejaxrl" in impls:
        if not (Path(args.purejaxrl_dir) / "purejaxrl" / "ppo.py").is_file():
            print(f"no purejaxrl/ppo.py in {args.purejaxrl_dir}; get it with: "
                  f"git clone https://github.com/luchris429/purejaxrl {args.purejaxrl_dir}",
                  file=sys.stderr)
            return 2
        if not Path(args.purejaxrl_python).exists():
            print(f"PureJaxRL python not found: {args.purejaxrl_python}", file=sys.stderr)
            return 2
        versions["purejaxrl"] = _probe_versions(args.purejaxrl_python, env, "distrax")

    machine = bench.machine_info()
    print(f"machine: {machine['processor'] or '?'} ({machine['cpu_model']}), "
          f"{machine['cpu_count']} CPUs; XLA_FLAGS={env.get('XLA_FLAGS', '')!r}")
    for impl, v in versions.items():
        print(f"{impl} env: jax {v.get('jax')} / jaxlib {v.get('jaxlib')}, flax {v.get('flax')}, "
              f"gymnax {v.get('gymnax')}" + _side_extra(impl, v))

    runs: list[dict] = []
    for r in range(args.repeats):
        seed = args.base_seed + r * args.seeds
        for impl in impls:
            busy = (
                bench.wait_idle(args.wait_idle, args.idle_threshold) if args.wait_idle > 0 else None
            )
            print(f"[{r + 1}/{args.repeats}] {impl} (seed {seed}) ...", end=" ", flush=True)
            if impl == "purejaxpo":
                res = _run_purejaxpo(
                    args, env, seed if pjp_seed_flag else None, pjp_no_progress, args.timeout
                )
            elif impl == "rejax":
                res = _run_rejax(args, env, seed, args.timeout)
            else:
                res = _run_purejaxrl(args, env, seed, args.timeout)
            res.update(repeat=r, seed=seed if (impl != "purejaxpo" or pjp_seed_flag) else None,
                       busy_cores_before=busy)
            runs.append(res)
            if res.get("ok"):
                print(f"compile {res['compile_s']:.2f} s, run {res['run_s']:.2f} s, "
                      f"return {fmt(res['final_return'], '.1f')}, "
                      f"foreign cpu {fmt(res['foreign_cpu'])} cores", flush=True)
            else:
                print(f"FAILED (rc={res['rc']}):\n{res.get('error', '')}", flush=True)

    summary = {i: _summarise(runs, i, env_steps_per_seed, args.seeds) for i in impls}
    ratios = _ratios(summary)

    table = _table(summary, ratios)
    print()
    print("\n".join(table))

    settings = {
        "env": "CartPole-v1",
        "num_envs": NUM_ENVS,
        **{k: v for k, v in PPO_SETTINGS.items()},
        "total_timesteps": args.total_timesteps,
        "env_steps_per_seed": env_steps_per_seed,
        "seeds": args.seeds,
        "repeats": args.repeats,
        "rejax_lr_schedule": args.rejax_lr_schedule,
        "purejaxpo_args": args.purejaxpo_arg or [],
        "rejax_grad_clip": args.rejax_grad_clip,
        "xla_flags": env.get("XLA_FLAGS", ""),
        "purejaxpo_no_progress": pjp_no_progress,
        "purejaxpo_seed_flag": pjp_seed_flag,
    }
    if "purejaxrl" in impls:
        settings["purejaxrl_dir"] = args.purejaxrl_dir
        settings["purejaxrl_source"] = _purejaxrl_source(runs)
    results = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "versions": versions,
        "settings": settings,
        "summary": summary,
        **{f"ratio_{k}_run_s": v for k, v in ratios.items()},
        "runs": runs,
    }
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = results_stem(args.seeds)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(_markdown(results, table))
    print(f"\nwrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}"
          f" and {md_path.name}")
    return 0 if all(r.get("ok") for r in runs) else 1


def results_stem(seeds: int) -> str:
    """The one results file name of a seed count: ``ppo_vs_rejax_1seed``, ``.._16seeds``."""
    return f"ppo_vs_rejax_{seeds}seed{'' if seeds == 1 else 's'}"


def _side_extra(impl: str, v: dict) -> str:
    """The version worth naming for a side besides jax, flax and gymnax."""
    if impl == "rejax":
        return f", rejax {v.get('rejax')}"
    if impl == "purejaxrl":
        return f", distrax {v.get('distrax')}"
    return ""


def _purejaxrl_source(runs: list[dict]) -> dict | None:
    """Which PureJaxRL ran (checkout, git commit, file hashes), from its first successful run."""
    for r in runs:
        if r["impl"] == "purejaxrl" and r.get("ok"):
            return {k: v for k, v in r["raw"].items() if k.startswith("purejaxrl_")}
    return None


def _markdown(results: dict, table: list[str]) -> str:
    m, s, v = results["machine"], results["settings"], results["versions"]
    with_pjrl = "purejaxrl" in v
    lines = [
        "# PPO on CartPole-v1: purejaxpo vs rejax" + (" vs PureJaxRL" if with_pjrl else ""),
        "",
        f"Measured {results['timestamp']} by `benchmarks/bench_ppo_vs_rejax.py`: "
        f"{s['repeats']} interleaved runs per implementation, each in a fresh process; medians.",
        "",
        "## Machine",
        "",
        *bench.machine_markdown(m),
    ]
    for impl in IMPLS:
        if impl in v:
            x = v[impl]
            lines.append(
                f"- {impl} side: jax {x.get('jax')}, jaxlib {x.get('jaxlib')}, "
                f"flax {x.get('flax')}, optax {x.get('optax')}, gymnax {x.get('gymnax')}"
                + _side_extra(impl, x)
            )
    lines.append(f"- `XLA_FLAGS` ({'all' if with_pjrl else 'both'} sides): "
                 f"`{s['xla_flags'] or '(unset)'}`")
    if with_pjrl:
        flags = sorted({r["raw"].get("xla_flags", "") for r in results["runs"]
                        if r["impl"] == "purejaxrl" and r.get("ok")})
        lines.append("- `XLA_FLAGS` of the PureJaxRL runs (its runner adds the safe scheduler "
                     "flag when seeds > 1): "
                     + (", ".join(f"`{f or '(unset)'}`" for f in flags) or "n/a"))
    lines += [
        "",
        "## Settings",
        "",
        f"{s['num_envs']} envs x {s['num_steps']} steps per rollout, {s['num_epochs']} epochs, "
        f"{s['num_minibatches']} minibatches, lr {s['learning_rate']} "
        f"(linear annealing: {s['anneal_lr']}), gamma {s['gamma']}, GAE lambda {s['gae_lambda']}, "
        f"clip {s['clip_eps']}, ent {s['ent_coef']}, vf {s['vf_coef']}, "
        f"max grad norm {s['max_grad_norm']}, MLP {s['hidden_sizes']} {s['activation']}; "
        f"{s['total_timesteps']} env steps requested ({s['env_steps_per_seed']} run per seed); "
        f"{s['seeds']} seed(s) per run{' (vmapped)' if s['seeds'] > 1 else ''}.",
        "",
        "purejaxpo: its `train` command, with "
        + (f"the extra arguments `{' '.join(s['purejaxpo_args'])}`"
           if s.get("purejaxpo_args") else "its defaults")
        + " (by default the seeds are split over one JAX CPU device per core and small loops "
        "compile to one kernel: `purejaxpo.devices`; `--cpu-devices 1 --no-fused-loops` is the "
        "previous behaviour). rejax and PureJaxRL run their programs on JAX's default one CPU "
        "device.",
        "",
        f"rejax: lr schedule `{s['rejax_lr_schedule']}` (rejax 0.1.3 has no annealing; "
        "`linear` is patched in by `_rejax_runner.py`), gradient clipping "
        f"`{s['rejax_grad_clip']}` (rejax's `max_grad_norm` is `optax.clip`, element-wise). "
        "rejax's final return is the mean of its own 128 evaluation episodes at the end of "
        "training (stochastic policy; included in its run time).",
        "",
        *(_purejaxrl_markdown(results) if with_pjrl else []),
        "## Results",
        "",
        *table,
        "",
        "## Runs",
        "",
        "| repeat | impl | ok | compile s | run s | final return | foreign CPU (cores) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['repeat'] + 1} | {r['impl']} | {'yes' if r.get('ok') else 'no'} "
            f"| {fmt(r.get('compile_s'))} | {fmt(r.get('run_s'))} "
            f"| {fmt(r.get('final_return'), '.1f')} | {fmt(r.get('foreign_cpu'))} |"
        )
    lines.append("")
    lines.append(bench.foreign_cpu_note(m["cpu_count"]))
    return "\n".join(lines) + "\n"


def _purejaxrl_markdown(results: dict) -> list[str]:
    """The Settings paragraph on PureJaxRL: which code ran and what its final return is."""
    src = results["settings"].get("purejaxrl_source") or {}
    commit = src.get("purejaxrl_commit")
    sha = src.get("purejaxrl_ppo_sha256")
    window = (results["summary"].get("purejaxrl") or {}).get("final_return_window")
    return [
        "PureJaxRL: its own `make_train` from `purejaxrl/ppo.py` (checkout "
        f"`{results['settings'].get('purejaxrl_dir')}`"
        + (f", commit `{commit}`" if commit else "")
        + (f", ppo.py sha256 `{sha[:12]}`" if sha else "")
        + ") through `_purejaxrl_runner.py`, with the settings above (its own `__main__` "
        "config, `DEBUG=False`); by its code: separate actor and critic MLPs in one module "
        "with one optimiser (global-norm gradient clipping over both, Adam eps 1e-5), "
        "orthogonal init. Its final return is the mean return of the "
        "training episodes that finished in the last update's rollout (no evaluation; a seed "
        "with none is left out); over the last 5% of the updates, as purejaxpo counts it, the "
        f"median is {fmt(window, '.1f')}.",
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())
