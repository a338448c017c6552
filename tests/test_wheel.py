"""The package as a package index would serve it: build the wheel, install it without ``-e``
into a fresh virtual environment, and use it from outside the source tree.

An editable install hides packaging mistakes (a subpackage missing from the wheel); this test
does not. To keep CI fast the fresh environment borrows the test environment's third-party
packages through a ``.pth`` path (not its ``.pth`` files, so the editable purejaxpo is not
visible): purejaxpo itself comes only from the wheel, and ``pip check`` verifies that the
wheel's declared requirements are met.
"""

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

IMPORT_ALL = """
import importlib, pkgutil, purejaxpo, sys
assert "site-packages" in purejaxpo.__file__ and "{root}" not in purejaxpo.__file__, purejaxpo.__file__
names = [m.name for m in pkgutil.walk_packages(purejaxpo.__path__, "purejaxpo.")
         if not m.name.endswith("__main__")]  # runs the CLI when imported
for name in names:
    importlib.import_module(name)
for needed in ("purejaxpo.cli.lm", "purejaxpo.envs.registry", "purejaxpo.sweep.plan",
               "purejaxpo.cli.sweep", "purejaxpo.lm.tasks.prompt_data", "purejaxpo.checkpoint.store"):
    assert needed in names, needed
print("imported", len(names), "modules")
"""


def _run(cmd, cwd, env=None, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.timeout(900)
def test_wheel_installs_and_runs_from_a_fresh_environment(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          str(ROOT), "-w", str(dist)], cwd=tmp_path)
    (wheel,) = dist.glob("purejaxpo-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    new_site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=tmp_path).strip())
    (new_site / "_borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
         cwd=tmp_path)
    _run([str(py), "-m", "pip", "check"], cwd=tmp_path)

    work = tmp_path / "elsewhere"  # outside the source tree: nothing imports from the checkout
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    out = _run([str(py), "-c", IMPORT_ALL.format(root=ROOT)], cwd=work, env=env)
    assert "imported" in out
    cli = str(env_dir / "bin" / "purejaxpo")
    assert "train" in _run([cli, "--help"], cwd=work, env=env)
    assert "sft" in _run([cli, "lm", "--help"], cwd=work, env=env)
    out = _run([cli, "train", "ppo", "--env", "CartPole-v1", "--seeds", "2", "--total-timesteps",
                "4096", "--no-progress", "--json", str(work / "run.json")], cwd=work, env=env)
    assert "mean final_return" in out and (work / "run.json").exists()
