"""The ``purejaxpo`` command line: the JSON contract and errors before anything compiles."""

import json

import pytest

from purejaxpo import cli


@pytest.mark.slow
def test_train_writes_json_contract(tmp_path, capsys):
    out = tmp_path / "run" / "result.json"
    code = cli.main([
        "train", "ppo", "--env", "CartPole-v1", "--seeds", "2", "--total-timesteps", "4096",
        "--num-envs", "8", "--set", "num_steps=64", "--set", "learning_rate=1e-3",
        "--json", str(out), "--no-progress",
    ])
    assert code == 0
    data = json.loads(out.read_text())
    for key in ("algo", "env", "seeds", "total_timesteps", "final_return", "mean_final_return",
                "compile_s", "run_s", "steps_per_s", "device", "config"):
        assert key in data, key
    assert data["algo"] == "ppo" and data["env"] == "CartPole-v1" and data["seeds"] == 2
    assert len(data["final_return"]) == 2
    assert all(r is None or r >= 8 for r in data["final_return"])  # CartPole episodes last >= 8 steps
    assert data["config"]["num_envs"] == 8 and data["config"]["num_steps"] == 64
    assert data["config"]["learning_rate"] == 1e-3
    assert data["steps_per_s"] == pytest.approx(2 * 8 * 64 * 8 / data["run_s"])
    printed = capsys.readouterr().out
    assert "seed   1  final_return" in printed and "env steps/s" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env", "CartPol-v1"], "CartPole-v1"),  # close match offered
        (["--set", "learning_rate=-1"], "learning_rate"),
        (["--set", "num_minibatches=3"], "num_minibatches"),
        (["--set", "learning_rat=1e-3"], "learning_rate"),
        (["--set", "num_epochs=two"], "num_epochs"),
        (["--seeds", "0"], "--seeds"),
        (["--num-envs", "0"], "num_envs"),
    ],
)
def test_bad_input_exits_2_naming_the_field(argv, message, capsys):
    assert cli.main(["train", "ppo", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


def test_envs_lists_gymnax_names(capsys):
    assert cli.main(["envs"]) == 0
    names = capsys.readouterr().out.split()
    assert {"CartPole-v1", "Acrobot-v1", "Pendulum-v1"} <= set(names)
