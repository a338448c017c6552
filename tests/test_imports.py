"""The package's import structure, read from the source (nothing is imported):

* no import circle, counting imports inside functions: an import moved into a function to
  hide a circle still closes it here (an import kept in a function for another reason, an
  optional extra such as brax or JAX that must not start before the XLA flags are set, passes
  as long as it closes no circle);
* no module outside the command line (``purejaxpo/cli/``, ``purejaxpo/__main__.py``) imports it;
* the environments and the language-model side stand apart: LM tasks are datasets with
  rewards, not environments, and no environment needs the LM code.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "purejaxpo"
CLI = "purejaxpo.cli"


def _modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the package (a package by its ``__init__``)."""
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(["purejaxpo", *parts])] = path
    return mods


def _imports(tree: ast.AST):
    """``(node, in_function)`` for every import statement of a module, however deeply nested."""
    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.Lambda))
            yield from walk(child, nested)

    yield from walk(tree, False)


def _edges(mods: dict[str, Path]) -> dict[str, dict[str, bool]]:
    """``{module: {imported module: only inside functions}}`` over the package's modules.

    ``from a.b import c`` imports the module ``a.b.c`` if there is one, else ``a.b``; an
    import of the top package ``purejaxpo`` (its ``__init__``) is not an edge, nor is the
    implicit import of a package when one of its modules is imported.
    """
    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, dict[str, bool]] = {m: {} for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node, in_function in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            for target in targets:
                found = owner(target)
                if found and found != mod and found != "purejaxpo":
                    edges[mod][found] = edges[mod].get(found, True) and in_function
    return edges


def _circles(edges: dict[str, dict[str, bool]]) -> list[str]:
    """Each import circle found by a depth-first walk, as ``a -> b -> (in a function) a``."""
    state: dict[str, int] = {}
    circles = []

    def step(a, b):
        return f" -> (in a function) {b}" if edges[a][b] else f" -> {b}"

    def visit(mod, stack):
        state[mod] = 1
        for nxt in sorted(edges[mod]):
            if state.get(nxt) == 1:
                loop = stack[stack.index(nxt):] + [nxt]
                circles.append(loop[0] + "".join(step(a, b) for a, b in zip(loop, loop[1:])))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[mod] = 2

    for mod in sorted(edges):
        if mod not in state:
            visit(mod, [mod])
    return circles


def _in(mod: str, package: str) -> bool:
    return mod == package or mod.startswith(package + ".")


def _is_command_line(mod: str) -> bool:
    return _in(mod, CLI) or mod == "purejaxpo.__main__"


def test_no_import_circle_even_through_imports_inside_functions():
    circles = _circles(_edges(_modules()))
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_library_module_imports_the_command_line():
    edges = _edges(_modules())
    bad = [f"{m} imports {n}" for m in sorted(edges) if not _is_command_line(m)
           for n in sorted(edges[m]) if _in(n, CLI)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("side, other", [("purejaxpo.envs", "purejaxpo.lm"),
                                         ("purejaxpo.lm", "purejaxpo.envs")])
def test_environments_and_the_language_model_side_stand_apart(side, other):
    edges = _edges(_modules())
    bad = [f"{m} imports {n}" for m in sorted(edges) if _in(m, side)
           for n in sorted(edges[m]) if _in(n, other)]
    assert not bad, "\n".join(bad)


def test_the_walker_sees_imports():
    """The checks above would pass on an empty graph: make sure edges are found, those inside
    functions included, and that a circle through one would be reported."""
    edges = _edges(_modules())
    assert "purejaxpo.settings" in edges["purejaxpo.cli.train"]
    assert "purejaxpo.sweep.plan" in edges["purejaxpo.sweep.program"]
    assert "purejaxpo.envs.registry" in edges["purejaxpo.config"]
    assert "purejaxpo.lm.tools" in edges["purejaxpo.lm.tasks.sequence"]
    assert edges["purejaxpo.cli"]["purejaxpo.cli.train"] is True  # inside make_parser
    assert edges["purejaxpo.cli.train"]["purejaxpo.settings"] is False

    planted = {"a": {"b": False}, "b": {"c": True}, "c": {"a": False}, "d": {"a": False}}
    assert _circles(planted) == ["a -> b -> (in a function) c -> a"]
    assert _circles({"a": {"b": True}, "b": {}}) == []


def test_the_walker_finds_imports_in_nested_functions_and_classes():
    code = ("import os\n"
            "class A:\n"
            "    def f(self):\n"
            "        if True:\n"
            "            from purejaxpo import cli\n"
            "x = lambda: __import__('os')\n")
    found = [(type(n).__name__, f) for n, f in _imports(ast.parse(code))]
    assert found == [("Import", False), ("ImportFrom", True)]
