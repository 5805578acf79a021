"""The models one service offers: ``--model RUN`` or ``--model NAME=RUN`` (RUN: a run folder, a checkpoint,
an experts folder or ``zoo:NAME``), each loaded once and routed by its family's endpoints."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..families import FAMILIES, Family
from .errors import EndpointNotOffered, ModelNotFound

MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@dataclass
class ServedModel:
    name: str
    source: str           # what --model named
    family: Family
    model: Any            # the facade aigc.load returned: TextModel, Translator or ImageModel
    created: int          # UNIX seconds the service loaded it

    def serves(self, endpoint: str) -> bool:
        return endpoint in self.family.endpoints

    def card(self) -> dict[str, Any]:
        """The model as ``GET /v1/models`` lists it (OpenAI's fields, then ours)."""
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "aigc",
                "family": self.family.name, "endpoints": list(self.family.endpoints),
                "parameters": _parameters(self)}


def parse_spec(spec: str) -> tuple[str, str]:
    """``NAME=RUN`` -> (NAME, RUN); ``RUN`` -> (the folder's name, or the zoo name, RUN)."""
    name, eq, source = spec.partition("=")
    if not eq:
        source = spec
        name = spec[len("zoo:"):] if spec.startswith("zoo:") else Path(spec.rstrip("/")).name
    if not source:
        raise ConfigError(f"--model '{spec}' names no run (use RUN or NAME=RUN)")
    if not MODEL_NAME_RE.fullmatch(name):
        raise ConfigError(f"bad model name '{name}' in --model '{spec}': use 1-64 letters, digits, '.', '_', "
                          "':' or '-' (or give one: --model NAME=RUN)")
    return name, source


def load_models(specs: list[str], load: Callable[..., Any]) -> dict[str, ServedModel]:
    """Load every ``--model`` (``load`` is :func:`aigc.load`); two models of one name are an error."""
    if not specs:
        raise ConfigError("give at least one --model RUN (a run folder, or zoo:NAME)")
    out: dict[str, ServedModel] = {}
    for spec in specs:
        name, source = parse_spec(spec)
        if name in out:
            raise ConfigError(f"two models are named '{name}'; name them apart with --model NAME=RUN")
        model = load(source)
        out[name] = ServedModel(name, source, family_of(model), model, int(time.time()))
    return out


def family_of(model: Any) -> Family:
    kind = getattr(model, "config", {}).get("kind")
    family = FAMILIES.by_kind(kind)
    if family is None:
        matches = FAMILIES.by_facade(type(model))
        if not matches:
            raise ConfigError(f"no model family serves a {type(model).__name__}")
        family = matches[0]
    return family


def lookup(models: dict[str, ServedModel], name: Any, endpoint: str) -> ServedModel:
    """The model a request names, if it serves ``endpoint``: else 404 (unknown) or 400 (wrong endpoint)."""
    if not isinstance(name, str) or name not in models:
        raise ModelNotFound(f"The model '{name}' does not exist; this service has "
                            f"{', '.join(sorted(models)) or 'no models'}")
    served = models[name]
    if not served.serves(endpoint):
        raise EndpointNotOffered(f"the model '{name}' is {served.family.title} and is not served at {endpoint} "
                                 f"(it is at {', '.join(served.family.endpoints)})")
    return served


def _parameters(served: ServedModel) -> dict[str, Any]:
    """What a client needs to build a request: context, image shape, classes."""
    m = served.model
    out: dict[str, Any] = {}
    inner = getattr(m, "model", None)
    config = getattr(inner, "config", None)
    if hasattr(config, "block_size"):
        out["context_length"] = config.block_size
    if hasattr(m, "image_shape"):
        c, h, w = m.image_shape
        out.update(image_size=f"{w}x{h}", channels=c, text_conditional=m.text_conditional,
                   classes=list(m.class_names) if m.class_names else None)
    if hasattr(m, "transcribe"):
        out["sample_rate"] = m.sample_rate
    if hasattr(m, "src_lang"):
        out.update(source_language=m.src_lang, target_language=m.tgt_lang)
    return out
