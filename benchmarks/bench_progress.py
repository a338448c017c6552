"""Overhead of the `purejaxpo train` progress bar (tqdm fed by host callbacks from the program).

Runs ``purejaxpo train ppo --env CartPole-v1 --seeds 1 --total-timesteps 500000 --json PATH``
with the bar (the CLI's default) and with ``--no-progress``, each run in a fresh process, the two
variants interleaved (the order alternates each repeat: bar first, then no bar first, ...), and
reads ``run_s`` (the compiled run only, compilation excluded) from each run's JSON. Reports per
variant the median and min-max of ``run_s`` and the overhead ``median(bar) / median(no bar) - 1``
(and, less sensitive to drift, the median over repeats of the per-repeat ratio minus 1).

The bar must never change results: the script checks that every run's ``final_return`` (and its
whole return curve) is identical with and without the bar, prints it, and exits with 1 if not.

The child's stderr is a pipe, not a terminal; tqdm draws into it all the same (the script checks
that the bar reached the last update), so the host callbacks and the bar's bookkeeping are timed.

Before each run the driver waits (up to ``--wait-idle`` seconds) for the CPUs to be idle, and it
records per run how many cores other processes used meanwhile (``foreign_cpu``).

Results: ``benchmarks/results/progress.{json,md}``, overwriting the current result (git keeps the
earlier ones; ``--results-dir`` writes a trial run elsewhere).

Usage::

    .venv/bin/python benchmarks/bench_progress.py                  # 7 repeats of each
    .venv/bin/python benchmarks/bench_progress.py --repeats 3 --total-timesteps 100000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench_common as bench  # noqa: E402
from _bench_common import fmt, median  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("bar", "no_bar")
LABELS = {"bar": "progress bar (default)", "no_bar": "`--no-progress`"}
TQDM_COUNT = re.compile(r"(\d+)/(\d+) \[")


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7, help="runs per variant (default 7)")
    p.add_argument("--algo", default="ppo")
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, default=500_000)
    p.add_argument("--python", default=sys.executable, help="interpreter with purejaxpo")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    p.add_argument("--wait-idle", type=float, default=120.0,
                   help="max seconds to wait for an idle machine before each run (0: don't)")
    p.add_argument("--idle-threshold", type=float, default=0.3,
                   help="'idle' means fewer than this many cores busy")
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"),
                   help="folder of progress.{json,md} (default: the committed result, overwritten)")
    return p.parse_args(argv)


def _source_state() -> dict:
    """The commit, and a hash of purejaxpo's sources as they are (edits may be uncommitted)."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "purejaxpo").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--porcelain", "--", "purejaxpo")
    return {"commit": git("rev-parse", "HEAD"), "purejaxpo_dirty": bool(dirty),
            "purejaxpo_sha256": h.hexdigest()[:16]}


def _progress_calls(python: str, env: dict, total_timesteps: int) -> int | None:
    """How many host callbacks the library makes for a run of this length, or None."""
    child = bench.run_child(
        [python, "-c", "from purejaxpo.algos.base import progress_calls as p; "
         f"print(p({int(total_timesteps)}))"],
        cwd=ROOT, env=env, timeout=300,
    )
    try:
        return int(child["stdout"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _run(args, env: dict, variant: str) -> dict:
    cmd = [args.python, "-m", "purejaxpo", "train", args.algo, "--env", args.env,
           "--seeds", str(args.seeds), "--total-timesteps", str(args.total_timesteps)]
    if variant == "no_bar":
        cmd.append("--no-progress")
    child = bench.run_child_json(cmd, cwd=ROOT, env=env, timeout=args.timeout)
    res = {"variant": variant, "cmd": child["cmd"], **bench.child_meta(child)}
    data = child["json"]
    if data is None:
        return {**res, "ok": False, "error": bench.tail(child["stderr"] or child["stdout"])}
    counts = [(int(a), int(b)) for a, b in TQDM_COUNT.findall(child["stderr"])]
    return {
        **res,
        "ok": True,
        "compile_s": data.get("compile_s"),
        "run_s": data.get("run_s"),
        "final_return": data.get("final_return"),
        "mean_final_return": data.get("mean_final_return"),
        "num_updates": data.get("num_updates"),
        "device": data.get("device"),
        "bar_last_count": max(counts)[0] if counts else None,
        "curves_sha256": hashlib.sha256(
            json.dumps(data.get("curves"), sort_keys=True).encode()).hexdigest()[:16],
    }


def _results_check(ok: list[dict], repeats: int) -> dict:
    """Whether the bar changed any result: each repeat's two runs (same seed, run back to back)
    must agree bit for bit in final_return and in the whole return curve."""
    pairs = []
    for r in range(repeats):
        x = {q["variant"]: q for q in ok if q["repeat"] == r}
        if len(x) == 2:
            pairs.append(x)
    finals = sorted({json.dumps(q["final_return"]) for q in ok})
    return {
        "pairs_compared": len(pairs),
        "identical": bool(pairs) and all(
            p["bar"]["final_return"] == p["no_bar"]["final_return"] for p in pairs),
        "curves_identical": bool(pairs) and all(
            p["bar"]["curves_sha256"] == p["no_bar"]["curves_sha256"] for p in pairs),
        "same_in_all_runs": len(finals) == 1,
        "final_returns": [json.loads(f) for f in finals],
    }


def _summarise(runs: list[dict], variant: str) -> dict:
    mine = [r for r in runs if r["variant"] == variant]
    return {**bench.summarise_runs(mine),
            "wall_s": median([r.get("wall_s") for r in mine if r.get("ok")])}


def _pct(x) -> str:
    return "n/a" if x is None else f"{x * 100:+.2f} %"


def _table(results: dict) -> list[str]:
    s, o, check = results["summary"], results["overhead"], results["results_check"]
    lines = [
        "| variant | ok/runs | run s (median) | run s (min-max) | compile s (median) "
        "| max foreign CPU (cores) |",
        "|---|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        x = s[v]
        lines.append(
            f"| {LABELS[v]} | {x['ok']}/{x['runs']} | {fmt(x['run_s'], '.3f')} "
            f"| {fmt(x['run_s_min'], '.3f')}-{fmt(x['run_s_max'], '.3f')} "
            f"| {fmt(x['compile_s'])} | {fmt(x['max_foreign_cpu'])} |"
        )
    lines += [
        "",
        f"overhead = median(bar) / median(no bar) - 1 = **{_pct(o['median_ratio'])}** "
        f"(target: under 1 %); median of the per-repeat ratios - 1: {_pct(o['paired_median'])} "
        f"(per repeat: {', '.join(_pct(x) for x in o['paired'])})",
        "",
        f"final_return identical with and without the bar (each repeat's pair, same seed): "
        f"**{'yes' if check['identical'] else 'NO'}** "
        f"({check['pairs_compared']} pairs; final_return "
        f"{', '.join(json.dumps(f) for f in check['final_returns'])}"
        + ("" if check["same_in_all_runs"] else ", not the same in every repeat") + "); "
        f"whole return curves identical: {'yes' if check['curves_identical'] else 'NO'}",
    ]
    return lines


def _markdown(results: dict, table: list[str]) -> str:
    m, s = results["machine"], results["settings"]
    src = results["source"]
    lines = [
        f"# Progress-bar overhead: `purejaxpo train {s['algo']}` on {s['env']}",
        "",
        f"Measured {results['timestamp']} by `benchmarks/bench_progress.py`: {s['repeats']} runs "
        "per variant, each in a fresh process, interleaved (the order alternates each repeat); "
        "`run_s` is the compiled run only (compilation excluded), from the CLI's `--json`.",
        "",
        f"Command: `purejaxpo train {s['algo']} --env {s['env']} --seeds {s['seeds']} "
        f"--total-timesteps {s['total_timesteps']} --json PATH [--no-progress]`; "
        f"{s['num_updates']} updates, host callbacks at most about {s['progress_calls']} a run.",
        "",
        "## Machine",
        "",
        *bench.machine_markdown(m),
        f"- device (from the CLI): {s['device']}",
        f"- `XLA_FLAGS`: `{s['xla_flags'] or '(unset)'}`",
        f"- source: commit {src['commit']}, purejaxpo/ "
        + ("with uncommitted changes" if src["purejaxpo_dirty"] else "clean")
        + f" (sources sha256 {src['purejaxpo_sha256']}"
        + ("" if results["source_unchanged"] else ", CHANGED during the benchmark") + ")",
        "",
        "## Results",
        "",
        *table,
        "",
        "## Runs",
        "",
        "| repeat | variant | ok | run s | compile s | final return | foreign CPU (cores) "
        "| bar drawn up to |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        bar = "-" if r.get("bar_last_count") is None else f"{r['bar_last_count']}"
        lines.append(
            f"| {r['repeat'] + 1} | {LABELS[r['variant']]} | {'yes' if r.get('ok') else 'no'} "
            f"| {fmt(r.get('run_s'), '.3f')} | {fmt(r.get('compile_s'))} "
            f"| {fmt(r.get('mean_final_return'), '.2f')} | {fmt(r.get('foreign_cpu'))} | {bar} |"
        )
    lines += [
        "",
        bench.foreign_cpu_note(m["cpu_count"])
        + " Bar drawn up to: the last update count the tqdm bar drew (stderr is a pipe; the bar "
        "redraws at most every 0.5 s and is cleared, not redrawn, at the end; `-`: no bar).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = _parse_args(argv)
    args.python = bench.resolve_python(args.python, ROOT)
    env = dict(os.environ)
    machine = bench.machine_info()
    source = _source_state()
    progress_calls = _progress_calls(args.python, env, args.total_timesteps)
    print(f"machine: {bench.cpu_description()}; XLA_FLAGS={env.get('XLA_FLAGS', '')!r}; "
          f"commit {source['commit']}"
          + (" (purejaxpo/ has uncommitted changes)" if source["purejaxpo_dirty"] else ""),
          flush=True)

    runs: list[dict] = []
    for r in range(args.repeats):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            busy = (
                bench.wait_idle(args.wait_idle, args.idle_threshold) if args.wait_idle > 0 else None
            )
            print(f"[{r + 1}/{args.repeats}] {variant} ...", end=" ", flush=True)
            sources = _source_state()["purejaxpo_sha256"]
            res = _run(args, env, variant)
            res.update(repeat=r, busy_cores_before=busy, source_sha256=sources)
            runs.append(res)
            if res["ok"]:
                print(f"compile {res['compile_s']:.2f} s, run {res['run_s']:.3f} s, "
                      f"final return {res['final_return']}, "
                      f"foreign cpu {fmt(res['foreign_cpu'])} cores", flush=True)
            else:
                print(f"FAILED (rc={res['rc']}):\n{res.get('error', '')}", flush=True)

    summary = {v: _summarise(runs, v) for v in VARIANTS}
    a, b = summary["bar"]["run_s"], summary["no_bar"]["run_s"]
    paired = []
    for r in range(args.repeats):
        x = {v: next((q["run_s"] for q in runs if q["repeat"] == r and q["variant"] == v
                      and q.get("ok")), None) for v in VARIANTS}
        if x["bar"] and x["no_bar"]:
            paired.append(x["bar"] / x["no_bar"] - 1)
    overhead = {"median_ratio": a / b - 1 if a and b else None,
                "paired": paired, "paired_median": median(paired)}

    ok = [r for r in runs if r.get("ok")]
    check = _results_check(ok, args.repeats)
    bar_drawn = all(r.get("bar_last_count") is not None for r in ok if r["variant"] == "bar")

    results = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "source": source,
        "source_unchanged": {r["source_sha256"] for r in runs} <= {source["purejaxpo_sha256"]},
        "settings": {
            "algo": args.algo, "env": args.env, "seeds": args.seeds,
            "total_timesteps": args.total_timesteps, "repeats": args.repeats,
            "num_updates": next((r["num_updates"] for r in ok), None),
            "progress_calls": progress_calls,
            "device": next((r["device"] for r in ok), None),
            "xla_flags": env.get("XLA_FLAGS", ""),
        },
        "summary": summary,
        "overhead": overhead,
        "results_check": check,
        "bar_drawn": bar_drawn,
        "runs": runs,
    }
    table = _table(results)
    print()
    print("\n".join(table))
    if not bar_drawn:
        print("warning: the bar drew nothing in some runs with it", file=sys.stderr)
    if not results["source_unchanged"]:
        print("warning: purejaxpo's sources changed during the benchmark", file=sys.stderr)

    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "progress.json", out_dir / "progress.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(_markdown(results, table))
    print(f"\nwrote {json_path} and {md_path.name}")
    return 0 if ok and len(ok) == len(runs) and check["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
