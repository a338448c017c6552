"""The quick-start notebook runs top to bottom (a reduced budget), so it never rots."""

import json
import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quickstart_notebook_runs_top_to_bottom(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("PUREJAXPO_NOTEBOOK_STEPS", "8192")
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    namespace = {"__name__": "__notebook__"}
    ran = 0
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        exec(compile(source, f"{NOTEBOOK.name} cell {index}", "exec"), namespace)
        ran += 1
    assert ran >= 6
    assert namespace["finals"].shape == (namespace["SEEDS"],)
    assert len(namespace["res"].table) == 6 * 2
    assert namespace["ckpt"].step == namespace["small"].num_updates
