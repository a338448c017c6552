"""purejaxpo must never hang: the jaxlib 0.10 CPU deadlock in batched QR (see _xla_safety.py)."""

import os
import subprocess
import sys
import textwrap

import jaxlib
import pytest

from purejaxpo import _xla_safety

AFFECTED = _xla_safety.needs_flag(jaxlib.__version__, "")


def test_flag_needed_only_for_affected_jaxlib_and_unset_flag():
    assert _xla_safety.needs_flag("0.10.2", "")
    assert _xla_safety.needs_flag("0.11.2", "--xla_force_host_platform_device_count=8")
    assert not _xla_safety.needs_flag("0.9.2", "")
    assert not _xla_safety.needs_flag("0.10.2", f"{_xla_safety.FLAG}=true")  # the user's choice


def _run(code, env_extra, timeout=180):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", _xla_safety.ENV_VAR)}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


PRINT_FLAGS = """
    import os, purejaxpo
    print(os.environ.get("XLA_FLAGS", ""))
"""


def test_import_leaves_xla_flags_alone_by_default():
    user = "--xla_force_host_platform_device_count=2"
    assert _run(PRINT_FLAGS, {"XLA_FLAGS": user}).stdout.strip() == user
    assert _run(PRINT_FLAGS, {}).stdout.strip() == ""


@pytest.mark.skipif(not AFFECTED, reason="jaxlib outside the affected range")
def test_opt_in_adds_flag_without_clobbering_user_flags():
    on = {_xla_safety.ENV_VAR: "1"}
    out = _run(PRINT_FLAGS, {**on, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert out.stdout.strip() == f"--xla_force_host_platform_device_count=2 {_xla_safety.FLAG}=false"
    user = f"{_xla_safety.FLAG}=true"
    assert _run(PRINT_FLAGS, {**on, "XLA_FLAGS": user}).stdout.strip() == user


@pytest.mark.skipif(not AFFECTED, reason="jaxlib outside the affected range")
def test_opt_in_after_backend_start_warns():
    code = """
        import warnings, jax
        jax.numpy.zeros(1).block_until_ready()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import purejaxpo
        print(any("could not set" in str(x.message) for x in w))
    """
    assert _run(code, {_xla_safety.ENV_VAR: "1"}).stdout.strip() == "True"


@pytest.mark.timeout(300)
def test_opt_in_flag_unblocks_vmapped_lapack_qr():
    """The reduced reproduction with jax's own (QR) initialiser finishes under the opt-in flag.

    Without the flag this hung within a few dozen calls on jaxlib 0.10.2 (2 cores).
    """
    code = """
        import purejaxpo, jax
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
        result = _run(code, {_xla_safety.ENV_VAR: "1"}, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("jit(vmap(QR init)) hung although PUREJAXPO_XLA_SAFETY=1 set the flag")
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
