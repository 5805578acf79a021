"""The public Python API: ``aigc.load(run)`` gives a reusable model object.

A loaded model holds no global state and can serve many calls; generation
takes a per-piece callback (streaming, progress, cancellation).
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator

import torch

from .config import from_dict
from .data import load_text_corpus
from .errors import CheckpointError, ConfigError
from .eval.perplexity import LMScore, score_tokens
from .generate.text import GenerationConfig, TextCallback, generate_text, stream_text
from .models.gpt import GPT, GPTConfig
from .tokenizers import Tokenizer, tokenizer_from_dict
from .train import checkpoint as ckpt
from .train.state import load_unique_state

GEN_FIELDS = {f.name for f in fields(GenerationConfig)}


class TextModel:
    """A trained GPT and its tokenizer."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, config: dict[str, Any], path: Path) -> None:
        self.model, self.tokenizer, self.config, self.path = model.eval(), tokenizer, config, path

    def generate(self, prompt: str | list[str], *, on_text: TextCallback | None = None,
                 **options: Any) -> str | list[str]:
        """Continue ``prompt`` (or each of a list of prompts).

        Options: max_new_tokens, temperature (0 = greedy), top_k, top_p,
        repetition_penalty, stop (list of strings), seed, stop_at_eos.
        """
        cfg = generation_config(**options)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        texts = generate_text(self.model, self.tokenizer, prompts, cfg, on_text=on_text)
        return texts[0] if isinstance(prompt, str) else texts

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        """Yield pieces of the continuation of ``prompt`` as they are produced."""
        cfg = generation_config(**options)
        for _, piece in stream_text(self.model, self.tokenizer, [prompt], cfg):
            yield piece

    def evaluate(self, text: str | None = None, *, max_tokens: int | None = 1_000_000,
                 batch_size: int = 16) -> LMScore:
        """Loss, perplexity and bits per char/byte on ``text`` (default: the held-out split)."""
        if text is None:
            text = load_text_corpus(self.config["data"], val_fraction=self.config["val_fraction"]).val
        tokens = torch.from_numpy(self.tokenizer.encode_to_array(text).astype("int64"))
        if max_tokens is not None:
            tokens = tokens[:max_tokens]
        unit = "char" if self.tokenizer.kind == "char" else "byte"
        counts = torch.tensor(unit_table(self.tokenizer, unit))[tokens]
        return score_tokens(self.model, tokens, counts, unit, batch_size=batch_size)

    @property
    def num_params(self) -> int:
        return self.model.num_params()


def unit_table(tok: Tokenizer, unit: str) -> list[int]:
    """Characters (UTF-8 lead bytes) or bytes each token id spells."""
    table = []
    for i in range(tok.vocab_size):
        b = b"" if i == tok.eos_id else tok.token_bytes(i)
        table.append(len(b) if unit == "byte" else sum(1 for c in b if c & 0xC0 != 0x80))
    return table


def generation_config(**options: Any) -> GenerationConfig:
    unknown = sorted(set(options) - GEN_FIELDS)
    if unknown:
        raise ConfigError(f"unknown generation option '{unknown[0]}'; valid: {', '.join(sorted(GEN_FIELDS))}")
    cfg = GenerationConfig(**options)
    cfg.validate()
    return cfg


def load(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> TextModel:
    """Load a trained model from a run folder (its best checkpoint) or a checkpoint folder."""
    folder = ckpt.resolve(path)
    config = ckpt.read_config(folder)
    kind = config.get("kind")
    if kind != "gpt":
        raise CheckpointError(f"'{path}' holds a '{kind}' model, which this version of aigc cannot load")
    try:
        gpt_config = from_dict(GPTConfig, config["model"])
        tokenizer = tokenizer_from_dict(json.loads(ckpt.read_text(folder, "tokenizer.json")))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint '{folder}' has a broken config ({exc})") from None
    model = GPT(gpt_config)
    stem = "ema" if ema and (folder / "ema.safetensors").exists() else "model"
    load_unique_state(model, ckpt.read_tensors(folder, stem))
    for p in model.parameters():
        if not torch.isfinite(p).all():
            raise CheckpointError(f"checkpoint '{folder}' holds non-finite weights")
    return TextModel(model.to(device), tokenizer, config, folder)


__all__ = ["load", "TextModel", "GenerationConfig", "LMScore"]
