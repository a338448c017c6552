"""PPO on the four gymnax MinAtar games with the CNN preset, beside the published anchors.

Runs each game's preset (``purejaxpo.presets.MINATAR``: a CNN torso shared by actor and
critic; Breakout's, ``MINATAR_BREAKOUT``, adds two layers to each head) on
Breakout-, Asterix-, Freeway- and SpaceInvaders-MinAtar, all seeds of a game vmapped in one
program, one game after another, and writes after each game (so a long run that is stopped
keeps what it finished):

* ``benchmarks/results/minatar.md``: final returns (mean and range over seeds), env steps/s, the
  anchors;
* ``benchmarks/results/minatar.png``: return against env steps, mean over seeds with the range as a
  band;
* ``benchmarks/results/minatar.json``: everything, with each seed's return binned to 50 points (no
  per-update metrics); a later partial rerun plots the runs it keeps from these.

Anchors, PPO at 1e7 env steps per run: gymnax-blines (an MLP of 2 x 256, 64 envs, lr 5e-4,
gamma 0.999) and Pgx's MinAtar PPO (a small CNN, 4096 envs, at 2e7 steps). Usage::

    .venv/bin/python benchmarks/minatar.py                        # 4 games x 2 seeds x 1e7
    .venv/bin/python benchmarks/minatar.py --games Breakout-MinAtar --steps 2000000
    .venv/bin/python benchmarks/minatar.py --games Asterix-MinAtar --merge   # one more game
    # a run longer than a session: saved every 50 updates, continued when run again
    .venv/bin/python benchmarks/minatar.py --games SpaceInvaders-MinAtar --merge \
        --checkpoint-dir /tmp/minatar_ck
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning_curves import plot, run_one  # noqa: E402  (the same runner and plot)

from purejaxpo.presets import MINATAR_GAMES  # noqa: E402
from purejaxpo.settings import device_description  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

ANCHORS = {  # game -> (gymnax-blines at 1e7, Pgx CNN at 2e7)
    "Breakout-MinAtar": (28, "about 50"),
    "Asterix-MinAtar": (15, "about 22-25"),
    "Freeway-MinAtar": (58, "about 63"),
    "SpaceInvaders-MinAtar": (131, "about 145"),
}


def _resumed(row) -> str:
    """For a run continued from a checkpoint, the updates its env steps/s and minutes cover."""
    start = row.get("resumed_at_update", 0)
    return f" (updates {start + 1} on)" if start else ""


def write(rows, out: Path, device: str) -> None:
    lines = ["| game | head layers | seeds | env steps per seed | mean final_return | "
             "seed range | gymnax-blines (MLP, 1e7) | Pgx (CNN, 2e7) | "
             "at or above gymnax-blines | env steps/s | run min |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        blines, pgx = ANCHORS[r["env"]]
        heads = ", ".join(map(str, r["config"].get("head_sizes") or ())) or "none"
        lines.append(f"| {r['env']} | {heads} | {r['seeds']} | {r['total_timesteps']:,} | "
                     f"{r['mean']:.2f} | {r['min']:.2f} to {r['max']:.2f} | {blines} | {pgx} | "
                     f"{'yes' if r['mean'] >= blines else 'no'} | {r['steps_per_s']:,.0f} | "
                     f"{r['run_s'] / 60:.1f}{_resumed(r)} |")
    md = [f"# PPO on MinAtar ({time.strftime('%Y-%m-%d')}, {device})", "",
          "CNN presets (`purejaxpo.presets`; head layers: each head's own, above the shared "
          "torso); `final_return`: mean return of the episodes completed in each seed's last "
          "5% of env steps. Written by `benchmarks/minatar.py`.", "", *lines, "",
          f"![MinAtar]({out.name}.png)", ""]
    out.with_suffix(".md").write_text("\n".join(md))
    out.with_suffix(".json").write_text(json.dumps({"device": device, "runs": rows}))
    plot(rows, out.with_suffix(".png"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", nargs="*", default=list(MINATAR_GAMES), choices=MINATAR_GAMES)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=10_000_000, help="env steps per seed")
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"),
                   help="folder of minatar.{md,json,png} (default: the committed result, "
                        "overwritten)")
    p.add_argument("--merge", action="store_true",
                   help="keep the games already in minatar.json that this run does not rerun "
                        "(the table can be filled a game at a time, e.g. across sessions)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="save each game's run under DIR/<game> every --checkpoint-every updates "
                        "and continue from there when run again (runs longer than a session)")
    p.add_argument("--checkpoint-every", type=int, default=50, help="updates between saves")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (the results are the same either way)")
    args = p.parse_args(argv)
    out = Path(args.results_dir) / "minatar"
    out.parent.mkdir(parents=True, exist_ok=True)
    device = device_description()
    rows = []
    if args.merge and out.with_suffix(".json").exists():
        rows = [r for r in json.loads(out.with_suffix(".json").read_text())["runs"]
                if r["env"] not in args.games]
    for game in args.games:
        print(f"{game}: {args.seeds} seeds x {args.steps:,} steps on {device}", flush=True)
        where = None if args.checkpoint_dir is None else str(Path(args.checkpoint_dir) / game)
        row = run_one("ppo", game, args.seeds, args.steps, progress=args.progress,
                      checkpoint_dir=where, checkpoint_every=args.checkpoint_every)
        rows.append(row)
        rows.sort(key=lambda r: MINATAR_GAMES.index(r["env"]))
        print(f"  mean final_return {row['mean']:.2f} ({row['min']:.2f} to {row['max']:.2f}), "
              f"{row['steps_per_s']:,.0f} env steps/s, run {row['run_s']:.0f} s", flush=True)
        write(rows, out, device)
    print(f"wrote {out}.md, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
