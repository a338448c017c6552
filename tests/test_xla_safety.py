"""purejaxpo must never hang: the jaxlib 0.10 CPU deadlock in batched QR is avoided by default."""

import os
import subprocess
import sys
import textwrap

import pytest

from purejaxpo import _xla_safety


def test_flag_needed_only_for_affected_jaxlib_and_unset_flag():
    assert _xla_safety.needs_flag("0.10.2", "")
    assert _xla_safety.needs_flag("0.11.2", "--xla_force_host_platform_device_count=8")
    assert not _xla_safety.needs_flag("0.9.2", "")
    assert not _xla_safety.needs_flag("0.10.2", f"{_xla_safety.FLAG}=true")  # the user's choice


def _run(code, env_extra, timeout=180):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PUREJAXPO_XLA_SAFETY")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_import_sets_flag_without_clobbering_user_flags():
    code = """
        import os, purejaxpo
        print(os.environ.get("XLA_FLAGS", ""))
    """
    out = _run(code, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}).stdout.strip()
    import jaxlib

    if _xla_safety.needs_flag(jaxlib.__version__, ""):
        assert out == f"--xla_force_host_platform_device_count=2 {_xla_safety.FLAG}=false"
    user = f"{_xla_safety.FLAG}=true"
    assert _run(code, {"XLA_FLAGS": user}).stdout.strip() == user


def test_import_after_backend_start_warns():
    code = """
        import warnings, jax
        jax.numpy.zeros(1).block_until_ready()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import purejaxpo
        print(any("could not set" in str(x.message) for x in w))
    """
    import jaxlib

    if not _xla_safety.needs_flag(jaxlib.__version__, ""):
        pytest.skip("jaxlib outside the affected range")
    assert _run(code, {}).stdout.strip() == "True"


@pytest.mark.timeout(300)
def test_vmapped_orthogonal_inits_do_not_hang():
    """The reduced reproduction: hung within a few dozen calls without the flag (jax 0.10.2)."""
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
        result = _run(code, {}, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("jit(vmap(orthogonal init)) hung: the XLA safety flag is not effective")
    assert result.stdout.strip() == "ok", result.stderr
