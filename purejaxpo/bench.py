"""``purejaxpo bench``: how fast training programs run on this machine.

A benchmark is a grid of cells, each run in a fresh Python process (so one cell's compilation
caches, memory and threads never help or hurt the next):

* environment cells: algorithm x environment x parallel runs (seeds, vmapped in one program)
  x envs per run, each ``jax.jit(jax.vmap(train))`` over the seeds' keys from its preset;
* language-model cells: model width x depth x batch (prompts x completions per prompt) x
  completion length, a number of GRPO steps of a randomly initialised policy on the addition
  task (the same compiled step ``purejaxpo lm grpo`` runs).

Each cell reports compile and run seconds apart (``purejaxpo.timing.compile_and_run``), env
steps (or completion tokens) per second, the peak device memory where jax reports it (GPUs and
TPUs; None on the CPU), the device kind and count, and for environments the mean final
return. With ``repeats > 1`` every cell runs that many times, the repeats interleaved over the
grid (so a slow minute of a shared machine hits every cell alike), and the medians are
reported.

    purejaxpo bench                                      # PPO CartPole at 1, 4, 16 seeds + a small LM
    purejaxpo bench --algos ppo sac --envs CartPole-v1 Pendulum-v1 --seeds 1,64,512 --repeats 3
    purejaxpo bench --no-rl --lm-widths 256,512 --lm-layers 8 --lm-completions 5,32

Outputs (``--out PREFIX``): ``PREFIX.json`` (every repeat of every cell, and the medians),
``PREFIX.md`` (the table) and ``PREFIX.png`` (throughput against parallel runs, log-log).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

RL_DEFAULTS = dict(algos=("ppo",), envs=("CartPole-v1",), seeds=(1, 4, 16), num_envs=None,
                   total_timesteps=100_000)
"""The default environment grid: a few minutes on a 2-core CPU with the LM cell."""


@dataclasses.dataclass(frozen=True)
class RLCell:
    """One environment cell: ``seeds`` runs of ``algo`` on ``env`` vmapped in one program.

    ``num_envs`` and ``total_timesteps`` (per run) override the preset's where given;
    ``settings`` are further ``name=value`` config settings (as ``--set``). The seeds are split
    over ``cpu_devices`` JAX CPU devices where they divide evenly
    (:func:`purejaxpo.devices.vmap_runs`; None: one device per core, as ``purejaxpo train``),
    and small loops compile to single kernels unless ``fused_loops`` is False
    (:func:`purejaxpo.backends.cpu.enable`, as ``purejaxpo train``).
    """

    algo: str
    env: str
    seeds: int
    num_envs: int | None = None
    total_timesteps: int | None = None
    settings: tuple[str, ...] = ()
    cpu_devices: int | None = None
    fused_loops: bool = True
    kind: str = "rl"

    def label(self) -> str:
        return f"{self.algo} {self.env}"


@dataclasses.dataclass(frozen=True)
class LMCell:
    """One language-model cell: ``steps`` GRPO steps of a random ``width`` x ``layers``
    transformer, ``prompts`` x ``group_size`` completions of ``completion`` tokens per step."""

    width: int = 64
    layers: int = 2
    heads: int = 4
    prompts: int = 16
    group_size: int = 8
    completion: int = 5
    steps: int = 10
    kind: str = "lm"

    def label(self) -> str:
        return f"lm grpo w{self.width} L{self.layers}"


Cell = RLCell | LMCell


def cell_from_dict(data: dict) -> Cell:
    data = dict(data)
    kind = data.pop("kind")
    if kind == "rl":
        data["settings"] = tuple(data.get("settings", ()))
        return RLCell(**data)
    return LMCell(**data)


def _device_info() -> dict[str, Any]:
    import jax

    devices = jax.devices()
    dev = devices[0]
    peak = None
    try:
        stats = dev.memory_stats()
    except Exception:  # some backends do not implement it
        stats = None
    if stats:
        peak = stats.get("peak_bytes_in_use", stats.get("bytes_in_use"))
    return {"platform": dev.platform, "device_kind": getattr(dev, "device_kind", dev.platform),
            "device_count": len(devices), "peak_memory_bytes": peak,
            "jax": jax.__version__, "cpu_count": os.cpu_count()}


def run_rl_cell(cell: RLCell) -> dict[str, Any]:
    """Runs one environment cell in this process (the worker's side)."""
    from purejaxpo.backends import cpu
    from purejaxpo.devices import run_devices, vmap_runs

    # before JAX starts (importing gymnax starts it); as ``purejaxpo train``
    cpu.enable(fused_loops=cell.fused_loops, wide_vectors=cell.fused_loops,
               cpu_devices="auto" if cell.cpu_devices is None else cell.cpu_devices)
    import jax
    import numpy as np

    from purejaxpo.algos import ALGORITHMS
    from purejaxpo.metrics import final_return
    from purejaxpo.presets import from_settings
    from purejaxpo.timing import compile_and_run

    config = from_settings(cell.algo, cell.env, cell.settings, prefix="--set ",
                           num_envs=cell.num_envs, total_timesteps=cell.total_timesteps)
    train = ALGORITHMS[cell.algo][1](config)
    keys = jax.random.split(jax.random.PRNGKey(0), cell.seeds)
    out, compile_s, run_s = compile_and_run(vmap_runs(train, cell.seeds), keys)
    finals = final_return(jax.device_get(out.metrics), warn=False)
    env_steps = cell.seeds * config.num_updates * config.batch_size
    return {"compile_s": compile_s, "run_s": run_s, "env_steps": env_steps,
            "throughput": env_steps / run_s, "unit": "env steps/s",
            "num_envs": config.num_envs, "total_timesteps": config.num_updates * config.batch_size,
            "final_return": float(np.nanmean(finals)) if np.any(np.isfinite(finals)) else None,
            "split_over_devices": len(run_devices(cell.seeds)), **_device_info()}


def run_lm_cell(cell: LMCell) -> dict[str, Any]:
    """Runs one language-model cell in this process (the worker's side)."""
    from purejaxpo.backends import cpu

    cpu.enable(fused_loops=False, cpu_devices=None, quiet=True)  # as the `purejaxpo lm` commands
    import jax
    import numpy as np

    from purejaxpo.lm.config import LMGRPOConfig
    from purejaxpo.lm.grpo import grpo_program
    from purejaxpo.lm.model import TransformerConfig, count_params, init_params
    from purejaxpo.timing import compile_and_run

    config = LMGRPOConfig(prompts_per_step=cell.prompts, group_size=cell.group_size,
                          max_new_tokens=cell.completion, steps=cell.steps)
    task = config.make_task()
    model = TransformerConfig(vocab_size=task.tokenizer.size, num_layers=cell.layers,
                              width=cell.width, num_heads=cell.heads,
                              max_len=task.prompt_len + cell.completion)
    params = init_params(jax.random.PRNGKey(0), model)
    program = grpo_program(config, params, model, task)
    state = jax.jit(program.init)(jax.random.PRNGKey(1))
    (_, metrics), compile_s, run_s = compile_and_run(
        lambda s: program.run(s, cell.steps), state)
    tokens = float(np.sum(jax.device_get(metrics["completion_tokens"])))
    positions = cell.steps * cell.prompts * cell.group_size * cell.completion
    return {"compile_s": compile_s, "run_s": run_s, "completion_tokens": tokens,
            "throughput": tokens / run_s, "unit": "completion tokens/s",
            "sampled_positions_per_s": positions / run_s, "params": count_params(params),
            **_device_info()}


def worker_main(argv: Sequence[str]) -> int:
    """``python -m purejaxpo.bench CELL_JSON``: runs the cell, prints one JSON line."""
    cell = cell_from_dict(json.loads(argv[0]))
    result = run_rl_cell(cell) if isinstance(cell, RLCell) else run_lm_cell(cell)
    print(json.dumps(result), flush=True)
    return 0


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def run_cell_process(cell: Cell, *, timeout: float | None = None,
                     env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs ``cell`` in a fresh Python process; its result, plus ``ok``, ``wall_s`` and, for a
    failed or timed-out cell, ``error`` (the end of its output)."""
    cmd = [sys.executable, "-m", "purejaxpo.bench", json.dumps(dataclasses.asdict(cell))]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = None, "", f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - start
    data = _last_json_line(out) if rc == 0 else None
    if data is None:
        return {"ok": False, "wall_s": wall, "error": (err or out)[-1500:]}
    return {"ok": True, "wall_s": wall, **data}


def summarise(cell: Cell, repeats: list[dict]) -> dict[str, Any]:
    """One row of the table: the cell's settings and the medians over its good repeats."""
    good = [r for r in repeats if r["ok"]]
    row: dict[str, Any] = {"label": cell.label(), **dataclasses.asdict(cell),
                           "repeats": len(repeats), "ok": len(good)}
    if not good:
        row["error"] = repeats[-1].get("error")
        return row
    for name in ("compile_s", "run_s", "throughput", "final_return", "sampled_positions_per_s",
                 "peak_memory_bytes"):
        values = [r[name] for r in good if r.get(name) is not None]
        row[name] = statistics.median(values) if values else None
    for name in ("unit", "device_kind", "device_count", "platform", "jax", "params",
                 "num_envs", "total_timesteps", "split_over_devices"):
        if name in good[0]:
            row[name] = good[0][name]
    return row


def run_grid(cells: Sequence[Cell], *, repeats: int = 1, timeout: float | None = None,
             log: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Runs every cell ``repeats`` times (repeat-major: the grid once, then again), each in a
    fresh process; returns one summary row per cell (:func:`summarise`) with its repeats
    under ``"runs"``."""
    say = log or (lambda _: None)
    runs: list[list[dict]] = [[] for _ in cells]
    for r in range(repeats):
        for i, cell in enumerate(cells):
            result = run_cell_process(cell, timeout=timeout)
            runs[i].append(result)
            if result["ok"]:
                say(f"  [{r + 1}/{repeats}] {_describe(cell)}: compile {result['compile_s']:.1f} s, "
                    f"run {result['run_s']:.2f} s, {result['throughput']:,.0f} {result['unit']}")
            else:
                say(f"  [{r + 1}/{repeats}] {_describe(cell)}: FAILED: "
                    f"{result['error'].strip().splitlines()[-1] if result['error'].strip() else ''}")
    return [{**summarise(cell, rs), "runs": rs} for cell, rs in zip(cells, runs)]


def _describe(cell: Cell) -> str:
    if isinstance(cell, RLCell):
        envs = f", {cell.num_envs} envs" if cell.num_envs else ""
        return f"{cell.algo} {cell.env} x {cell.seeds} seeds{envs}"
    return (f"lm grpo width {cell.width} x {cell.layers} layers, {cell.prompts}x{cell.group_size}"
            f" completions of {cell.completion} tokens")


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: Sequence[dict], *, title: str = "purejaxpo bench") -> str:
    """The table of :func:`run_grid`'s rows (medians)."""
    device = next((r for r in rows if r.get("ok")), {})
    lines = [f"# {title}", "",
             f"Device: {device.get('device_kind', '?')} x {device.get('device_count', '?')} "
             f"({device.get('platform', '?')}, {device.get('cpu_count', os.cpu_count())} CPU "
             f"cores), jax {device.get('jax', '?')}; medians of {rows[0]['repeats'] if rows else 0}"
             " fresh process(es) per cell. Written by `purejaxpo bench`.", ""]
    rl = [r for r in rows if r["kind"] == "rl"]
    lm = [r for r in rows if r["kind"] == "lm"]
    if rl:
        lines += ["| algo | env | seeds | devices | envs per run | env steps per run | compile s | "
                  "run s | env steps/s | final return (mean) | peak memory MiB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rl:
            mem = r.get("peak_memory_bytes")
            lines.append(
                f"| {r['algo']} | {r['env']} | {r['seeds']} | "
                f"{_fmt(r.get('split_over_devices'), 'd')} | {_fmt(r.get('num_envs'), 'd')} | "
                f"{_fmt(r.get('total_timesteps'), ',d')} | {_fmt(r.get('compile_s'), '.1f')} | "
                f"{_fmt(r.get('run_s'), '.2f')} | {_fmt(r.get('throughput'), ',.0f')} | "
                f"{_fmt(r.get('final_return'), '.1f')} | "
                f"{_fmt(None if mem is None else mem / 2**20, ',.0f')} |"
                + ("" if r["ok"] else " FAILED"))
        lines.append("")
    if lm:
        lines += ["| width x layers | params | prompts x group | completion tokens | steps | "
                  "compile s | run s | completion tokens/s | sampled positions/s | "
                  "peak memory MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in lm:
            mem = r.get("peak_memory_bytes")
            lines.append(
                f"| {r['width']} x {r['layers']} | {_fmt(r.get('params'), ',d')} | "
                f"{r['prompts']} x {r['group_size']} | {r['completion']} | {r['steps']} | "
                f"{_fmt(r.get('compile_s'), '.1f')} | {_fmt(r.get('run_s'), '.2f')} | "
                f"{_fmt(r.get('throughput'), ',.0f')} | "
                f"{_fmt(r.get('sampled_positions_per_s'), ',.0f')} | "
                f"{_fmt(None if mem is None else mem / 2**20, ',.0f')} |"
                + ("" if r["ok"] else " FAILED"))
        lines.append("")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: str) -> bool:
    """Throughput against parallel runs (log-log), one line per algorithm x env x envs per
    run; False (and no file) when fewer than one line has two points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["kind"] == "rl" and r.get("throughput"):
            name = f"{r['algo']} {r['env']} ({r.get('num_envs')} envs)"
            lines.setdefault(name, []).append((r["seeds"], r["throughput"]))
    lines = {k: sorted(v) for k, v in lines.items() if len(v) >= 2}
    if not lines:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in lines.items():
        ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parallel runs (seeds in one program)")
    ax.set_ylabel("env steps / s (all runs)")
    ax.set_title("purejaxpo bench: scaling with parallel runs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(rows: Sequence[dict], prefix: str, *, title: str = "purejaxpo bench",
                  meta: dict | None = None) -> list[str]:
    """Writes ``prefix.json``, ``prefix.md`` and (where there is a scaling line)
    ``prefix.png``; returns the paths written."""
    from purejaxpo.settings import write_json

    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    write_json(prefix + ".json", {**(meta or {}), "cells": list(rows)}, quiet=True)
    with open(prefix + ".md", "w") as f:
        f.write(markdown(rows, title=title))
    written = [prefix + ".json", prefix + ".md"]
    if plot(rows, prefix + ".png"):
        written.append(prefix + ".png")
    return written


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag}={text!r} is invalid: expected integers separated by commas") \
            from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{flag}={text!r} is invalid: expected integers >= 1")
    return values


def cells_from_args(args) -> list[Cell]:
    """The grid the flags ask for; ``ValueError`` naming the flag, before anything runs."""
    from purejaxpo.algos import ALGORITHMS
    from purejaxpo.backends.cpu import parse_cpu_devices
    from purejaxpo.presets import from_settings

    cells: list[Cell] = []
    if args.rl:
        cpu_devices = parse_cpu_devices(args.cpu_devices)
        seeds = _ints(args.seeds, "--seeds")
        num_envs = _ints(args.num_envs, "--num-envs") if args.num_envs else (None,)
        for algo in args.algos:
            if algo not in ALGORITHMS:
                raise ValueError(f"--algos {algo!r} is invalid: must be among "
                                 f"{sorted(ALGORITHMS)}")
            for env in args.envs:
                for n in num_envs:
                    # Builds (validates) the config here: a bad env or setting fails now.
                    from_settings(algo, env, args.set, prefix="--set ", num_envs=n,
                                  total_timesteps=args.total_timesteps)
                    cells += [RLCell(algo, env, s, n, args.total_timesteps, tuple(args.set or ()),
                                     cpu_devices, args.fused_loops)
                              for s in seeds]
    if args.lm:
        batch = []
        for item in args.lm_batch.split(","):
            b, _, g = item.partition("x")
            try:
                batch.append((int(b), int(g)))
            except ValueError:
                raise ValueError(f"--lm-batch {item!r} is invalid: expected PROMPTSxGROUP, "
                                 "e.g. 16x8") from None
        for width in _ints(args.lm_widths, "--lm-widths"):
            for layers in _ints(args.lm_layers, "--lm-layers"):
                if width % args.lm_heads:
                    raise ValueError(f"--lm-widths {width} is invalid: must be divisible by "
                                     f"--lm-heads {args.lm_heads}")
                for prompts, group in batch:
                    for completion in _ints(args.lm_completions, "--lm-completions"):
                        cells.append(LMCell(width, layers, args.lm_heads, prompts, group,
                                            completion, args.lm_steps))
    if not cells:
        raise ValueError("nothing to run: --no-rl and --no-lm together leave an empty grid")
    return cells


def cmd_bench(args) -> int:
    from purejaxpo.settings import device_description

    try:
        cells = cells_from_args(args)
        if args.repeats < 1:
            raise ValueError(f"--repeats={args.repeats} is invalid: must be >= 1")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"purejaxpo bench: {len(cells)} cell(s) x {args.repeats} repeat(s), each in a fresh "
          f"process | {device_description()}", flush=True)
    start = time.perf_counter()
    rows = run_grid(cells, repeats=args.repeats, timeout=args.timeout)
    print()
    table = markdown(rows, title=args.title)
    print(table)
    if args.out:
        for path in write_outputs(rows, args.out, title=args.title,
                                  meta={"device": device_description(),
                                        "wall_s": time.perf_counter() - start,
                                        "argv": sys.argv[1:]}):
            print(f"wrote {path}")
    failed = [r for r in rows if not r["ok"]]
    if failed:
        print(f"{len(failed)} cell(s) failed: " + "; ".join(
            f"{r['label']}: {(r.get('error') or '').strip().splitlines()[-1:]}" for r in failed),
            file=sys.stderr)
        return 1
    return 0


def add_cli_parser(sub) -> None:
    from purejaxpo.backends.cpu import add_cpu_args

    p = sub.add_parser("bench", help="throughput of training programs (each cell in a fresh "
                       "process): env steps/s against parallel runs, LM tokens/s",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--algos", nargs="+", default=list(RL_DEFAULTS["algos"]),
                   help="environment algorithms (default ppo)")
    p.add_argument("--envs", nargs="+", default=list(RL_DEFAULTS["envs"]),
                   help="environments (default CartPole-v1); each starts from its preset")
    p.add_argument("--seeds", default=",".join(map(str, RL_DEFAULTS["seeds"])),
                   help="parallel runs per program, comma-separated (default 1,4,16)")
    p.add_argument("--num-envs", default=None,
                   help="envs per run, comma-separated (default: the preset's)")
    p.add_argument("--total-timesteps", type=int, default=RL_DEFAULTS["total_timesteps"],
                   help="env steps per run (default 100000)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="any config field of the environment cells (repeatable)")
    add_cpu_args(p)  # --cpu-devices, --no-fused-loops: applied in each environment cell
    p.add_argument("--no-rl", dest="rl", action="store_false", help="no environment cells")
    p.add_argument("--no-lm", dest="lm", action="store_false", help="no language-model cells")
    p.add_argument("--lm-widths", default="64", help="LM widths, comma-separated (default 64)")
    p.add_argument("--lm-layers", default="2", help="LM depths, comma-separated (default 2)")
    p.add_argument("--lm-heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--lm-batch", default="16x8",
                   help="PROMPTSxGROUP per step, comma-separated (default 16x8)")
    p.add_argument("--lm-completions", default="5",
                   help="completion lengths in tokens, comma-separated (default 5)")
    p.add_argument("--lm-steps", type=int, default=10, help="GRPO steps timed (default 10)")
    p.add_argument("--repeats", type=int, default=1,
                   help="fresh processes per cell, interleaved; medians reported (default 1)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per cell process")
    p.add_argument("--title", default="purejaxpo bench", help="the table's heading")
    p.add_argument("--out", metavar="PREFIX", default=None,
                   help="write PREFIX.json, PREFIX.md and PREFIX.png")
    p.set_defaults(func=cmd_bench)


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
