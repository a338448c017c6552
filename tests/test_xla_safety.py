"""purejaxpo must never hang: the jaxlib 0.10 CPU deadlock in batched QR (see
``purejaxpo.backends.cpu.use_safe_scheduler``)."""

import os
import subprocess
import sys
import textwrap

import pytest


def _run(code, env_extra, timeout=180):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(300)
def test_safe_scheduler_unblocks_vmapped_lapack_qr():
    """The reduced reproduction with jax's own (QR) initialiser finishes under the opt-in flag.

    Without the flag this hung within a few dozen calls on jaxlib 0.10.2 (2 cores).
    """
    code = """
        from purejaxpo.backends import cpu
        cpu.use_safe_scheduler()
        import jax
        shapes = [(4, 64), (64, 64), (64, 2), (4, 64), (64, 64), (64, 1)]
        init = jax.nn.initializers.orthogonal(1.0)
        def draw(key):
            keys = jax.random.split(key, len(shapes))
            return [init(k, s) for k, s in zip(keys, shapes)]
        fn = jax.jit(jax.vmap(draw))
        for i in range(300):
            jax.block_until_ready(fn(jax.random.split(jax.random.PRNGKey(i), 16)))
        print("ok")
    """
    try:
        result = _run(code, {}, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("jit(vmap(QR init)) hung although use_safe_scheduler() set the flag")
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.timeout(400)
def test_vmapped_ppo_does_not_hang_under_default_scheduler():
    """The regression guard: PPO vmapped over 16 seeds, run 150 times, no flag set.

    With jax's QR initialiser in the networks this hung on jaxlib 0.10.2 (2 cores) within the
    first 200 calls; purejaxpo's Gram-Schmidt initialiser finished 200 calls in 52 s.
    """
    code = """
        import os, jax, purejaxpo
        from purejaxpo.algos.ppo import PPOConfig, make_train
        assert "concurrency_optimized" not in os.environ.get("XLA_FLAGS", "")
        train = jax.jit(jax.vmap(make_train(PPOConfig(env="CartPole-v1", total_timesteps=2048))))
        for i in range(150):
            jax.block_until_ready(train(jax.random.split(jax.random.PRNGKey(i), 16)))
        print("ok")
    """
    try:
        result = _run(code, {}, timeout=360)
    except subprocess.TimeoutExpired:
        pytest.fail("jit(vmap(ppo train)) hung under XLA's default CPU scheduler")
    assert result.stdout.strip() == "ok", result.stderr
