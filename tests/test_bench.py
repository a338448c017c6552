"""``purejaxpo bench`` (grid, medians, table, plot, fresh processes) and
``benchmarks/gpu_suite.sh`` at its tiny CPU scale."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from purejaxpo import bench, cli

ROOT = Path(__file__).resolve().parents[1]


def _args(*argv):
    return cli.make_parser().parse_args(["bench", *argv])


def test_grid_from_flags():
    cells = bench.cells_from_args(_args("--algos", "ppo", "sac", "--envs", "Pendulum-v1",
                                        "--seeds", "1,8", "--lm-widths", "32,64",
                                        "--lm-batch", "4x2,8x8", "--lm-completions", "5,32"))
    rl = [c for c in cells if isinstance(c, bench.RLCell)]
    lm = [c for c in cells if isinstance(c, bench.LMCell)]
    assert [(c.algo, c.seeds) for c in rl] == [("ppo", 1), ("ppo", 8), ("sac", 1), ("sac", 8)]
    assert all(c.cpu_devices is None for c in rl)  # auto: one per core
    assert bench.cells_from_args(_args("--no-lm", "--cpu-devices", "3"))[0].cpu_devices == 3
    assert len(lm) == 2 * 2 * 2
    assert {(c.prompts, c.group_size) for c in lm} == {(4, 2), (8, 8)}
    assert bench.cell_from_dict(json.loads(json.dumps(
        __import__("dataclasses").asdict(rl[1])))) == rl[1]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "1,x"], "--seeds='1,x' is invalid"),
    (["--seeds", "0"], "expected integers >= 1"),
    (["--algos", "nope"], "--algos 'nope' is invalid"),
    (["--envs", "NoSuchEnv-v0"], "NoSuchEnv"),
    (["--algos", "sac", "--envs", "CartPole-v1"], "continuous (Box) actions"),
    (["--lm-batch", "16by8"], "--lm-batch '16by8' is invalid"),
    (["--lm-widths", "30"], "must be divisible by --lm-heads 4"),
    (["--no-rl", "--no-lm"], "nothing to run"),
    (["--repeats", "0"], "--repeats=0 is invalid"),
    (["--cpu-devices", "0"], "--cpu-devices='0' is invalid"),
])
def test_bad_flags_exit_2_before_anything_runs(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run_grid", lambda *a, **k: pytest.fail("ran"))
    assert cli.main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def _ok(run_s, throughput, **extra):
    return {"ok": True, "compile_s": 1.0, "run_s": run_s, "throughput": throughput,
            "unit": "env steps/s", "device_kind": "cpu", "device_count": 1, "platform": "cpu",
            "jax": "x", "num_envs": 4, "total_timesteps": 1000, "final_return": None, **extra}


def test_medians_table_and_plot(tmp_path):
    cells = [bench.RLCell("ppo", "CartPole-v1", s) for s in (1, 16)]
    rows = [
        {**bench.summarise(cells[0], [_ok(3.0, 10.0), _ok(1.0, 30.0), _ok(2.0, 20.0)])},
        {**bench.summarise(cells[1], [_ok(4.0, 100.0, split_over_devices=2),
                                      {"ok": False, "error": "boom"}])},
    ]
    assert rows[0]["run_s"] == 2.0 and rows[0]["throughput"] == 20.0 and rows[0]["ok"] == 3
    assert rows[1]["ok"] == 1 and rows[1]["repeats"] == 2 and rows[1]["run_s"] == 4.0
    failed = bench.summarise(cells[0], [{"ok": False, "error": "boom"}])
    assert failed["ok"] == 0 and failed["error"] == "boom"
    written = bench.write_outputs(rows, str(tmp_path / "b"))
    assert [Path(p).suffix for p in written] == [".json", ".md", ".png"]
    table = (tmp_path / "b.md").read_text()
    assert "| ppo | CartPole-v1 | 16 | 2 | 4 | 1,000 | 1.0 | 4.00 | 100 |" in table
    assert "| ppo | CartPole-v1 | 1 | - | 4 | 1,000 | 1.0 | 2.00 | 20 |" in table
    assert json.loads((tmp_path / "b.json").read_text())["cells"][0]["seeds"] == 1


def test_a_failing_cell_is_reported_not_raised():
    result = bench.run_cell_process(bench.RLCell("ppo", "NoSuchEnv-v0", 1), timeout=120)
    assert result["ok"] is False and "NoSuchEnv" in result["error"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("sections", [
    "ppo_cartpole lm",  # CI: one environment and the LM section
    pytest.param("ppo_cartpole minatar sac lm", marks=pytest.mark.slow)])
def test_gpu_suite_tiny_scale_on_the_cpu(tmp_path, sections):
    env = {**os.environ, "GPU_SUITE_SCALE": "tiny", "GPU_SUITE_OUT": str(tmp_path),
           "PYTHON": sys.executable, "GPU_SUITE_ONLY": sections}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh")], env=env,
                          capture_output=True, text=True, timeout=850)
    assert proc.returncode == 0, proc.stderr[-3000:]
    suite = (tmp_path / "suite.md").read_text()
    for name in sections.split():
        assert f"({name}: ok," in suite
        cells = json.loads((tmp_path / f"{name}.json").read_text())["cells"]
        assert cells and all(c["ok"] and c["throughput"] > 0 for c in cells), name
    assert "lm grpo tokens/s" in suite and "completion tokens/s" in suite


def test_profile_counts_each_loop_body_once_per_trip():
    # benchmarks/profile_steps.py's `kernels run per update`: a loop's body counts once per
    # trip, so the count grows linearly in the trip count, by the body's kernels each trip.
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from profile_steps import executed_kernels
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def kernels(trips):
        def f(x):
            body = lambda i, x: jnp.sin(x) @ x + i  # noqa: E731  (a dot and a fusion or two)
            return jax.lax.fori_loop(0, trips, body, x)
        return executed_kernels(jax.jit(f).lower(jnp.ones((4, 4))).compile().as_text())

    k10, k11, k20 = kernels(10), kernels(11), kernels(20)
    per_trip = k11 - k10
    assert per_trip >= 2
    assert k20 - k10 == 10 * per_trip


@pytest.mark.timeout(600)
def test_a_checkpointed_experiment_run_continues_where_it_stopped(tmp_path):
    """``learning_curves.run_one(checkpoint_dir=...)`` (what ``benchmarks/minatar.py
    --checkpoint-dir`` uses for runs longer than a session): a run whose last checkpoint is
    lost continues from the one before and ends with the curves of an unbroken run."""
    import shutil

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from learning_curves import run_one
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    steps = 6 * 512  # 6 updates of the CartPole preset (4 envs x 128 steps)
    whole = run_one("ppo", "CartPole-v1", 2, steps)
    ck = tmp_path / "ck"
    first = run_one("ppo", "CartPole-v1", 2, steps, checkpoint_dir=str(ck), checkpoint_every=2)
    assert first["resumed_at_update"] == 0
    shutil.rmtree(ck / "6")  # as if the session ended after the checkpoint at update 4
    again = run_one("ppo", "CartPole-v1", 2, steps, checkpoint_dir=str(ck), checkpoint_every=2)
    assert again["resumed_at_update"] == 4
    for row in (first, again):
        np.testing.assert_array_equal(row["final_return"], whole["final_return"])
        np.testing.assert_array_equal(row["curves"], whole["curves"])
