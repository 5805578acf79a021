"""Reading a checkpoint folder into a model: shared by every pipeline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..config import from_dict
from ..errors import CheckpointError
from ..tokenizers import Tokenizer, tokenizer_from_dict
from .state import load_unique_state

M = TypeVar("M", bound=nn.Module)


def read_tokenizer(folder: Path) -> Tokenizer:
    try:
        return tokenizer_from_dict(json.loads(ckpt.read_text(folder, "tokenizer.json")))
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint '{folder}' has a corrupt tokenizer.json") from None


def build_model(folder: Path, config: dict[str, Any], model_cls: type[M], config_cls: type,
                ema: bool = True) -> M:
    """Instantiate ``model_cls(config_cls(**config["model"]))`` and load its (EMA) weights."""
    try:
        model = model_cls(from_dict(config_cls, config["model"]))
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint '{folder}' has a broken config ({exc})") from None
    return load_weights(folder, model, ema)


def load_weights(folder: Path, model: M, ema: bool = True) -> M:
    """Load a checkpoint's (EMA) weights into ``model``, strictly, refusing non-finite ones."""
    stem = "ema" if ema and (Path(folder) / "ema.safetensors").exists() else "model"
    load_unique_state(model, ckpt.read_tensors(folder, stem))
    for p in model.parameters():
        if not torch.isfinite(p).all():
            raise CheckpointError(f"checkpoint '{folder}' holds non-finite weights")
    return model.eval()
