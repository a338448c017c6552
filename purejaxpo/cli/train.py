"""``purejaxpo train`` (seeds of an environment algorithm in one program, optionally
checkpointed), ``purejaxpo eval`` (a checkpoint's policy), ``purejaxpo plot`` and
``purejaxpo envs``."""

from __future__ import annotations

import json
import os
import sys

from purejaxpo.cli.flags import add_checkpoint_args, check_checkpoint_args
from purejaxpo.backends.cpu import add_cpu_args, parse_cpu_devices, use_cpu_cores
from purejaxpo.devices import run_devices, vmap_runs
from purejaxpo.settings import device_description, write_json


def build_config(algo: str, args):
    """The validated config for ``algo`` from ``--env``, ``--set`` and the size flags."""
    from purejaxpo.presets import from_settings

    return from_settings(algo, args.env, args.set, prefix="--set ",
                         total_timesteps=args.total_timesteps, num_envs=args.num_envs)


class ProgressBar:
    """A tqdm bar over updates, fed by ``jax.debug.callback`` (10 to 100 times a run, see
    ``algos.base.progress_calls``)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="upd", file=sys.stderr, leave=False,
                            mininterval=0.5)
        self.done = 0
        self.offset = 0  # updates done before the current chunk (checkpointed runs)

    def __call__(self, updates_done) -> None:
        n = self.offset + int(updates_done)
        if self.bar is not None and n > self.done:
            self.bar.update(n - self.done)
            self.done = n

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_train(args) -> int:
    try:
        config = build_config(args.algo, args)
        if args.seeds < 1:
            raise ValueError(f"--seeds={args.seeds} is invalid: must be an integer >= 1")
        check_checkpoint_args(args)
        # before JAX's first operation (main() did it already, unless run in-process late)
        use_cpu_cores(parse_cpu_devices(args.cpu_devices), quiet=True)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import jax
    import numpy as np

    from purejaxpo.algos import ALGORITHMS
    from purejaxpo.metrics import divergence, final_return
    from purejaxpo.timing import compile_and_run

    _, make_train = ALGORITHMS[args.algo]
    progress = ProgressBar(config.num_updates, f"{args.algo} {config.env}", args.progress)
    train = make_train(config, progress=progress if args.progress else None)
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
    split = len(run_devices(args.seeds))
    print(
        f"purejaxpo {args.algo} on {config.env}: {args.seeds} seed(s) x {config.total_timesteps:,} "
        f"steps ({config.num_envs} envs x {config.num_steps} steps, {config.num_updates} updates), "
        f"{device_description()}" + (f", seeds split over {split} devices" if split > 1 else ""),
        flush=True,
    )
    if args.checkpoint_dir is None:
        result, compile_s, run_s = compile_and_run(vmap_runs(train, args.seeds), keys)
        progress.close()
        metrics = jax.tree_util.tree_map(np.asarray, result.metrics)
        if args.log:
            from purejaxpo.logs import write_log

            write_log(args.log, metrics, config.batch_size)
    else:
        try:
            metrics, compile_s, run_s = _train_with_checkpoints(args, config, train, keys, progress)
        except ValueError as err:
            progress.close()
            print(f"error: {err}", file=sys.stderr)
            return 2
        progress.close()
    if args.log:
        print(f"wrote {args.log}")
    diverged, diverged_at = divergence(metrics)
    finals = final_return(metrics, warn=False)  # diverged seeds: NaN, reported below
    env_steps = args.seeds * config.num_updates * config.batch_size
    steps_per_s = env_steps / run_s
    for i, value in enumerate(finals):
        note = f"  DIVERGED at update {diverged_at[i] + 1}" if diverged[i] else ""
        print(f"  seed {i:3d}  final_return {value:9.2f}{note}")
    ok = finals[np.isfinite(finals)]
    mean_final = float(np.mean(ok)) if ok.size else float("nan")
    if ok.size:
        print(f"mean final_return {mean_final:.2f} (min {ok.min():.2f}, max {ok.max():.2f})"
              + (f" over the {ok.size} seed(s) with a return" if ok.size < len(finals) else ""))
    else:
        print("mean final_return nan (no seed has a return)")
    if diverged.any():
        seeds = [int(i) for i in np.flatnonzero(diverged)]
        print(f"warning: {len(seeds)} of {args.seeds} seed(s) diverged (non-finite loss or "
              f"parameters): seed(s) {seeds} at update(s) "
              f"{[int(diverged_at[i]) + 1 for i in seeds]}; their final_return is NaN. "
              "Lower learning_rate or max_grad_norm.", file=sys.stderr)
    print(f"compile {compile_s:.1f} s, run {run_s:.2f} s, {steps_per_s:,.0f} env steps/s")

    if args.json:
        out = {
            "algo": args.algo,
            "env": config.env,
            "seeds": args.seeds,
            "seed": args.seed,
            "total_timesteps": config.total_timesteps,
            "num_updates": config.num_updates,
            "final_return": [float(v) for v in finals],
            "mean_final_return": mean_final,
            "diverged": [int(i) for i in np.flatnonzero(diverged)],
            # the update (1 = the first) whose loss or parameters were first non-finite
            "diverged_at_update": [int(u) + 1 if d else None
                                   for d, u in zip(diverged, diverged_at)],
            "compile_s": compile_s,
            "run_s": run_s,
            "steps_per_s": steps_per_s,
            "device": device_description(),
            "split_over_devices": split,
            "config": config.to_dict(),
            "curves": {
                "episode_return": np.asarray(metrics["episode_return"], np.float64).tolist(),
            },
        }
        write_json(args.json, out)
    return 0


def _train_with_checkpoints(args, config, train, keys, progress):
    """The seeds' run in chunks of ``--checkpoint-every`` updates, saved after each chunk.

    Returns ``(metrics, compile_s, run_s)``; compile time is included in ``run_s`` here
    (``compile_s`` is 0), as chunks compile lazily.
    """
    import time

    from purejaxpo import checkpoint

    every = args.checkpoint_every or config.num_updates
    if args.resume and checkpoint.latest_step(args.checkpoint_dir) is None:
        print(f"--resume: no checkpoint in {args.checkpoint_dir!r} yet; starting from scratch",
              file=sys.stderr, flush=True)
    writer = None
    if args.log:
        from purejaxpo.logs import LogWriter

        writer = LogWriter(args.log)

    def on_chunk(start, stop, chunk):
        progress.offset = stop
        if writer is not None:
            writer.write(chunk, config.batch_size, start=start)
        if start > 0 or stop < config.num_updates:
            print(f"  checkpoint at update {stop}/{config.num_updates}", file=sys.stderr,
                  flush=True)

    start = time.perf_counter()
    _, metrics = checkpoint.run_seeds_with_checkpoints(
        args.algo, config, train, keys, seed=args.seed, every=every,
        directory=args.checkpoint_dir, resume=args.resume, on_chunk=on_chunk)
    return metrics, 0.0, time.perf_counter() - start


def cmd_eval(args) -> int:
    try:
        if args.episodes < 1:
            raise ValueError(f"--episodes={args.episodes} is invalid: must be an integer >= 1")
        from purejaxpo import checkpoint

        try:
            ckpt = checkpoint.load(args.checkpoint, args.step)
        except FileNotFoundError as err:
            raise ValueError(f"CHECKPOINT: {err}") from None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import jax
    import numpy as np

    returns, finished = checkpoint.evaluate_checkpoint(
        ckpt, jax.random.PRNGKey(args.seed), num_episodes=args.episodes, greedy=args.greedy)
    policy = "greedy" if args.greedy else "stochastic"
    print(f"purejaxpo eval {ckpt.algo} on {ckpt.config.env} from {args.checkpoint} "
          f"(update {ckpt.step}/{ckpt.config.num_updates}), {args.episodes} episode(s) per run, "
          f"{policy} policy")
    per_run = []
    for i, (r, f) in enumerate(zip(returns, finished)):
        per_run.append({"run": i, "mean_return": float(np.mean(r)), "std_return": float(np.std(r)),
                        "returns": [float(v) for v in r], "finished": int(np.sum(f))})
        print(f"  seed {i:3d}  mean_return {np.mean(r):9.2f}  std {np.std(r):8.2f}")
    mean, std = float(np.mean(returns)), float(np.std(returns))
    print(f"mean return {mean:.2f}, std {std:.2f} over {returns.size} episode(s)")
    if args.json:
        out = {"checkpoint": os.path.abspath(args.checkpoint), "algo": ckpt.algo,
               "env": ckpt.config.env, "step": ckpt.step, "episodes": args.episodes,
               "seed": args.seed, "greedy": args.greedy, "mean_return": mean,
               "std_return": std, "runs": per_run, "config": ckpt.config.to_dict()}
        write_json(args.json, out)
    return 0


def cmd_plot(args) -> int:
    from purejaxpo import plot

    try:
        if not args.out.lower().endswith(".png"):
            raise ValueError(f"--out={args.out!r} is invalid: must end in .png")
        for path in args.results:
            if not os.path.isfile(path):
                raise ValueError(f"RESULTS {path!r} is invalid: no such file")
        drawn = plot.plot_files(args.results, args.out)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({drawn} plot)")
    return 0


def cmd_envs(args) -> int:
    from purejaxpo.envs import physics
    from purejaxpo.envs.registry import PHYSICS_FAMILIES, env_names

    print("\n".join(env_names()))
    for family in PHYSICS_FAMILIES:  # optional extras: their names, or how to install them
        if physics.is_installed(family):
            print("\n".join(env_names(family)))
        else:
            print(f"# {family}:<name> environments: {physics.INSTALL[family]}")
    return 0


def add_cli_parser(sub) -> None:
    """Adds ``train``, ``eval``, ``plot`` and ``envs`` to the ``purejaxpo`` parser's
    ``sub``-parsers."""
    from purejaxpo.algos import ALGORITHMS

    train = sub.add_parser("train", help="train an algorithm over several seeds in one program")
    train.add_argument("algo", choices=sorted(ALGORITHMS))
    train.add_argument("--env", default=None,
                       help="gymnax environment, brax:<name>[@backend] or playground:<name>; starts "
                            "from its tuned preset (default CartPole-v1; Pendulum-v1 for sac "
                            "and td3)")
    train.add_argument("--seeds", type=int, default=8, help="number of seeds, vmapped (default 8)")
    train.add_argument("--seed", type=int, default=0, help="base PRNG seed (default 0)")
    train.add_argument("--total-timesteps", type=int, default=None, help="env steps per seed")
    train.add_argument("--num-envs", type=int, default=None, help="parallel environments per seed")
    train.add_argument("--set", action="append", metavar="NAME=VALUE",
                       help="any config field, e.g. --set learning_rate=3e-4 (repeatable)")
    train.add_argument("--json", metavar="PATH", help="write results and the full config here")
    train.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bar")
    add_cpu_args(train)
    add_checkpoint_args(train, what="the whole training state (all seeds)",
                        every="updates between checkpoints (default: one at the end)")
    train.add_argument("--log", metavar="PATH",
                       help="write every metric, one row per update per seed (.csv or .jsonl)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate the policy saved in a checkpoint directory")
    ev.add_argument("checkpoint", metavar="CHECKPOINT", help="a --checkpoint-dir of train")
    ev.add_argument("--episodes", type=int, default=10, help="episodes per seed (default 10)")
    ev.add_argument("--seed", type=int, default=0, help="PRNG seed of the evaluation")
    ev.add_argument("--greedy", action="store_true", help="act with the mode, not a sample")
    ev.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    ev.add_argument("--json", metavar="PATH", help="write the returns here")
    ev.set_defaults(func=cmd_eval)

    pl = sub.add_parser("plot", help="learning curves (train JSON) or a sweep view (sweep JSON)")
    pl.add_argument("results", metavar="RESULTS", nargs="+", help="train or sweep --json files")
    pl.add_argument("--out", required=True, metavar="FILE.png", help="where to write the figure")
    pl.set_defaults(func=cmd_plot)

    envs = sub.add_parser("envs", help="list the environment names")
    envs.set_defaults(func=cmd_envs)
