"""Runs PureJaxRL's PPO (CartPole-v1) once and prints one JSON line with its timings.

This file is run by ``bench_ppo_vs_rejax.py`` (``--purejaxrl-dir DIR``) inside the rejax virtual
environment (``.venv-rejax``: gymnax 0.0.9, flax, optax, distrax, which is what PureJaxRL needs;
see ``requirements-rejax.txt``); it never imports purejaxpo or rejax. It prints exactly one line
on stdout::

    {"impl": "purejaxrl", "compile_s": .., "run_s": .., "final_return": .., "total_timesteps": ..,
     "seeds": .., "jax": .., ...}

PureJaxRL is not on PyPI and its code is not part of this repository: ``--purejaxrl-dir DIR``
names a checkout that holds ``purejaxrl/ppo.py`` (and ``purejaxrl/wrappers.py``)::

    git clone https://github.com/luchris429/purejaxrl DIR

This runner only calls PureJaxRL's own ``make_train(config)`` from ``purejaxrl/ppo.py``, with the
benchmark's settings in PureJaxRL's config names (its ``__main__`` defaults, except
``DEBUG=False`` so no host callback prints during the timing):

===========================  ============================================================
benchmark                    PureJaxRL config
===========================  ============================================================
4 envs x 128 steps           ``NUM_ENVS=4``, ``NUM_STEPS=128``
4 epochs, 4 minibatches      ``UPDATE_EPOCHS=4``, ``NUM_MINIBATCHES=4``
total env steps N            ``TOTAL_TIMESTEPS=N``: ``N // 512`` updates, as the other sides
lr 2.5e-4, linear annealing  ``LR=2.5e-4``, ``ANNEAL_LR=True``
gamma, GAE lambda            ``GAMMA=0.99``, ``GAE_LAMBDA=0.95``
clip 0.2                     ``CLIP_EPS=0.2`` (policy ratio and value clipping)
ent 0.01, vf 0.5             ``ENT_COEF=0.01``, ``VF_COEF=0.5``
max grad norm 0.5            ``MAX_GRAD_NORM=0.5`` (``optax.clip_by_global_norm``; Adam eps 1e-5)
64x64 tanh MLP               ``ACTIVATION="tanh"`` (fixed 64x64 in PureJaxRL's
                             ``ActorCritic``: separate actor and critic MLPs, orthogonal init)
env                          ``ENV_NAME="CartPole-v1"`` (gymnax, with PureJaxRL's
                             ``FlattenObservationWrapper`` and ``LogWrapper``)
no obs/reward normalisation  PureJaxRL's ``ppo.py`` has none
===========================  ============================================================

With ``--seeds S > 1`` the program is ``jax.jit(jax.vmap(make_train(config)))`` on the keys
``jax.random.split(PRNGKey(seed), S)``; with one seed it is ``jax.jit(make_train(config))`` on
``PRNGKey(seed)`` (as PureJaxRL's own ``__main__`` and ``_rejax_runner.py`` do). Compilation
(``.lower(keys).compile()``) and the run (``block_until_ready``) are timed apart.

``final_return``: PureJaxRL has no evaluation; its ``LogWrapper`` records each finished
training episode's return (``info["returned_episode_returns"]`` where
``info["returned_episode"]``). Per seed, the mean return of the episodes that finished during
the last update's rollout (NaN for a seed with none), then the mean over seeds. (rejax's
``final_return`` is the mean of its 128 evaluation episodes after training, purejaxpo's the mean
of the training episodes that finished in the last 5% of the updates; the latter is also given
here, as ``final_return_window``, with ``--final-fraction 0.05``.) Near the end of training an
episode lasts up to 500 steps and a rollout is 128 steps per env, so the last update often sees
only 0-2 finished episodes per seed: ``final_return`` is noisy, and NaN for such a seed (ignored
in the mean over seeds).

The XLA scheduler flag: PureJaxRL's networks draw orthogonal weights with a LAPACK QR, which
under ``vmap`` is a batched QR, and ``jit(vmap(train))`` of it can hang forever on jaxlib 0.10.x
with 2 CPU threads (see ``purejaxpo.backends.cpu.use_safe_scheduler``). It does here: on a 2-core machine
(jax/jaxlib 0.10.2), ``--seeds 2 --total-timesteps 50000 --scheduler-flag off`` hung in all of 6
tries (killed after 90-150 s, stuck in the run's ``block_until_ready`` at almost no CPU use) and
finished every time with the flag (compile about 12 s, run under 1 s); ``--seeds 16`` (5e5
steps) hung too (killed after 300 s). One seed (no ``vmap``, so no batched QR) runs fine without
it. So with ``--seeds > 1`` this runner adds
``--xla_cpu_enable_concurrency_optimized_scheduler=false`` to ``XLA_FLAGS`` itself, before it
imports jax, unless ``XLA_FLAGS`` already sets that flag (to either value) or
``--scheduler-flag off`` is given; the output's ``xla_flags`` is what the run used and
``scheduler_flag_added`` says whether this runner added the flag.

brax: PureJaxRL's ``wrappers.py`` imports ``brax`` at the top, but only its
``BraxGymnaxWrapper`` (unused by ``ppo.py``) uses it. If ``brax`` cannot be imported (it is not in
``.venv-rejax``), this runner puts an empty stand-in module under that name before importing
PureJaxRL (``brax_stub`` in the output); nothing PureJaxRL's PPO runs touches it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import _bench_common as bench  # next to this file (never purejaxpo: see above)

SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
SAFE_FLAG = f"{SCHEDULER_FLAG}=false"


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--purejaxrl-dir", required=True,
                   help="a PureJaxRL checkout (git clone https://github.com/luchris429/purejaxrl "
                        "DIR): holds purejaxrl/ppo.py")
    p.add_argument("--total-timesteps", type=int, default=500_000)
    p.add_argument("--seeds", type=int, default=1, help="seeds per run, vmapped when > 1")
    p.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    p.add_argument("--scheduler-flag", choices=("auto", "off"), default="auto",
                   help=f"auto (default): add {SAFE_FLAG} to XLA_FLAGS when --seeds > 1 "
                        "(unless XLA_FLAGS sets it); off: never add it")
    p.add_argument("--final-fraction", type=float, default=0.05,
                   help="final_return_window: episodes that finished in this last share of the "
                        "updates (as purejaxpo's final_return; default 5%%)")
    return p.parse_args(argv)


def _set_scheduler_flag(args) -> bool:
    """Adds the safe scheduler flag to ``XLA_FLAGS`` (module docstring); True if it did. Must run
    before jax is imported."""
    assert "jax" not in sys.modules, "XLA_FLAGS must be set before jax is imported"
    flags = os.environ.get("XLA_FLAGS", "")
    if args.scheduler_flag == "off" or args.seeds <= 1 or SCHEDULER_FLAG in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {SAFE_FLAG}".strip()
    return True


def _import_make_train(checkout: Path):
    """PureJaxRL's ``make_train`` from ``checkout/purejaxrl/ppo.py``, and whether a stand-in
    ``brax`` module was needed (module docstring)."""
    if not (checkout / "purejaxrl" / "ppo.py").is_file():
        raise SystemExit(
            f"{checkout / 'purejaxrl' / 'ppo.py'} not found; get PureJaxRL with: "
            f"git clone https://github.com/luchris429/purejaxrl {checkout}"
        )
    sys.path.insert(0, str(checkout))
    brax_stub = False
    try:
        import brax  # noqa: F401
    except ImportError:
        brax_mod = types.ModuleType("brax")
        brax_mod.__doc__ = "Stand-in for brax (see _purejaxrl_runner.py); has no environments."
        brax_mod.envs = types.ModuleType("brax.envs")
        sys.modules["brax"] = brax_mod
        sys.modules["brax.envs"] = brax_mod.envs
        brax_stub = True
    from purejaxrl.ppo import make_train

    return make_train, brax_stub


def _source_fields(checkout: Path) -> dict:
    """Which PureJaxRL this was: the checkout, its git commit (if it is a git checkout) and the
    SHA-256 of ``purejaxrl/ppo.py`` and ``purejaxrl/wrappers.py``."""
    commit = None
    if (checkout / ".git").exists():  # not a repository around a plain copy
        try:
            out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                                 capture_output=True, text=True, timeout=30)
            commit = out.stdout.strip() if out.returncode == 0 else None
        except Exception:  # noqa: BLE001 - no git
            pass
    sha = {}
    for name in ("ppo.py", "wrappers.py"):
        path = checkout / "purejaxrl" / name
        sha[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return {
        "purejaxrl_dir": str(checkout),
        "purejaxrl_commit": commit,
        "purejaxrl_ppo_sha256": sha["ppo.py"],
        "purejaxrl_wrappers_sha256": sha["wrappers.py"],
    }


def _episode_means(info, last_updates: int):
    """Per seed, the mean return of the training episodes that finished in the last
    ``last_updates`` updates (NaN where none did): ``[seeds]`` float64. ``info`` is PureJaxRL's
    ``metrics`` with a leading seed axis, each ``[seeds, updates, steps, envs]``."""
    import numpy as np

    ret = np.asarray(info["returned_episode_returns"][:, -last_updates:], np.float64)
    done = np.asarray(info["returned_episode"][:, -last_updates:], bool)
    sums = np.where(done, ret, 0.0).reshape(ret.shape[0], -1).sum(-1)
    counts = done.reshape(done.shape[0], -1).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means, counts


def _nanmean(xs) -> float | None:
    import numpy as np

    return float(np.nanmean(xs)) if np.isfinite(xs).any() else None


def main(argv=None) -> int:
    args = _parse_args(argv)
    flag_added = _set_scheduler_flag(args)  # before jax is imported

    checkout = Path(args.purejaxrl_dir).expanduser().resolve()
    make_train, brax_stub = _import_make_train(checkout)

    import jax
    import numpy as np

    num_envs, num_steps = 4, 128
    batch = num_envs * num_steps
    num_updates = args.total_timesteps // batch
    if num_updates < 1:
        raise SystemExit(f"--total-timesteps must be at least num_envs * num_steps = {batch}")
    env_steps = num_updates * batch

    config = {
        "LR": 2.5e-4,
        "NUM_ENVS": num_envs,
        "NUM_STEPS": num_steps,
        "TOTAL_TIMESTEPS": args.total_timesteps,
        "UPDATE_EPOCHS": 4,
        "NUM_MINIBATCHES": 4,
        "GAMMA": 0.99,
        "GAE_LAMBDA": 0.95,
        "CLIP_EPS": 0.2,
        "ENT_COEF": 0.01,
        "VF_COEF": 0.5,
        "MAX_GRAD_NORM": 0.5,
        "ACTIVATION": "tanh",
        "ENV_NAME": "CartPole-v1",
        "ANNEAL_LR": True,
        "DEBUG": False,
    }
    train = make_train(config)  # adds NUM_UPDATES and MINIBATCH_SIZE to config
    assert config["NUM_UPDATES"] == num_updates, (config["NUM_UPDATES"], num_updates)

    out, compile_s, run_s = bench.compile_and_run_seeds(train, args.seeds, args.seed)

    info = out["metrics"]
    if args.seeds == 1:
        info = jax.tree.map(lambda x: x[None], info)
    # LogWrapper's per-env step counter after the last step: every seed ran all its steps.
    timestep = np.asarray(info["timestep"][:, -1, -1, :])
    assert (timestep == num_updates * num_steps).all(), (timestep, num_updates * num_steps)
    per_seed, counts = _episode_means(info, 1)
    window = max(1, math.ceil(args.final_fraction * num_updates))
    per_seed_window, _ = _episode_means(info, window)

    result = {
        "impl": "purejaxrl",
        "compile_s": compile_s,
        "run_s": run_s,
        "final_return": _nanmean(per_seed),
        "final_return_per_seed": [float(r) for r in per_seed],
        "final_episodes_per_seed": [int(c) for c in counts],
        "final_return_window": _nanmean(per_seed_window),
        "final_return_window_per_seed": [float(r) for r in per_seed_window],
        "final_fraction": args.final_fraction,
        "final_window_updates": window,
        **bench.run_fields(args, env_steps, run_s),
        "num_updates": num_updates,
        **bench.runner_environment(("gymnax", "flax", "optax", "distrax", "chex")),
        "scheduler_flag_added": flag_added,
        "brax_stub": brax_stub,
        **_source_fields(checkout),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
