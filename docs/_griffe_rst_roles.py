"""A griffe extension for the API reference: reST roles rendered as code, loose lines mended.

The library's docstrings are Google style with reST cross-references (``:func:`gae```,
``:class:`~purejaxpo.config.RLConfig```, ``:mod:`purejaxpo.lm```), which Markdown would show
as raw text. Each role becomes an inline code span of its target (the last dotted part where
the target starts with ``~``, as Sphinx shows it), so no docstring needs editing. Loaded by
``mkdocs.yml`` (mkdocstrings' ``extensions`` option).

Also: inside an ``Args:``, ``Attributes:`` or ``Raises:`` section, a line at the entries'
indentation that is not a ``name: description`` entry (a wrapped sentence left unindented)
is read as the previous entry's continuation, as a reader reads it, instead of a parse
warning that ``mkdocs build --strict`` would fail on.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const|ref):`~?([^`]+)`")


def _target(match: re.Match) -> str:
    text = match.group(1)
    if match.group(0).split("`", 1)[1].startswith("~"):
        text = text.rsplit(".", 1)[-1]
    return f"`{text}`"


def strip_roles(text: str) -> str:
    """``:func:`x``` -> `` `x` ``, and ``:class:`~a.b.C``` -> `` `C` ``."""
    return ROLE.sub(_target, text)


ENTRY_SECTION = re.compile(
    r"^(\s*)(Args|Arguments|Attributes|Raises|Keyword Args|Keyword Arguments|Other Parameters|"
    r"Parameters|Warns):\s*$")
ENTRY = re.compile(r"^\s*[\w*.,\[\] ]+(\s*\([^)]*\))?:(\s|$)")


def mend_entries(text: str) -> str:
    """Indents loose continuation lines of entry sections by two spaces (see the module)."""
    out, header, entry = [], None, None
    for line in text.split("\n"):
        indent = len(line) - len(line.lstrip())
        match = ENTRY_SECTION.match(line)
        if match:
            header, entry = len(match.group(1)), None
        elif line.strip() and header is not None:
            if indent <= header:
                header = None
            elif entry is None:
                entry = indent
            elif indent == entry and not ENTRY.match(line):
                line = "  " + line
        out.append(line)
    return "\n".join(out)


class RstRoles(griffe.Extension):
    """Rewrites every docstring's reST roles as code spans when griffe loads an object."""

    def on_object(self, *, obj: griffe.Object, loader: Any = None, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = mend_entries(strip_roles(obj.docstring.value))
