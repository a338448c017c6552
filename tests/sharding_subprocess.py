"""Run by tests/test_sharding.py in a fresh process with 8 forced CPU devices: SFT steps with
the parameters and optimiser state sharded against the same steps on one device (with
``grpo`` as argument: also GRPO, sampling inside, running sharded; `pytest -m slow`). Prints
OK at the end."""

import jax
import jax.numpy as jnp
import numpy as np

from purejaxpo.lm.config import LMGRPOConfig, LMSFTConfig
from purejaxpo.lm.grpo import grpo_program
from purejaxpo.lm.sft import sft_program
from purejaxpo.lm.sharding import AXIS, fsdp_mesh, shard_state, sharded_run


def main(grpo: bool = False):
    assert jax.device_count() == 8, jax.device_count()
    config = LMSFTConfig(task="sorting", steps=4, batch_size=16, learning_rate=3e-3,
                         num_layers=2, width=64, num_heads=4, mlp_ratio=2)
    model = config.model_config()
    program = sft_program(config, model, config.make_task())
    state = jax.jit(program.init)(jax.random.PRNGKey(0))
    one, one_metrics = jax.jit(program.run, static_argnums=1)(state, 4)

    mesh = fsdp_mesh()
    sharded = shard_state(state, mesh)
    leaves = jax.tree_util.tree_leaves(sharded.params)
    split = sum(x.size for x in leaves if AXIS in tuple(x.sharding.spec))
    assert split >= 0.9 * sum(x.size for x in leaves), split  # kernels and embedding split
    embed = max(leaves, key=lambda x: x.size)  # the largest kernel
    assert embed.addressable_shards[0].data.size * 8 == embed.size  # 1/8 per device
    run = sharded_run(program, mesh, sharded)
    out, metrics = run(sharded, 4)
    assert [x.sharding.spec for x in jax.tree_util.tree_leaves(out.params)] == \
        [x.sharding.spec for x in leaves]  # every leaf keeps its split
    np.testing.assert_allclose(metrics["loss"], one_metrics["loss"], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(out.params), jax.tree_util.tree_leaves(one.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)

    if grpo:
        config = LMGRPOConfig(prompts_per_step=4, group_size=4, steps=2, beta=0.04)
        program = grpo_program(config, one.params, model, config.make_task())
        state = shard_state(jax.jit(program.init)(jax.random.PRNGKey(1)), mesh)
        assert [x.sharding.spec for x in jax.tree_util.tree_leaves(state.ref)] == \
            [x.sharding.spec for x in leaves]  # the reference model is split alike
        out, metrics = sharded_run(program, mesh, state)(state, 2)
        assert bool(jnp.all(jnp.isfinite(metrics["loss"])))
    print("OK")


if __name__ == "__main__":
    import sys

    main(grpo="grpo" in sys.argv[1:])
