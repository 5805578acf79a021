"""Classifier-free guidance (Ho & Salimans 2021) as a closure around the model, and label dropout."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError

ConditionalModel = Callable[[Tensor, Tensor, Tensor], Tensor]  # model(x, t, labels) -> output


def classifier_free(model: ConditionalModel, labels: Tensor, scale: float, null_label: int,
                    learned_sigma: bool | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """A ``model_fn(x, t)`` for the samplers that returns uncond + scale·(cond − uncond)
    (Ho & Salimans 2021, eq. 6, written as ε̃ = (1+w) ε_c − w ε_u with scale = 1 + w).

    Both halves run in one batch of 2B. Only the first C mean channels (C = x.shape[1]) are guided; any
    further channels (a learned variance) are taken from the conditional output. ``learned_sigma`` may be
    given to check the output's channel count (None: inferred). Scale 1 returns the conditional model
    itself, bit for bit, at the cost of one batch of B.
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels must be a 1-D tensor of class indices, got shape {tuple(labels.shape)}")
    scale = float(scale)

    if scale == 1.0:
        def conditional(x: Tensor, t: Tensor) -> Tensor:
            return model(x, t, labels.to(x.device))
        return conditional

    def guided(x: Tensor, t: Tensor) -> Tensor:
        B, C = x.shape[0], x.shape[1]
        if labels.shape[0] != B:
            raise ValueError(f"{labels.shape[0]} labels for a batch of {B}")
        y = labels.to(x.device)
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
        cond, uncond = out[:B], out[B:]
        if learned_sigma is not None and out.shape[1] != (2 * C if learned_sigma else C):
            raise ValueError(f"model gave {out.shape[1]} channels; expected {2 * C if learned_sigma else C}")
        mean = uncond[:, :C] + scale * (cond[:, :C] - uncond[:, :C])
        return torch.cat([mean, cond[:, C:]], dim=1) if out.shape[1] > C else mean

    return guided


def drop_labels(labels: Tensor, p: float, null_label: int, generator: torch.Generator | None = None) -> Tensor:
    """Replace each label by ``null_label`` with probability p (training for classifier-free guidance:
    the null class becomes the unconditional model)."""
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"label dropout probability must be in [0, 1], got {p}")
    if p == 0.0:
        return labels
    device = generator.device if generator is not None else labels.device
    drop = torch.rand(labels.shape, generator=generator, device=device).to(labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_label), labels)
