"""Sweeps: one compile per static setting, rows equal runs trained alone, chunks, windows,
devices, several processes, and the ``purejaxpo sweep`` command line."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from purejaxpo import cli
from purejaxpo.algos.ppo import PPOConfig, make_train
from purejaxpo.metrics import final_return
from purejaxpo.sweep import Range, best, plan_sweep, summary, sweep, window_metrics

BASE = PPOConfig(env="CartPole-v1", total_timesteps=2048, num_envs=4, num_steps=32,
                 hidden_sizes=(16,))   # one small layer: quick to compile
GRID = {"lr": [1e-3, 3e-4, 1e-4], "clip_eps": [0.1, 0.2]}   # 6 configurations
SEEDS = 2                                                     # 12 runs: padded on 8 devices
HERE = Path(__file__).resolve().parent
TRACES = []


def counting_make_train(config):
    train = make_train(config)

    def counted(key, hyperparams=None):
        TRACES.append(config)
        return train(key, hyperparams)

    return counted


@pytest.fixture(scope="module")
def reference():
    TRACES.clear()
    result = sweep(jax.random.PRNGKey(0), BASE, grid=GRID, seeds=SEEDS,
                   make_train=counting_make_train, log=None)
    return result, len(TRACES)


def test_one_compile_and_table_shape(reference):
    result, traces = reference
    assert traces == 1 and result.num_compilations == 1
    table = result.table
    assert list(table.columns) == ["config", "learning_rate", "clip_eps", "seed",
                                   "final_return", "compilation", "diverged_at_update"]
    assert table["diverged_at_update"].isna().all()  # lr <= 1e-3: every run stays finite
    assert len(table) == 12 and result.curves.shape == (12, BASE.num_updates)
    assert table["seed"].tolist() == [0, 1] * 6
    assert table["learning_rate"].tolist()[::2] == [1e-3, 1e-3, 3e-4, 3e-4, 1e-4, 1e-4]
    np.testing.assert_allclose(table["final_return"], final_return(result.metrics))
    top = best(result)
    means = table.groupby("config")["final_return"].mean()
    assert top["mean_final_return"] == pytest.approx(means.max())
    assert top["config_obj"].learning_rate == top["learning_rate"]
    assert summary(result)["mean_final_return"].is_monotonic_decreasing


def test_each_row_equals_the_run_trained_alone(reference):
    result, _ = reference
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    alone = jax.jit(make_train(BASE))   # one program: hyperparams are traced arguments
    for row in result.table.itertuples():
        config = BASE.replace(learning_rate=row.learning_rate, clip_eps=row.clip_eps)
        metrics = alone(keys[row.seed], config.hyperparams()).metrics
        np.testing.assert_allclose(final_return(metrics), row.final_return, rtol=1e-5)
        np.testing.assert_allclose(result.curves[row.Index], metrics["episode_return"],
                                   rtol=1e-4, atol=1e-4)


def test_chunks_and_windows_keep_results(reference):
    result, _ = reference
    k = 3   # 16 updates: windows of 1, 3, 3, 3, 3, 3 (the first one is short)
    other = sweep(jax.random.PRNGKey(0), BASE, grid=GRID, seeds=SEEDS, chunk_size=5,
                  log_every=k, log=None)   # 12 runs in chunks of 5: padded to 15
    np.testing.assert_allclose(other.table["final_return"], result.table["final_return"],
                               rtol=1e-6)
    assert other.curves.shape == (12, 6)
    full = {name: np.asarray(v) for name, v in result.metrics.items()}
    expected = jax.tree_util.tree_map(np.asarray, window_metrics(full, k))
    for name in ("episode_return_sum", "episode_count", "episode_return", "entropy"):
        np.testing.assert_allclose(other.metrics[name], expected[name], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(other.metrics["episode_count"].sum(-1),
                               full["episode_count"].sum(-1))
    assert other.env_steps[0].tolist() == [128, 512, 896, 1280, 1664, 2048]


def test_static_settings_group_into_compilations():
    plan = plan_sweep(jax.random.PRNGKey(0), "ppo", BASE,
                      grid={"lr": [1e-3, 3e-4], "num_steps": [16, 32],
                            "hidden_sizes": [(8,), (16, 16)]}, seeds=3)
    assert plan.num_compilations == 4 and plan.num_runs == 24
    assert "4 compilation(s) (one per value of num_steps, hidden_sizes)" in plan.describe()
    random = plan_sweep(jax.random.PRNGKey(0), "ppo", BASE, grid={"num_epochs": [1, 2]},
                        ranges={"lr": Range(1e-5, 1e-2, log=True), "ent_coef": (0.0, 0.02)},
                        num_samples=5, seeds=1)
    assert random.num_compilations == 2 and len(random.configs) == 10
    lrs = [c.learning_rate for c in random.configs[:5]]
    assert all(1e-5 <= v <= 1e-2 for v in lrs) and len(set(lrs)) == 5
    again = plan_sweep(jax.random.PRNGKey(0), "ppo", BASE, grid={"num_epochs": [1, 2]},
                       ranges={"lr": Range(1e-5, 1e-2, log=True), "ent_coef": (0.0, 0.02)},
                       num_samples=5, seeds=1)
    assert again.overrides == random.overrides   # explicit key: the same samples


@pytest.mark.parametrize("kwargs, message", [
    ({"grid": {"learning_rat": [1e-3]}}, "learning_rate"),
    ({"grid": {"lr": [1e-3, -1.0]}}, "learning_rate"),
    ({"grid": {"num_minibatches": [4, 3]}}, "num_minibatches"),
    ({"ranges": {"lr": (1e-3, 1e-4)}, "num_samples": 2}, "learning_rate"),
    ({"ranges": {"lr": (0.0, 1e-2, "log")}, "num_samples": 2}, "learning_rate"),
    ({"ranges": {"activation": (0, 1)}, "num_samples": 2}, "activation"),
    ({"ranges": {"lr": (1e-4, 1e-3)}}, "num_samples"),
    ({"seeds": 0}, "seeds"),
])
def test_bad_sweeps_raise_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_sweep(jax.random.PRNGKey(0), "ppo", BASE, **{"seeds": 1, **kwargs})


@pytest.mark.slow
def test_cli_sweep_json_and_csv(tmp_path, capsys):
    out_json, out_csv = tmp_path / "s" / "sweep.json", tmp_path / "s" / "sweep.csv"
    code = cli.main([
        "sweep", "a2c", "--env", "CartPole-v1", "--total-timesteps", "1024", "--num-envs", "4",
        "--set", "hidden_sizes=8", "--grid", "lr=1e-3,3e-4", "--grid", "num_steps=16,32",
        "--seeds", "2", "--json", str(out_json), "--csv", str(out_csv),
    ])
    assert code == 0
    data = json.loads(out_json.read_text())
    for key in ("runs", "compile_s", "run_s", "num_compilations", "device_count", "config"):
        assert key in data, key
    assert data["num_compilations"] == 2 and len(data["runs"]) == 8
    assert set(data["runs"][0]) >= {"learning_rate", "num_steps", "seed", "final_return"}
    assert data["config"]["total_timesteps"] == 1024
    table = pd.read_csv(out_csv)
    assert len(table) == 8 and "final_return" in table.columns
    np.testing.assert_allclose(table["final_return"],
                               [r["final_return"] for r in data["runs"]], rtol=1e-9)
    printed = capsys.readouterr().out
    assert "2 compilation(s)" in printed and "best: learning_rate=" in printed


@pytest.mark.parametrize("argv, message", [
    (["--grid", "lrr=1e-3"], "lrr"),
    (["--grid", "lr=1e-3,-1"], "learning_rate"),
    (["--grid", "num_minibatches=3"], "num_minibatches"),
    (["--grid", "num_epochs=two"], "num_epochs"),
    (["--range", "lr=1e-3:1e-4:log", "--random", "2"], "learning_rate"),
    (["--range", "lr=1e-5:1e-2:cubic", "--random", "2"], "learning_rate"),
    (["--range", "lr=1e-5:1e-2"], "--random"),
    (["--random", "3"], "--range"),
    (["--seeds", "0"], "seeds"),
    (["--chunk-size", "0"], "chunk-size"),
])
def test_cli_sweep_bad_input_exits_2(argv, message, capsys):
    assert cli.main(["sweep", "ppo", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


def _run(args, env):
    return subprocess.Popen([sys.executable, str(HERE / "sweep_subprocess.py"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _check_against_reference(result, out):
    table = pd.read_csv(out)
    np.testing.assert_allclose(table["final_return"], result.table["final_return"], rtol=1e-5)
    assert table["seed"].tolist() == result.table["seed"].tolist()
    np.testing.assert_allclose(np.load(str(out) + ".npy"), result.curves, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sharded_over_8_devices_equals_one_device(reference, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    out = tmp_path / "sharded.csv"
    proc = _run(["sharded", str(out)], env)
    log, _ = proc.communicate(timeout=200)
    assert proc.returncode == 0, log
    _check_against_reference(reference[0], out)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_processes_gather_on_process_0(reference, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out, port = tmp_path / "multihost.csv", str(_free_port())
    procs = [_run(["multihost", str(out), port, str(i)], env) for i in range(2)]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)
    _check_against_reference(reference[0], out)
