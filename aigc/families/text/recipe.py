"""Train a GPT language model on a text corpus: config, presets and the wiring.

This is where the pieces meet: corpus -> tokenizer -> token windows -> GPT ->
next-token objective -> the generic trainer.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ... import checkpoint as ckpt
from ...config import apply_overrides
from ...data import load_text_corpus
from ...data.lm import TokenWindows
from ...errors import ConfigError, DataError
from ...models.gpt import GPT, GPTConfig
from ...objectives.lm import next_token_loss
from ...tokenizers import Tokenizer, tokenizer_from_dict, train_tokenizer
from ...train.config import TrainConfig
from ...train.trainer import Trainer
from ..runs import fit_vocab, load_preset, refuse_existing_run, saved_config, with_data
from . import FAMILY


@dataclass
class TokenizerConfig:
    kind: str = "char"            # char | bpe
    vocab_size: int | None = None  # BPE only


@dataclass
class TextRunConfig:
    data: str = "fortunes"
    val_fraction: float = 0.05
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def preset(name: str) -> TextRunConfig:
    return load_preset(TextRunConfig, FAMILY.name, name)


def build_config(preset_name: str, data: str | None, overrides: dict[str, str]) -> TextRunConfig:
    cfg = apply_overrides(preset(preset_name), with_data(data, overrides))
    if cfg.tokenizer.kind not in ("char", "bpe"):
        raise ConfigError(f"tokenizer.kind must be char or bpe, got '{cfg.tokenizer.kind}'")
    if not 0.0 < cfg.val_fraction < 0.5:
        raise ConfigError(f"val_fraction must be in (0, 0.5), got {cfg.val_fraction}")
    cfg.train.validate()
    return cfg


def encode(tok: Tokenizer, text: str) -> torch.Tensor:
    return torch.from_numpy(tok.encode_to_array(text).astype("int32"))


class LMValidation:
    """Mean loss over fixed validation windows (the score the trainer keeps 'best' by)."""

    def __init__(self, val_tokens: torch.Tensor, block_size: int, batches: int, batch_size: int) -> None:
        source = TokenWindows(val_tokens, block_size, batch_size, seed=0)
        self.batches = source.fixed_batches(batches, batch_size)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        losses = [next_token_loss(model, (x.to(device), y.to(device))).item() for x, y in self.batches]
        loss = sum(losses) / len(losses)
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}


def train(cfg: TextRunConfig, out: Path, *, resume: bool = False, stop_at: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a GPT into run folder ``out``; returns the final metrics."""
    out = Path(out)
    if resume:
        latest = ckpt.resolve(out, prefer=("latest",))
        try:
            tok = tokenizer_from_dict(json.loads(ckpt.read_text(latest, "tokenizer.json")))
        except json.JSONDecodeError:
            raise ConfigError(f"checkpoint '{latest}' has a corrupt tokenizer.json") from None
    refuse_existing_run(out, resume)
    corpus = load_text_corpus(cfg.data, val_fraction=cfg.val_fraction)
    if not resume:
        tok = train_tokenizer(cfg.tokenizer.kind, corpus.train, cfg.tokenizer.vocab_size)
    train_tokens, val_tokens = encode(tok, corpus.train), encode(tok, corpus.val)
    block = cfg.model.block_size
    if train_tokens.numel() < block + 2 or val_tokens.numel() < block + 2:
        raise DataError(f"corpus '{cfg.data}' is too small for a context of {block} tokens "
                        f"({train_tokens.numel()} training, {val_tokens.numel()} validation tokens); "
                        "use more text or a smaller --model.block_size")
    fit_vocab(cfg.model, tok.vocab_size)
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model)
    meta = {"data": cfg.data, "val_fraction": cfg.val_fraction, "tokenizer": asdict(cfg.tokenizer),
            "model": asdict(cfg.model)}
    trainer = Trainer(
        model, next_token_loss, TokenWindows(train_tokens, block, cfg.train.batch_size, cfg.train.seed),
        cfg.train, out, kind=FAMILY.kind, meta=meta, files={"tokenizer.json": json.dumps(tok.to_dict())},
        evaluate=LMValidation(val_tokens, block, cfg.train.eval_batches, cfg.train.batch_size),
        progress=progress)
    result = trainer.run(resume=resume, stop_at=stop_at)
    return {"run": str(out), "params": model.num_params(), "train_tokens": train_tokens.numel(),
            "val_tokens": val_tokens.numel(), **result}


def resume_config(out: Path, overrides: dict[str, str]) -> TextRunConfig:
    """The config a run was started with, with (training-only) overrides applied."""
    return saved_config(TextRunConfig, FAMILY.kind, "a text run", out, overrides)
