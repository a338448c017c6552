"""The README's two commands stay what CI runs and what the CLI accepts, its command lines
parse, its Python quick start runs, and it stays short (the rest lives in ``docs/``)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

SHRINK = [("total_timesteps=500_000", "total_timesteps=4096")]
"""``(text in the README, what CI runs instead)``: budgets only, never behaviour."""


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_command = _blocks("bash")[1].strip()
    assert "pytest" in test_command
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_main_job_command_is_a_valid_cli_call():
    from purejaxpo.cli import make_parser

    main_job = _blocks("bash")[0].strip()
    cli_part = main_job.split(".venv/bin/purejaxpo ", 1)[1].split()
    args = make_parser().parse_args(cli_part)
    assert args.algo == "ppo" and args.env == "CartPole-v1" and args.seeds >= 2


def test_quick_start_command_lines_parse():
    from purejaxpo.cli import make_parser

    parser = make_parser()
    lines = [ln.split(" #", 1)[0] for block in _blocks("bash")[2:] for ln in block.splitlines()]
    commands = [shlex.split(ln)[1:] for ln in lines if ln.startswith("purejaxpo ")]
    assert len(commands) >= 5
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README: `purejaxpo {' '.join(argv)}` does not parse")


def test_readme_is_short_and_links_exist():
    text = README.read_text()
    assert len(text.splitlines()) < 250, "the README is the five-minute page: details go to docs/"
    for target in re.findall(r"\]\(((?:docs|examples|benchmarks)/[^)#]+)", text):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


@pytest.mark.timeout(300)
def test_python_quick_start_runs(tmp_path):
    (script,) = _blocks("python")
    for old, new in SHRINK:
        assert old in script, f"SHRINK's {old!r} is no longer in the README's python block"
        script = script.replace(old, new)
    path = tmp_path / "readme_quick_start.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=280, env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
