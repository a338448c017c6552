"""The package's import structure: no import circle, and no library module imports a
command-line module (function-level imports count too: they only hide a circle)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "purejaxpo"
ENVS = Path(__file__).resolve().parents[1] / "envs"  # installed as purejaxpo.envs


def _modules() -> dict[str, Path]:
    mods = {}
    for root, prefix in ((PACKAGE, "purejaxpo"), (ENVS, "purejaxpo.envs")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([prefix, *parts])] = path
    return mods


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                found = owner(target)
                if found and found != mod and found != "purejaxpo":
                    edges[mod].add(found)
    return edges


def _is_cli(mod: str) -> bool:
    last = mod.rpartition(".")[2]
    return last.startswith("cli") or last == "__main__"


def test_no_import_circle():
    edges = _edges(_modules())
    state: dict[str, int] = {}
    circles = []

    def visit(mod, stack):
        state[mod] = 1
        for nxt in sorted(edges[mod]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[mod] = 2

    for mod in sorted(edges):
        if mod not in state:
            visit(mod, [mod])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_library_module_imports_the_command_line():
    edges = _edges(_modules())
    bad = [f"{m} imports {n}" for m in sorted(edges) if not _is_cli(m)
           for n in sorted(edges[m]) if _is_cli(n)]
    assert not bad, "\n".join(bad)


def test_the_walker_sees_imports():
    """The checks above would pass on an empty graph: make sure edges are found."""
    edges = _edges(_modules())
    assert "purejaxpo.settings" in edges["purejaxpo.cli"]
    assert "purejaxpo.sweep.plan" in edges["purejaxpo.sweep.program"]
    assert "purejaxpo.envs.registry" in edges["purejaxpo.config"]
