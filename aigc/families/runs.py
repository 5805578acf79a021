"""What every recipe does the same way: presets shipped as package data, and resuming a run with
the config it was started with."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TypeVar

from .. import checkpoint as ckpt
from ..config import apply_overrides, from_dict
from ..errors import ConfigError

C = TypeVar("C")
PRESETS = ("tiny", "small", "base")


def load_preset(cls: type[C], family: str, name: str) -> C:
    """``aigc/families/{family}/presets/{name}.json`` as a ``cls``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    preset_file = resources.files(f"aigc.families.{family}").joinpath("presets", f"{name}.json")
    text = preset_file.read_text(encoding="utf-8")
    return from_dict(cls, json.loads(text))


def preset_with(cls: type[C], family: str, name: str, overrides: dict[str, str]) -> C:
    """A preset with ``--section.key=value`` overrides applied, validated."""
    cfg = apply_overrides(load_preset(cls, family, name), overrides)
    cfg.validate()
    return cfg


def with_data(data: str | None, overrides: dict[str, str]) -> dict[str, str]:
    """``overrides`` with ``data`` set when given (None: the preset's own data set)."""
    return {**({"data": data} if data is not None else {}), **overrides}


def saved_config(cls: type[C], kind: str, what: str, out: Path, overrides: dict[str, str]) -> C:
    """The ``cls`` config of the run in ``out`` (a ``kind`` checkpoint), with training-only overrides.
    A misspelt option is "unknown"; a real one outside ``train.`` (data, model shape...) cannot change.
    ``train.max_minutes`` given here means that many minutes more than the run has trained (the config
    holds the run's whole budget); ``train.max_steps`` is the run's new total."""
    saved = ckpt.read_config(ckpt.resolve(out, prefer=("latest",)))
    if saved.get("kind") != kind:
        raise ConfigError(f"'{out}' is not {what}")
    names = list(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    cfg = from_dict(cls, {k: saved[k] for k in names if k in saved})
    for key, value in overrides.items():
        apply_overrides(cfg, {key: value})  # an unknown name fails here, as for a new run
    bad = [k for k in overrides if not k.startswith("train.")]
    if bad:
        raise ConfigError(f"'--{bad[0]}' cannot change when resuming '{out}'; only --train.* options and "
                          "the budgets (--max-steps, --max-minutes) can")
    cfg = apply_overrides(cfg, overrides)
    if "train.max_minutes" in overrides and cfg.train.max_minutes is not None:
        cfg.train.max_minutes += _elapsed_minutes(out)  # "--max-minutes M" on resume: M more minutes
    if hasattr(cfg, "validate"):
        cfg.validate()
    else:
        cfg.train.validate()
    return cfg


def _elapsed_minutes(out: Path) -> float:
    """Wall-clock minutes the run in ``out`` has trained so far (its latest checkpoint's clock)."""
    latest = ckpt.resolve(out, prefer=("latest",))
    try:
        return float(json.loads(ckpt.read_text(latest, "trainer_state.json"))["elapsed"]) / 60.0
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ConfigError(f"checkpoint '{latest}' has a corrupt trainer_state.json") from None


def refuse_existing_run(out: Path, resume: bool) -> None:
    """A new run never overwrites a trained one: that needs --resume (or another --out)."""
    if not resume and ckpt.has_checkpoint(out):
        raise ConfigError(f"'{out}' already holds a trained run; pass --resume to continue it, or choose another --out")


def fit_vocab(model_cfg, vocab_size: int) -> None:
    """Set ``model_cfg.vocab_size`` from the tokenizer when 0; refuse one too small for it."""
    if model_cfg.vocab_size == 0:
        model_cfg.vocab_size = vocab_size
    elif model_cfg.vocab_size < vocab_size:
        raise ConfigError(f"model.vocab_size {model_cfg.vocab_size} is smaller than the tokenizer's {vocab_size}")
