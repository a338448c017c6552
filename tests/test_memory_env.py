"""CueRecall-v0: dynamics, rewards, termination, and that the cue is shown only at step 0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.envs import CueRecall, EpisodeStatistics, VecEnv, env_names, make


def _episode(env, params, key, actions):
    """Steps one episode; returns the observations (incl. the first) and step outputs."""
    obs, state = env.reset(key, params)
    observations, outs = [np.asarray(obs)], []
    for i, a in enumerate(actions):
        obs, state, r, term, trunc, info = env.step(jax.random.PRNGKey(1000 + i), state, a, params)
        observations.append(np.asarray(info["final_observation"]))
        outs.append((float(r), bool(term), bool(trunc), state, np.asarray(obs)))
    return observations, outs


def test_registered_by_name_with_gymnax_names():
    assert "CueRecall-v0" in env_names() and "CartPole-v1" in env_names()
    env, params = make("CueRecall-v0")
    assert isinstance(env, CueRecall) and params.delay == 4
    assert env.observation_space(params).shape == (4,) and env.action_space(params).n == 2
    env3, _ = make("CueRecall-v0", num_cues=3)
    assert env3.observation_space(params).shape == (5,) and env3.num_actions == 3
    with pytest.raises(ValueError, match="num_cues"):
        CueRecall(num_cues=1)
    with pytest.raises(ValueError, match="CueRecall-v0"):
        make("CueRecal-v0")


@pytest.mark.parametrize("delay", [0, 1, 4])
def test_dynamics_reward_and_termination(delay):
    env, params = make("CueRecall-v0")
    params = params.replace(delay=delay)
    for seed in range(6):
        key = jax.random.PRNGKey(seed)
        _, state = env.reset(key, params)
        cue = int(state.cue)
        for answer, expected in ((cue, 1.0), (1 - cue, -1.0)):
            actions = [1 - answer] * (delay + 1) + [answer]  # wrong-looking filler before the query
            observations, outs = _episode(env, params, key, actions)
            rewards = [o[0] for o in outs]
            terminated = [o[1] for o in outs]
            assert rewards == [0.0] * (delay + 1) + [expected]
            assert terminated == [False] * (delay + 1) + [True]
            assert not any(o[2] for o in outs)  # never truncated
            # Step 0 shows the cue and the cue flag; the query step only the query flag.
            np.testing.assert_array_equal(observations[0], np.eye(2)[cue].tolist() + [1, 0])
            np.testing.assert_array_equal(observations[delay + 1], [0, 0, 0, 1])
            # After termination the env reset: a fresh cue observation, time 0.
            assert int(outs[-1][3].time) == 0 and outs[-1][4][2] == 1.0


def test_cue_invisible_after_step_zero():
    env, params = make("CueRecall-v0")
    params = params.replace(delay=5)
    seen = {0: [], 1: []}
    for seed in range(20):
        key = jax.random.PRNGKey(seed)
        observations, _ = _episode(env, params, key, [0] * 7)
        _, state = env.reset(key, params)
        seen[int(state.cue)].append(np.stack(observations[:7]))
    assert seen[0] and seen[1]
    a, b = seen[0][0], seen[1][0]
    assert not np.array_equal(a[0], b[0])  # the cue is visible at step 0 ...
    for later in seen[0] + seen[1]:
        np.testing.assert_array_equal(later[1:], a[1:])  # ... and nowhere after it


def test_wrong_reward_param_and_random_policy_is_at_chance():
    env, params = make("CueRecall-v0")
    venv = EpisodeStatistics(VecEnv(env, params.replace(delay=2, wrong_reward=0.0), 512))
    _, state = venv.reset(jax.random.PRNGKey(0))
    for i in range(4):
        action = jax.random.randint(jax.random.PRNGKey(i), (512,), 0, 2)
        _, state, reward, term, _, info = jax.jit(venv.step)(jax.random.PRNGKey(50 + i), state, action)
    assert bool(jnp.all(term)) and bool(jnp.all(info["episode_length"] == 4))
    assert set(np.unique(np.asarray(reward)).tolist()) <= {0.0, 1.0}
    assert abs(float(jnp.mean(reward)) - 0.5) < 0.08  # guessing: right half the time
