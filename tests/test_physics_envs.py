"""brax and MuJoCo Playground environments through purejaxpo.envs.physics (optional extras).

Tests that need brax skip when it is missing (CI installs it: ``pip install -e ".[dev,brax]"``);
the Playground test runs only where mujoco_playground is importable. Small episode lengths and
few envs keep the compiles (most of the cost) short.
"""

import importlib.util
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.envs import VecEnv, make, make_vec_env, physics, validate_env_name
from purejaxpo.envs.registry import env_names

PENDULUM = "brax:inverted_pendulum"  # obs [cart x, pole angle, cart v, pole angular v]
HAS_PLAYGROUND = importlib.util.find_spec("mujoco_playground") is not None


@pytest.fixture
def brax():
    return pytest.importorskip("brax")


# --- names, errors, imports (no brax needed) ------------------------------------------------


def test_import_purejaxpo_does_not_import_the_physics_packages():
    code = ("import sys, purejaxpo, purejaxpo.envs, purejaxpo.algos, purejaxpo.cli\n"
            "from purejaxpo.algos.ppo import PPOConfig\n"
            "PPOConfig(env='CartPole-v1')\n"
            "print(sorted(m for m in ('brax', 'mujoco', 'mujoco_playground') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name, kind", [("brax:ant", "brax"),
                                        ("playground:CartpoleBalance", "playground")])
def test_missing_extra_says_how_to_install_it(monkeypatch, name, kind):
    monkeypatch.setattr(physics, "is_installed", lambda k: False)
    with pytest.raises(ValueError, match=r'env=.*pip install "purejaxpo\[' + kind + r'\]"'):
        validate_env_name(name)
    with pytest.raises(ValueError, match=r'pip install "purejaxpo\[' + kind + r'\]"'):
        make(name)
    from purejaxpo.algos.ppo import PPOConfig

    with pytest.raises(ValueError, match=r'pip install "purejaxpo\[' + kind + r'\]"'):
        PPOConfig(env=name)


def test_cli_envs_says_how_to_install_a_missing_extra(monkeypatch, capsys):
    from purejaxpo import cli

    monkeypatch.setattr(physics, "is_installed", lambda k: k == "brax" and False)
    assert cli.main(["envs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "CartPole-v1" in lines
    assert '# brax:<name> environments: pip install "purejaxpo[brax]"' in lines
    assert '# playground:<name> environments: pip install "purejaxpo[playground]"' in lines
    assert not any(line.startswith(("brax:", "playground:")) for line in lines)


@pytest.mark.parametrize("name, message", [
    ("brax:", "no environment name"),
    ("brax:ant@fast", "backend 'fast' must be one of mjx, generalized, positional, spring"),
    ("playground:CartpoleBalance@cuda", "implementation 'cuda' must be one of jax, warp"),
])
def test_bad_physics_names_name_the_field(name, message):
    with pytest.raises(ValueError, match=r"env=.*" + message.replace("(", r"\(")):
        validate_env_name(name)


def test_parse_defaults_and_family_names():
    assert physics.parse("brax:ant") == ("brax", "ant", "mjx")
    assert physics.parse("brax:ant@positional") == ("brax", "ant", "positional")
    assert physics.parse("playground:CheetahRun") == ("playground", "CheetahRun", "jax")
    with pytest.raises(ValueError, match="family='mujoco' is invalid"):
        env_names("mujoco")


# --- brax ----------------------------------------------------------------------------------


def test_unknown_brax_name_gets_close_matches(brax):
    with pytest.raises(ValueError, match=r"env='brax:antt' is not a known brax environment\. "
                                         r"Did you mean 'brax:ant'"):
        validate_env_name("brax:antt")
    names = env_names("brax:")
    assert {"brax:ant", "brax:inverted_pendulum", "brax:hopper"} <= set(names)


def test_cli_envs_lists_brax_names(brax, capsys):
    from purejaxpo import cli

    assert cli.main(["envs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {"CartPole-v1", "brax:ant", "brax:inverted_pendulum"} <= set(lines)


@pytest.mark.slow
def test_api_spaces_and_shapes(brax):
    env, params = make(PENDULUM)
    assert params.max_steps_in_episode == physics.BRAX_EPISODE_LENGTH == 1000
    assert env.observation_space(params).shape == (4,)
    space = env.action_space(params)
    assert space.shape == (1,) and float(space.low) == -1.0 and float(space.high) == 1.0
    obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0), params)
    assert obs.shape == (4,) and obs.dtype == jnp.float32
    out = jax.jit(env.step)(jax.random.PRNGKey(1), state, jnp.zeros(1), params)
    obs, state, reward, terminated, truncated, info = out
    assert obs.shape == (4,) and reward.shape == () and reward.dtype == jnp.float32
    assert terminated.dtype == jnp.bool_ and truncated.dtype == jnp.bool_
    assert info["final_observation"].shape == (4,)
    assert int(state.time) == 1 and float(reward) == 1.0
    with pytest.raises(ValueError, match="episode_length=0 is invalid"):
        make(PENDULUM, episode_length=0)


def _rollout(env, params, num_envs, actions, key=0):
    """Steps ``VecEnv(env)`` through ``actions`` ``[T, B, A]``; stacked outputs ``[T, B, ...]``."""
    venv = VecEnv(env, params, num_envs)

    @jax.jit
    def run(key):
        obs0, state = venv.reset(key)

        def body(state, inputs):
            k, action = inputs
            obs, state, reward, terminated, truncated, info = venv.step(k, state, action)
            return state, (obs, reward, terminated, truncated, info["final_observation"],
                           state.time)

        keys = jax.random.split(key, actions.shape[0])
        return obs0, jax.lax.scan(body, state, (keys, actions))[1]

    return run(jax.random.PRNGKey(key))


@pytest.mark.slow
def test_time_limit_is_truncation_with_the_pre_reset_observation(brax):
    env, params = make(PENDULUM, episode_length=5)
    actions = jnp.zeros((12, 2, 1))  # no push: the pole stays up well past 5 steps
    _, (obs, _, terminated, truncated, final_obs, time) = _rollout(env, params, 2, actions)
    assert not bool(terminated.any())
    np.testing.assert_array_equal(np.asarray(truncated[:, 0]), [0, 0, 0, 0, 1] * 2 + [0, 0])
    np.testing.assert_array_equal(np.asarray(time[:, 0]), [1, 2, 3, 4, 0] * 2 + [1, 2])
    # Where nothing ended, final_observation is the next observation itself.
    not_done = ~np.asarray(truncated)
    np.testing.assert_array_equal(np.asarray(final_obs)[not_done], np.asarray(obs)[not_done])
    # At the cut (step index 4), final_observation is the 5th step of the same episode: the
    # same envs, keys and actions without a time limit show it as their obs.
    long_env, long_params = make(PENDULUM, episode_length=1000)
    _, (long_obs, *_) = _rollout(long_env, long_params, 2, actions)
    np.testing.assert_allclose(np.asarray(final_obs[4]), np.asarray(long_obs[4]), rtol=1e-6,
                               atol=1e-7)
    # ... and obs is a fresh random initial state (|q|, |qd| <= 0.01), a new episode's.
    assert np.all(np.abs(np.asarray(obs[4])) <= 0.01)
    assert np.abs(np.asarray(obs[4]) - np.asarray(long_obs[4])).max() > 1e-3


@pytest.mark.slow
def test_falling_pendulum_is_terminated_not_truncated(brax):
    env, params = make(PENDULUM, episode_length=1000)
    actions = jnp.ones((40, 1, 1))  # full push one way: the pole falls
    _, (obs, reward, terminated, truncated, final_obs, time) = _rollout(env, params, 1, actions)
    terminated, truncated = np.asarray(terminated[:, 0]), np.asarray(truncated[:, 0])
    assert not truncated.any()
    assert terminated.any(), "the pendulum should fall within 40 steps of full push"
    t = int(np.argmax(terminated))
    assert abs(float(final_obs[t, 0, 1])) > 0.2  # the angle that ended it
    assert np.all(np.abs(np.asarray(obs[t])) <= 0.01)  # then a fresh start
    assert int(time[t, 0]) == 0 and int(time[t - 1, 0]) == t


def test_gae_bootstraps_from_the_final_observation_at_truncation(brax):
    from purejaxpo.advantages import gae

    env, params = make(PENDULUM, episode_length=4)
    venv = make_vec_env(env, params, 2)
    w = jnp.array([0.5, -2.0, 1.0, 3.0])

    def value(obs):  # a fixed critic, linear in the observation: V(o) = 10 + w . o
        return 10.0 + obs @ w

    @jax.jit
    def collect(key):
        obs0, state = venv.reset(key)

        def body(carry, k):
            state, obs = carry
            nobs, state, reward, terminated, truncated, info = venv.step(
                k, state, jnp.zeros((2, 1)))
            return (state, nobs), (obs, nobs, reward, terminated, truncated,
                                   info["final_observation"])

        return jax.lax.scan(body, (state, obs0), jax.random.split(key, 10))[1]

    obs, next_obs, reward, terminated, truncated, final_obs = collect(jax.random.PRNGKey(3))
    assert bool(truncated[3].all()) and int(truncated.sum()) == 4  # steps 3 and 7, both envs
    gamma, lam = 0.9, 0.8
    adv, targets = gae(reward, value(obs), value(final_obs), terminated, truncated, gamma, lam)

    # By hand in float64, as lambda-returns: an episode end (here only time-limit cuts) and
    # the rollout's last step bootstrap from V(final observation) alone; any other step mixes
    # V(next observation) and the next return.
    r, v_final = np.asarray(reward, np.float64), np.asarray(value(final_obs), np.float64)
    done = np.asarray(truncated) | np.asarray(terminated)
    not_terminated = 1.0 - np.asarray(terminated, np.float64)
    expected = np.zeros_like(r)
    for b in range(2):
        ret = 0.0
        for t in reversed(range(10)):
            if t == 9 or done[t, b]:
                ret = r[t, b] + gamma * not_terminated[t, b] * v_final[t, b]
            else:
                ret = r[t, b] + gamma * ((1 - lam) * v_final[t, b] + lam * ret)
            expected[t, b] = ret
    np.testing.assert_allclose(np.asarray(targets), expected, rtol=1e-5)
    # The truncated step's target is r + gamma V(final obs), not r + gamma V(reset obs).
    t = 3
    np.testing.assert_allclose(np.asarray(targets[t]),
                               np.asarray(reward[t] + gamma * value(final_obs[t])), rtol=1e-6)
    wrong = np.asarray(reward[t] + gamma * value(next_obs[t]))
    assert np.all(np.abs(np.asarray(targets[t]) - wrong) > 1e-3)


@pytest.mark.slow
def test_observation_normalisation_through_make_vec_env(brax):
    env, params = make(PENDULUM, episode_length=6)
    raw, norm = make_vec_env(env, params, 3), make_vec_env(env, params, 3, normalize_obs=True)

    @jax.jit
    def run(key):
        (raw_obs0, raw_state), (obs0, state) = raw.reset(key), norm.reset(key)

        def body(carry, k):
            raw_state, state = carry
            action = jax.random.uniform(k, (3, 1), minval=-1.0, maxval=1.0)
            r = raw.step(k, raw_state, action)
            n = norm.step(k, state, action)
            return (r[1], n[1]), (r[0], r[5]["final_observation"], n[0],
                                  n[5]["final_observation"], n[1].obs_rms)

        return raw_obs0, obs0, jax.lax.scan(body, (raw_state, state), jax.random.split(key, 15))[1]

    raw_obs0, obs0, (raw_obs, raw_final, obs, final, rms) = run(jax.random.PRNGKey(0))
    # Statistics after 15 steps are those of every raw observation seen (reset + 15 steps).
    seen = np.concatenate([np.asarray(raw_obs0)[None], np.asarray(raw_obs)]).reshape(-1, 4)
    np.testing.assert_allclose(np.asarray(rms.mean[-1]), seen.mean(0), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(np.asarray(rms.var[-1]), seen.var(0), rtol=1e-2, atol=1e-6)
    assert float(rms.count[-1]) == pytest.approx(16 * 3, abs=1e-3)
    # Each step's obs and final_observation are the raw ones under that step's statistics.
    scale = np.sqrt(np.asarray(rms.var)[:, None] + 1e-8)
    mean = np.asarray(rms.mean)[:, None]
    np.testing.assert_allclose(np.asarray(obs), np.clip((np.asarray(raw_obs) - mean) / scale,
                                                        -10, 10), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(final), np.clip((np.asarray(raw_final) - mean) / scale,
                                                          -10, 10), rtol=1e-4, atol=1e-4)
    assert np.abs(np.asarray(obs[-1])).max() > 0.3  # normalised, no longer all near 0


@pytest.mark.slow
def test_ppo_trains_on_brax_inverted_pendulum(brax):
    from purejaxpo.algos import ALGORITHMS

    config_cls, make_train = ALGORITHMS["ppo"]
    config = config_cls(env=PENDULUM, num_envs=4, num_steps=32, total_timesteps=4 * 32 * 3,
                        num_epochs=2, num_minibatches=2, hidden_sizes=(16, 16),
                        normalize_obs=True, normalize_reward=True, learning_rate=3e-4)
    result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    metrics = {k: np.asarray(v) for k, v in result.metrics.items()}
    assert metrics["policy_loss"].shape == (3,)
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        assert np.isfinite(metrics[name]).all(), name
    assert not metrics["nonfinite"].any()
    # A random policy drops the pole within a few dozen steps: episodes end in every update.
    assert np.isfinite(metrics["episode_return"]).all()
    assert (metrics["episode_return"] > 0).all()
    jax.tree.map(lambda x: np.testing.assert_(np.isfinite(np.asarray(x)).all()), result.params)


# --- MuJoCo Playground ---------------------------------------------------------------------


@pytest.mark.skipif(not HAS_PLAYGROUND, reason="mujoco_playground is not installed "
                                               '(pip install "purejaxpo[playground]")')
def test_playground_cartpole_balance():
    env, params = make("playground:CartpoleBalance", episode_length=5)
    assert env.observation_space(params).shape == (5,) and env.action_space(params).shape == (1,)
    _, (obs, reward, terminated, truncated, final_obs, time) = _rollout(
        env, params, 2, jnp.zeros((7, 2, 1)))
    assert obs.shape == (7, 2, 5) and reward.dtype == jnp.float32
    assert not bool(terminated.any())
    np.testing.assert_array_equal(np.asarray(truncated[:, 0]), [0, 0, 0, 0, 1, 0, 0])
    assert np.all((np.asarray(reward) >= 0) & (np.asarray(reward) <= 1))
    assert not np.allclose(np.asarray(final_obs[4]), np.asarray(obs[4]))
    default_env, default_params = make("playground:CartpoleBalance")
    assert default_params.max_steps_in_episode == 1000  # Playground's own episode length
    with pytest.raises(ValueError, match="Did you mean 'playground:CartpoleBalance'"):
        validate_env_name("playground:CartpoleBalanse")
