"""Checkpoints: bitwise-exact resume, no corruption when killed mid-save, eval from disk alone."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo import checkpoint as ck
from purejaxpo.checkpoint import evaluation
from purejaxpo import cli
from purejaxpo.algos import ALGORITHMS

TINY = {
    "ppo": dict(total_timesteps=2048, num_envs=4, num_steps=32, num_minibatches=2, num_epochs=1,
                normalize_obs=True),
    "a2c": dict(total_timesteps=2048, num_envs=4, num_steps=32, normalize_obs=True,
                normalize_reward=True),
}


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_resume_from_checkpoint_is_bitwise_identical(algo, tmp_path):
    config_cls, make_train = ALGORITHMS[algo]
    config = config_cls(**TINY[algo])
    n = config.num_updates  # 16
    train = make_train(config)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    init = lambda: jax.vmap(train.init)(keys)  # noqa: E731
    run = ck.batched_run(train.run)
    meta = ck.describe(algo, config, batch_shape=[2])

    straight_state, straight = ck.run_with_checkpoints(init, run, n)
    # First half, saved; then a fresh start from the directory alone for the second half.
    d = str(tmp_path / "ckpt")
    half_state, _ = ck.run_with_checkpoints(init, run, n // 2, every=n // 2, directory=d, meta=meta)
    assert ck.all_steps(d) == [n // 2]
    del half_state
    resumed_state, resumed = ck.run_with_checkpoints(init, run, n, every=n // 2, directory=d,
                                                     meta=meta, resume=True)
    assert ck.latest_step(d) == n
    assert _leaves_equal(straight_state.params, resumed_state.params)
    assert _leaves_equal(straight_state, resumed_state)  # opt state, env + normalisers, key, index
    assert sorted(straight) == sorted(resumed)
    for k in straight:
        assert straight[k].shape == (2, n)
        assert np.array_equal(straight[k], resumed[k], equal_nan=True), k
    # The loaded checkpoint is the same state, rebuilt from the directory alone.
    loaded = ck.load(d)
    assert loaded.algo == algo and loaded.config == config and loaded.step == n
    assert _leaves_equal(loaded.state, resumed_state)
    np.testing.assert_array_equal(np.asarray(loaded.state.update), [n, n])
    # A different config refuses to resume from it.
    other = ck.describe(algo, config.replace(learning_rate=1e-3), batch_shape=[2])
    # The library names its own arguments (the CLI names its flags itself).
    with pytest.raises(ValueError, match="resume=True.*learning_rate"):
        ck.run_with_checkpoints(init, run, n, every=4, directory=d, meta=other, resume=True)
    with pytest.raises(ValueError, match="directory=.*already holds checkpoints.*resume=True"):
        ck.run_with_checkpoints(init, run, n, every=4, directory=d, meta=meta)


def test_grpo_program_pieces_continue_exactly():
    config = ALGORITHMS["grpo"][0](total_timesteps=1024, num_envs=4, num_steps=32, group_size=2,
                                   num_minibatches=2, num_epochs=1)
    train = ALGORITHMS["grpo"][1](config)
    state = jax.jit(train.init)(jax.random.PRNGKey(1))
    run = jax.jit(train.run, static_argnums=1)
    whole, m_whole = run(state, 8)
    first, m1 = run(state, 4)
    rest, m2 = run(first, 4)
    assert _leaves_equal(whole, rest)
    for k in m_whole:
        assert np.array_equal(np.asarray(m_whole[k]),
                              np.concatenate([np.asarray(m1[k]), np.asarray(m2[k])]),
                              equal_nan=True), k


CHILD = textwrap.dedent("""
    import sys, jax
    from purejaxpo import checkpoint as ck
    from purejaxpo.algos.ppo import PPOConfig, make_train
    config = PPOConfig(total_timesteps=4096 * 64, num_envs=4, num_steps=32, num_minibatches=2,
                       num_epochs=1, normalize_obs=True)
    train = make_train(config)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    def on_chunk(start, stop, chunk):
        print("saved", stop, flush=True)
    ck.run_with_checkpoints(lambda: jax.vmap(train.init)(keys), ck.batched_run(train.run),
                            config.num_updates, every=1, directory=sys.argv[1],
                            meta=ck.describe("ppo", config, batch_shape=[2]), on_chunk=on_chunk,
                            max_to_keep=4)
""")


@pytest.mark.slow
def test_sigkill_mid_save_resumes_from_last_complete_checkpoint(tmp_path):
    d = str(tmp_path / "ckpt")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, d], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        saved = 0
        while saved < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("saved"):
                saved = int(line.split()[1])
        assert saved >= 3, "the child never checkpointed"
        # Saving is most of each update's time, so this lands in a save most of the time.
        time.sleep(random.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    steps = ck.all_steps(d)
    assert steps and steps[-1] >= 3
    # Whatever orbax left unfinished is a temporary directory, never a listed step.
    for name in os.listdir(d):
        if "tmp" in name:
            assert not name.split(".")[0].isdigit() or int(name.split(".")[0]) not in steps[:-1]
    latest = ck.load(d)
    assert latest.step == steps[-1]
    np.testing.assert_array_equal(np.asarray(latest.state.update), [latest.step] * 2)
    for v in latest.metrics.values():
        assert v.shape == (2, latest.step)
    # It is a valid step: the previous checkpoint run for one more update gives exactly it.
    previous = ck.load(d, steps[-2])
    config = previous.config
    train = ALGORITHMS["ppo"][1](config)
    state, _ = jax.jit(ck.batched_run(train.run), static_argnums=1)(
        previous.state, latest.step - previous.step)
    assert _leaves_equal(state, latest.state)


@pytest.mark.slow
def test_cli_checkpoint_log_resume_and_eval(tmp_path, capsys):
    d = tmp_path / "ck"
    log = tmp_path / "log.csv"
    base = ["train", "ppo", "--seeds", "2", "--total-timesteps", "2048", "--num-envs", "4",
            "--set", "num_steps=32", "--set", "num_epochs=1", "--set", "num_minibatches=2",
            "--no-progress", "--checkpoint-dir", str(d), "--checkpoint-every", "8"]
    assert cli.main([*base, "--log", str(log), "--json", str(tmp_path / "a.json")]) == 0
    assert ck.all_steps(str(d)) == [8, 16]
    assert json.loads((d / "config.json").read_text())["algo"] == "ppo"
    lines = log.read_text().splitlines()
    assert len(lines) == 1 + 2 * 16
    header = lines[0].split(",")
    assert header[:3] == ["run", "update", "env_steps"] and "episode_return" in header
    assert lines[-1].startswith("1,16,2048,")
    # Without --resume an existing directory is refused; with it, a finished run is loaded.
    capsys.readouterr()
    assert cli.main(base) == 2
    assert "--checkpoint-dir" in capsys.readouterr().err
    assert cli.main([*base, "--resume", "--json", str(tmp_path / "b.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert a["curves"] == b["curves"] and a["final_return"] == b["final_return"]
    # Evaluation from the directory alone.
    out = tmp_path / "eval.json"
    assert cli.main(["eval", str(d), "--episodes", "3", "--seed", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["step"] == 16 and len(data["runs"]) == 2
    assert all(len(r["returns"]) == 3 and min(r["returns"]) >= 8 for r in data["runs"])
    assert "mean return" in capsys.readouterr().out
    assert cli.main(["eval", str(d), "--episodes", "2", "--greedy"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint-every", "5"], "--checkpoint-every"),
        (["--checkpoint-dir", "DIR", "--checkpoint-every", "0"], "--checkpoint-every"),
        (["--resume"], "--resume"),
        (["--log", "out.txt"], "--log"),
    ],
)
def test_bad_checkpoint_flags_exit_2(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / a) if a == "DIR" else a for a in argv]
    assert cli.main(["train", "ppo", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


def test_eval_of_missing_checkpoint_exits_2(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path / "nothing")]) == 2
    assert "CHECKPOINT" in capsys.readouterr().err


def test_library_errors_name_its_arguments_not_flags(tmp_path):
    init = lambda: {"w": jnp.zeros(2)}  # noqa: E731
    run = lambda state, num_updates: (state, {"m": jnp.zeros(num_updates)})  # noqa: E731
    messages = []
    for every in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"every=.* is invalid") as err:
            ck.run_with_checkpoints(init, run, 2, every=every)
        messages.append(str(err.value))
    with pytest.raises(ValueError, match="resume=True needs a checkpoint directory") as err:
        ck.run_with_checkpoints(init, run, 2, resume=True)
    messages.append(str(err.value))
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(ValueError, match="directory=.* is invalid: not a directory") as err:
        ck.run_with_checkpoints(init, run, 2, directory=str(afile))
    messages.append(str(err.value))
    d = str(tmp_path / "ck")
    ck.run_with_checkpoints(init, run, 2, every=1, directory=d)
    with pytest.raises(ValueError, match="already holds checkpoints .*pass resume=True") as err:
        ck.run_with_checkpoints(init, run, 2, every=1, directory=d)
    messages.append(str(err.value))
    assert not any("--" in m for m in messages), messages
    state, metrics = ck.run_with_checkpoints(init, run, 3, every=1, directory=d, resume=True)
    assert ck.latest_step(d) == 3 and metrics["m"].shape == (3,)


# Evaluation: the training rollout and env stack, the run's normaliser statistics frozen.


def _trained(algo="ppo", num_updates=4, **overrides):
    config_cls, make_train = ALGORITHMS[algo]
    config = config_cls(**{**TINY[algo], **overrides})
    train = make_train(config)
    state = jax.jit(train.init)(jax.random.PRNGKey(0))
    state, _ = jax.jit(train.run, static_argnums=1)(state, num_updates)
    return config, state


def test_freeze_fixes_normaliser_statistics_wherever_they_sit():
    from purejaxpo.envs import (EpisodeStatistics, NormalizeObservation, NormalizeReward, VecEnv,
                                make)

    env, params = make("CartPole-v1")
    # Observation normalisation below reward normalisation: not make_vec_env's order.
    build = lambda n: NormalizeReward(NormalizeObservation(EpisodeStatistics(  # noqa: E731
        VecEnv(env, params, n))), 0.9)
    train_env = build(4)
    _, state = train_env.reset(jax.random.PRNGKey(0))
    for i in range(3):
        _, state, *_ = train_env.step(jax.random.PRNGKey(i), state, jnp.ones(4, jnp.int32))
    obs_rms, return_rms = state.inner.obs_rms, state.return_rms
    frozen = build(2).freeze(state)  # another number of envs: only the statistics are used
    obs, s = frozen.reset(jax.random.PRNGKey(5))
    raw, _ = VecEnv(env, params, 2).reset(jax.random.PRNGKey(5))
    expected = np.clip((raw - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -10, 10)
    np.testing.assert_allclose(obs, expected, rtol=1e-6)
    for i in range(5):
        obs, s, reward, *_ = frozen.step(jax.random.PRNGKey(10 + i), s, jnp.zeros(2, jnp.int32))
    assert _leaves_equal(s.inner.obs_rms, obs_rms) and _leaves_equal(s.return_rms, return_rms)
    np.testing.assert_allclose(reward, np.clip(1.0 / np.sqrt(return_rms.var + 1e-8), -10, 10),
                               rtol=1e-6)
    # The training stack is untouched: it still updates.
    _, s2, *_ = train_env.step(jax.random.PRNGKey(9), state, jnp.ones(4, jnp.int32))
    assert not _leaves_equal(s2.inner.obs_rms, obs_rms)
    # A state of another stack is refused.
    with pytest.raises(ValueError, match="NormalizeReward.freeze"):
        NormalizeReward(EpisodeStatistics(VecEnv(env, params, 2)), 0.9).freeze(state.inner)


@pytest.mark.slow
def test_greedy_policy_acts_with_the_mode():
    from purejaxpo.algos.base import build_policy
    from purejaxpo.rollout import Greedy

    for algo, overrides in (("ppo", {}), ("ppo", {"env": "Pendulum-v1"})):
        config, state = _trained(algo, 1, **overrides)
        policy = build_policy(config)
        obs = state.env.obs
        _, action, log_prob = Greedy(policy).act(jax.random.PRNGKey(0), state.params, (), obs)
        dist = policy.distribution(state.params, obs)
        np.testing.assert_array_equal(action, dist.mode())
        np.testing.assert_allclose(log_prob, dist.log_prob(dist.mode()), rtol=1e-6)
        assert Greedy(policy).initial_state(4) == () and not Greedy(policy).recurrent
    config = ALGORITHMS["ppo_rnn"][0](env="CueRecall-v0", total_timesteps=1024, num_envs=4,
                                      num_steps=16, num_minibatches=2, num_epochs=1, gru_size=16)
    policy = build_policy(config)
    params = policy.init(jax.random.PRNGKey(0))
    obs = jnp.ones((4, *policy.obs_shape))
    h0 = policy.initial_state(4)
    h, action, _ = Greedy(policy).act(None, params, h0, obs)
    np.testing.assert_array_equal(h, policy.step(params, h0, obs))
    np.testing.assert_array_equal(action, policy.head_distribution(params, h).mode())


@pytest.mark.slow
def test_evaluate_plays_one_raw_episode_per_env_with_frozen_statistics():
    config, state = _trained("a2c")  # CartPole, observations and rewards normalised
    env_state = state.env.env_state
    key = jax.random.PRNGKey(7)
    for greedy in (False, True):
        returns, finished = jax.jit(lambda p, e: ck.evaluate(  # noqa: B023
            key, "a2c", config, p, e, num_episodes=6, greedy=greedy))(state.params, env_state)
        returns, finished = np.asarray(returns), np.asarray(finished)
        assert returns.shape == finished.shape == (6,)
        # CartPole pays 1 per step: raw returns are whole episode lengths, 8 to 500.
        assert finished.all()
        assert np.array_equal(returns, np.round(returns)) and (returns >= 8).all()
        assert (returns <= 500).all()
    # Other statistics normalise differently, so the policy sees other observations.
    moved = env_state.replace(obs_rms=env_state.obs_rms.replace(mean=env_state.obs_rms.mean + 3.0))
    a = ck.evaluate(key, "a2c", config, state.params, env_state, num_episodes=16, greedy=True)
    b = ck.evaluate(key, "a2c", config, state.params, moved, num_episodes=16, greedy=True)
    assert not np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    with pytest.raises(ValueError, match="env_state"):
        ck.evaluate(key, "a2c", config, state.params, None, num_episodes=2)


def test_first_episodes_of_a_rollout():
    from purejaxpo.rollout import Transition

    done = jnp.array([[0, 0, 0], [1, 0, 0], [0, 0, 1], [1, 0, 0]], bool)  # [T=4, B=3]
    running = jnp.array([[1, 1, 1], [2, 2, 2], [1, 3, 3], [2, 4, 1]], jnp.float32)
    zeros = jnp.zeros((4, 3))
    traj = Transition(zeros, zeros, zeros, zeros, zeros, zeros, zeros, done, running, zeros)
    returns, finished = evaluation.first_episodes(traj)
    np.testing.assert_array_equal(finished, [True, False, True])
    np.testing.assert_array_equal(returns, [2, 4, 3])  # env 1 never ended: every step counts
