"""Pieces the benchmark scripts in this folder share: run a child process and time it, measure how
busy the CPUs are (and how much of that was not the child), and describe the machine.

Standard library only, and no purejaxpo import: it is also imported inside other virtual
environments (the rejax and TRL ones) by scripts of this folder, which find it next to them
(a script run as ``python benchmarks/X.py`` has this folder on ``sys.path``; the TRL runners put
it there themselves). :func:`probe_versions` runs it inside another interpreter by path.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --------------------------------------------------------------------------------------------
# CPU accounting: how busy the machine is, and how much of it was not our child process.


def cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies summed over all CPUs, from /proc/stat; None where unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def machine_busy_s() -> float | None:
    """CPU-seconds all processes on the machine have been busy (Linux /proc/stat), or None."""
    j = cpu_jiffies()
    return None if j is None else j[0] / _CLK_TCK


def busy_cores(interval: float = 1.0) -> float | None:
    """How many cores were busy (all processes) over the next ``interval`` seconds."""
    a = cpu_jiffies()
    time.sleep(interval)
    b = cpu_jiffies()
    if a is None or b is None or b[1] == a[1]:
        return None
    ncpu = os.cpu_count() or 1
    return (b[0] - a[0]) / (b[1] - a[1]) * ncpu


def wait_idle(max_wait: float, threshold: float) -> float | None:
    """Waits until fewer than `threshold` cores are busy, or `max_wait` seconds have passed."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = busy_cores(1.0)
        if busy is None or busy < threshold or time.monotonic() >= deadline:
            return busy
        print(f"  (waiting for the machine to go idle: {busy:.2f} cores busy)", flush=True)
        time.sleep(4.0)


# --------------------------------------------------------------------------------------------
# Child processes.


def run_child(cmd: list[str], *, cwd=None, env: dict | None = None,
              timeout: float | None = None) -> dict:
    """Runs `cmd`; returns stdout, stderr, rc, wall time and foreign CPU use (cores).

    ``foreign_cpu``: cores that other processes (not the child and its own children) kept busy,
    on average, while the child lived; 0 is an undisturbed run. ``rc`` is None on a timeout.
    """
    t_before = os.times()
    j_before = cpu_jiffies()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = None
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")) + (
            f"\n[timed out after {timeout:.0f} s]"
        )
    wall = time.perf_counter() - t0
    t_after = os.times()
    j_after = cpu_jiffies()
    foreign = None
    if j_before is not None and j_after is not None and wall > 0:
        system_cpu_s = (j_after[0] - j_before[0]) / _CLK_TCK
        child_cpu_s = (t_after.children_user - t_before.children_user) + (
            t_after.children_system - t_before.children_system
        )
        foreign = max(0.0, (system_cpu_s - child_cpu_s) / wall)
    return {"rc": rc, "stdout": out, "stderr": err, "wall_s": wall, "foreign_cpu": foreign}


def run_child_json(cmd: list[str], *, cwd=None, env: dict | None = None,
                   timeout: float | None = None, flag: str = "--json") -> dict:
    """:func:`run_child` on ``cmd + [flag, PATH]`` (PATH a temporary file the child writes).

    Adds ``cmd`` (the command as run) and ``json`` (the file's contents, parsed; None unless the
    child exited with 0 and wrote valid JSON) to :func:`run_child`'s dict.
    """
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        path = Path(tmp) / "result.json"
        full = [*cmd, flag, str(path)]
        child = run_child(full, cwd=cwd, env=env, timeout=timeout)
        data = None
        if child["rc"] == 0 and path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                pass
    return {**child, "cmd": full, "json": data}


def last_json_line(text: str) -> dict | None:
    """The last line of ``text`` that parses as a JSON object (a runner's result line), or None."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return None


def run_child_json_line(cmd: list[str], *, cwd=None, env: dict | None = None,
                        timeout: float | None = None) -> dict:
    """:func:`run_child` for a runner that prints its result as one JSON line on stdout.

    Adds ``cmd`` and ``json`` (:func:`last_json_line` of stdout; None unless the child exited
    with 0) to :func:`run_child`'s dict, as :func:`run_child_json` does for ``--json`` files.
    """
    child = run_child(cmd, cwd=cwd, env=env, timeout=timeout)
    data = last_json_line(child["stdout"]) if child["rc"] == 0 else None
    return {**child, "cmd": cmd, "json": data}


def child_meta(child: dict) -> dict:
    """The part of :func:`run_child`'s result worth keeping in a results file."""
    return {"rc": child["rc"], "wall_s": child["wall_s"], "foreign_cpu": child["foreign_cpu"]}


def failed_run(impl: str, child: dict) -> dict:
    """A results-file row for a child that failed: its command, :func:`child_meta` and the tail
    of its stderr (stdout where stderr is empty)."""
    return {"impl": impl, "cmd": child["cmd"], **child_meta(child), "ok": False,
            "error": tail(child["stderr"] or child["stdout"])}


def tail(text: str, n: int = 2000) -> str:
    return text[-n:]


# --------------------------------------------------------------------------------------------
# Versions and the machine.


def dist_versions(dists) -> dict:
    """{distribution: installed version or None} in this interpreter."""
    import importlib.metadata as md

    def version(d):
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            return None

    return {d: version(d) for d in dists}


def probe_versions(python: str, dists, *, cwd=None, env: dict | None = None,
                   timeout: float = 120) -> dict:
    """:func:`dist_versions` (and ``python``) as seen by another interpreter, e.g. another venv."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import _bench_common as b; "
        f"print(json.dumps({{**b.dist_versions({tuple(dists)!r}), "
        "'python': sys.version.split()[0]}))"
    )
    try:
        out = subprocess.run(
            [python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=timeout,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return {"error": f"{type(e).__name__}: {e}"}


def cpu_model() -> str | None:
    """The CPU's ``model name`` from /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_description() -> str:
    """``"<CPU model>, <N> cores"`` (``platform.processor()`` where the model is unknown)."""
    return f"{cpu_model() or platform.processor()}, {os.cpu_count()} cores"


def machine_info() -> dict:
    return {
        "processor": platform.processor(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def machine_markdown(m: dict) -> list[str]:
    """:func:`machine_info`'s dict as markdown list items."""
    return [
        f"- `platform.processor()`: `{m['processor'] or '(empty)'}`"
        + (f" ({m['cpu_model']})" if m.get("cpu_model") else ""),
        f"- `os.cpu_count()`: {m['cpu_count']}",
        f"- platform: {m['platform']}, Python {m['python']}",
    ]


def foreign_cpu_note(cpu_count) -> str:
    """What the ``foreign_cpu`` column of a runs table means."""
    return (
        "Foreign CPU: cores used by other processes while the run's process lived (0 is an "
        f"undisturbed run; the machine has {cpu_count} cores)."
    )


# --------------------------------------------------------------------------------------------
# Summaries.


def add_run_options(p, *, wait_idle: float, results_dir: str) -> None:
    """The options every benchmark driver shares: time limit per run, waiting for an idle
    machine, where the results go. The file names are fixed by each driver (one current result
    per benchmark, which a rerun overwrites; git keeps the earlier ones), so only the folder can
    change, e.g. to keep a trial run away from the committed result."""
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per run")
    p.add_argument("--wait-idle", type=float, default=wait_idle,
                   help="max seconds to wait for an idle machine before each run (0: don't)")
    p.add_argument("--idle-threshold", type=float, default=0.3,
                   help="'idle' means fewer than this many cores busy")
    p.add_argument("--results-dir", default=results_dir,
                   help="folder of the results (default: the committed ones, overwritten)")


def median(xs):
    """Median of the values that are not None; None if there are none."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise_runs(runs: list[dict]) -> dict:
    """Counts, compile and run time (median; run time also min-max) and the most foreign CPU of
    some runs, each a dict with ``ok``, ``compile_s``, ``run_s`` and ``foreign_cpu``."""
    ok = [r for r in runs if r.get("ok")]
    run_s = [r["run_s"] for r in ok if r.get("run_s")]
    return {
        "runs": len(runs),
        "ok": len(ok),
        "compile_s": median([r.get("compile_s") for r in ok]),
        "run_s": median(run_s),
        "run_s_min": min(run_s) if run_s else None,
        "run_s_max": max(run_s) if run_s else None,
        "max_foreign_cpu": max(
            (r["foreign_cpu"] for r in runs if r.get("foreign_cpu") is not None), default=None
        ),
    }


def ratio(numerator, denominator):
    """``numerator / denominator``, or None where either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def fmt(x, spec=".2f"):
    return "n/a" if x is None else format(x, spec)


def resolve_python(path: str, root: Path) -> str:
    """An interpreter path as given, or relative to ``root`` where it exists only there."""
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (root / p).exists():
        p = root / p
    return str(p)


if __name__ == "__main__":  # pragma: no cover - a quick look at what the helpers see
    print(json.dumps({**machine_info(), "busy_cores": busy_cores(1.0),
                      "executable": sys.executable}, indent=1))


def runner_environment(packages) -> dict:
    """A peer runner's versions, device and flags (jax imported lazily: the runners' own
    environments), for its output line; ``packages`` are distributions to report."""
    import jax
    import jaxlib

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        **dist_versions(tuple(packages)),
        "device": str(jax.devices()[0]),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": sys.version.split()[0],
    }


def compile_and_run_seeds(train, seeds: int, seed: int):
    """A peer's ``train(key)`` (vmapped over ``seeds`` keys split from ``PRNGKey(seed)`` when
    ``seeds > 1``) compiled ahead of time, then run: ``(output, compile_s, run_s)``."""
    import jax

    # Creating the keys initialises the backend, so it is not counted as compile time.
    if seeds > 1:
        keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
        train = jax.vmap(train)
    else:
        keys = jax.random.PRNGKey(seed)
    jax.block_until_ready(keys)

    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(keys).compile()
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - t0
    return out, compile_s, run_s


def run_fields(args, env_steps: int, run_s: float) -> dict:
    """The size fields every peer runner's output line has: steps requested and run per seed,
    seeds, base seed, and env steps per second over all seeds."""
    return {
        "total_timesteps": args.total_timesteps,
        "env_steps_per_seed": env_steps,
        "seeds": args.seeds,
        "seed": args.seed,
        "steps_per_s": env_steps * args.seeds / run_s,
    }
