"""The docs site builds, and the docs' examples run, so that neither can rot.

* ``mkdocs build --strict`` must pass: a broken link, a missing benchmark result file
  (``--8<--`` snippets), or an API page whose module moved fails it.
* Every fenced ```` ```python ```` block of ``docs/*.md`` runs. The blocks of one page run in
  order as one script (a later block may use what an earlier one made), in a fresh process
  (a page may set XLA flags or the device count before JAX starts, as a user's script does),
  in an empty directory (``runs/...`` paths land there; ``tests/`` is linked in for the tiny
  checkpoints). The examples keep a user's budgets; :data:`SHRINK` lowers them for CI, and each
  of its replacements must still match its page.
* A block after an HTML comment ``<!-- skip: reason -->`` does not run; the skips are counted
  against :data:`EXPECTED_SKIPS`, so that a new one is a visible change to this file.
* Every ``purejaxpo ...`` command line in a ```` ```bash ```` block parses with the command
  line's own parser (flags and choices that no longer exist fail).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

SHRINK: dict[str, list[tuple[str, str]]] = {
    "getting-started.md": [("total_timesteps=500_000", "total_timesteps=4096")],
    "policies.md": [],
    "sweeps.md": [
        ('PPOConfig(env="CartPole-v1"),', 'PPOConfig(env="CartPole-v1", total_timesteps=2048),'),
        ("seeds=8)", "seeds=2)"),
        ('"ppo", ranges=', 'PPOConfig(env="CartPole-v1", total_timesteps=2048), ranges='),
        ("num_samples=32", "num_samples=2"),
        ("print(result.curves.shape) # [48,", "print(result.curves.shape) # [12,"),
        ('LMSFTConfig(task="sorting", steps=300)', 'LMSFTConfig(task="sorting", steps=4, log_every=2, eval_prompts=16)'),
    ],
    "checkpoints-and-logs.md": [("total_timesteps=100_000", "total_timesteps=4096"),
                                ("every=50", "every=4")],
    "language-models.md": [
        ("steps=1000, stop_exact_match=0.2, log_every=25", "steps=4, log_every=2, eval_prompts=16"),
        ("steps=200, rewards=", "steps=2, log_every=2, eval_prompts=16, rewards="),
        ('LMSFTConfig(task="sorting", steps=300)', 'LMSFTConfig(task="sorting", steps=2)'),
        ("PRNGKey(0), 4))  # 4 models", "PRNGKey(0), 2))  # 2 models"),
        ("jnp.asarray([1e-4, 3e-4, 1e-3])", "jnp.asarray([1e-4, 1e-3])"),
        ('{"learning_rate": lr}), 100)', '{"learning_rate": lr}), 1)'),
    ],
    "tool-calls.md": [],
    "pretrained.md": [("steps=100)", "steps=2)"), ("(state, 100)", "(state, 2)")],
    "cpu-performance.md": [("total_timesteps=500_000", "total_timesteps=4096")],
}
"""Per page: ``(text in the docs, what CI runs instead)``, budgets only, never behaviour."""

EXPECTED_SKIPS = 0
"""How many python blocks carry ``<!-- skip: reason -->``; change it with the docs."""

BLOCK = re.compile(r"(<!--\s*skip:\s*(.+?)\s*-->\s*\n)?```(\w+)\n(.*?)```", re.S)


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _blocks(page: Path, language: str) -> list[tuple[str, str | None]]:
    """``(code, skip reason or None)`` for every ``language`` block of ``page``, in order."""
    return [(code, reason or None) for _, reason, lang, code in BLOCK.findall(page.read_text())
            if lang == language]


def _script(page: Path) -> str | None:
    """The page's runnable python blocks as one script, budgets shrunk; None if it has none."""
    code = [c for c, reason in _blocks(page, "python") if reason is None]
    if not code:
        return None
    script = "\n".join(code)
    for old, new in SHRINK.get(page.name, []):
        assert old in script, f"{page.name}: SHRINK's {old!r} is no longer in its python blocks"
        script = script.replace(old, new)
    return script


def _python_pages() -> list[str]:
    return [p.name for p in _pages() if _script(p) is not None]


def test_every_python_page_is_listed_in_shrink():
    # A page with examples must say what CI shrinks (possibly nothing), so that a new page with
    # a 5e5-step example cannot slip into CI at full budget unnoticed.
    assert set(_python_pages()) == set(SHRINK), (
        f"pages with python blocks {sorted(_python_pages())} != SHRINK's {sorted(SHRINK)}")


def test_skipped_blocks_are_counted_and_say_why():
    skipped = [(p.name, reason) for p in _pages() for _, reason in _blocks(p, "python") if reason]
    for page, reason in skipped:
        assert len(reason.split()) >= 3, f"{page}: a skip must say why, got {reason!r}"
    print("skipped doc blocks:", skipped)
    assert len(skipped) == EXPECTED_SKIPS, skipped


@pytest.mark.timeout(300)
def test_mkdocs_build_strict(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
         "--config-file", str(ROOT / "mkdocs.yml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "math" / "index.html").is_file()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", _python_pages())
def test_docs_python_blocks_run(page, tmp_path):
    script = _script(DOCS / page)
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # tests/data/hf: the tiny HF checkpoints
    path = tmp_path / f"docs_{page.replace('-', '_').removesuffix('.md')}.py"
    path.write_text(script)
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, f"{page}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def _command_lines(page: Path) -> list[list[str]]:
    """Every ``purejaxpo ...`` invocation in the page's bash blocks, as argv after the name."""
    commands = []
    for code, _ in _blocks(page, "bash"):
        text = code.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                for i, word in enumerate(words):
                    if word == "purejaxpo" or word.endswith("/bin/purejaxpo"):
                        commands.append(words[i + 1:])
                        break
    return commands


@pytest.mark.parametrize("page", [p.name for p in _pages() if _command_lines(p)])
def test_docs_commands_parse(page):
    from purejaxpo.cli import make_parser

    parser = make_parser()
    for argv in _command_lines(DOCS / page):
        try:
            parser.parse_args(argv)
        except SystemExit as exit:
            pytest.fail(f"{page}: `purejaxpo {' '.join(argv)}` does not parse (exit {exit.code})")


def test_docs_set_up_commands_are_the_readmes():
    readme = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[:2]
    page = (DOCS / "getting-started.md").read_text()
    for command in readme:
        assert command in page, f"docs/getting-started.md lacks the README's {command.strip()!r}"
