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
