"""PPO: one jit-compiled program per run, vmappable over seeds and hyperparameters, and it learns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.algos.ppo import PPOConfig, make_train
from purejaxpo.metrics import final_return

from _util import run_vmapped_twice

TINY = dict(total_timesteps=2048, num_envs=4, num_steps=32, num_minibatches=2, num_epochs=2)


def test_train_runs_and_returns_metrics_per_update():
    config = PPOConfig(**TINY)
    result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    n = config.num_updates
    for name in ("total_loss", "policy_loss", "value_loss", "entropy", "approx_kl",
                 "clip_fraction", "explained_variance", "learning_rate", "episode_return",
                 "episode_length", "episode_return_sum", "episode_count"):
        assert result.metrics[name].shape == (n,), name
    finite = {k: v for k, v in result.metrics.items() if k not in ("episode_return", "episode_length")}
    for k, v in finite.items():
        assert np.isfinite(np.asarray(v)).all(), k
    lr = np.asarray(result.metrics["learning_rate"])
    np.testing.assert_allclose(lr[0], config.learning_rate, rtol=1e-6)
    assert np.all(np.diff(lr) < 0)  # linear annealing


def test_vmap_over_seeds_compiles_once_and_seeds_differ():
    a, b, traces = run_vmapped_twice(make_train(PPOConfig(**TINY)), 3)
    assert traces == 1
    returns = np.asarray(a.metrics["episode_return_sum"])
    assert not np.allclose(returns[0], returns[1])
    assert not np.allclose(np.asarray(b.metrics["total_loss"]), np.asarray(a.metrics["total_loss"]))


@pytest.mark.slow
def test_vmap_over_hyperparameters_matches_single_runs():
    config = PPOConfig(**TINY)
    train = make_train(config)
    key = jax.random.PRNGKey(3)
    lrs = jnp.array([1e-4, 1e-3, 3e-3])
    clips = jnp.array([0.1, 0.2, 0.3])
    hp = {"learning_rate": lrs, "clip_eps": clips, "clip_eps_high": clips}
    batched = jax.jit(jax.vmap(train, in_axes=(None, 0)))(key, hp)
    for i in range(3):
        single = jax.jit(make_train(config.replace(learning_rate=float(lrs[i]),
                                                   clip_eps=float(clips[i]))))(key)
        np.testing.assert_allclose(batched.metrics["total_loss"][i], single.metrics["total_loss"],
                                   rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(batched.metrics["learning_rate"][i],
                                   single.metrics["learning_rate"], rtol=1e-6)
    # Different learning rates really give different runs.
    assert not np.allclose(batched.metrics["total_loss"][0], batched.metrics["total_loss"][2])


@pytest.mark.slow
def test_continuous_policy_clips_actions_to_bounds():
    config = PPOConfig(env="Pendulum-v1", normalize_obs=True, normalize_reward=True, **TINY)
    result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    assert result.params["actor"]["params"]["log_std"].shape == (1,)  # state-independent
    from purejaxpo.algos.base import build_policy

    policy = build_policy(config)
    assert policy.continuous and policy.action_low == (-2.0,) and policy.action_high == (2.0,)
    clipped = policy.env_action(jnp.array([[-5.0], [0.3], [7.0]]))
    np.testing.assert_allclose(clipped[:, 0], [-2.0, 0.3, 2.0])
    assert np.isfinite(np.asarray(result.metrics["total_loss"])).all()


@pytest.mark.timeout(900)
def test_learns_cartpole_on_every_seed():
    """The CLI's defaults and budget (5e5 steps) on 4 seeds, vmapped."""
    config = PPOConfig(env="CartPole-v1", total_timesteps=500_000)
    result = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.PRNGKey(0), 4))
    finals = final_return(jax.tree_util.tree_map(np.asarray, result.metrics))
    assert np.all(finals >= 475), finals


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_full_cartpole_acrobot_pendulum_thresholds():
    """The issue's thresholds (slow: run with `pytest -m slow`)."""
    keys16 = jax.random.split(jax.random.PRNGKey(0), 16)
    keys8 = jax.random.split(jax.random.PRNGKey(0), 8)
    from purejaxpo.presets import preset

    def finals(config, keys):
        res = jax.jit(jax.vmap(make_train(config)))(keys)
        return final_return(jax.tree_util.tree_map(np.asarray, res.metrics))

    cartpole = finals(preset("ppo", "CartPole-v1"), keys16)
    assert np.all(cartpole >= 475), cartpole
    acrobot = finals(preset("ppo", "Acrobot-v1"), keys8)
    assert acrobot.mean() >= -100, acrobot
    pendulum = finals(preset("ppo", "Pendulum-v1"), keys8)
    assert pendulum.mean() >= -250, pendulum
