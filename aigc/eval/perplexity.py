"""Held-out likelihood of a language model: loss, perplexity, bits per character/byte."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LMScore:
    loss: float          # mean nats per token
    perplexity: float    # exp(loss)
    bits_per_unit: float  # bits per character (char tokenizer) or per UTF-8 byte (BPE)
    unit: str            # "char" | "byte"
    tokens: int          # tokens scored
    units: int           # characters or bytes those tokens spell


@torch.inference_mode()
def score_tokens(model: nn.Module, tokens: Tensor, unit_counts: Tensor, unit: str,
                 batch_size: int = 16) -> LMScore:
    """Score every token of ``tokens`` (1-D) but the first, in windows of the context size.

    Windows of ``block + 1`` tokens overlap by one, so each token is predicted
    once from up to ``block`` tokens of the same window. ``unit_counts[i]`` is
    how many characters/bytes token i stands for (for bits per unit).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    block = model.config.block_size
    n = tokens.numel()
    starts = list(range(0, max(n - 1, 1), block))
    total_nats, total_tokens = 0.0, 0
    for i in range(0, len(starts), batch_size):
        windows = [tokens[s:s + block + 1] for s in starts[i:i + batch_size]]
        width = max(w.numel() for w in windows)
        x = torch.zeros(len(windows), width - 1, dtype=torch.long)
        y = torch.full((len(windows), width - 1), -100, dtype=torch.long)
        for r, w in enumerate(windows):
            x[r, :w.numel() - 1] = w[:-1]
            y[r, :w.numel() - 1] = w[1:]
        logits = model(x.to(device))
        nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.to(device).reshape(-1),
                              ignore_index=-100, reduction="sum")
        total_nats += nll.item()
        total_tokens += int((y != -100).sum())
    model.train(was_training)
    units = int(unit_counts[1:].sum())
    loss = total_nats / max(total_tokens, 1)
    return LMScore(loss=loss, perplexity=math.exp(min(loss, 700.0)),
                   bits_per_unit=total_nats / max(units, 1) / math.log(2), unit=unit,
                   tokens=total_tokens, units=units)
