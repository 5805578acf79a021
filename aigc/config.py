"""Typed dataclass configs <-> JSON dicts, and dotted command-line overrides.

Every config in aigc is a (possibly nested) dataclass. ``from_dict`` refuses
unknown keys, so a typo in a preset or an override is an error, not a silent
no-op; ``apply_overrides`` parses ``{"model.n_layer": "4"}`` by field type.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")

MAX_SEED = 2 ** 64 - 1  # what torch.Generator.manual_seed takes


# ---- number checks: one sentence for each way a number can be wrong -----------------------------------


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as a whole number in [low, high] (high None: no bound), else ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in {low}..{high:,}"
        raise ConfigError(f"{name} must be a whole number {span}, got {value!r}")
    return value


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite number within the bounds given (open or closed), else ConfigError."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        span = " and ".join(x for x in (lo, hi) if x)
        raise ConfigError(f"{name} must be a finite number{' ' + span if span else ''}, got {value!r}")
    return float(value)


# Bounds on model sizes: far above anything this toolkit trains, low enough that a corrupt or hostile
# config is refused at once instead of building for minutes (the weights' header is checked next).
SIZE_BOUNDS = {"layers": 1024, "width": 65_536, "heads": 1024, "context": 1_048_576, "vocab": 4_194_304,
               "ratio": 64, "blocks": 64, "levels": 16, "pixels": 65_536}


def check_sizes(section: str, cfg: Any, sizes: dict[str, str]) -> None:
    """Each field of ``sizes`` (field -> kind in SIZE_BOUNDS) a whole number in 1..its bound."""
    for name, kind in sizes.items():
        check_int(f"{section}.{name}", getattr(cfg, name), 1, SIZE_BOUNDS[kind])


def check_seed(name: str, value: Any) -> int | None:
    """A seed: None (a fresh one) or a whole number in 0..2^64-1."""
    return None if value is None else check_int(name, value, 0, MAX_SEED)


def refuse_non_finite(cfg: Any, where: str = "") -> None:
    """ConfigError for any NaN or infinite float in a (nested) dataclass config, lists included."""
    for f in dataclasses.fields(cfg):
        value, name = getattr(cfg, f.name), _join(where, f.name)
        if dataclasses.is_dataclass(value):
            refuse_non_finite(value, name)
        else:
            _refuse_non_finite_value(name, value)


def _refuse_non_finite_value(name: str, value: Any) -> None:
    for v in (value if isinstance(value, (list, tuple)) else [value]):
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"option '{name}' must be a finite number, got {value!r}")


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
        if _is_dataclass_type(tp):
            kwargs[key] = from_dict(tp, value, _join(where, key))  # checks its own fields
        else:
            _refuse_non_finite_value(_join(where, key), value)
            kwargs[key] = value
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
            value = float(text)
            if not math.isfinite(value):
                raise ConfigError(f"option '{name}' must be a finite number, got '{text}'")
            return value
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
