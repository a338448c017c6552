"""REINFORCE, A2C and environment GRPO: one program per run, vmappable, and they learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.algos import ALGORITHMS
from purejaxpo.algos.a2c import A2CConfig
from purejaxpo.algos.grpo import GRPOConfig, first_episode_mask
from purejaxpo.algos.reinforce import REINFORCEConfig
from purejaxpo.metrics import final_return

from _util import run_vmapped_twice

TINY = {
    "a2c": dict(total_timesteps=2048, num_envs=4, num_steps=16),
    "reinforce": dict(total_timesteps=2048, num_envs=4, num_steps=64),
    "grpo": dict(total_timesteps=4096, num_envs=8, num_steps=64, group_size=4,
                 num_minibatches=2, num_epochs=2, ref_update_every=2),
}
SWEPT = {"a2c": "ent_coef", "reinforce": "learning_rate", "grpo": "beta"}


def _make(algo, **overrides):
    config_cls, make_train = ALGORITHMS[algo]
    config = config_cls(**{**TINY[algo], **overrides})
    return config, make_train(config)


@pytest.mark.parametrize("algo", sorted(TINY))
def test_metrics_per_update_and_vmap_over_seeds_compiles_once(algo):
    config, train = _make(algo)
    result, _, traces = run_vmapped_twice(train, 2)
    assert traces == 1
    n = config.num_updates
    for name in ("total_loss", "policy_loss", "entropy", "learning_rate", "episode_return_sum",
                 "episode_count"):
        assert result.metrics[name].shape == (2, n), name
        assert np.isfinite(np.asarray(result.metrics[name])).all(), name
    lr = np.asarray(result.metrics["learning_rate"][0])
    np.testing.assert_allclose(lr[0], config.learning_rate, rtol=1e-6)
    assert np.all(np.diff(lr) < 0)  # linear annealing
    assert not np.allclose(result.metrics["total_loss"][0], result.metrics["total_loss"][1])


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(TINY))
def test_vmap_over_swept_hyperparameter_matches_single_runs(algo):
    config, train = _make(algo)
    name = SWEPT[algo]
    values = jnp.array([0.0, 0.05]) if name != "learning_rate" else jnp.array([1e-4, 3e-3])
    key = jax.random.PRNGKey(4)
    batched = jax.jit(jax.vmap(train, in_axes=(None, 0)))(key, {name: values})
    for i in range(2):
        single = jax.jit(ALGORITHMS[algo][1](config.replace(**{name: float(values[i])})))(key)
        np.testing.assert_allclose(batched.metrics["total_loss"][i], single.metrics["total_loss"],
                                   rtol=2e-3, atol=2e-4)
    assert not np.allclose(batched.metrics["total_loss"][0], batched.metrics["total_loss"][1])


def test_reinforce_without_baseline_has_no_critic():
    config, train = _make("reinforce", baseline=False)
    result = jax.jit(train)(jax.random.PRNGKey(0))
    from purejaxpo.algos.base import build_policy

    init = build_policy(config).init(jax.random.split(jax.random.PRNGKey(0), 3)[1])
    assert np.all(np.asarray(result.metrics["value_loss"]) == 0)
    assert set(result.params) == set(init) == {"actor"}  # the policy's parts: actor alone
    moved = jax.tree_util.tree_map(np.array_equal, init["actor"], result.params["actor"])
    assert not all(jax.tree_util.tree_leaves(moved))


def test_first_episode_mask():
    term = jnp.array([[0, 0], [1, 0], [0, 0], [1, 0]], bool)
    trunc = jnp.array([[0, 0], [0, 0], [0, 1], [0, 0]], bool)
    expected = [[1, 1], [1, 1], [0, 1], [0, 0]]
    np.testing.assert_array_equal(first_episode_mask(term, trunc), np.array(expected, bool))


def test_grpo_groups_start_from_one_state():
    from purejaxpo.algos.base import build_env

    config = GRPOConfig(**TINY["grpo"])
    obs, _ = build_env(config, 0.99).reset(jax.random.PRNGKey(0), config.group_size)
    groups = np.asarray(obs).reshape(2, 4, -1)
    assert np.all(groups == groups[:, :1])  # identical within a group
    assert not np.allclose(groups[0, 0], groups[1, 0])  # different across groups


@pytest.mark.slow
def test_grpo_zero_spread_groups_leave_policy_unchanged():
    """CartPole episodes outlast a 6-step horizon: every group's returns tie, so no gradient."""
    config, train = _make("grpo", num_steps=6, num_minibatches=1, beta=0.0)
    result = jax.jit(train)(jax.random.PRNGKey(0))
    assert np.all(np.asarray(result.metrics["zero_spread_groups"]) == 1.0)
    assert np.all(np.asarray(result.metrics["policy_loss"]) == 0.0)
    from purejaxpo.algos.base import build_policy

    init = build_policy(config).init(jax.random.split(jax.random.PRNGKey(0))[1])
    same = jax.tree_util.tree_map(np.array_equal, init["actor"], result.params["actor"])
    assert all(jax.tree_util.tree_leaves(same))


@pytest.mark.parametrize(
    "config_cls, field, value, message",
    [
        (GRPOConfig, "group_size", 1, "group_size"),
        (GRPOConfig, "num_envs", 10, "multiple of group_size"),
        (GRPOConfig, "normalize_obs", True, "normalize_obs"),
        (GRPOConfig, "advantage_scale", "mad", "advantage_scale"),
        (A2CConfig, "optimizer", "sgd", "optimizer"),
        (A2CConfig, "gae_lambda", 1.5, "gae_lambda"),
        (REINFORCEConfig, "vf_coef", -1.0, "vf_coef"),
    ],
)
def test_bad_config_raises_naming_field(config_cls, field, value, message):
    with pytest.raises(ValueError, match=message):
        config_cls(**{field: value})


def _finals(algo, seeds, **overrides):
    config_cls, make_train = ALGORITHMS[algo]
    train = make_train(config_cls(env="CartPole-v1", **overrides))
    result = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), seeds))
    return final_return(jax.tree_util.tree_map(np.asarray, result.metrics))


@pytest.mark.timeout(900)
def test_a2c_learns_cartpole():
    finals = _finals("a2c", 4, total_timesteps=500_000)
    assert finals.mean() >= 450, finals


@pytest.mark.timeout(900)
def test_reinforce_learns_cartpole():
    finals = _finals("reinforce", 4, total_timesteps=1_000_000)
    assert finals.mean() >= 400, finals


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_grpo_learns_cartpole():
    finals = _finals("grpo", 2, total_timesteps=1_000_000)
    assert finals.mean() >= 450, finals
