"""Divergence is reported, never silent: a seed whose loss or parameters become non-finite is
flagged inside the program (the ``nonfinite`` metric), with the first update where it happened,
and its ``final_return`` is NaN, never a plausible number."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo import cli
from purejaxpo.algos.ppo import PPOConfig, make_train
from purejaxpo.metrics import divergence, diverged_runs, final_return
from purejaxpo.sweep import sweep

TINY = dict(env="CartPole-v1", total_timesteps=4096, num_envs=4, num_steps=64,
            num_minibatches=2, num_epochs=1)


@pytest.mark.timeout(300)
def test_nan_parameters_on_a_discrete_env_are_flagged_not_reported_as_a_return():
    config = PPOConfig(**TINY)
    train = make_train(config)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    state = jax.jit(jax.vmap(train.init))(keys)
    # Seed 1 starts from NaN parameters: the argmax of NaN logits still picks actions, so its
    # episodes still end and have returns that look fine.
    poison = jnp.array([0.0, jnp.nan, 0.0])
    params = jax.tree_util.tree_map(
        lambda p: p + poison.reshape((3,) + (1,) * (p.ndim - 1)), state.params)
    _, metrics = jax.jit(jax.vmap(lambda s: train.run(s, config.num_updates)))(
        state._replace(params=params))
    metrics = jax.tree_util.tree_map(np.asarray, metrics)
    assert np.isfinite(metrics["episode_return_sum"][1]).all()  # the trap: returns look fine
    assert metrics["episode_count"][1].sum() > 0
    diverged, first = divergence(metrics)
    assert diverged.tolist() == [False, True, False]
    assert first.tolist() == [-1, 0, -1]
    assert diverged_runs(metrics) == [1]
    with pytest.warns(RuntimeWarning, match=r"runs \[1\] at updates \[0\]"):
        finals = final_return(metrics)
    assert np.isnan(finals[1]) and np.isfinite(finals[[0, 2]]).all()
    np.testing.assert_array_equal(metrics["nonfinite"][0], 0.0)
    np.testing.assert_array_equal(metrics["nonfinite"][1], 1.0)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_first_update_of_a_late_divergence_is_exact():
    """A run that is finite for 3 updates and then gets NaN parameters is flagged from update 3."""
    config = PPOConfig(**TINY)
    train = make_train(config)
    state = jax.jit(train.init)(jax.random.PRNGKey(1))
    run = jax.jit(train.run, static_argnums=1)
    state, m1 = run(state, 3)
    state = state._replace(params=jax.tree_util.tree_map(lambda p: p * jnp.nan, state.params))
    _, m2 = run(state, 2)
    metrics = {k: np.concatenate([np.asarray(m1[k]), np.asarray(m2[k])]) for k in m1}
    diverged, first = divergence(metrics)
    assert bool(diverged) and int(first) == 3


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_reports_the_pendulum_divergence(tmp_path, capsys):
    """The example of the issue: a learning rate of 50 with no gradient clipping."""
    out = tmp_path / "pendulum.json"
    assert cli.main(["train", "ppo", "--env", "Pendulum-v1", "--seeds", "2", "--total-timesteps",
                     "50000", "--set", "learning_rate=50", "--set", "max_grad_norm=1e9",
                     "--no-progress", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "DIVERGED at update 1" in captured.out
    assert "2 of 2 seed(s) diverged" in captured.err
    data = json.loads(out.read_text())
    assert data["diverged"] == [0, 1] and data["diverged_at_update"] == [1, 1]  # the first
    assert data["final_return"] == [None, None] and data["mean_final_return"] is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sweep_table_has_the_divergence_column():
    result = sweep(jax.random.PRNGKey(0), PPOConfig(**TINY, max_grad_norm=1e9),
                   grid={"lr": [2.5e-4, 1e30]}, seeds=2, log=None)
    table = result.table
    ok, bad = table[table["config"] == 0], table[table["config"] == 1]
    assert ok["diverged_at_update"].isna().all() and np.isfinite(ok["final_return"]).all()
    assert bad["diverged_at_update"].notna().all() and bad["final_return"].isna().all()
    runs = result.to_json()["runs"]
    assert [r["diverged_at_update"] for r in runs[:2]] == [None, None]
    assert all(isinstance(r["diverged_at_update"], int) and r["diverged_at_update"] >= 1
               for r in runs[2:])
    json.dumps(result.to_json())  # JSON-ready
