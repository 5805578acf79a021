"""Train a text-to-image diffusion model: config, presets and the wiring.

captioned images -> CaptionBatches (one caption per image and step, tokenized)
-> TextToImage (text encoder -> UNet cross-attention) -> DiffusionObjective
(hybrid loss, learned Σ, caption dropout to the empty prompt for guidance)
-> the generic trainer, validated by the loss terms on a fixed held-out batch.

The text encoder is ``own`` (our Transformer, trained from scratch with the
UNet, on a BPE learned from the training captions) or ``minilm`` (the frozen
pre-trained all-MiniLM-L6-v2 with its WordPiece tokenizer, from its package).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ... import checkpoint as ckpt
from ...checkpoint.loading import read_tokenizer
from ...data.captioned import CaptionedImages, load_captioned_images, load_shapes_captioned, pick_caption
from ...data.images import ImageBatches
from ...data.shapes import SceneMix
from ...diffusion import GaussianDiffusion
from ...diffusion.config import DiffusionConfig
from ...config import check_int
from ...errors import ConfigError, DataError
from ...models.minilm import load_minilm_tokenizer
from ...models.t2i import TEXT_ENCODERS, TextToImage, build_text_to_image
from ...models.text_encoder import TextEncoderConfig
from ...models.unet import UNetConfig
from ...objectives.diffusion import DiffusionObjective
from ...tokenizers import Tokenizer, train_tokenizer
from ...tokenizers.batch import TokenBatch, tokenize_prompts
from ...train.config import TrainConfig
from ...train.trainer import Trainer
from ..image.recipe import MAX_IMAGE_SIZE, DiffusionValidation
from ..runs import fit_vocab, load_preset, preset_with, refuse_existing_run, saved_config, with_data
from . import FAMILY



@dataclass
class TokenizerSettings:
    kind: str = "bpe"            # char | bpe (the own encoder; MiniLM brings its WordPiece)
    vocab_size: int | None = 2000


@dataclass
class T2IRunConfig:
    data: str = "shapes"
    image_size: int = 32
    train_images: int = 50_000       # shapes only: scenes generated for training
    text_encoder: str = "own"        # own | minilm
    max_text_len: int = 32           # tokens per caption (longer ones are cut, with a warning at sampling)
    caption_dropout: float = 0.1     # captions replaced by the empty prompt (classifier-free guidance)
    val_images: int = 256
    hflip: bool = False              # flips change "left of" into "right of": off by default
    shapes: SceneMix = field(default_factory=SceneMix)  # the training scenes' mix (tests keep the default)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if self.text_encoder not in TEXT_ENCODERS:
            raise ConfigError(f"text_encoder must be one of {', '.join(TEXT_ENCODERS)}, got '{self.text_encoder}'")
        check_int("image_size", self.image_size, 8, MAX_IMAGE_SIZE)
        check_int("val_images", self.val_images, 1, 1_000_000)
        check_int("train_images", self.train_images, 1, 100_000_000)
        if not 2 <= self.max_text_len:
            raise ConfigError(f"max_text_len must be at least 2, got {self.max_text_len}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ConfigError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        self.diffusion.validate()
        self.train.validate()


def preset(name: str) -> T2IRunConfig:
    return load_preset(T2IRunConfig, FAMILY.name, name)


def build_config(preset_name: str, data: str | None, overrides: dict[str, Any]) -> T2IRunConfig:
    return preset_with(T2IRunConfig, FAMILY.name, preset_name, with_data(data, overrides))


def resume_config(out: Path, overrides: dict[str, str]) -> T2IRunConfig:
    return saved_config(T2IRunConfig, FAMILY.kind, "a text-to-image run", out, overrides)


def load_split(cfg: T2IRunConfig, split: str) -> CaptionedImages:
    """The run's captioned images of ``split`` (train / test)."""
    if cfg.data == "shapes":
        n = cfg.train_images if split == "train" else max(cfg.val_images, 1)
        return load_shapes_captioned(split, cfg.image_size, n=n, mix=cfg.shapes)
    data = load_captioned_images(cfg.data, split, cfg.image_size)
    if len(data) == 0:
        raise DataError(f"the {split} split of '{cfg.data}' is empty")
    return data


class CaptionBatches:
    """The trainer's batch source over captioned images: the images of :class:`ImageBatches` (same
    order, a pure function of (seed, step)), each with one of its captions picked by
    :func:`pick_caption` and tokenized. ``batch`` returns ``{"x", "ids", "mask"}``."""

    def __init__(self, data: CaptionedImages, tokenize: Callable[[list[str]], TokenBatch], batch_size: int,
                 seed: int = 0, hflip: bool = False) -> None:
        self.images = ImageBatches(data.as_image_dataset(), batch_size, seed, hflip=hflip, use_labels=False)
        self.data, self.tokenize, self.seed = data, tokenize, seed

    def items(self, step: int) -> int:
        return self.images.items(step)

    def batch(self, step: int, part: int = 0, parts: int = 1) -> dict[str, Tensor]:
        x = self.images.batch(step, part, parts)["x"]
        rows = self.images.batch_size // parts
        idx = self.images.indices(step)[part * rows:(part + 1) * rows].tolist()
        texts = [pick_caption(self.data.captions[i], self.data.ids[i], step, self.seed) for i in idx]
        tokens = self.tokenize(texts)
        return {"x": x, "ids": tokens.ids, "mask": tokens.mask}


class TextValidation(DiffusionValidation):
    """Validation of a text-to-image model: the held-out images with their primary captions."""

    def __init__(self, process: GaussianDiffusion, data: CaptionedImages, n: int,
                 tokenize: Callable[[list[str]], TokenBatch]) -> None:
        super().__init__(process, data.images, n)
        self.tokens = tokenize([data.captions[i][0] for i in self.index.tolist()])

    def condition(self, sl: slice, device: torch.device) -> tuple[Tensor, Tensor]:
        return self.tokens.ids[sl].to(device), self.tokens.mask[sl].to(device)


def prompt_tokenizer(cfg: T2IRunConfig, tok: Tokenizer | None) -> Callable[[list[str]], TokenBatch]:
    """Prompts -> TokenBatch for this run's encoder (MiniLM's WordPiece, or our own tokenizer)."""
    tokenizer = load_minilm_tokenizer() if cfg.text_encoder == "minilm" else tok
    return lambda texts: tokenize_prompts(tokenizer, texts, cfg.max_text_len)


def build_model(cfg: T2IRunConfig) -> TextToImage:
    """The UNet with its text encoder, as the config says (``model.context_dim`` and, for MiniLM,
    ``text`` set from the encoder)."""
    model = build_text_to_image(cfg.model, cfg.text, cfg.text_encoder)
    cfg.text = model.text_encoder.config
    return model


def complete_config(cfg: T2IRunConfig, data: CaptionedImages, tok: Tokenizer | None) -> None:
    """Fill in what the data and tokenizer decide: image size and channels, learned Σ, vocabulary."""
    m = cfg.model
    m.image_size, m.in_channels, m.num_classes = data.image_size, 3, None
    m.learn_sigma = cfg.diffusion.learn_sigma
    if tok is not None:
        fit_vocab(cfg.text, tok.vocab_size)
        cfg.text.pad_id = tok.eos_id
        cfg.text.max_len = max(cfg.text.max_len, cfg.max_text_len)


def train(cfg: T2IRunConfig, out: Path, *, resume: bool = False, stop_at: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a text-to-image model into run folder ``out``; returns the final metrics."""
    out = Path(out)
    refuse_existing_run(out, resume)
    train_data, test_data = load_split(cfg, "train"), load_split(cfg, "test")
    tok = None
    if cfg.text_encoder == "own":
        if resume:
            tok = read_tokenizer(ckpt.resolve(out, prefer=("latest",)))
        else:
            captions = "\n".join(c for caps in train_data.captions for c in caps)
            tok = train_tokenizer(cfg.tokenizer.kind, captions, cfg.tokenizer.vocab_size)
    complete_config(cfg, train_data, tok)
    tokenize = prompt_tokenizer(cfg, tok)
    process = cfg.diffusion.process()
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)
    source = CaptionBatches(train_data, tokenize, cfg.train.batch_size, cfg.train.seed, hflip=cfg.hflip)
    empty = tokenize([""]).ids[0]
    objective = DiffusionObjective(process, cfg.diffusion.timestep_sampler_for(process.num_timesteps),
                                   cfg.caption_dropout, empty_prompt=empty)
    meta = {k: v for k, v in asdict(cfg).items() if k != "train"}
    files = {"tokenizer.json": json.dumps(tok.to_dict())} if tok is not None else {}
    trainer = Trainer(model, objective, source, cfg.train, out, kind=FAMILY.kind, meta=meta, files=files,
                      evaluate=TextValidation(process, test_data, cfg.val_images, tokenize), progress=progress,
                      unit="images")
    result = trainer.run(resume=resume, stop_at=stop_at)
    return {"run": str(out), "params": model.num_params(), "train_images": len(train_data),
            "image_size": train_data.image_size, "text_encoder": cfg.text_encoder, **result}
