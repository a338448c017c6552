"""Helpers shared by the algorithm tests."""

import jax


def run_vmapped_twice(train, seeds: int):
    """``jit(vmap(train))`` on two different key batches; returns ``(a, b, num_traces)``."""
    traces = []

    def counted(key):
        traces.append(1)
        return train(key)

    run = jax.jit(jax.vmap(counted))
    a = run(jax.random.split(jax.random.PRNGKey(0), seeds))
    b = run(jax.random.split(jax.random.PRNGKey(1), seeds))
    return a, b, len(traces)
