"""Runs of tests/test_devices.py that need a fresh process (the CPU device count is fixed when
JAX starts): ``python tests/devices_subprocess.py OUT_DIR``.

Asks for 2 CPU devices through the CLI's own path (``--cpu-devices 2``), then checks in this
process that seeds split over the 2 devices give the same results through every way of running
them (plain, chunked with checkpoints, resumed) and nearly the same as on one device, and
writes what it found to ``OUT_DIR/found.json``.
"""

import json
import os
import shutil
import sys

import numpy as np

from purejaxpo import cli

ARGS = ["--seeds", "4", "--total-timesteps", "1280", "--num-envs", "4", "--set", "num_steps=32",
        "--set", "num_epochs=2", "--set", "num_minibatches=2", "--no-progress",
        "--cpu-devices", "2"]


def main(out: str) -> None:
    found = {}
    # The CLI sets the device count before anything starts JAX (building its parser does).
    assert cli.main(["train", "ppo", *ARGS, "--json", f"{out}/plain.json"]) == 0
    import jax

    from purejaxpo import backends, checkpoint, devices
    from purejaxpo.backends import cpu
    from purejaxpo.algos.ppo import PPOConfig, make_train

    found["cpu_devices"] = len(jax.devices("cpu"))
    found["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    found["cpu_backend_active"] = backends.active() is cpu.BACKEND
    found["late_fused_loops_refused"] = not cpu.use_fused_loops(quiet=True)
    found["auto_keeps_started_backend"] = cpu.use_cpu_cores() == 2
    try:
        cpu.use_cpu_cores(3)
        found["late_count_refused"] = False
    except RuntimeError as err:
        found["late_count_refused"] = "already started with 2 device(s)" in str(err)

    ck = f"{out}/ck"
    assert cli.main(["train", "ppo", *ARGS, "--checkpoint-dir", ck, "--checkpoint-every", "3",
                     "--json", f"{out}/chunked.json"]) == 0
    steps = checkpoint.all_steps(ck)
    chunked = checkpoint.load(ck).state.params
    shutil.rmtree(os.path.join(ck, str(steps[-1])))  # resume from the one before the last
    assert cli.main(["train", "ppo", *ARGS, "--checkpoint-dir", ck, "--resume",
                     "--json", f"{out}/resumed.json"]) == 0
    found["resumed_from"] = steps[-2]
    resumed = checkpoint.load(ck).state.params

    config = PPOConfig(env="CartPole-v1", num_envs=4, num_steps=32, num_epochs=2,
                       num_minibatches=2, total_timesteps=1280)
    train = make_train(config)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    split = jax.jit(devices.vmap_runs(train, 4))(keys)
    one = jax.jit(devices.vmap_runs(train, 4, devices=jax.devices()[:1]))(keys)
    found["split_devices"] = len(jax.tree_util.tree_leaves(split.params)[0].sharding.device_set)
    found["one_devices"] = len(jax.tree_util.tree_leaves(one.params)[0].sharding.device_set)

    def max_diff(a, b):
        return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                   for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

    # The CLI's plain run is this program (vmap_runs over the same keys).
    found["one_device_diff"] = max_diff(split.params, one.params)
    found["chunked_diff"] = max_diff(split.params, chunked)
    found["resumed_diff"] = max_diff(split.params, resumed)

    # The rollout's loop compiled as one kernel (a call XLA tags xla_cpu_small_call).
    from purejaxpo.algos.base import build_env, build_policy
    from purejaxpo.rollout import EnvCarry, collect

    policy, venv = build_policy(config), build_env(config, 0.99)
    params = policy.init(jax.random.PRNGKey(0))
    obs, env_state = venv.reset(jax.random.PRNGKey(1))
    carry = EnvCarry(env_state, obs, policy.initial_state(config.num_envs))

    def rollout_hlo(runs):  # one run's rollout, traced as in a program of `runs` runs
        fn = backends.active().trace_runs(lambda k, p, c: collect(k, venv, policy, p, c, 32), runs)
        return jax.jit(fn).lower(jax.random.PRNGKey(2), params, carry).compile().as_text()

    found["rollout_fused"] = "xla_cpu_small_call" in rollout_hlo(1)
    # 4 envs x 8 runs: products (faster than one kernel of sums there), not fused.
    found["rollout_of_8_runs_fused"] = "xla_cpu_small_call" in rollout_hlo(8)
    with open(f"{out}/found.json", "w") as f:
        json.dump(found, f)


if __name__ == "__main__":
    main(sys.argv[1])
