"""The public Python API: ``aigc.load(run)`` gives a reusable model object.

A loaded model holds no global state and can serve many calls; generation
takes a per-piece callback (streaming, progress, cancellation). Which class it
is follows from the family the checkpoint records (:mod:`aigc.families`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .checkpoint import zoo
from .diffusion import SamplingConfig, sampling_config
from .errors import CheckpointError
from .families import FAMILIES
from .families.asr.model import SpeechRecognizer
from .families.image.experts import ExpertImageModel
from .families.image.model import ImageModel
from .families.text.model import GenerationConfig, TextModel, generation_config
from .families.translate.model import Translator
from .generate.seq2seq import DecodeConfig

Model = TextModel | Translator | ImageModel | SpeechRecognizer


def load(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> Model:
    """Load a trained model from a run folder (its best checkpoint) or a checkpoint folder.

    ``ema`` prefers the EMA weights when the run kept them. A family may also open folders that are not
    one checkpoint (image: a folder with ``experts.json`` joins runs trained on different noise levels).
    ``zoo:NAME`` loads a model of the shipped zoo (``aigc/checkpoint/zoo.py``), its files checked first.
    """
    if zoo.is_ref(path):  # verified against the zoo's manifest; its float16 weights are upcast on purpose
        folder = zoo.resolve(path)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*stores weights as F16.*", category=UserWarning)
            return load(folder, ema=ema, device=device)
    for family in FAMILIES:
        if family.folder_loader:
            model = family.ref("folder_loader")(path, load, ema=ema, device=device)
            if model is not None:
                return model
    folder = ckpt.resolve(path)
    config = ckpt.read_config(folder)
    family = FAMILIES.by_kind(config.get("kind"))
    if family is None:
        raise CheckpointError(f"'{path}' holds a '{config.get('kind')}' model, which this version of aigc "
                              f"cannot load (it knows {', '.join(f.kind for f in FAMILIES)})")
    return family.ref("loader")(folder, config, ema, device)


def load_kind(path: str | Path, kind: type, **kwargs: Any) -> Model:
    """``load``, then check that the model is of the expected class (for the CLI)."""
    model = load(path, **kwargs)
    if not isinstance(model, kind):
        titles = [f.title for f in FAMILIES.by_facade(kind)]
        raise CheckpointError(f"'{path}' is not {' or '.join(dict.fromkeys(titles)) or kind.__name__}")
    return model


__all__ = ["load", "load_kind", "Model", "TextModel", "Translator", "ImageModel", "ExpertImageModel",
           "SpeechRecognizer", "GenerationConfig", "generation_config", "SamplingConfig", "sampling_config", "DecodeConfig"]
