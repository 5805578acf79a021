"""Typed dataclass configs <-> JSON dicts, and dotted command-line overrides.

Every config in aigc is a (possibly nested) dataclass. ``from_dict`` refuses
unknown keys, so a typo in a preset or an override is an error, not a silent
no-op; ``apply_overrides`` parses ``{"model.n_layer": "4"}`` by field type.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a dataclass config (nested ones included)."""
    return dataclasses.asdict(cfg)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build ``cls`` from ``data``; unknown keys raise :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{where or cls.__name__}' must be an object, got {type(data).__name__}")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown option '{_join(where, unknown[0])}'; valid options here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        kwargs[key] = from_dict(tp, value, _join(where, key)) if _is_dataclass_type(tp) else value
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _parse_scalar(text: str, tp: Any, name: str) -> Any:
    """Parse a command-line string as the field's annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        return _parse_scalar(text, args[0], name)
    try:
        if tp is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if tp is int:
            return int(float(text)) if "e" in text.lower() else int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
        if origin in (list, tuple):
            value = json.loads(text)
            return list(value) if origin is list else tuple(value)
    except (ValueError, json.JSONDecodeError):
        raise ConfigError(f"option '{name}' expects {getattr(tp, '__name__', tp)}, got '{text}'") from None
    raise ConfigError(f"option '{name}' cannot be set from the command line")


def apply_overrides(cfg: T, overrides: dict[str, str]) -> T:
    """Return a copy of ``cfg`` with dotted-path overrides applied."""
    for path, text in overrides.items():
        cfg = _override(cfg, path.split("."), text, path)
    return cfg


def _override(cfg: Any, parts: list[str], text: str, full: str) -> Any:
    hints = _field_types(type(cfg))
    key = parts[0]
    if key not in hints:
        names = ", ".join(sorted(hints))
        raise ConfigError(f"unknown option '--{full}'; valid names at this level: {names}")
    tp = hints[key]
    if _is_dataclass_type(tp):
        if len(parts) == 1:
            raise ConfigError(f"option '--{full}' is a section; set one of its fields, e.g. --{full}.<name>=...")
        value = _override(getattr(cfg, key), parts[1:], text, full)
    else:
        if len(parts) > 1:
            raise ConfigError(f"unknown option '--{full}'")
        value = _parse_scalar(text, tp, full)
    return dataclasses.replace(cfg, **{key: value})


def with_options(cls: type[T], base: T | None, what: str, options: dict[str, Any]) -> T:
    """``base`` (default: ``cls()``) with keyword ``options`` replacing its fields; the result is validated
    as the dataclass validates itself. An unknown option is an error naming the valid ones."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(f"unknown {what} option '{unknown[0]}'; valid: {', '.join(names)}")
    return dataclasses.replace(base or cls(), **options)


def load_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from ``path`` with a clear error if it is missing or broken."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file '{path}' is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a JSON object")
    return data
