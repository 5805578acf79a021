"""Exponential moving average of model weights (Polyak averaging)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .state import unique_state


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * weights`` after every step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in unique_state(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = unique_state(model)
        names = list(self.shadow)
        shadows = [self.shadow[n] for n in names]
        weights = [current[n].detach().float() for n in names]
        torch._foreach_lerp_(shadows, weights, 1.0 - self.decay)

    def state(self) -> dict[str, Tensor]:
        return self.shadow

    def load(self, tensors: dict[str, Tensor]) -> None:
        for k, v in tensors.items():
            self.shadow[k].copy_(v)
