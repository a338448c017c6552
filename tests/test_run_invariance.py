"""A run's result depends only on its key and config: not on checkpoints, chunking, resuming
after a kill, or the progress bar.

The three ways of starting the same CLI run (plain; checkpointed every few updates; killed
mid-run and resumed) must give bitwise-identical per-seed returns and per-update metrics (the
``--log`` file holds every metric of every update and seed). See ``algos.base.per_run`` for the
cause of the difference this guards against (Adam's step count batched in one program and not
in the other).
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from purejaxpo import checkpoint as ck
from purejaxpo import cli
from purejaxpo.algos import ALGORITHMS

# 40 updates of 4 envs x 128 steps. The killed run is a fresh process: it gets the settings
# of this (test) process, one CPU device and XLA's default loops, so that all three runs are
# the same program (tests/test_devices.py checks the CLI's defaults the same way).
ARGS = ["train", "ppo", "--env", "CartPole-v1", "--seeds", "2", "--total-timesteps", "20480",
        "--no-progress", "--cpu-devices", "1", "--no-fused-loops"]


def _run(tmp_path, name, *extra, progress=False):
    out, log = tmp_path / f"{name}.json", tmp_path / f"{name}.csv"
    argv = [a for a in ARGS if progress is False or a != "--no-progress"]
    assert cli.main([*argv, "--json", str(out), "--log", str(log), *extra]) == 0
    return json.loads(out.read_text()), _log_rows(log)


def _log_rows(path):
    with open(path) as f:
        return list(csv.reader(f))


@pytest.mark.timeout(300)
def test_plain_checkpointed_and_killed_then_resumed_runs_are_identical(tmp_path):
    plain, plain_log = _run(tmp_path, "plain")
    chunked, chunked_log = _run(tmp_path, "chunked", "--checkpoint-dir", str(tmp_path / "c7"),
                                "--checkpoint-every", "7")
    # Killed mid-run (SIGKILL after a few checkpoints), then resumed from the directory.
    d = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "purejaxpo", *ARGS, "--checkpoint-dir", str(d),
         "--checkpoint-every", "1"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if "checkpoint at update" in line and int(line.split()[-1].split("/")[0]) >= 5:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 5 <= ck.latest_step(str(d)) < 40
    resumed, resumed_log = _run(tmp_path, "resumed", "--checkpoint-dir", str(d), "--resume")

    assert plain["final_return"] == chunked["final_return"] == resumed["final_return"]
    assert plain["curves"] == chunked["curves"] == resumed["curves"]
    assert len(plain_log) == 1 + 2 * 40
    # Every metric of every update and seed (the resumed log is rewritten from the checkpoint's
    # history, then appended).
    assert plain_log == chunked_log
    assert sorted(plain_log) == sorted(resumed_log)


@pytest.mark.timeout(300)
def test_progress_bar_does_not_change_results(tmp_path):
    quiet, quiet_log = _run(tmp_path, "quiet")
    shown, shown_log = _run(tmp_path, "shown", progress=True)
    assert quiet["final_return"] == shown["final_return"] and quiet_log == shown_log


@pytest.mark.slow
@pytest.mark.parametrize("algo,env", [("ppo", "CartPole-v1"), ("a2c", "CartPole-v1"),
                                      ("trpo", "CartPole-v1"), ("grpo", "CartPole-v1"),
                                      ("reinforce", "CartPole-v1"), ("ppo_rnn", "CueRecall-v0"),
                                      ("ppo", "Pendulum-v1")])
@pytest.mark.timeout(300)
def test_fused_train_equals_init_then_chunks(algo, env):
    """``jit(vmap(train))`` equals ``init`` and ``run`` in separate programs, any chunking."""
    from purejaxpo.presets import preset

    config = preset(algo, env)
    config = config.replace(total_timesteps=config.batch_size * 6)
    train = ALGORITHMS[algo][1](config)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    fused = jax.jit(jax.vmap(train))(keys)
    for every in (2, 4):
        state, metrics = ck.run_with_checkpoints(lambda: jax.vmap(train.init)(keys),
                                                 ck.batched_run(train.run), config.num_updates,
                                                 every=every)
        for a, b in zip(jax.tree_util.tree_leaves(fused.params),
                        jax.tree_util.tree_leaves(state.params)):
            assert np.array_equal(np.asarray(a), np.asarray(b))
        assert sorted(metrics) == sorted(fused.metrics)
        for k, v in metrics.items():
            assert np.array_equal(np.asarray(fused.metrics[k]), v, equal_nan=True), k
