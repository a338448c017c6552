"""The Bradley-Terry reward model: it learns to rank pairs and serves as a GRPO reward."""

import jax
import numpy as np
import pytest

from purejaxpo.lm.checkpoint import load_policy, save_policy
from purejaxpo.lm.common import init_state
from purejaxpo.lm.config import LMGRPOConfig, LMRewardModelConfig
from purejaxpo.lm.grpo import make_grpo_step
from purejaxpo.lm.model import init_params
from purejaxpo.lm.pairs import synthetic_pairs
from purejaxpo.lm.reward_model import reward_function, score, train_reward_model

TINY = dict(num_layers=1, width=32, num_heads=2, mlp_ratio=2)


@pytest.fixture(scope="module")
def trained():
    """A tiny reward model from random weights, briefly trained on sorting near misses.

    From random weights it learns slowly (a trunk from an SFT policy, as `lm rm --init` uses,
    already reads the task); a short run only has to beat chance clearly."""
    config = LMRewardModelConfig(task="sorting", steps=150, log_every=50, learning_rate=3e-3,
                               batch_size=64, **TINY)
    task = config.make_task()
    train = synthetic_pairs(jax.random.PRNGKey(0), task, 4096)
    held = synthetic_pairs(jax.random.PRNGKey(1), task, 256, heldout=True)
    return config, train_reward_model(config, train, held, progress=False)


def test_reward_model_learns_to_rank_held_out_pairs(trained):
    _, result = trained
    before, after = result.fit.curve[0][1], result.fit.curve[-1][1]
    assert after > 0.55 and after > before + 0.08
    assert result.fit.metrics["loss"][-20:].mean() < result.fit.metrics["loss"][:5].mean()
    assert not result.fit.diverged and result.fit.diverged_at_step is None


def test_score_reads_the_last_valid_token(trained):
    """Right-padding after the completion does not change the score."""
    config, result = trained
    pairs = synthetic_pairs(jax.random.PRNGKey(3), config.make_task(), 4)
    pad = config.make_task().tokenizer.pad_id
    padded = np.pad(np.asarray(pairs.chosen), ((0, 0), (0, 3)), constant_values=pad)
    padded_mask = np.pad(np.asarray(pairs.chosen_mask), ((0, 0), (0, 3)))
    a = score(result.params, result.model, pairs.prompts, pairs.prompt_valid, pairs.chosen,
              pairs.chosen_mask)
    b = score(result.params, result.model, pairs.prompts, pairs.prompt_valid, padded, padded_mask)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_reward_model_as_grpo_reward(tmp_path, trained):
    config, result = trained
    save_policy(str(tmp_path / "rm"), result.params, result.model, task="sorting",
                kind="reward_model")
    rm = load_policy(str(tmp_path / "rm"), kind="reward_model")
    with pytest.raises(ValueError, match="holds a reward_model, not a policy"):
        load_policy(str(tmp_path / "rm"))
    policy_params = init_params(jax.random.PRNGKey(5), result.model)
    grpo = LMGRPOConfig(task="sorting", prompts_per_step=4, group_size=4, rewards=(("rm", 1.0),))
    step = make_grpo_step(grpo, result.model, grpo.make_task(),
                          {"rm": reward_function(rm.params, rm.model)})
    hp = grpo.hyperparams()
    _, metrics = jax.jit(step)(init_state(jax.random.PRNGKey(0), policy_params, hp), hp, None)
    assert np.isfinite(float(metrics["reward/rm"]))
    assert float(metrics["zero_spread_fraction"]) < 1.0  # scores differ within groups
