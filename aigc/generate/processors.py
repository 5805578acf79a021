"""Logits processors: small functions applied in order before each token is chosen.

Each takes logits (B, V) and the ids seen so far as a presence mask (B, V)
and returns new logits. Together they give temperature, top-k, top-p
(nucleus, Holtzman et al. 2020) and the repetition penalty of CTRL
(Keskar et al. 2019).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Processor = Callable[[Tensor, Tensor], Tensor]


def temperature(t: float) -> Processor:
    def apply(logits: Tensor, seen: Tensor) -> Tensor:
        return logits / t
    return apply


def top_k(k: int) -> Processor:
    def apply(logits: Tensor, seen: Tensor) -> Tensor:
        if k >= logits.size(-1):
            return logits
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        return logits.masked_fill(logits < kth, float("-inf"))
    return apply


def top_p(p: float) -> Processor:
    """Keep the smallest set of tokens whose probabilities add up to at least ``p``."""
    def apply(logits: Tensor, seen: Tensor) -> Tensor:
        if p >= 1.0:
            return logits
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches p (the top one always stays)
        drop = (probs.cumsum(-1) - probs) >= p
        drop_in_vocab = torch.zeros_like(drop).scatter(-1, order, drop)
        return logits.masked_fill(drop_in_vocab, float("-inf"))
    return apply


def repetition_penalty(penalty: float) -> Processor:
    """Divide positive logits (multiply negative ones) of tokens already seen by ``penalty``."""
    def apply(logits: Tensor, seen: Tensor) -> Tensor:
        penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
        return torch.where(seen, penalised, logits)
    return apply


def draw(probs: Tensor, uniforms: Tensor) -> Tensor:
    """One token per row of ``probs`` (B, V) by inverse transform sampling: the first token whose cumulative
    probability exceeds ``uniforms`` (B,) in [0, 1) times the row's total. Each row consumes exactly one
    uniform, so a row drawn with its own generator gets the same tokens in any batch."""
    cdf = probs.cumsum(-1)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=probs.size(-1) - 1)
