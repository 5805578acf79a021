"""The public Python API: ``aigc.load(run)`` gives a reusable model object.

A loaded model holds no global state and can serve many calls; generation
takes a per-piece callback (streaming, progress, cancellation).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import CheckpointError
from .pipelines.experts import ExpertImageModel, is_experts_folder, load_experts
from .pipelines.image import ImageModel, load_image_model, load_t2i_model
from .pipelines.text import GenerationConfig, TextModel, generation_config, load_text_model
from .pipelines.translate import Translator, load_translator
from .train import checkpoint as ckpt


Model = TextModel | Translator | ImageModel


def load(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> Model:
    """Load a trained model from a run folder (its best checkpoint) or a checkpoint folder.

    ``ema`` prefers the EMA weights when the run kept them. A folder with ``experts.json`` joins
    image runs trained on different noise levels (:mod:`aigc.pipelines.experts`).
    """
    if is_experts_folder(path):
        return load_experts(path, load, ema=ema, device=device)
    folder = ckpt.resolve(path)
    config = ckpt.read_config(folder)
    kind = config.get("kind")
    if kind == "gpt":
        return load_text_model(folder, config, ema, device)
    if kind == "seq2seq":
        return load_translator(folder, config, ema, device)
    if kind == "unet":
        return load_image_model(folder, config, ema, device)
    if kind == "t2i":
        return load_t2i_model(folder, config, ema, device)
    raise CheckpointError(f"'{path}' holds a '{kind}' model, which this version of aigc cannot load")


def load_kind(path: str | Path, kind: type, **kwargs) -> Model:
    """``load``, then check that the model is of the expected kind (for the CLI)."""
    model = load(path, **kwargs)
    if not isinstance(model, kind):
        what = {TextModel: "a language model", Translator: "a translation model",
                ImageModel: "an image diffusion model"}[kind]
        raise CheckpointError(f"'{path}' is not {what}")
    return model


__all__ = ["load", "load_kind", "TextModel", "Translator", "ImageModel", "ExpertImageModel", "GenerationConfig",
           "generation_config"]
