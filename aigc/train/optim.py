"""Optimiser construction and learning-rate schedules (pure functions of the step)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and embeddings (dim >= 2); never biases or norm gains."""
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() skips tied duplicates
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
               eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW with weight-decay groups; the fused kernel where the device has one."""
    device = next(model.parameters()).device
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused)


def lr_at(step: int, *, schedule: str, lr: float, min_lr: float, warmup: int, total: int,
          d_model: int | None = None) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    ``cosine``: linear warmup to ``lr`` then cosine decay to ``min_lr`` at ``total``.
    ``inverse_sqrt``: the "Noam" schedule of Vaswani et al. (2017), linear warmup
    then decay as 1/sqrt(step), scaled so that it peaks at ``lr``.
    ``constant``: warmup, then ``lr``.
    """
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule == "inverse_sqrt":
        return lr * math.sqrt(max(warmup, 1)) / math.sqrt(step + 1)
    if schedule == "cosine":
        if step >= total:
            return min_lr
        progress = (step - warmup) / max(1, total - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
    raise ConfigError(f"unknown learning-rate schedule '{schedule}'; use cosine, inverse_sqrt or constant")
