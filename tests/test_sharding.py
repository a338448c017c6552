"""Fully sharded training of a language model over 8 forced CPU devices equals one device
(tests/sharding_subprocess.py, in a fresh process: the device count is fixed when JAX starts);
and how arrays are split."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from jax.sharding import PartitionSpec

from purejaxpo.lm.sharding import AXIS, fsdp_spec


def test_split_rule():
    assert fsdp_spec((96, 64), 8) == PartitionSpec(AXIS)          # the largest divisible axis
    assert fsdp_spec((64, 160), 8) == PartitionSpec(None, AXIS)
    assert fsdp_spec((100, 64), 8) == PartitionSpec(None, AXIS)   # 100 is not divisible
    assert fsdp_spec((99, 33), 8) == PartitionSpec()              # none is: replicated
    assert fsdp_spec((64,), 8) == PartitionSpec()                 # small: replicated
    assert fsdp_spec((4096,), 8) == PartitionSpec(AXIS)
    assert fsdp_spec((96, 64), 1) == PartitionSpec()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("what", [
    "sft", pytest.param("grpo", marks=pytest.mark.slow)])  # grpo: sampling sharded too
def test_sharded_over_8_devices_equals_one_device(what):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "sharding_subprocess.py"),
                           what], env=env, capture_output=True, text=True, timeout=560)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), \
        (proc.stdout + proc.stderr)[-4000:]
