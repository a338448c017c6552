"""LoRA adapters: a fresh adapter changes nothing, merging equals the adapted forward pass,
training moves the adapters alone (no optimiser state for the base), the reference is the base
with the adapters off, and a pretrained checkpoint takes adapters."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxpo.lm.common import optimizer
from purejaxpo.lm.config import LMSFTConfig
from purejaxpo.lm.lora import (
    adapters_off, add_adapters, count_adapter_params, has_adapters, merge_adapters)
from purejaxpo.lm.model import Transformer, init_params
from purejaxpo.lm.pretrained import load_pretrained
from purejaxpo.lm.sft import sft_program

TINY = dict(num_layers=1, width=32, num_heads=2, mlp_ratio=2)
DATA = Path(__file__).parent / "data" / "hf"


def _forward(model, params, tokens):
    return jax.jit(lambda p: Transformer(model).apply(
        {"params": p}, tokens, jnp.ones_like(tokens, bool))[0])(params)


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_fresh_adapters_change_nothing_and_merge_exactly():
    pre = load_pretrained(DATA / "llama")
    tokens = jnp.asarray([[3, 17, 40, 5, 9]])
    model, params = add_adapters(jax.random.PRNGKey(0), pre.params, pre.model, rank=4,
                                 alpha=8.0, targets=("q", "v", "mlp_gate"))
    assert model.lora_rank == 4 and has_adapters(params)
    np.testing.assert_allclose(_forward(model, params, tokens),
                               _forward(pre.model, pre.params, tokens), atol=1e-6)
    adapters, total = count_adapter_params(params)
    assert 0 < adapters < total / 5
    # Trained (here: random) adapters change the output; merging reproduces it exactly.
    moved = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.05 if getattr(p[-1], "key", "") == "lora_b" else x, params)
    adapted = _forward(model, moved, tokens)
    assert not np.allclose(adapted, _forward(pre.model, pre.params, tokens), atol=1e-3)
    merged, base_model = merge_adapters(moved, model)
    assert base_model == pre.model and not has_adapters(merged)
    np.testing.assert_allclose(_forward(base_model, merged, tokens), adapted, atol=1e-5)
    # The reference model: the adapters off, the base weights shared.
    np.testing.assert_allclose(_forward(model, adapters_off(moved), tokens),
                               _forward(pre.model, pre.params, tokens), atol=1e-6)


@pytest.mark.timeout(300)
def test_training_moves_only_the_adapters():
    config = LMSFTConfig(task="sorting", steps=3, learning_rate=1e-2, batch_size=8, **TINY)
    base_model = config.model_config()
    base = init_params(jax.random.PRNGKey(0), base_model)
    model, params = add_adapters(jax.random.PRNGKey(1), base, base_model, rank=2,
                                 targets=("qkv", "mlp_in"))
    program = sft_program(config, model, config.make_task(), params=params)
    state = jax.jit(program.init)(jax.random.PRNGKey(2))
    # Adam moments only for the adapters.
    moments = [x for x in jax.tree_util.tree_leaves(state.opt_state) if x.ndim > 0]
    assert sum(x.size for x in moments) == 2 * count_adapter_params(params)[0]
    end, metrics = jax.jit(program.run, static_argnums=1)(state, 3)
    assert np.all(np.isfinite(metrics["loss"]))
    frozen = adapters_off(end.params)
    assert _leaves_equal(merge_adapters(frozen, model)[0], base)  # base weights bitwise
    b_before = params["block_0"]["qkv"]["lora_b"]
    assert not np.allclose(end.params["block_0"]["qkv"]["lora_b"], b_before)


def test_heads_on_an_adapted_trunk_train_with_the_adapters():
    """PPO's critic (a value head on a copy of the adapted trunk) and a reward model's score
    train; the trunk's base weights do not."""
    from purejaxpo.lm.ppo import init_critic

    base_model = LMSFTConfig(task="sorting", **TINY).model_config()
    base = init_params(jax.random.PRNGKey(0), base_model)
    model, policy = add_adapters(jax.random.PRNGKey(1), base, base_model, rank=2,
                                 targets=("qkv",))
    params = {"policy": policy, "critic": init_critic(jax.random.PRNGKey(2), policy, model)}
    tx = optimizer({"learning_rate": jnp.float32(1e-2), "max_grad_norm": jnp.float32(1.0)})
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    moved = {"/".join(str(getattr(k, "key", k)) for k in path)
             for path, u in jax.tree_util.tree_leaves_with_path(updates) if bool(jnp.any(u != 0))}
    assert {"critic/value/kernel", "critic/value/bias"} <= moved
    assert all(name.endswith(("lora_a", "lora_b")) or name.startswith("critic/value")
               for name in moved), moved
    assert "critic/trunk/block_0/qkv/lora_b" in moved


def test_models_without_adapters_keep_their_optimiser_state():
    params = {"w": jnp.ones(3)}
    tx = optimizer({"learning_rate": jnp.float32(1e-3), "max_grad_norm": jnp.float32(1.0)})
    from purejaxpo.update import make_optimizer

    plain = make_optimizer(lambda count: 1e-3, 1.0, eps=1e-8).init(params)
    assert jax.tree_util.tree_structure(tx.init(params)) == jax.tree_util.tree_structure(plain)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rank=0), "rank=0 is invalid"),
    (dict(alpha=0.0), "alpha=0.0 is invalid"),
    (dict(targets=("wq",)), "each must be one of"),
    (dict(targets=("qkv",)), r"\['qkv'\] are not projections of this model"),
])
def test_bad_adapter_settings_name_the_field(kwargs, message):
    pre = load_pretrained(DATA / "qwen2")
    with pytest.raises(ValueError, match=message):
        add_adapters(jax.random.PRNGKey(0), pre.params, pre.model, **kwargs)
