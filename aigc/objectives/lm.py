"""The causal language-modelling objective: next-token cross-entropy."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def next_token_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Mean cross-entropy (nats/token) of predicting y (B, T) from x (B, T)."""
    x, y = batch
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
