"""Env steps per second of brax / Playground environments on this machine, two ways of batching.

* ``adapter``: purejaxpo's way, ``VecEnv`` (a ``jax.vmap``) over the single-environment
  adapter of ``purejaxpo.envs.physics``; every reset draws a new random initial state.
* ``native``: the library's own batched training environment (``brax.envs.training.wrap`` /
  ``mujoco_playground.wrapper.wrap_for_brax_training``: ``VmapWrapper``, ``EpisodeWrapper``,
  ``AutoResetWrapper``), which resets every finished episode to one cached initial state;
  for Playground also ``native_full_reset`` (its ``full_reset=True``: a new random initial
  state at every reset, as the adapter does).

Each measurement is one jitted ``lax.scan`` of ``--steps`` steps of uniform random actions in
[-1, 1] over ``--num-envs`` environments (compiled once, then timed; it returns the sum of
rewards and observations, so no step can be optimised away); the variants run
interleaved, ``--repeats`` times, and the median is reported. ``--backends`` also times every
brax backend (native batching). Writes ``benchmarks/results/physics_envs.{json,md}``.

    .venv/bin/python benchmarks/bench_physics_envs.py            # about 8 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from _bench_common import cpu_description
from purejaxpo.envs import VecEnv, make
from purejaxpo.envs.physics import BRAX_BACKENDS, parse
from purejaxpo.settings import device_description

OUT = Path(__file__).resolve().parent / "results"


def adapter_program(name: str, num_envs: int, steps: int, episode_length: int):
    env, params = make(name, episode_length=episode_length)
    venv = VecEnv(env, params, num_envs)
    action_dim = env.action_dim

    def run(key):
        _, state = venv.reset(key)

        def body(state, k):
            ka, ks = jax.random.split(k)
            action = jax.random.uniform(ka, (num_envs, action_dim), minval=-1.0, maxval=1.0)
            obs, state, reward, *_ = venv.step(ks, state, action)
            return state, reward.sum() + obs.sum()  # depends on the dynamics: not optimised away

        _, rewards = jax.lax.scan(body, state, jax.random.split(key, steps))
        return rewards.sum()

    return jax.jit(run)


def native_program(name: str, num_envs: int, steps: int, episode_length: int,
                   full_reset: bool = False):
    kind, env_name, backend = parse(name)
    if kind == "brax":
        from brax import envs

        inner = envs.get_environment(env_name, backend=backend)
        env = envs.training.wrap(inner, episode_length=episode_length)
    else:
        from mujoco_playground import registry, wrapper

        inner = registry.load(env_name, config_overrides={"impl": backend})
        env = wrapper.wrap_for_brax_training(inner, episode_length=episode_length,
                                             full_reset=full_reset)
    action_dim = inner.action_size

    def run(key):
        state = env.reset(jax.random.split(key, num_envs))

        def body(state, k):
            action = jax.random.uniform(k, (num_envs, action_dim), minval=-1.0, maxval=1.0)
            state = env.step(state, action)
            return state, state.reward.sum() + state.obs.sum()

        _, rewards = jax.lax.scan(body, state, jax.random.split(key, steps))
        return rewards.sum()

    return jax.jit(run)


def time_program(fn, seed: int) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(jax.random.PRNGKey(seed)))
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["brax:ant", "brax:inverted_pendulum",
                                                       "playground:CartpoleBalance"])
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", action="store_true",
                        help="also time every brax backend of the brax envs (native batching)")
    args = parser.parse_args(argv)

    rows = []
    for name in args.envs:
        programs = {
            "adapter": adapter_program(name, args.num_envs, args.steps, args.episode_length),
            "native": native_program(name, args.num_envs, args.steps, args.episode_length),
        }
        if name.startswith("playground:"):  # resets to a new random state, as the adapter
            programs["native_full_reset"] = native_program(
                name, args.num_envs, args.steps, args.episode_length, full_reset=True)
        if args.backends and name.startswith("brax:"):
            base = name.split("@")[0]
            for backend in BRAX_BACKENDS:
                programs[f"native@{backend}"] = native_program(
                    f"{base}@{backend}", args.num_envs, args.steps, args.episode_length)
        compile_s = {k: time_program(fn, 0) for k, fn in programs.items()}
        times = {k: [] for k in programs}
        for r in range(args.repeats):  # interleaved
            for k, fn in programs.items():
                times[k].append(time_program(fn, r + 1))
        for k in programs:
            run_s = statistics.median(times[k])
            row = {
                "env": name, "variant": k, "num_envs": args.num_envs, "steps": args.steps,
                "compile_s": round(compile_s[k], 2),
                "run_s": [round(t, 4) for t in times[k]],
                "steps_per_s": round(args.num_envs * args.steps / run_s),
            }
            rows.append(row)
            print(f"{name:32s} {k:22s} compile {row['compile_s']:6.1f} s  "
                  f"{row['steps_per_s']:>10,} env steps/s  (runs {row['run_s']})", flush=True)

    machine = f"{cpu_description()}; {device_description()}"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "physics_envs.json").write_text(json.dumps({"machine": machine, "rows": rows,
                                                      "args": vars(args)}, indent=1))
    lines = [
        "# Physics environments: env steps per second, adapter vs native batching",
        "",
        f"Machine: {machine}. `{args.num_envs}` envs, `{args.steps}` steps of random actions "
        f"per jitted scan, episode length {args.episode_length}, median of {args.repeats} "
        "interleaved runs. Written by `benchmarks/bench_physics_envs.py`.",
        "",
        "| env | variant | compile s | env steps/s |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {r['env']} | {r['variant']} | {r['compile_s']:.1f} | {r['steps_per_s']:,} |"
              for r in rows]
    (OUT / "physics_envs.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
