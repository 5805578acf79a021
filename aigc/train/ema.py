"""Exponential moving average of model weights (Polyak averaging)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..checkpoint.state import unique_state


class EMA:
    """Keeps ``shadow = d * shadow + (1 - d) * weights`` after every step, with the decay warmed up as
    d = min(decay, (1 + step) / (10 + step)): without it a short run's average keeps a large share of
    the initial weights (0.999**1000 = 37 %), which ruins e.g. a diffusion model's samples."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in unique_state(model).items()}

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Average in the weights after optimizer step ``step`` (0-based; a pure function of it, for resume)."""
        current = unique_state(model)
        names = list(self.shadow)
        shadows = [self.shadow[n] for n in names]
        weights = [current[n].detach().float() for n in names]
        torch._foreach_lerp_(shadows, weights, 1.0 - self.decay_at(step))

    def state(self) -> dict[str, Tensor]:
        return self.shadow

    def load(self, tensors: dict[str, Tensor]) -> None:
        for k, v in tensors.items():
            self.shadow[k].copy_(v)
