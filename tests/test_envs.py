"""Environments and wrappers: the terminated/truncated API carried through to GAE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo import advantages
from purejaxpo.envs import (
    EpisodeStatistics,
    NormalizeObservation,
    NormalizeReward,
    VecEnv,
    env_names,
    make,
    make_vec_env,
)


def test_unknown_env_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"env='CartPole-v0'.*Did you mean 'CartPole-v1'"):
        make("CartPole-v0")
    assert "Pendulum-v1" in env_names()


def _cartpole(max_steps):
    env, params = make("CartPole-v1")
    return env, params.replace(max_steps_in_episode=max_steps)


def _run(venv, actions, key=0):
    obs, state = venv.reset(jax.random.PRNGKey(key))
    out = []
    for i, a in enumerate(actions):
        obs, state, r, term, trunc, info = venv.step(jax.random.PRNGKey(100 + i), state, jnp.array([a]))
        out.append((obs, r, term, trunc, info))
    return out


def test_time_limit_truncates_and_bootstraps():
    # Alternating pushes keep the pole up; the 4-step time limit cuts the episode.
    env, params = _cartpole(4)
    venv = EpisodeStatistics(VecEnv(env, params, 1))
    steps = _run(venv, [0, 1, 0, 1])
    terminated = np.array([s[2][0] for s in steps])
    truncated = np.array([s[3][0] for s in steps])
    assert not terminated.any()
    assert truncated.tolist() == [False, False, False, True]
    last_obs, _, _, _, info = steps[-1]
    # After the cut the env reset: the returned obs is a new episode, the final one is not.
    assert not np.allclose(last_obs, info["final_observation"])
    assert info["episode_done"][0] and info["episode_length"][0] == 4 and info["episode_return"][0] == 4.0

    # With V = 1 everywhere, the truncated step bootstraps: A = r + gamma * V(final) - V.
    T = len(steps)
    rewards = jnp.ones((T, 1))
    values = jnp.ones((T, 1))
    adv, _ = advantages.gae(rewards, values, values, jnp.asarray(terminated)[:, None],
                            jnp.asarray(truncated)[:, None], 0.9, 1.0)
    np.testing.assert_allclose(adv[-1, 0], 1.0 + 0.9 - 1.0, rtol=1e-6)


def test_termination_does_not_bootstrap():
    env, params = _cartpole(500)
    venv = EpisodeStatistics(VecEnv(env, params, 1))
    steps = _run(venv, [0] * 30)  # always push left: the pole falls within 30 steps
    terminated = np.array([s[2][0] for s in steps])
    truncated = np.array([s[3][0] for s in steps])
    end = int(np.argmax(terminated))
    assert terminated[end] and not truncated.any()
    T = end + 1
    rewards = jnp.ones((T, 1))
    values = jnp.ones((T, 1))
    adv, _ = advantages.gae(rewards, values, values, jnp.asarray(terminated[:T])[:, None],
                            jnp.asarray(truncated[:T])[:, None], 0.9, 1.0)
    np.testing.assert_allclose(adv[-1, 0], 1.0 - 1.0, atol=1e-6)  # r - V, no gamma * V(final)
    info = steps[end][4]
    assert info["episode_done"][0] and int(info["episode_length"][0]) == T


def test_observation_normaliser_tracks_running_statistics():
    env, params = make("Pendulum-v1")
    venv = NormalizeObservation(EpisodeStatistics(VecEnv(env, params, 8)))
    raw = VecEnv(env, params, 8)
    key = jax.random.PRNGKey(0)
    obs_n, state = venv.reset(key)
    obs_r, raw_state = raw.reset(key)
    seen = [np.asarray(obs_r)]
    for i in range(20):
        a = jnp.full((8, 1), 0.5)
        k = jax.random.PRNGKey(i)
        obs_n, state, *_ = venv.step(k, state, a)
        obs_r, raw_state, *_ = raw.step(k, raw_state, a)
        seen.append(np.asarray(obs_r))
    allobs = np.concatenate(seen).astype(np.float64)
    rms = state.obs_rms
    np.testing.assert_allclose(rms.mean, allobs.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rms.var, allobs.var(0), rtol=1e-3, atol=1e-4)
    expected = (np.asarray(obs_r) - rms.mean) / np.sqrt(rms.var + 1e-8)
    np.testing.assert_allclose(obs_n, expected, rtol=1e-4, atol=1e-5)


def test_reward_normaliser_scales_by_return_std_and_keeps_raw_episode_stats():
    env, params = make("Pendulum-v1")
    venv = make_vec_env(env, params, 4, normalize_reward=True, gamma=0.9)
    assert isinstance(venv, NormalizeReward)
    raw = VecEnv(env, params, 4)
    key = jax.random.PRNGKey(1)
    _, state = venv.reset(key)
    _, raw_state = raw.reset(key)
    g = np.zeros(4)
    raw_sum = np.zeros(4)
    returns = []
    for i in range(10):
        a = jnp.full((4, 1), -1.0)
        k = jax.random.PRNGKey(i)
        _, state, r_norm, *_ = venv.step(k, state, a)
        _, raw_state, r_raw, *_ = raw.step(k, raw_state, a)
        g = g * 0.9 + np.asarray(r_raw, np.float64)
        raw_sum += np.asarray(r_raw, np.float64)
        returns.append(g.copy())
    var = np.concatenate(returns).var()
    np.testing.assert_allclose(r_norm, np.asarray(r_raw) / np.sqrt(var), rtol=2e-3)
    # Episode statistics sit below the normaliser: returns stay in raw units.
    np.testing.assert_allclose(state.inner.episode_return, raw_sum, rtol=1e-5)


def test_vec_env_is_vmappable_and_discrete_actions_int():
    env, params = make("CartPole-v1")
    venv = VecEnv(env, params, 3)
    assert venv.is_discrete and venv.observation_shape == (4,)
    obs, _ = jax.jit(jax.vmap(venv.reset))(jax.random.split(jax.random.PRNGKey(0), 2))
    assert obs.shape == (2, 3, 4) and obs.dtype == jnp.float32
