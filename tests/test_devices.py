"""CPU settings (purejaxpo.devices): which devices runs split over, the flags, and in a fresh
process with 2 CPU devices and fused loops (tests/devices_subprocess.py) that the rollout
compiles to one kernel, that plain, chunked, checkpointed and resumed runs agree bitwise and
that one device agrees to float rounding."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from purejaxpo import devices
from purejaxpo.backends import cpu

HERE = Path(__file__).resolve().parent


def test_run_devices_takes_the_most_that_divide_the_runs():
    four = ["d0", "d1", "d2", "d3"]
    assert devices.run_devices(16, four) == four
    assert devices.run_devices(6, four) == ["d0", "d1", "d2"]
    assert devices.run_devices(7, four) == ["d0"]
    assert devices.run_devices(2, four) == ["d0", "d1"]
    assert devices.run_devices(1) == jax.local_devices()[:1]
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="num_runs=.* must be an integer >= 1"):
            devices.run_devices(bad, four)
    with pytest.raises(ValueError, match="devices=.* at least one device"):
        devices.run_devices(4, [])


def test_vmap_runs_on_one_device_is_plain_vmap():
    fn = devices.vmap_runs(lambda x: x * 2.0, 3, devices=jax.devices()[:1])
    assert fn(jax.numpy.arange(3.0)).tolist() == [0.0, 2.0, 4.0]


def test_flags_and_counts():
    assert cpu.parse_cpu_devices("auto") is None
    assert cpu.parse_cpu_devices("3") == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="--cpu-devices=.* 'auto' or an integer >= 1"):
            cpu.parse_cpu_devices(bad)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="count=.* must be an integer >= 1"):
            cpu.use_cpu_cores(bad)
    have = len(jax.devices("cpu"))  # this process's backend has started: kept as it is
    if have < cpu.cpu_cores() and cpu._explicit_cpu_device_count() is None:
        with pytest.warns(UserWarning, match="came after JAX's CPU backend started"):
            assert cpu.use_cpu_cores() == have
    assert cpu.use_cpu_cores(quiet=True) == have
    assert cpu.use_cpu_cores(have) == have
    with pytest.raises(RuntimeError, match="already started"):
        cpu.use_cpu_cores(have + 1)
    assert cpu.cpu_cores() >= 1


def test_fused_loops_respects_existing_flags_and_a_started_backend(monkeypatch):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_bytes=.* must be an integer >= 1"):
            cpu.use_fused_loops(bad)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
    assert cpu.use_fused_loops() is False  # the user's flag wins, nothing added
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    monkeypatch.setenv("XLA_FLAGS", "")
    import jaxlib

    if tuple(int(p) for p in jaxlib.__version__.split(".")[:2]) in cpu._FUSED_LOOP_JAXLIBS:
        with pytest.warns(UserWarning, match="came after JAX started"):  # started here
            assert cpu.use_fused_loops() is False
    assert os.environ["XLA_FLAGS"] == ""
    assert cpu.use_fused_loops(quiet=True) is False


def test_wide_vectors_only_with_avx512_and_never_over_a_users_width(tmp_path, monkeypatch):
    with_avx512, without = tmp_path / "with", tmp_path / "without"
    with_avx512.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma avx512f avx512bw\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma avx512_bf16x\n")
    assert cpu.cpu_has_avx512(str(with_avx512))
    assert not cpu.cpu_has_avx512(str(without))
    assert not cpu.cpu_has_avx512(str(tmp_path / "missing"))
    assert cpu.fused_loop_flags(wide_vectors=True)[-1] == "--xla_cpu_prefer_vector_width=512"
    assert not any("vector_width" in f for f in cpu.fused_loop_flags(wide_vectors=False))
    # a user's width is kept: use_fused_loops asks for no width of its own then
    asked = []
    monkeypatch.setattr(cpu, "fused_loop_flags",
                        lambda max_bytes, wide_vectors=None: asked.append(wide_vectors) or [])
    monkeypatch.setattr("jax._src.xla_bridge.backends_are_initialized", lambda: False)
    monkeypatch.setattr(cpu, "_FUSED_LOOP_JAXLIBS", ((0, 0),))  # no jaxlib: nothing added
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=256")
    assert cpu.use_fused_loops() is False and asked == []
    import jaxlib

    version = tuple(int(p) for p in jaxlib.__version__.split(".")[:2])
    monkeypatch.setattr(cpu, "_FUSED_LOOP_JAXLIBS", (version,))
    assert cpu.use_fused_loops() is True and asked == [False]
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_prefer_vector_width=256"
    monkeypatch.setenv("XLA_FLAGS", "")
    assert cpu.use_fused_loops() is True and asked == [False, None]


def test_use_wide_vectors_alone(monkeypatch):
    import jaxlib

    version = tuple(int(p) for p in jaxlib.__version__.split(".")[:2])
    monkeypatch.setattr(cpu, "_FUSED_LOOP_JAXLIBS", (version,))
    monkeypatch.setattr(cpu, "cpu_has_avx512", lambda: True)
    monkeypatch.setattr("jax._src.xla_bridge.backends_are_initialized", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert cpu.use_wide_vectors() is True
    assert os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                       "--xla_cpu_prefer_vector_width=512")
    assert cpu.use_wide_vectors() is False  # set already: nothing added twice
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=256")
    assert cpu.use_wide_vectors() is False  # the user's width wins
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(cpu, "cpu_has_avx512", lambda: False)
    assert cpu.use_wide_vectors() is False and os.environ["XLA_FLAGS"] == ""
    monkeypatch.setattr(cpu, "cpu_has_avx512", lambda: True)
    monkeypatch.setattr("jax._src.xla_bridge.backends_are_initialized", lambda: True)
    with pytest.warns(UserWarning, match="came after JAX started"):
        assert cpu.use_wide_vectors() is False
    assert cpu.use_wide_vectors(quiet=True) is False and os.environ["XLA_FLAGS"] == ""


def test_the_commands_enable_the_cpu_backend_with_their_settings(monkeypatch):
    from purejaxpo import cli

    calls = []
    monkeypatch.setattr(cpu, "enable", lambda **kw: calls.append(kw))
    cli._early_cpu_settings(["lm", "generate", "--checkpoint", "x"])
    assert calls == [dict(fused_loops=False, wide_vectors=True, cpu_devices=None, quiet=True)]
    calls.clear()
    cli._early_cpu_settings(["train", "ppo"])
    assert calls == [dict(fused_loops=True, wide_vectors=True, cpu_devices="auto", quiet=True)]
    calls.clear()
    cli._early_cpu_settings(["sweep", "ppo", "--no-fused-loops", "--cpu-devices", "1"])
    assert calls == [dict(fused_loops=False, wide_vectors=False, cpu_devices=1, quiet=True)]
    calls.clear()
    cli._early_cpu_settings(["plot", "x.json"])
    assert calls == []


@pytest.mark.timeout(400)
def test_two_cpu_devices_plain_chunked_resumed_agree(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, str(HERE / "devices_subprocess.py"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    found = json.loads((tmp_path / "found.json").read_text())
    assert found["cpu_devices"] == 2
    # The CLI added the fused-loop flags before JAX started, and the rollout is one kernel.
    assert all(flag in found["xla_flags"] for flag in cpu.fused_loop_flags())
    assert found["cpu_backend_active"]
    assert found["late_fused_loops_refused"] and found["rollout_fused"]
    assert not found["rollout_of_8_runs_fused"]
    assert found["auto_keeps_started_backend"] and found["late_count_refused"]
    assert found["split_devices"] == 2 and found["one_devices"] == 1
    # Split 2 + 2 or all 4 on one device: different kernels, the same runs up to rounding
    # (here they differ, so the bitwise checks below can tell the two layouts apart).
    assert 0 < found["one_device_diff"] < 1e-4
    # Chunked with checkpoints, and resumed, the runs keep the split and its results bitwise.
    assert found["chunked_diff"] == 0 and found["resumed_diff"] == 0
    runs = {name: json.loads((tmp_path / f"{name}.json").read_text())
            for name in ("plain", "chunked", "resumed")}
    assert runs["plain"]["split_over_devices"] == 2
    assert "seeds split over 2 devices" in proc.stdout
    assert found["resumed_from"] > 0
    for name in ("chunked", "resumed"):
        assert runs[name]["curves"] == runs["plain"]["curves"], name
        assert runs[name]["final_return"] == runs["plain"]["final_return"], name
    # This process has one CPU device: the checkpoint of 2 is restored onto it.
    from purejaxpo import checkpoint

    loaded = checkpoint.load(str(tmp_path / "ck"))
    assert loaded.meta["split_over_devices"] == 2 and loaded.step == 10
    leaf = jax.tree_util.tree_leaves(loaded.state.params)[0]
    assert leaf.shape[0] == 4 and len(leaf.sharding.device_set) == 1
