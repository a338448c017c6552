"""Logs (CSV / JSON lines, one row per update per run) and figures from result JSON files."""

import json
import math

import numpy as np
import pytest

from purejaxpo import cli, logs, plot

PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(runs=2, updates=5):
    ret = np.arange(runs * updates, dtype=np.float32).reshape(runs, updates)
    ret[0, 1] = np.nan
    return {"episode_return": ret, "policy_loss": -ret / 10}


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_log_rows_per_update_per_run(tmp_path, ext):
    path = str(tmp_path / f"log{ext}")
    writer = logs.LogWriter(path)
    m = _metrics()
    writer.write({k: v[:, :3] for k, v in m.items()}, batch_size=128)
    writer.write({k: v[:, 3:] for k, v in m.items()}, batch_size=128, start=3)
    rows = logs.read_log(path)
    assert len(rows) == 2 * 5
    assert [(int(r["update"]), int(r["run"])) for r in rows[:4]] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    last = rows[-1]
    assert int(last["env_steps"]) == 5 * 128 and float(last["episode_return"]) == 9.0
    assert float(last["policy_loss"]) == pytest.approx(-0.9)
    nan_row = rows[2]  # run 0, update 2
    assert nan_row["episode_return"] is None or math.isnan(nan_row["episode_return"])
    if ext == ".csv":
        assert open(path).readline().strip() == "run,update,env_steps,episode_return,policy_loss"


def test_log_path_must_be_csv_or_jsonl():
    with pytest.raises(ValueError, match="--log"):
        logs.check_log_path("out.txt", "--log")  # as the CLI calls it
    with pytest.raises(ValueError, match="^path='out.txt' is invalid"):  # library: the argument
        logs.check_log_path("out.txt")


def test_tensorboard_is_optional(tmp_path):
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        assert logs.write_tensorboard(str(tmp_path / "tb"), _metrics(), 128) is False
    else:
        assert logs.write_tensorboard(str(tmp_path / "tb"), _metrics(), 128) is True


def _png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG)


def test_plot_train_json_learning_curves(tmp_path, capsys):
    rng = np.random.default_rng(0)
    curves = np.cumsum(rng.uniform(0, 5, size=(4, 30)), axis=1).tolist()
    curves[1][3] = None
    result = {"algo": "ppo", "env": "CartPole-v1", "seeds": 4,
              "config": {"num_envs": 4, "num_steps": 32},
              "curves": {"episode_return": curves}}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(result))
    out = tmp_path / "curves.png"
    assert cli.main(["plot", str(path), "--out", str(out)]) == 0
    assert _png(out)
    assert "train plot" in capsys.readouterr().out
    mean, half = plot.mean_and_ci(np.asarray([[1.0, 2.0], [3.0, np.nan]]))
    np.testing.assert_allclose(mean, [2.0, 2.0])
    np.testing.assert_allclose(half, [1.96 * np.std([1.0, 3.0], ddof=1) / np.sqrt(2), 0.0])


@pytest.mark.parametrize("swept", [["learning_rate", "clip_eps"], ["learning_rate"],
                                   ["learning_rate", "clip_eps", "gamma"]])
def test_plot_sweep_json(tmp_path, swept):
    grid = {"learning_rate": [1e-4, 3e-4, 1e-3], "clip_eps": [0.1, 0.2], "gamma": [0.95, 0.99]}
    runs, config = [], 0
    import itertools

    for values in itertools.product(*(grid[n] for n in swept)):
        for seed in range(2):
            row = {"config": config, "seed": seed, "compilation": 0,
                   "final_return": None if (config, seed) == (0, 0) else 100.0 * config + seed}
            row.update(dict(zip(swept, values)))
            runs.append(row)
        config += 1
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"algo": "ppo", "env": "CartPole-v1", "swept": swept,
                                "runs": runs}))
    out = tmp_path / "sweep.png"
    assert cli.main(["plot", str(path), "--out", str(out)]) == 0
    assert _png(out)


def test_plot_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"hello": 1}))
    assert cli.main(["plot", str(bad), "--out", str(tmp_path / "x.png")]) == 2
    assert "RESULTS" in capsys.readouterr().err
    assert cli.main(["plot", str(bad), "--out", str(tmp_path / "x.jpg")]) == 2
    assert "--out" in capsys.readouterr().err
