"""``sweep`` over the language-model trainers: the same plan and program as the environment
algorithms, with held-out greedy exact match computed inside the program as the score.

Tiny transformers (1 layer, width 32) for a few steps: the cost is compilation."""

import json

import jax
import numpy as np
import pytest

from purejaxpo import cli
from purejaxpo.lm.checkpoint import Policy, save_policy
from purejaxpo.lm.common import make_evaluator
from purejaxpo.lm.config import LMDPOConfig, LMGRPOConfig, LMPPOConfig, LMSFTConfig
from purejaxpo.lm.model import init_params
from purejaxpo.lm.sft import sft_program
from purejaxpo.sweep import best, plan_sweep, run_plan, summary, sweep
from purejaxpo.sweep.lm import SCORE, eval_steps

TINY = dict(num_layers=1, width=32, num_heads=2, mlp_ratio=2)


def _tiny_policy() -> Policy:
    model = LMSFTConfig(**TINY).model_config()
    return Policy(init_params(jax.random.PRNGKey(0), model), model, "addition", {}, {})


@pytest.mark.timeout(300)
def test_sft_sweep_rows_are_the_runs_their_keys_and_settings_give_alone():
    base = LMSFTConfig(task="sorting", steps=25, log_every=10, eval_prompts=32, batch_size=32,
                       **TINY)
    result = sweep(jax.random.PRNGKey(0), base, grid={"lr": [1e-3, 1e-2]}, seeds=2, log=None)
    table = result.table
    assert list(table["learning_rate"]) == [1e-3, 1e-3, 1e-2, 1e-2]
    assert result.score == SCORE and result.unit == "steps"
    assert list(eval_steps(base)) == [0, 10, 20, 25]
    assert result.curves.shape == (4, 4)
    np.testing.assert_array_equal(result.env_steps[0], [0, 10, 20, 25])
    assert np.all(np.isnan(result.metrics["loss"][:, 0]))  # no training before step 0
    # Each row is the run its key and learning rate give alone.
    program = sft_program(base, base.model_config(), base.make_task())
    train = jax.jit(program.train)
    evaluate = make_evaluator(base.model_config(), base.make_task(), base.eval_prompts)
    keys = result.plan.seed_keys
    for row, lr, s in [(2, 1e-2, 0)]:
        alone = train(keys[s], {"learning_rate": lr})
        loss = np.asarray(alone.metrics["loss"])
        want = [loss[0:10].mean(), loss[10:20].mean(), loss[20:25].mean()]
        np.testing.assert_allclose(result.metrics["loss"][row, 1:], want, rtol=1e-4)
        assert abs(table[SCORE][row] - evaluate(alone.params)) <= 1 / 32 + 1e-9
        assert result.curves[row, -1] == table[SCORE][row]
    # The two learning rates train differently; seeds of one setting start apart.
    assert not np.allclose(result.metrics["loss"][0], result.metrics["loss"][2], equal_nan=True)
    assert not np.allclose(result.metrics["loss"][0], result.metrics["loss"][1], equal_nan=True)
    top = best(result)
    assert set(top) >= {"learning_rate", f"mean_{SCORE}", f"std_{SCORE}", "config_obj"}
    assert list(summary(result).columns[:3]) == ["config", "learning_rate", f"mean_{SCORE}"]


def test_lm_plans_group_static_settings_and_refuse_what_cannot_vary():
    base = LMGRPOConfig(steps=4)
    plan = plan_sweep(jax.random.PRNGKey(0), base, grid={"loss": ["grpo", "dapo"],
                                                          "beta": [0.0, 0.04]})
    assert plan.algo == "lm-grpo" and plan.num_compilations == 2  # one per loss
    # A preset fills what the sweep does not set: the dapo rows are dapo.
    dapo = [c for c in plan.configs if c.loss == "dapo"]
    assert all(not c.filter_zero_spread is False for c in dapo)
    assert "task addition" in plan.describe()
    with pytest.raises(ValueError, match="task: cannot be swept"):
        plan_sweep(jax.random.PRNGKey(0), base, grid={"task": ["addition", "sorting"]})
    with pytest.raises(ValueError, match="init: LMGRPOConfig starts from a policy"):
        sweep(jax.random.PRNGKey(0), base, log=None)
    with pytest.raises(ValueError, match="init: lm-sft trains from scratch"):
        sweep(jax.random.PRNGKey(0), LMSFTConfig(**TINY), init=_tiny_policy(), log=None)
    with pytest.raises(ValueError, match="run_lm_plan"):
        run_plan(plan)
    with pytest.raises(ValueError, match="only language-model trainers"):
        sweep(jax.random.PRNGKey(0), "ppo", init=_tiny_policy(), log=None)


@pytest.mark.slow  # the sweep machinery is CI's (SFT, GRPO above); these add two compilations
@pytest.mark.timeout(300)
@pytest.mark.parametrize("config", [
    LMPPOConfig(steps=2, log_every=1, prompts_per_step=2, group_size=2, eval_prompts=16),
    LMDPOConfig(steps=2, log_every=1, num_pairs=16, eval_pairs=8, batch_size=4,
                eval_prompts=16),
], ids=["lm-ppo", "lm-dpo"])
def test_ppo_and_dpo_sweep_from_a_policy(config):
    policy = _tiny_policy()
    result = sweep(jax.random.PRNGKey(1), config, grid={"lr": [1e-4, 1e-3]}, init=policy,
                   log=None)
    before = make_evaluator(policy.model, config.make_task(), 16)(policy.params)
    np.testing.assert_allclose(result.curves[:, 0], before)  # every run starts at the policy
    assert result.curves.shape == (2, 3) and np.all(np.isfinite(result.table[SCORE]))
    assert result.table["diverged_at_update"].isna().all()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sweep_command_on_lm_grpo(tmp_path, capsys):
    policy = _tiny_policy()
    save_policy(str(tmp_path / "p"), policy.params, policy.model, task="addition")
    path = tmp_path / "s.json"
    argv = ["sweep", "lm-grpo", "--init", str(tmp_path / "p"), "--steps", "4",
            "--log-every", "2", "--set", "prompts_per_step=2", "--set", "group_size=2",
            "--set", "eval_prompts=16", "--grid", "lr=1e-4,1e-3", "--seeds", "2",
            "--json", str(path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep lm-grpo on task addition" in out and "best: learning_rate=" in out
    data = json.loads(path.read_text())
    assert data["algo"] == "lm-grpo" and data["task"] == "addition" and data["score"] == SCORE
    assert len(data["runs"]) == 4 and all(0 <= r[SCORE] <= 1 for r in data["runs"])
    assert data["config"]["steps"] == 4 and data["config"]["log_every"] == 2


@pytest.mark.parametrize("argv, message", [
    (["sweep", "lm-grpo", "--steps", "4"], "--init: sweep lm-grpo starts from a policy"),
    (["sweep", "lm-sft", "--init", "x"], "--init: sweep lm-sft trains from scratch"),
    (["sweep", "lm-sft", "--env", "CartPole-v1"], "--env: only for environment algorithms"),
    (["sweep", "ppo", "--steps", "4"], "--steps: only for the language-model trainers"),
    (["sweep", "lm-grpo", "--init", "x", "--pairs", "f.jsonl"], "--pairs: only for lm-dpo"),
    (["sweep", "lm-sft", "--grid", "task=sorting"], "task"),
    (["sweep", "lm-sft", "--set", "learning_rate=-1"], "learning_rate"),
])
def test_sweep_command_refuses_bad_lm_input(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
