"""Recipes as validated dataclasses: plain data in, typed fields out, unknown keys refused by name.

Recipes (training settings, compression pass configs) come from YAML files, JSON and command
lines. They are parsed with ``yaml.safe_load`` and checked field by field against the
dataclass's annotations; nothing in a recipe is ever evaluated as code.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from effnet.errors import EffnetError

__all__ = ["checked_fields", "load_yaml", "plain"]


def checked_fields(cls: type, data: Any, source: str = "config") -> dict[str, Any]:
    """The fields of dataclass ``cls`` that ``data`` sets, type-checked; unknown keys get a suggestion.

    Dashes in keys are read as underscores (``batch-size`` is ``batch_size``).
    """
    if not isinstance(data, dict):
        raise EffnetError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise EffnetError(f"{source}: unknown setting {key!r}{hint}")
        values[name] = _coerce(name, value, hints[name], source)
    return values


def plain(obj: Any) -> Any:
    """A dataclass (or nest of them) as JSON/YAML-ready data: tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Check one value against its annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0], source)
    if origin is Literal:
        if value not in args:
            raise EffnetError(f"{source}: {name} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list | tuple):
            raise EffnetError(f"{source}: {name} must be a list, got {value!r}")
        return tuple(_coerce(name, v, args[0], source) for v in value)
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise EffnetError(f"{source}: {name} must be a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(name, v, a, source) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise EffnetError(f"{source}: {name} must be a mapping, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise EffnetError(f"{source}: {name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EffnetError(f"{source}: {name} must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EffnetError(f"{source}: {name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise EffnetError(f"{source}: {name} must be text, got {value!r}")
        return str(value)
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe safely (``yaml.safe_load``: no Python objects), as a mapping."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise EffnetError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EffnetError(f"cannot read config file {p}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise EffnetError(f"config file {p} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EffnetError(f"config file {p} must be a mapping of settings, got {type(data).__name__}")
    return data
