"""TRPO: one jit-compiled program per run, vmappable over seeds and max_kl, and it learns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.algos.trpo import TRPOConfig, make_train
from purejaxpo.metrics import final_return

from _util import run_vmapped_twice

TINY = dict(total_timesteps=2048, num_envs=4, num_steps=64, vf_minibatches=2, vf_epochs=2,
            cg_iters=5, num_backtracks=5)

METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "explained_variance",
           "learning_rate", "step_fraction", "line_search_accepted", "surrogate_improvement",
           "expected_improvement", "episode_return", "episode_length", "episode_return_sum",
           "episode_count")


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_train_runs_and_returns_metrics_per_update(env):
    extra = dict(normalize_obs=True, normalize_reward=True) if env == "Pendulum-v1" else {}
    config = TRPOConfig(env=env, **TINY, **extra)
    result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    n = config.num_updates
    for name in METRICS:
        assert result.metrics[name].shape == (n,), name
    m = {k: np.asarray(v) for k, v in result.metrics.items()}
    for k, v in m.items():
        if k not in ("episode_return", "episode_length"):
            assert np.isfinite(v).all(), k
    # Every accepted step stays inside the trust region and improves the surrogate.
    assert np.all(m["approx_kl"] <= config.max_kl * (1 + 1e-5))
    assert np.all((m["line_search_accepted"] == 0) | (m["surrogate_improvement"] > 0))
    assert m["line_search_accepted"].mean() > 0.5
    assert np.all((m["step_fraction"] >= 0) & (m["step_fraction"] <= 1))
    np.testing.assert_allclose(m["learning_rate"], config.learning_rate, rtol=1e-6)  # no anneal
    if env == "Pendulum-v1":
        assert result.params["actor"]["params"]["log_std"].shape == (1,)


def test_validation_names_the_field():
    with pytest.raises(ValueError, match="max_kl"):
        TRPOConfig(max_kl=0.0)
    with pytest.raises(ValueError, match="backtrack_coef"):
        TRPOConfig(backtrack_coef=1.0)
    with pytest.raises(ValueError, match="vf_minibatches=3 is invalid: must divide"):
        TRPOConfig(vf_minibatches=3)
    with pytest.raises(ValueError, match="cg_iters"):
        TRPOConfig(cg_iters=0)
    with pytest.raises(ValueError, match="unknown names"):
        make_train(TRPOConfig(**TINY))(jax.random.PRNGKey(0), {"clip_eps": 0.2})


def test_registered_for_the_cli():
    from purejaxpo.algos import ALGORITHMS
    from purejaxpo.presets import preset

    assert ALGORITHMS["trpo"] == (TRPOConfig, make_train)
    for env in ("CartPole-v1", "Acrobot-v1", "Pendulum-v1"):
        assert isinstance(preset("trpo", env), TRPOConfig)


@pytest.mark.slow
def test_vmap_over_seeds_compiles_once_and_seeds_differ():
    a, b, traces = run_vmapped_twice(make_train(TRPOConfig(**TINY)), 3)
    assert traces == 1
    returns = np.asarray(a.metrics["episode_return_sum"])
    assert not np.allclose(returns[0], returns[1])
    assert not np.allclose(np.asarray(a.metrics["value_loss"]), np.asarray(b.metrics["value_loss"]))


@pytest.mark.slow
def test_vmap_over_max_kl_matches_single_runs():
    config = TRPOConfig(**TINY)
    train = make_train(config)
    key = jax.random.PRNGKey(3)
    max_kls = jnp.array([0.002, 0.01, 0.05])
    batched = jax.jit(jax.vmap(train, in_axes=(None, 0)))(key, {"max_kl": max_kls})
    single_run = jax.jit(train)  # hyperparams are traced: one compile for the three runs
    for i in range(3):
        single = single_run(key, {"max_kl": max_kls[i]})
        for name in ("approx_kl", "value_loss", "step_fraction"):
            np.testing.assert_allclose(batched.metrics[name][i], single.metrics[name],
                                       rtol=2e-3, atol=2e-5, err_msg=name)
    kl = np.asarray(batched.metrics["approx_kl"])
    assert np.all(kl <= np.asarray(max_kls)[:, None] * (1 + 1e-5))
    # A larger trust region really takes larger steps.
    assert kl[0].mean() < kl[2].mean()


@pytest.mark.timeout(600)
def test_learns_cartpole_reduced_budget():
    """A reduced budget for CI: 4 seeds vmapped, 200k steps; at least 3 above 400 and every one
    above 150 (a random policy scores about 22).

    At this budget most seeds end at 500 but a few percent stop lower, and which seeds do
    moves with float rounding and the random streams (e.g. the minibatch shuffle's): 96 seeds
    had 3 below 400 with ``jax.random.permutation``'s shuffle and 7 with
    ``packed_permutation``'s (lowest seen 206), and at 250k steps 1 of 8 still ended at 279
    (2-core CPU, jax 0.10.2). These 4 ended at 500, 441.6, 500 and 500 on that CPU; one of the
    2 this check used before ended at 347 once the shuffle changed. If a change of rounding
    moves one of them below 400, check the seed distribution before touching this budget.
    Which seed falls short also moves with the machine: on a 2-core AMD EPYC (2026-12-02) the
    same code ended at 500, 500, 500 and 292, so one seed of the four may stop short; two
    (about 1-3% at the per-seed rates above) still fail the check.
    """
    config = TRPOConfig(env="CartPole-v1", total_timesteps=200_000, num_envs=16, num_steps=128,
                        max_kl=0.02)
    result = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.PRNGKey(0), 4))
    finals = final_return(jax.tree_util.tree_map(np.asarray, result.metrics))
    assert np.sum(finals >= 400) >= 3 and np.all(finals >= 150), finals


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_full_cartpole_acrobot_pendulum_thresholds():
    """The presets reach the issue's thresholds on 8 seeds (slow: run with `pytest -m slow`)."""
    from purejaxpo.presets import preset

    keys = jax.random.split(jax.random.PRNGKey(0), 8)

    def finals(env):
        res = jax.jit(jax.vmap(make_train(preset("trpo", env))))(keys)
        return final_return(jax.tree_util.tree_map(np.asarray, res.metrics))

    cartpole = finals("CartPole-v1")
    assert cartpole.mean() >= 475, cartpole
    acrobot = finals("Acrobot-v1")
    assert acrobot.mean() >= -100, acrobot
    pendulum = finals("Pendulum-v1")
    assert pendulum.mean() >= -300, pendulum
