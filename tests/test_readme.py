"""The README's two commands stay what CI runs and what the CLI accepts."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks():
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_command = _bash_blocks()[1].strip()
    assert "pytest" in test_command
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_main_job_command_is_a_valid_cli_call():
    from purejaxpo.cli import make_parser

    main_job = _bash_blocks()[0].strip()
    cli_part = main_job.split(".venv/bin/purejaxpo ", 1)[1].split()
    args = make_parser().parse_args(cli_part)
    assert args.algo == "ppo" and args.env == "CartPole-v1" and args.seeds >= 2
