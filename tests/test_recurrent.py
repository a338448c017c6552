"""Recurrent PPO: memory resets, sequence recomputation, one compile, and it solves CueRecall-v0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo import cli
from purejaxpo.algos import ALGORITHMS
from purejaxpo.algos.base import Rollout, build_env, build_policy
from purejaxpo.algos.ppo import PPOConfig, make_train as make_ppo_train, ppo_loss
from purejaxpo.algos.ppo_recurrent import RecurrentPPOConfig, make_train
from purejaxpo.metrics import final_return
from purejaxpo.networks import Policy, episode_starts, reset_memory
from purejaxpo.presets import preset
from purejaxpo.rollout import EnvCarry, collect
from purejaxpo.update import shuffled_minibatches

from _util import run_vmapped_twice

TINY = dict(env="CueRecall-v0", total_timesteps=1024, num_envs=4, num_steps=16,
            num_minibatches=2, num_epochs=2, gru_size=16)


def _rollout(config, key=0, params_key=1, num_rollouts=2):
    """Collects ``num_rollouts`` consecutive rollouts; returns policy, params, trajs, carries."""
    policy = build_policy(config)
    hp = config.hyperparams()
    venv = build_env(config, hp["gamma"])
    params = policy.init(jax.random.PRNGKey(params_key))
    obs, env_state = venv.reset(jax.random.PRNGKey(key))
    carry = EnvCarry(env_state, obs, policy.initial_state(config.num_envs))
    trajs, carries = [], []
    for i in range(num_rollouts):
        carry, traj = jax.jit(collect, static_argnums=(1, 2, 5))(
            jax.random.PRNGKey(100 + i), venv, policy, params, carry, config.num_steps)
        trajs.append(traj)
        carries.append(carry)
    return policy, params, trajs, carries


def test_reset_memory_and_episode_starts():
    h = jnp.arange(6.0).reshape(3, 2) + 1.0
    out = reset_memory(h, jnp.array([False, True, False]))
    np.testing.assert_array_equal(out, [[1, 2], [0, 0], [5, 6]])
    assert reset_memory((), jnp.array([True])) == ()  # feed-forward policies carry nothing
    done = jnp.array([[1, 0], [0, 0], [0, 1], [1, 0]], bool)
    np.testing.assert_array_equal(episode_starts(done), [[0, 0], [1, 0], [0, 0], [0, 1]])


def test_gru_init_is_orthogonal_without_qr_under_vmap():
    policy = build_policy(RecurrentPPOConfig(**TINY))
    params = policy.init(jax.random.PRNGKey(0))
    cell = params["torso"]["params"]["GRUCell_0"]
    for gate in ("hr", "hz", "hn"):
        k = np.asarray(cell[gate]["kernel"], np.float64)
        np.testing.assert_allclose(k.T @ k, np.eye(16), atol=1e-5)
    # No LAPACK QR in the vmapped init (it can deadlock jaxlib 0.10 on CPU, see networks.py).
    # (jax.nn.initializers.orthogonal lowers to custom_call @lapack_sgeqrf_ffi / _sorgqr_ffi.)
    hlo = jax.jit(jax.vmap(policy.init)).lower(jax.random.split(jax.random.PRNGKey(0), 3)).as_text()
    assert "geqrf" not in hlo and "orgqr" not in hlo and "lapack" not in hlo


def test_unroll_resets_hidden_state_at_episode_boundaries():
    policy = build_policy(RecurrentPPOConfig(**TINY))
    assert isinstance(policy, Policy) and policy.recurrent
    params = policy.init(jax.random.PRNGKey(0))
    obs = jax.random.uniform(jax.random.PRNGKey(1), (6, 2, 4))
    h0 = jax.random.normal(jax.random.PRNGKey(2), (2, 16))
    resets = jnp.zeros((6, 2), bool).at[3, 0].set(True)
    hiddens = policy.unroll(params, h0, obs, resets)
    # Env 0: from step 3 on, the states are those of a fresh start from zeros on obs[3:].
    fresh = policy.unroll(params, jnp.zeros((1, 16)), obs[3:, :1], jnp.zeros((3, 1), bool))
    np.testing.assert_allclose(hiddens[3:, 0], fresh[:, 0], rtol=1e-6, atol=1e-6)
    # ... and differ from carrying the memory on (env 1 has no reset; its state does depend on h0).
    carried = policy.unroll(params, h0, obs, jnp.zeros((6, 2), bool))
    assert not np.allclose(carried[3:, 0], fresh[:, 0], atol=1e-4)
    np.testing.assert_allclose(hiddens[:, 1], carried[:, 1], rtol=1e-6, atol=1e-6)


def test_rollout_carries_memory_and_zeroes_it_after_episode_ends():
    config = RecurrentPPOConfig(**TINY)
    policy, params, (traj, traj2), (carry, _) = _rollout(config)
    done = jnp.logical_or(traj.terminated, traj.truncated)
    # [T, B, H], the state each step acted from: the rollout keeps only the initial state, the
    # rest is unrolled from it through the same episode starts.
    hiddens = policy.unroll(params, traj.agent_state, traj.obs, episode_starts(done))
    state = np.concatenate([np.asarray(traj.agent_state)[None],
                            np.asarray(hiddens)[:-1]], 0)
    state = np.where(np.asarray(episode_starts(done))[..., None], 0.0, state)
    assert state.shape == (16, 4, 16)
    done = np.asarray(traj.terminated | traj.truncated)
    assert done.any() and not done.all()
    starts = np.asarray(episode_starts(jnp.asarray(done)))
    # Zero exactly where an episode starts (and at the very first step of the run) ...
    np.testing.assert_array_equal(state[starts], 0.0)
    np.testing.assert_array_equal(state[0], 0.0)
    assert np.all(np.abs(state[1:][~starts[1:]]).sum(-1) > 0)
    # ... and carried over to the next rollout, reset where the last step ended an episode.
    carried = np.asarray(carry.agent_state)
    np.testing.assert_array_equal(np.asarray(traj2.agent_state), carried)
    np.testing.assert_array_equal(np.abs(carried).sum(-1) == 0, done[-1])


def test_update_recomputes_rollout_log_probs_and_values_exactly():
    """Before any gradient step, the sequences' recomputed log-probs give ratio == 1."""
    config = RecurrentPPOConfig(**TINY)
    policy, params, (_, traj), _ = _rollout(config)  # second rollout: starts mid-episode
    assert np.abs(np.asarray(traj.agent_state)).sum() > 0
    values, next_values = policy.rollout_values(params, traj)
    assert values.shape == next_values.shape == (16, 4)
    # next_values[t] == values[t + 1] wherever step t did not end an episode.
    done = np.asarray(traj.terminated | traj.truncated)
    np.testing.assert_allclose(np.asarray(next_values)[:-1][~done[:-1]],
                               np.asarray(values)[1:][~done[:-1]], rtol=1e-5, atol=1e-6)
    rollout = Rollout(traj, values, jnp.ones_like(values), values + 1.0)
    batch = rollout.batch(policy)
    assert batch["obs"].shape == (4, 16, 4) and batch["agent_state"].shape == (4, 16)
    minibatches = shuffled_minibatches(jax.random.PRNGKey(0), batch, config.num_minibatches)
    hp = config.hyperparams()
    loss = jax.jit(ppo_loss(policy, hp, config))
    for i in range(config.num_minibatches):
        mb = jax.tree_util.tree_map(lambda x: x[i], minibatches)
        dist, value = policy.evaluate(params, mb)
        np.testing.assert_allclose(dist.log_prob(mb["action"]), mb["log_prob"], atol=2e-6)
        np.testing.assert_allclose(value, mb["values"], rtol=1e-5, atol=1e-6)
        _, metrics = loss(params, mb)
        assert abs(float(metrics["approx_kl"])) < 1e-6 and float(metrics["clip_fraction"]) == 0.0


def test_continuous_recurrent_policy_shapes():
    config = RecurrentPPOConfig(env="Pendulum-v1", total_timesteps=512, num_envs=4, num_steps=8,
                                num_minibatches=2, gru_size=8)
    policy, params, (traj,), _ = _rollout(config, num_rollouts=1)
    assert policy.continuous and params["actor"]["params"]["log_std"].shape == (1,)
    assert traj.action.shape == (8, 4, 1) and traj.agent_state.shape == (4, 8)
    dist, value = policy.evaluate(params, Rollout(traj, *policy.rollout_values(params, traj),
                                                  jnp.zeros((8, 4))).sequence_batch())
    np.testing.assert_allclose(dist.log_prob(jnp.swapaxes(traj.action, 0, 1)),
                               jnp.swapaxes(traj.log_prob, 0, 1), atol=1e-5)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"num_minibatches=8 is invalid: must divide num_envs = 4"):
        RecurrentPPOConfig(**{**TINY, "num_minibatches": 8})
    with pytest.raises(ValueError, match="gru_size"):
        RecurrentPPOConfig(**{**TINY, "gru_size": 0})
    with pytest.raises(TypeError):
        make_train(PPOConfig())
    assert ALGORITHMS["ppo_rnn"][0] is RecurrentPPOConfig
    assert preset("ppo_rnn", "CueRecall-v0").gru_size == 64
    assert preset("ppo", "CueRecall-v0").num_envs == preset("ppo_rnn", "CueRecall-v0").num_envs


def test_cli_bad_input_exits_2(capsys):
    assert cli.main(["train", "ppo_rnn", "--env", "CueRecall-v0", "--no-progress",
                     "--set", "num_minibatches=32"]) == 2
    assert "num_minibatches=32 is invalid: must divide num_envs = 16" in capsys.readouterr().err


def test_vmap_over_seeds_compiles_once():
    a, b, traces = run_vmapped_twice(make_train(RecurrentPPOConfig(**TINY)), 2)
    assert traces == 1
    assert set(a.params) == {"torso", "actor", "critic"}
    for name, v in b.metrics.items():
        assert v.shape == (2, 16), name
    finite = {k: v for k, v in a.metrics.items() if k not in ("episode_return", "episode_length")}
    for k, v in finite.items():
        assert np.isfinite(np.asarray(v)).all(), k
    assert not np.allclose(np.asarray(a.metrics["total_loss"][0]), np.asarray(a.metrics["total_loss"][1]))


@pytest.mark.timeout(600)
def test_recurrent_ppo_solves_cue_recall_and_feed_forward_stays_at_chance():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    overrides = dict(total_timesteps=40_960)

    rnn = jax.jit(jax.vmap(make_train(preset("ppo_rnn", "CueRecall-v0", **overrides))))(keys)
    finals = final_return(jax.tree_util.tree_map(np.asarray, rnn.metrics))
    assert np.all(finals >= 0.9), finals

    ff = jax.jit(jax.vmap(make_ppo_train(preset("ppo", "CueRecall-v0", **overrides))))(keys)
    finals = final_return(jax.tree_util.tree_map(np.asarray, ff.metrics))
    assert np.all(finals < 0.5), finals
