"""MkDocs hooks: the benchmark result files' figures served beside the pages that include them.

``docs/benchmarks.md`` includes ``benchmarks/results/*.md`` with ``pymdownx.snippets``; those
files show their figures by a path relative to themselves (``![..](learning_curves.png)``),
which, once included, is relative to the including page. Each ``*.png`` under
``benchmarks/results/`` is therefore added to the site at the docs root under its own name, so
the figures render and ``mkdocs build --strict`` finds every image. Two figures with the same
name would be ambiguous, and fail the build naming both.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def on_files(files, config):
    seen: dict[str, Path] = {}
    for png in sorted(RESULTS.rglob("*.png")):
        if png.name in seen:
            raise ValueError(f"benchmarks/results holds two figures named {png.name}: "
                             f"{seen[png.name]} and {png}; the docs serve them by name")
        seen[png.name] = png
        if files.get_file_from_path(png.name) is None:
            files.append(File.generated(config, png.name, abs_src_path=str(png)))
    return files
