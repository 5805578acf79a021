"""Prompts -> a padded batch of token ids with its attention mask, for text encoders.

Every row is cut to ``max_len`` tokens; ``truncated`` says which rows lost
tokens, so callers can warn "prompt truncated" (``lengths`` gives the full
counts). Padding goes on the right and is marked False in ``mask``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from aigc.errors import ConfigError
from aigc.tokenizers.base import Tokenizer


@dataclass
class TokenBatch:
    ids: Tensor             # (B, L) int64, right-padded
    mask: Tensor            # (B, L) bool, True at real tokens
    lengths: list[int]     # tokens each prompt had before truncation (specials included)
    truncated: list[bool]  # rows cut to max_len

    @property
    def any_truncated(self) -> bool:
        return any(self.truncated)

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(self.ids.to(device), self.mask.to(device), self.lengths, self.truncated)


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, lengths: Sequence[int] | None = None,
              truncated: Sequence[bool] | None = None) -> TokenBatch:
    """Right-pad already-truncated id lists to the longest one."""
    if not rows:
        raise ConfigError("cannot encode an empty list of prompts; give at least one (\"\" is the empty prompt)")
    width = max(max(len(r) for r in rows), 1)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = True
    lengths = list(lengths) if lengths is not None else [len(r) for r in rows]
    truncated = list(truncated) if truncated is not None else [False] * len(rows)
    return TokenBatch(ids, mask, lengths, truncated)


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> TokenBatch:
    """Prompts through one of our tokenizers (char, BPE): ``<|endoftext|>`` + the text's tokens.

    The leading end-of-text id works as a start (CLS-like) token, so even the
    empty prompt has one real token; padding uses the same id (masked out).
    """
    if isinstance(texts, str):
        raise ConfigError("encode_batch takes a list of prompts, not one string; wrap it in a list")
    if max_len < 1:
        raise ConfigError(f"max_len must be at least 1, got {max_len}")
    start = tokenizer.eos_id
    full = [[start, *tokenizer.encode(t)] for t in texts]
    return pad_batch([r[:max_len] for r in full], start, [len(r) for r in full], [len(r) > max_len for r in full])


def tokenize_prompts(tokenizer, texts: Sequence[str], max_len: int) -> TokenBatch:
    """Prompts -> TokenBatch through any of our tokenizers: WordPiece adds its own [CLS]/[SEP]
    (``tokenizer.encode_batch``), char and BPE get :func:`encode_batch`'s start token."""
    if hasattr(tokenizer, "encode_batch"):
        return tokenizer.encode_batch(list(texts), max_len)
    return encode_batch(tokenizer, texts, max_len)
