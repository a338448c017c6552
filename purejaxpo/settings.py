"""Settings by name: parsing ``name=value`` text into typed config fields, aliases, and the
small output helpers every command shares.

This module depends on nothing else of purejaxpo, so the library (sweeps, presets) and every
command-line module (the package ``purejaxpo.cli``) can import it without forming an import
circle. Errors are ``ValueError`` naming the setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from typing import Any, Mapping

ALIASES = {"lr": "learning_rate"}
"""Short names accepted for config fields (Python sweeps and the command line)."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def field_types(config_cls) -> dict[str, Any]:
    """``{field name: type annotation}`` of a config dataclass."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def numeric_type(config_cls, name: str):
    """``int`` or ``float`` for a numeric field (``float | None`` counts), else None."""
    annotation = typing.get_type_hints(config_cls)[name]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return annotation if annotation in (int, float) else None


def resolve_name(name: str, config_cls) -> str:
    """The config field that ``name`` (or its alias, e.g. ``lr``) means; ValueError if none."""
    key = name.strip().replace("-", "_")
    key = ALIASES.get(key, key)
    fields = [f.name for f in dataclasses.fields(config_cls)]
    if key not in fields:
        close = difflib.get_close_matches(key, fields + list(ALIASES), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{name}: unknown setting for {config_cls.__name__}.{hint} "
                         f"Known: {', '.join(sorted(fields))}")
    return key


def parse_value(name: str, text: str, annotation) -> Any:
    """Converts ``text`` to the type of config field ``name``; ValueError names the field."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in ("none", "null") and type(None) in args:
            return None
        (annotation,) = [a for a in args if a is not type(None)]
        origin = typing.get_origin(annotation)
    try:
        if annotation is bool:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if annotation is int:
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if annotation is float:
            return float(text)
        if origin is tuple:
            return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
        return text
    except ValueError:
        raise ValueError(f"{name}={text!r} is invalid: expected "
                         f"{getattr(annotation, '__name__', annotation)}") from None


def parse_settings(items, config_cls, owner: str, reserved: Mapping[str, str] | None = None,
                   *, prefix: str = "--set ") -> dict[str, Any]:
    """``name=value`` items (``--set``) as typed values for the fields of ``config_cls``.

    ``reserved`` maps field names that are given some other way to that way
    (``{"env": "--env"}``); every error is a ``ValueError`` naming the setting, after ``prefix``
    (``"--set "`` for the command line, ``""`` from Python).
    """
    types_ = field_types(config_cls)
    values: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{prefix}{item!r} is invalid: expected name=value")
        name, text = item.split("=", 1)
        name = name.strip().replace("-", "_")
        if name in (reserved or {}):
            raise ValueError(f"{prefix}{name}: use {reserved[name]} instead")
        if name not in types_:
            close = difflib.get_close_matches(name, list(types_), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"{prefix}{name}: unknown setting for {owner}.{hint} "
                             f"Known: {', '.join(sorted(types_))}")
        values[name] = parse_value(name, text, types_[name])
    return values


def json_safe(value):
    """``value`` with NumPy scalars as Python numbers and NaN / infinities as None (JSON has
    no NaN), through dicts, lists and tuples."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # NumPy scalar / 0-d array
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, data, *, quiet: bool = False) -> None:
    """Writes ``data`` to ``path`` as indented, valid JSON (NaN and infinities as null; see
    :func:`json_safe`), creating its folder, and says so."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(json_safe(data), f, indent=1, allow_nan=False)
    if not quiet:
        print(f"wrote {path}")


def read_json_lines(path: str) -> list[tuple[str, dict]]:
    """The objects of a JSON-lines file, blank lines skipped, each with where it came from
    (``"PATH, line N"``, for the caller's own messages); ``ValueError`` naming the line for
    one that is not valid JSON or not an object."""
    out = []
    with open(path) as f:
        lines = [(i, line) for i, line in enumerate(f, start=1) if line.strip()]
    for lineno, line in lines:
        where = f"{path}, line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object")
        out.append((where, obj))
    return out


def device_description() -> str:
    """One line: platform, device kind and count, jax version."""
    import jax

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    if dev.platform == "cpu":
        return f"cpu ({os.cpu_count()} cores), {jax.device_count()} device(s), jax {jax.__version__}"
    return f"{dev.platform}: {kind} x{jax.device_count()}, jax {jax.__version__}"
