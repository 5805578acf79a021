"""Loading a text-to-image run: an :class:`~aigc.families.image.model.ImageModel` that takes prompts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...checkpoint.loading import check_against_header, load_weights, read_tokenizer, weights_file
from ...config import from_dict
from ...errors import CheckpointError, ConfigError
from ...models.minilm import load_minilm_tokenizer
from ...models.t2i import build_text_to_image
from ...models.text_encoder import TextEncoderConfig
from ...models.unet import UNetConfig
from ...tokenizers.batch import tokenize_prompts
from ..image.model import ImageModel, read_process


def load_t2i_model(folder: Path, config: dict[str, Any], ema: bool, device: str | torch.device) -> ImageModel:
    """A text-to-image checkpoint: the UNet and its own text encoder from the weights, or the frozen
    MiniLM from its package; prompts through the run's tokenizer (or MiniLM's WordPiece)."""
    try:
        kind = config["text_encoder"]
        unet_cfg = from_dict(UNetConfig, config["model"])
        text_cfg = from_dict(TextEncoderConfig, config["text"])
        max_len = int(config["max_text_len"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"checkpoint '{folder}' has a broken config ({exc})") from None
    check_against_header(folder, weights_file(folder, ema), lambda: build_text_to_image(unet_cfg, text_cfg, kind))
    try:
        model = build_text_to_image(unet_cfg, text_cfg, kind)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"checkpoint '{folder}' has a broken config ({exc})") from None
    load_weights(folder, model, ema)
    tokenizer = load_minilm_tokenizer() if kind == "minilm" else read_tokenizer(folder)
    return ImageModel(model.to(device), read_process(folder, config), config, Path(folder),
                      tokenize=lambda texts: tokenize_prompts(tokenizer, texts, max_len))
