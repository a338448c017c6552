"""The LM trainers as Programs (``init(key, hyperparams)`` / ``run(state, n)``): seeds and
settings in one ``jit(vmap)`` program, chunking that changes nothing, and checkpoints that a
killed run resumes from bitwise (library and command line)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo import checkpoint as ck
from purejaxpo.lm.config import LMDPOConfig, LMGRPOConfig, LMSFTConfig
from purejaxpo.lm.dpo import dpo_program
from purejaxpo.lm.grpo import grpo_program, train_grpo
from purejaxpo.lm.model import init_params
from purejaxpo.lm.pairs import synthetic_pairs
from purejaxpo.lm.sft import sft_program

TINY = dict(num_layers=1, width=32, num_heads=2, mlp_ratio=2)


def _equal(a, b) -> bool:
    return all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)))


def _tiny_policy():
    model = LMSFTConfig(**TINY).model_config()
    return model, init_params(jax.random.PRNGKey(0), model)


@pytest.mark.timeout(300)
def test_four_sft_seeds_in_one_jit_vmap_program():
    config = LMSFTConfig(task="sorting", steps=30, learning_rate=3e-3, **TINY)
    program = sft_program(config, config.model_config(), config.make_task())
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    result = jax.jit(jax.vmap(program.train))(keys)
    loss = np.asarray(result.metrics["loss"])
    assert loss.shape == (4, 30)
    assert np.all(loss[:, -5:].mean(1) < 0.8 * loss[:, :3].mean(1))  # every seed learns
    kernels = [np.asarray(x) for x in jax.tree_util.tree_leaves(result.params)[:1]][0]
    assert not np.allclose(kernels[0], kernels[1])  # a model per key, initialised apart
    # Each seed is the run its key gives alone.
    alone = jax.jit(program.train)(keys[2])
    np.testing.assert_allclose(loss[2], np.asarray(alone.metrics["loss"]), rtol=2e-5, atol=2e-5)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_grpo_settings_sweep_in_one_program_and_chunks_change_nothing():
    model, params = _tiny_policy()
    config = LMGRPOConfig(prompts_per_step=4, group_size=4, steps=4, beta=0.04)
    program = grpo_program(config, params, model, config.make_task())
    key = jax.random.PRNGKey(3)
    lrs = jnp.asarray([0.0, 1e-3], jnp.float32)
    states, metrics = jax.jit(jax.vmap(
        lambda lr: program.run(program.init(key, {"learning_rate": lr}), 4)))(lrs)
    assert metrics["loss"].shape == (2, 4)
    zero = jax.tree_util.tree_map(lambda x: x[0], states.params)
    moved = jax.tree_util.tree_map(lambda x: x[1], states.params)
    assert _equal(zero, params) and not _equal(moved, params)  # lr 0 leaves the policy
    assert _equal(jax.tree_util.tree_map(lambda x: x[0], states.ref), params)  # reference kept
    # Run in one piece or in chunks of 1 and 3: bitwise the same state.
    run = jax.jit(program.run, static_argnums=1)
    state = jax.jit(program.init)(key)
    whole, _ = run(state, 4)
    part, _ = run(run(state, 1)[0], 3)
    assert _equal(whole, part)
    with pytest.raises(ValueError, match=r"\['clip'\] are not sweepable settings"):
        program.init(key, {"clip": 0.1})


class _Killed(Exception):
    pass


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_grpo_run_resumes_bitwise(tmp_path):
    model, params = _tiny_policy()
    config = LMGRPOConfig(prompts_per_step=4, group_size=4, steps=6, beta=0.04)
    whole = train_grpo(config, params, model, progress=False,
                       checkpoint_dir=str(tmp_path / "a"), checkpoint_every=2)
    # The same run, killed after its checkpoint at step 4 ...
    calls = []

    def evaluate(p):
        calls.append(1)
        if len(calls) == 3:  # the evaluations: step 0, after step 2, after step 4
            raise _Killed
        return 0.0

    import purejaxpo.lm.grpo as grpo_module

    real = grpo_module.make_evaluator
    grpo_module.make_evaluator = lambda *a, **k: evaluate
    try:
        with pytest.raises(_Killed):
            train_grpo(config, params, model, progress=False,
                       checkpoint_dir=str(tmp_path / "b"), checkpoint_every=2)
    finally:
        grpo_module.make_evaluator = real
    assert ck.all_steps(str(tmp_path / "b"))[-1] == 4
    # ... then resumed: it ends bitwise where the uninterrupted run ends.
    resumed = train_grpo(config, params, model, progress=False,
                         checkpoint_dir=str(tmp_path / "b"), checkpoint_every=2, resume=True)
    assert _equal(resumed.state, whole.state)
    for name, values in whole.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], values, err_msg=name)
    assert [s for s, _ in resumed.curve] == [0, 6]
    meta = json.loads((tmp_path / "b" / ck.CONFIG_FILE).read_text())
    assert meta["algo"] == "lm grpo" and meta["config"]["beta"] == 0.04
    # Another config is refused on resume, naming the field.
    with pytest.raises(ValueError, match="config.beta 0.04 != 0.1"):
        train_grpo(config.replace(beta=0.1), params, model, progress=False,
                   checkpoint_dir=str(tmp_path / "b"), resume=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dpo_program_keeps_the_reference_log_probs_in_its_state():
    model, params = _tiny_policy()
    config = LMDPOConfig(steps=2, batch_size=8, loss="sigmoid")
    pairs = synthetic_pairs(jax.random.PRNGKey(1), config.make_task(), 40)
    program = dpo_program(config, params, model, pairs)
    state = jax.jit(program.init)(jax.random.PRNGKey(0))
    chosen, rejected = state.ref
    assert chosen.shape == rejected.shape == (40,)
    from purejaxpo.lm.dpo import _pair_log_probs

    want = _pair_log_probs(params, model, pairs)
    np.testing.assert_allclose(chosen, want[0].total, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(rejected, want[1].total, rtol=1e-5, atol=1e-4)
    state, metrics = jax.jit(program.run, static_argnums=1)(state, 2)
    assert int(state.step) == 2 and metrics["loss"].shape == (2,)
