"""``purejaxpo lm sft|grpo|dpo|eval``: the JSON contract, policy folders, preference files, and
bad input rejected before anything is trained or compiled.

Every run uses a tiny transformer (1 layer, width 32) for a few steps; the cost is compilation,
so one SFT policy (a module fixture) is the starting point of every other command.
"""

import argparse
import json
import subprocess
import sys

import pytest

from purejaxpo import checkpoint as ck
from purejaxpo import cli
from purejaxpo.lm.checkpoint import load_policy
from purejaxpo.lm.config import LOSS_PRESETS
from purejaxpo.lm.preference import PREFERENCE_LOSSES

TINY = ["--set", "num_layers=1", "--set", "width=32", "--set", "num_heads=2",
        "--set", "mlp_ratio=2"]
SHORT = ["--steps", "4", "--set", "log_every=2", "--set", "eval_prompts=16", "--no-progress"]
DPO_SMALL = ["--set", "num_pairs=64", "--set", "eval_pairs=16", "--set", "batch_size=8"]


def _run(argv, json_path) -> dict:
    assert cli.main([str(a) for a in argv]) == 0
    return json.loads(json_path.read_text())


def _check_trainer_json(data, command: str, steps: int = 4):
    """The keys every trainer writes, with sane values."""
    assert data["command"] == command
    assert data["task"] == "addition"
    for key in ("exact_match_before", "exact_match_after"):
        assert isinstance(data[key], float) and 0.0 <= data[key] <= 1.0, key
    assert data["steps"] == steps
    assert data["run_s"] > 0
    assert data["tokens_per_s"] is not None and data["tokens_per_s"] > 0
    assert isinstance(data["device"], str) and data["device"]
    config = data["config"]
    assert isinstance(config, dict)
    assert config["steps"] == steps and config["log_every"] == 2 and config["eval_prompts"] == 16
    # One row at step 0, then one per chunk of log_every steps with the chunk's metric means.
    curve = data["curve"]
    assert [row["step"] for row in curve] == [0, 2, 4]
    assert curve[0]["heldout_exact_match"] == data["exact_match_before"]
    assert curve[-1]["heldout_exact_match"] == data["exact_match_after"]
    for row in curve[1:]:
        assert "loss" in row and isinstance(row["loss"], float)
    assert data["diverged"] is False and data["diverged_at_step"] is None
    return config


def _check_policy_folder(path, command: str):
    info = json.loads((path / "policy.json").read_text())
    assert info["task"] == "addition"
    assert info["model"]["num_layers"] == 1 and info["model"]["width"] == 32
    assert info["meta"]["command"] == command
    assert (path / "params").is_dir()


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """``lm sft --out DIR --json J``: the policy folder and the JSON (shared by the module)."""
    root = tmp_path_factory.mktemp("lm_sft")
    out, path = root / "policy", root / "sft.json"
    data = _run(["lm", "sft", *TINY, *SHORT, "--set", "batch_size=8", "--out", out,
                 "--json", path], path)
    return out, data


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if a command gets as far as building a model or compiling a step."""

    def boom(*args, **kwargs):
        raise AssertionError("bad input reached training / compilation")

    import purejaxpo.lm.common as common
    import purejaxpo.lm.dpo as dpo
    import purejaxpo.lm.grpo as grpo
    import purejaxpo.lm.sft as sft_module

    for module in (common, dpo, grpo, sft_module):
        monkeypatch.setattr(module, "fit", boom)
        monkeypatch.setattr(module, "make_evaluator", boom)
    monkeypatch.setattr(sft_module, "init_params", boom)


def _fails(argv, capsys, *needles):
    """Runs ``main(argv)``, which must reject it: a ValueError, or (if the CLI catches errors
    the way ``purejaxpo train`` does) exit code 2 with ``error: ...`` on stderr. Every needle
    must be in the message."""
    try:
        code = cli.main([str(a) for a in argv])
    except ValueError as err:
        message = str(err)
    else:
        assert code == 2, f"expected failure, got exit code {code}"
        message = capsys.readouterr().err
        assert message.startswith("error:"), message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# -- the happy path: sft -> grpo -> eval, sft -> dpo ------------------------------------------


def test_sft_writes_json_and_policy_folder(sft, capsys):
    out, data = sft
    config = _check_trainer_json(data, "lm sft")
    assert config["num_layers"] == 1 and config["width"] == 32 and config["num_heads"] == 2
    assert config["mlp_ratio"] == 2 and config["batch_size"] == 8
    assert data["model"]["num_layers"] == 1 and data["model"]["width"] == 32
    assert isinstance(data["params"], int) and data["params"] > 0
    _check_policy_folder(out, "lm sft")


def test_grpo_from_sft_then_eval(sft, tmp_path, capsys):
    init, _ = sft
    out, path = tmp_path / "grpo", tmp_path / "grpo.json"
    data = _run(["lm", "grpo", "--init", init, *SHORT, "--set", "prompts_per_step=2",
                 "--group-size", "2", "--loss", "dapo", "--beta", "0.04",
                 "--reward", "correct=1", "--reward", "format=0.2",
                 "--out", out, "--json", path], path)
    config = _check_trainer_json(data, "lm grpo")
    assert data["init"] == str(init)
    assert config["loss"] == "dapo" and config["group_size"] == 2
    assert config["prompts_per_step"] == 2 and config["beta"] == 0.04
    # The dapo preset filled the fields left unset.
    assert config["clip_eps_high"] == 0.28 and config["clip_eps"] == 0.2
    assert config["filter_zero_spread"] is True and config["aggregation"] == "token_mean"
    # --reward replaces the default rewards (correct=1 digits=0.5) entirely.
    assert config["rewards"] == {"correct": 1.0, "format": 0.2}
    for row in data["curve"][1:]:
        assert {"reward", "reward/correct", "reward/format", "kl",
                "zero_spread_fraction"} <= set(row)
        assert "reward/digits" not in row
    _check_policy_folder(out, "lm grpo")
    printed = capsys.readouterr().out
    assert "grpo addition: held-out greedy exact match" in printed
    assert f"saved policy to {out}" in printed

    eval_path = tmp_path / "eval.json"
    ev = _run(["lm", "eval", "--init", out, "--num-prompts", "16", "--examples", "3",
               "--json", eval_path], eval_path)
    assert ev["command"] == "lm eval" and ev["task"] == "addition" and ev["init"] == str(out)
    assert isinstance(ev["exact_match"], float) and 0.0 <= ev["exact_match"] <= 1.0
    assert ev["num_prompts"] == 16 and ev["eval_s"] > 0 and ev["device"]
    assert len(ev["examples"]) == 3
    for line in ev["examples"]:
        prompt = line.split("=")[0].split()
        assert len(prompt) == 7 and prompt[3] == "+", line  # "a a a + b b b = ..."
    assert "eval addition: held-out greedy exact match" in capsys.readouterr().out


def _check_dpo_json(data, command: str):
    config = _check_trainer_json(data, command)
    for key in ("pref_accuracy", "pref_accuracy_before"):
        assert isinstance(data[key], float) and 0.0 <= data[key] <= 1.0, key
    for key in ("chosen_logp_delta", "rejected_logp_delta"):
        assert isinstance(data[key], float), key
    assert data["pairs_per_s"] > 0
    assert config["batch_size"] == 8
    return config


@pytest.mark.slow
def test_dpo_kto_from_sft(sft, tmp_path, capsys):
    init, _ = sft
    out, path = tmp_path / "kto", tmp_path / "kto.json"
    data = _run(["lm", "dpo", "--init", init, *SHORT, *DPO_SMALL, "--loss", "kto",
                 "--beta", "0.3", "--out", out, "--json", path], path)
    config = _check_dpo_json(data, "lm dpo[kto]")
    assert config["loss"] == "kto" and config["beta"] == 0.3
    assert config["num_pairs"] == 64 and config["eval_pairs"] == 16
    assert data["pairs"] == "synthetic (policy)" and data["init"] == str(init)
    _check_policy_folder(out, "lm dpo[kto]")
    assert "held-out preference accuracy" in capsys.readouterr().out


def _addition_line(a: int, b: int) -> dict:
    """A pair for 3-digit addition: the reversed 4-digit sum, and one with a wrong last digit."""
    answer = f"{a + b:04d}"[::-1]
    wrong = answer[:-1] + str((int(answer[-1]) + 1) % 10)
    return {"prompt": " ".join(f"{a:03d}") + " + " + " ".join(f"{b:03d}") + " =",
            "chosen": " ".join(answer), "rejected": " ".join(wrong)}


def test_addition_line_format():
    assert _addition_line(123, 456) == {"prompt": "1 2 3 + 4 5 6 =", "chosen": "9 7 5 0",
                                        "rejected": "9 7 5 1"}


@pytest.mark.slow
def test_dpo_default_loss_from_pairs_file(sft, tmp_path):
    init, _ = sft
    pairs = tmp_path / "pairs.jsonl"
    lines = [_addition_line(100 + 67 * i, 7 + 81 * i) for i in range(12)]
    pairs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    path = tmp_path / "dpo.json"
    data = _run(["lm", "dpo", "--init", init, *SHORT, *DPO_SMALL, "--pairs", pairs,
                 "--json", path], path)
    config = _check_dpo_json(data, "lm dpo[rpo]")
    assert config["loss"] == "rpo" and config["beta"] == 0.5  # the defaults
    assert config["rpo_alpha"] == 1.0
    assert data["pairs"] == str(pairs)


def test_malformed_pairs_file_names_the_line_and_field(sft, tmp_path, capsys, no_training):
    init, _ = sft
    lines = [_addition_line(100 + i, 200 + i) for i in range(10)]
    del lines[2]["rejected"]
    pairs = tmp_path / "bad.jsonl"
    pairs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    _fails(["lm", "dpo", "--init", init, *SHORT, *DPO_SMALL, "--pairs", pairs], capsys,
           "line 3", "'rejected'", str(pairs))


# -- GRPO loss presets (configuration only: training is stubbed out) -------------------------


class _Captured(Exception):
    pass


def _grpo_config(sft, monkeypatch, *argv):
    """The GRPO config that ``lm grpo --init <sft> ARGV`` would train with (not trained)."""
    import purejaxpo.lm.grpo as grpo

    def capture(config, *args, **kwargs):
        raise _Captured(config)

    monkeypatch.setattr(grpo, "train_grpo", capture)
    init, _ = sft
    with pytest.raises(_Captured) as info:
        cli.main(["lm", "grpo", "--init", str(init), *argv, "--no-progress"])
    return info.value.args[0]


@pytest.mark.parametrize("loss", sorted(LOSS_PRESETS))
def test_grpo_loss_presets_reach_the_config(loss, sft, monkeypatch):
    config = _grpo_config(sft, monkeypatch, "--loss", loss, "--set", "clip_eps_high=0.5").to_dict()
    assert config["loss"] == loss
    expected = {**LOSS_PRESETS[loss], "clip_eps_high": 0.5}  # an explicit --set wins
    assert {k: config[k] for k in expected} == expected


@pytest.mark.parametrize("estimator", ["rloo", "reinforce_pp"])
def test_grpo_estimator_reaches_the_config(estimator, sft, monkeypatch):
    config = _grpo_config(sft, monkeypatch, "--estimator", estimator, "--set", "kl_coef=0.01")
    assert config.estimator == estimator and config.kl_coef == 0.01
    assert config.use_reference == (estimator == "reinforce_pp")


# -- bad input fails before anything is trained or compiled ------------------------------------


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["lm", "sft", "--set", "num_layer=1"], ["num_layer", "Did you mean", "num_layers"]),
        (["lm", "sft", "--set", "widht=32"], ["Did you mean", "width"]),
        (["lm", "grpo", "--init", "{missing}", "--set", "prompts_per_stp=2"],
         ["Did you mean", "prompts_per_step"]),
        (["lm", "dpo", "--init", "{missing}", "--set", "num_pair=64"],
         ["Did you mean", "num_pairs"]),
        (["lm", "sft", "--set", "steps=3"], ["--steps"]),  # has its own flag
        (["lm", "grpo", "--init", "{missing}", "--set", "rewards=x"], ["--reward"]),
        (["lm", "grpo", "--init", "{missing}", "--set", "estimator=rloo"], ["--estimator"]),
        (["lm", "sft", "--set", "width=wide"], ["width"]),
        (["lm", "sft", "--task-arg", "digits=0"], ["digits"]),
        (["lm", "grpo", "--init", "{missing}", "--task-arg", "digits=0"], ["digits"]),
        (["lm", "sft", "--task-arg", "digits"], ["--task-arg", "name=value"]),
        (["lm", "sft", "--task-arg", "colour=3"], ["colour"]),
        (["lm", "sft", "--task", "additon"], ["addition"]),
        (["lm", "grpo", "--init", "{missing}", "--reward", "correct=lots"], ["--reward"]),
        (["lm", "grpo", "--init", "{empty}"], ["policy.json"]),
        (["lm", "dpo", "--init", "{empty}"], ["policy.json"]),
        (["lm", "eval", "--init", "{empty}"], ["policy.json"]),
        (["lm", "sft", "--resume"], ["--resume needs --checkpoint-dir"]),
        (["lm", "grpo", "--init", "{missing}", "--checkpoint-every", "2"],
         ["--checkpoint-every needs --checkpoint-dir"]),
        (["lm", "dpo", "--init", "{missing}", "--checkpoint-dir", "{empty}",
          "--checkpoint-every", "0"], ["--checkpoint-every=0 is invalid"]),
    ],
)
def test_bad_input_fails_before_training(argv, needles, tmp_path, capsys, no_training):
    empty = tmp_path / "not_a_policy"
    empty.mkdir()
    argv = [a.format(missing=tmp_path / "missing", empty=empty) for a in argv]
    if argv[1] != "eval":
        argv.append("--no-progress")
    _fails(argv, capsys, *needles)


@pytest.mark.parametrize("command", [
    "sft", "grpo",
    # The same code path (lm.common.fit); kept out of CI for time, run by `pytest -m slow`.
    pytest.param("dpo", marks=pytest.mark.slow), pytest.param("rm", marks=pytest.mark.slow)])
def test_every_trainer_checkpoints_and_resumes(command, sft, tmp_path, capsys):
    """--checkpoint-dir/--checkpoint-every/--resume on every trainer: a checkpoint per chunk;
    resuming the finished run reports the same result; reusing the folder without --resume
    is refused before training."""
    init, _ = sft
    d = tmp_path / "ck"
    argv = ["lm", command, *SHORT, "--checkpoint-dir", d, "--checkpoint-every", "2"]
    argv += ["--init", init] if command in ("grpo", "dpo") else TINY
    if command == "grpo":
        argv += ["--set", "prompts_per_step=2", "--group-size", "2"]
    if command in ("dpo", "rm"):
        argv += DPO_SMALL
    if command == "sft":
        argv += ["--set", "batch_size=8"]
    first = _run([*argv, "--json", tmp_path / "a.json"], tmp_path / "a.json")
    assert ck.all_steps(str(d)) == [2, 4]
    again = _run([*argv, "--resume", "--json", tmp_path / "b.json"], tmp_path / "b.json")
    score = "ranking_accuracy_after" if command == "rm" else "exact_match_after"
    assert again[score] == first[score] and again["steps"] == first["steps"] == 4
    capsys.readouterr()
    _fails([str(a) for a in argv], capsys, "already holds checkpoints", "--resume")


@pytest.mark.slow
def test_lm_ppo_command(sft, tmp_path):
    init, _ = sft
    out, path = tmp_path / "ppo", tmp_path / "ppo.json"
    data = _run(["lm", "ppo", "--init", init, *SHORT, "--set", "prompts_per_step=2",
                 "--group-size", "2", "--out", out, "--json", path], path)
    _check_trainer_json(data, "lm ppo")
    assert data["config"]["vf_coef"] == 0.5
    assert {"value_loss", "explained_variance"} <= set(data["curve"][-1])
    _check_policy_folder(out, "lm ppo")
    saved = load_policy(str(out))  # the policy alone, loadable by lm eval / lm grpo --init
    assert "critic" not in saved.params and "policy" not in saved.params
    assert cli.main(["lm", "eval", "--init", str(out), "--num-prompts", "8"]) == 0


def test_unknown_reward_fails_before_training(sft, capsys, no_training):
    init, _ = sft
    _fails(["lm", "grpo", "--init", init, "--reward", "nonexistent=1", "--no-progress"], capsys,
           "unknown reward", "nonexistent", "correct")


@pytest.mark.parametrize(
    "argv",
    [
        ["lm", "grpo", "--init", "x", "--loss", "ppo"],
        ["lm", "grpo", "--init", "x", "--estimator", "ppo"],
        ["lm", "dpo", "--init", "x", "--loss", "dapo"],
        ["lm", "grpo", "--init", "x", "--group-size", "two"],
        ["lm", "grpo", "--loss", "grpo"],  # --init is required
        ["lm", "ppo"],
    ],
)
def test_bad_flags_exit_via_argparse(argv, capsys, no_training):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


# -- divergence is reported ------------------------------------------------------------------

DIVERGE = ["--set", "learning_rate=1e30"]
WARNING = "non-finite loss/parameters); results after it are meaningless"


def _check_diverged_json(data, command: str, capsys, score: str = "exact_match"):
    assert data["command"] == command
    assert data["diverged"] is True
    step = data["diverged_at_step"]
    assert isinstance(step, int) and 1 <= step <= data["steps"] == 4
    assert data[f"{score}_after"] is None  # never a plausible number
    assert data[f"{score}_before"] is not None
    assert data["curve"][-1][f"heldout_{score}"] is None
    assert data["curve"][-1]["nonfinite"] > 0  # the chunk mean of the per-step flag
    err = capsys.readouterr().err
    assert f"warning: training diverged at step {step} ({WARNING}" in err


@pytest.mark.slow
def test_sft_divergence_is_reported(tmp_path, capsys):
    out, path = tmp_path / "policy", tmp_path / "sft.json"
    data = _run(["lm", "sft", *TINY, *SHORT, *DIVERGE, "--set", "batch_size=8", "--out", out,
                 "--json", path], path)
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    _check_diverged_json(data, "lm sft", capsys)
    # The saved (non-finite) policy evaluates to null, not to a plausible 0.0.
    eval_path = tmp_path / "eval.json"
    ev = _run(["lm", "eval", "--init", out, "--num-prompts", "16", "--examples", "1",
               "--json", eval_path], eval_path)
    assert ev["exact_match"] is None
    assert "non-finite parameters" in capsys.readouterr().err


def test_grpo_divergence_is_reported(sft, tmp_path, capsys):
    init, _ = sft
    path = tmp_path / "grpo.json"
    data = _run(["lm", "grpo", "--init", init, *SHORT, *DIVERGE, "--set", "prompts_per_step=2",
                 "--group-size", "2", "--json", path], path)
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    _check_diverged_json(data, "lm grpo", capsys)


@pytest.mark.slow
def test_dpo_divergence_is_reported(sft, tmp_path, capsys):
    init, _ = sft
    path = tmp_path / "dpo.json"
    data = _run(["lm", "dpo", "--init", init, *SHORT, *DPO_SMALL, *DIVERGE, "--json", path],
                path)
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert data["pref_accuracy"] is None and data["pref_accuracy_before"] is not None
    _check_diverged_json(data, "lm dpo[rpo]", capsys)


@pytest.mark.parametrize("diverge", [pytest.param(False, marks=pytest.mark.slow), True])
def test_rm_json_and_divergence(sft, tmp_path, capsys, diverge):
    init, _ = sft
    out, path = tmp_path / "rm", tmp_path / "rm.json"
    data = _run(["lm", "rm", "--init", init, *SHORT, *DPO_SMALL, *(DIVERGE if diverge else []),
                 "--out", out, "--json", path], path)
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert data["init"] == str(init) and data["pairs_per_s"] > 0
    assert [row["step"] for row in data["curve"]] == [0, 2, 4]
    assert json.loads((out / "policy.json").read_text())["kind"] == "reward_model"
    if diverge:
        _check_diverged_json(data, "lm rm", capsys, score="ranking_accuracy")
    else:
        assert data["command"] == "lm rm" and data["steps"] == 4
        for key in ("ranking_accuracy_before", "ranking_accuracy_after"):
            assert 0.0 <= data[key] <= 1.0
        assert data["diverged"] is False and data["diverged_at_step"] is None
        assert "warning" not in capsys.readouterr().err


# -- the preference-loss table drives the command line -----------------------------------------


def _subparser(parser, name):
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices[name]


def test_dpo_loss_choices_are_the_table():
    from purejaxpo.cli.lm import add_cli_parser

    parser = argparse.ArgumentParser()
    add_cli_parser(parser.add_subparsers())
    dpo = _subparser(_subparser(parser, "lm"), "dpo")
    (loss,) = [a for a in dpo._actions if "--loss" in a.option_strings]
    assert list(loss.choices) == list(PREFERENCE_LOSSES)
    text = dpo.format_help()
    for name, spec in PREFERENCE_LOSSES.items():
        assert name in text and spec.description.split(":")[0] in text


def test_lm_modules_never_import_the_command_line():
    """No import circle: the LM library stands without the command line (``purejaxpo.cli``,
    whose ``purejaxpo.cli.lm`` imports it) or ``purejaxpo.sweep``."""
    code = ("import sys, importlib, pkgutil, purejaxpo.lm as lm\n"
            "for m in pkgutil.iter_modules(lm.__path__): "
            "importlib.import_module('purejaxpo.lm.' + m.name)\n"
            "bad = [m for m in ('purejaxpo.cli', 'purejaxpo.sweep') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
