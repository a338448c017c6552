"""tests/slow_tests.txt names only tests that exist (a renamed test would silently run in CI)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_every_listed_slow_test_exists():
    listed = {line.strip() for line in (HERE / "slow_tests.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow",
                          "-p", "no:cacheprovider", str(HERE)], capture_output=True, text=True,
                         cwd=HERE.parent, timeout=300)
    collected = {line.strip() for line in out.stdout.splitlines() if "::" in line}
    assert listed <= collected, sorted(listed - collected)
