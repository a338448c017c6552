"""Checkpoint format: leaves stored under tree paths, checked on restore; old positional ones load."""

import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo import checkpoint as ck
from purejaxpo.checkpoint import store
from purejaxpo.algos import ALGORITHMS

TINY = dict(total_timesteps=1024, num_envs=4, num_steps=32, num_minibatches=2, num_epochs=1,
            normalize_obs=True, hidden_sizes=(16, 16))
METRICS = {"episode_return": np.zeros((2, 1), np.float32)}


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def _program(**overrides):
    config = ALGORITHMS["ppo"][0](**{**TINY, **overrides})
    train = ALGORITHMS["ppo"][1](config)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    return config, (lambda: jax.vmap(train.init)(keys)), ck.batched_run(train.run)


def _raw(directory, step):
    with store.open_manager(directory, read_only=True) as manager:
        return store.restore(manager, step)


def _save_old_format(directory, step, state, metrics, meta):
    """Writes a checkpoint as the format-1 code did: leaves named ``leaf_00000``, ... by position."""
    import orbax.checkpoint as ocp

    flat = {f"leaf_{i:05d}": leaf for i, leaf in enumerate(jax.tree_util.tree_leaves(state))}
    with store.open_manager(directory) as manager:
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(flat),
            history=ocp.args.StandardSave({k: np.asarray(v) for k, v in metrics.items()}),
            meta=ocp.args.JsonSave({**meta, "step": int(step)}),
        ))
        manager.wait_until_finished()
    with open(os.path.join(directory, ck.CONFIG_FILE), "w") as f:
        json.dump(meta, f)


def _old_meta(config, **extra):
    return {**ck.describe("ppo", config, **extra), "format": 1}


class Pair(NamedTuple):
    left: jax.Array
    right: tuple


def test_leaf_paths_name_dict_keys_fields_and_indices():
    tree = {"params": {"w": jnp.zeros(2)}, "opt": (Pair(jnp.zeros(1), (jnp.zeros(3),)),)}
    assert ck.flatten_state(tree).keys() == {"params/w", "opt/0/left", "opt/0/right/0"}
    with pytest.raises(ValueError, match="same path 'a/0'"):
        ck.flatten_state({"a": [jnp.zeros(1)], "a/0": jnp.zeros(1)})


@pytest.mark.slow
def test_checkpoint_stores_each_leaf_under_its_tree_path(tmp_path):
    config, init, run = _program()
    d = str(tmp_path / "ck")
    state, _ = ck.run_with_checkpoints(init, run, 2, every=2, directory=d,
                                       meta=ck.describe("ppo", config, batch_shape=[2]))
    flat, history, meta = _raw(d, 2)
    assert meta["format"] == ck.FORMAT == 2
    assert json.loads((tmp_path / "ck" / ck.CONFIG_FILE).read_text())["format"] == 2
    for path in ("params/actor/params/Dense_0/kernel", "params/critic/params/Dense_2/bias",
                 "opt_state/1/0/mu/actor/params/Dense_0/kernel", "opt_state/1/0/count",
                 "env/env_state/obs_rms/mean", "env/env_state/inner/episode_return",
                 "env/obs", "key", "update", "hyperparams/learning_rate"):
        assert path in flat, path
    assert not any(k.startswith("leaf_") for k in flat)
    assert set(flat) == {path for path, _ in ck.leaf_paths(state)}
    assert flat["params/actor/params/Dense_0/kernel"].shape == (2, 4, 16)
    np.testing.assert_array_equal(np.asarray(flat["update"]), [2, 2])


@pytest.mark.slow
def test_old_positional_checkpoint_loads_and_resumes_exactly(tmp_path):
    config, init, run = _program()
    n = config.num_updates  # 8
    straight_state, straight = ck.run_with_checkpoints(init, run, n)
    half_state, half = ck.run_with_checkpoints(init, run, n // 2)
    d = str(tmp_path / "old")
    _save_old_format(d, n // 2, half_state, half, _old_meta(config, batch_shape=[2]))
    assert sorted(_raw(d, n // 2)[0])[:2] == ["leaf_00000", "leaf_00001"]
    loaded = ck.load(d)
    assert loaded.step == n // 2 and loaded.config == config and loaded.meta["format"] == 1
    assert _leaves_equal(loaded.state, half_state)
    assert all(np.array_equal(loaded.metrics[k], half[k], equal_nan=True) for k in half)
    # Resuming reads it by position too; the new checkpoints are written by path.
    state, metrics = ck.run_with_checkpoints(init, run, n, every=n // 2, directory=d,
                                             meta=ck.describe("ppo", config, batch_shape=[2]),
                                             resume=True)
    assert _leaves_equal(state, straight_state)
    assert all(np.array_equal(metrics[k], straight[k], equal_nan=True) for k in straight)
    flat, _, meta = _raw(d, n)
    assert meta["format"] == 2 and "params/actor/params/Dense_0/kernel" in flat
    assert _leaves_equal(ck.load(d).state, straight_state)
    assert _leaves_equal(ck.load(d, n // 2).state, half_state)  # the old step still reads


def test_old_positional_checkpoint_that_does_not_fit_is_refused(tmp_path):
    config, init, run = _program()
    state = jax.jit(init)()
    # Its state is of 32-unit layers, its config says 16: leaf 0 is the first bias.
    _, other_init, _ = _program(hidden_sizes=(32, 32))
    d = str(tmp_path / "old")
    _save_old_format(d, 1, jax.jit(other_init)(), METRICS, _old_meta(config, batch_shape=[2]))
    with pytest.raises(ValueError, match=r"leaf 0 \(format 1.*'params/actor/params/Dense_0/bias'"
                                         r".*\(2, 32\).*\(2, 16\)"):
        ck.load(d)
    # One leaf fewer (a state of another version of the code): the counts differ.
    d2 = str(tmp_path / "old2")
    _save_old_format(d2, 1, state._replace(update=()), METRICS, _old_meta(config, batch_shape=[2]))
    with pytest.raises(ValueError, match=r"holds \d+ leaves .*format 1.*has \d+"):
        ck.load(d2)
    with pytest.raises(ValueError, match=r"resume=True: the checkpoint at step 1.*holds \d+ leaves"):
        ck.run_with_checkpoints(init, run, 2, directory=d2,
                                meta=ck.describe("ppo", config, batch_shape=[2]), resume=True)


@pytest.mark.slow
def test_checkpoint_of_another_network_is_refused_naming_the_leaf(tmp_path):
    config, init, run = _program()
    other_config, other_init, other_run = _program(hidden_sizes=(32, 32))
    d = str(tmp_path / "ck")
    ck.run_with_checkpoints(init, run, 1, directory=d)  # no meta: only the state can tell
    path = r"'params/actor/params/Dense_0/bias' has shape \(2, 16\) dtype float32 in the " \
           r"checkpoint, the run expects shape \(2, 32\) dtype float32"
    with pytest.raises(ValueError, match=r"resume=True: the checkpoint at step 1 .*" + path):
        ck.run_with_checkpoints(other_init, other_run, 2, directory=d, resume=True)
    # load() rebuilds the tree from the saved config: a state that does not fit it is refused.
    d2 = str(tmp_path / "ck2")
    ck.run_with_checkpoints(other_init, other_run, 1, directory=d2,
                            meta=ck.describe("ppo", config, batch_shape=[2]))
    with pytest.raises(ValueError, match=r"the checkpoint at step 1 .*'params/actor/params/"
                                         r"Dense_0/bias' has shape \(2, 32\)"):
        ck.load(d2)


def test_state_whose_tree_changed_is_refused_naming_the_leaf(tmp_path):
    config, init, run = _program()
    d = str(tmp_path / "ck")
    meta = ck.describe("ppo", config, batch_shape=[2])
    ck.run_with_checkpoints(init, run, 1, directory=d, meta=meta)

    def gained():
        return init()._replace(extra={"baseline": jnp.zeros((2, 3))})

    with pytest.raises(ValueError, match=r"leaf 'extra/baseline' \(shape \(2, 3\) dtype float32\) "
                                         r"is missing from the checkpoint"):
        ck.run_with_checkpoints(gained, run, 2, directory=d, meta=meta, resume=True)

    def lost():
        state = init()
        return state._replace(hyperparams={k: v for k, v in state.hyperparams.items()
                                           if k != "vf_coef"})

    with pytest.raises(ValueError, match=r"unexpected leaf 'hyperparams/vf_coef'"):
        ck.run_with_checkpoints(lost, run, 2, directory=d, meta=meta, resume=True)

    def retyped():
        state = init()
        return state._replace(update=state.update.astype(jnp.float32))

    with pytest.raises(ValueError, match=r"leaf 'update' has shape \(2,\) dtype int32 in the "
                                         r"checkpoint, the run expects shape \(2,\) dtype float32"):
        ck.run_with_checkpoints(retyped, run, 2, directory=d, meta=meta, resume=True)
    # The unchanged tree still resumes.
    _, metrics = ck.run_with_checkpoints(init, run, 2, directory=d, meta=meta, resume=True)
    assert ck.latest_step(d) == 2


def test_checkpoint_of_a_newer_format_is_refused():
    abstract = {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}
    with pytest.raises(ValueError, match="format 3, newer"):
        ck.restore_state(abstract, {"w": np.zeros(2, np.float32)}, 3)
    restored = ck.restore_state(abstract, {"w": np.ones(2, np.float32)}, 2)
    np.testing.assert_array_equal(restored["w"], [1, 1])
    with pytest.raises(ValueError, match="not named leaf_00000"):
        ck.restore_state(abstract, {"w": np.zeros(2, np.float32)}, 1)


def test_cnn_checkpoint_with_patchconv_names_loads_into_conv_layers():
    """A CNN saved before the convolutions became ``flax.linen.Conv`` layers (``PatchConv_i``
    paths) restores into today's ``Conv_i`` layers, value for value."""
    import chex
    import jax

    from purejaxpo.checkpoint.formats import flatten_state, restore_state
    from purejaxpo.networks import Policy, PolicySpec

    spec = PolicySpec(torso="cnn", conv_channels=(4, 4), conv_kernels=(3, 2),
                      conv_strides=(1, 1), hidden_sizes=(8,))
    params = Policy((6, 6, 2), num_actions=3, spec=spec).init(jax.random.PRNGKey(0))
    flat = flatten_state(params)
    assert any("/Conv_1/" in path for path in flat)
    old = {path.replace("/Conv_", "/PatchConv_"): value for path, value in flat.items()}
    chex.assert_trees_all_equal(restore_state(params, old), params)
