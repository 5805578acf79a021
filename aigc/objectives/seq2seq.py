"""Label-smoothed cross-entropy for sequence-to-sequence training (Szegedy et al. 2016)."""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import IGNORE


def label_smoothed_loss(smoothing: float = 0.1) -> Callable[[nn.Module, tuple[Tensor, Tensor, Tensor]], Tensor]:
    """Objective: mean over real target tokens of CE with ``smoothing`` mass spread over the vocabulary."""
    def objective(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        src, tgt_in, tgt_out = batch
        logits = model(src, tgt_in)  # (B, T, V)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), tgt_out.view(-1),
                               ignore_index=IGNORE, label_smoothing=smoothing)
    return objective
