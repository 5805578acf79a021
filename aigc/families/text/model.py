"""A trained GPT language model behind generate / stream / evaluate."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from ...checkpoint.loading import build_model, read_tokenizer
from ...config import with_options
from ...data import load_text_corpus
from ...eval.perplexity import LMScore, score_tokens
from ...generate.text import GenerationConfig, TextCallback, generate_text, stream_text
from ...models.gpt import GPT, GPTConfig
from ...tokenizers import Tokenizer


class TextModel:
    """A trained GPT and its tokenizer."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, config: dict[str, Any], path: Path) -> None:
        self.model, self.tokenizer, self.config, self.path = model.eval(), tokenizer, config, path

    def generate(self, prompt: str | list[str], config: GenerationConfig | None = None, *,
                 on_text: TextCallback | None = None, **options: Any) -> str | list[str]:
        """Continue ``prompt`` (or each of a list of prompts) as ``config`` says; keyword ``options``
        replace its fields: max_new_tokens, temperature (0 = greedy), top_k, top_p,
        repetition_penalty, stop (list of strings), seed, stop_at_eos.
        """
        cfg = generation_config(config, **options)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        texts = generate_text(self.model, self.tokenizer, prompts, cfg, on_text=on_text)
        return texts[0] if isinstance(prompt, str) else texts

    def stream(self, prompt: str, config: GenerationConfig | None = None, **options: Any) -> Iterator[str]:
        """Yield pieces of the continuation of ``prompt`` as they are produced."""
        cfg = generation_config(config, **options)
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


def generation_config(base: GenerationConfig | None = None, **options: Any) -> GenerationConfig:
    """``base`` (default: the defaults) with keyword ``options`` replaced; an unknown option is an error."""
    return with_options(GenerationConfig, base, "generation", options)


def load_text_model(folder: Path, config: dict[str, Any], ema: bool = True,
                    device: str | torch.device = "cpu") -> TextModel:
    model = build_model(folder, config, GPT, GPTConfig, ema)
    return TextModel(model.to(device), read_tokenizer(folder), config, folder)
