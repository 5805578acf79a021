"""Classifier-free guidance (Ho & Salimans 2021) as a closure around the model, and the dropout of
labels or captions that trains its unconditional half."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..errors import ConfigError

ConditionalModel = Callable[[Tensor, Tensor, Any], Tensor]  # model(x, t, condition) -> output


def guided(model: ConditionalModel, cond: Any, uncond: Any, scale: float, join: Callable[[list], Any],
           learned_sigma: bool | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """A ``model_fn(x, t)`` for the samplers that returns uncond + scale·(cond − uncond)
    (Ho & Salimans 2021, eq. 6, written as ε̃ = (1+w) ε_c − w ε_u with scale = 1 + w).

    ``cond`` and ``uncond`` are batches of conditions of one kind (class labels, encoded captions; the
    unconditional one is the null class, the empty prompt or a negative prompt); ``join([a, b])``
    stacks two of them. Both halves run in one batch of 2B. Only the first C mean channels
    (C = x.shape[1]) are guided; any further channels (a learned variance) are taken from the
    conditional output. ``learned_sigma`` may be given to check the output's channel count (None:
    inferred). Scale 1 returns the conditional model itself, bit for bit, at the cost of one batch of B.
    """
    scale = float(scale)
    if scale == 1.0:
        def conditional(x: Tensor, t: Tensor) -> Tensor:
            return model(x, t, cond)
        return conditional
    both = join([cond, uncond])

    def guided_fn(x: Tensor, t: Tensor) -> Tensor:
        B, C = x.shape[0], x.shape[1]
        if len(cond) != B:
            raise ValueError(f"{len(cond)} conditions for a batch of {B}")
        out = model(torch.cat([x, x]), torch.cat([t, t]), both)
        cond_out, uncond_out = out[:B], out[B:]
        if learned_sigma is not None and out.shape[1] != (2 * C if learned_sigma else C):
            raise ValueError(f"model gave {out.shape[1]} channels; expected {2 * C if learned_sigma else C}")
        mean = uncond_out[:, :C] + scale * (cond_out[:, :C] - uncond_out[:, :C])
        return torch.cat([mean, cond_out[:, C:]], dim=1) if out.shape[1] > C else mean

    return guided_fn


def classifier_free(model: ConditionalModel, labels: Tensor, scale: float, null_label: int,
                    learned_sigma: bool | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """Guidance towards class ``labels`` (B,) away from the learned null class (see :func:`guided`)."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels must be a 1-D tensor of class indices, got shape {tuple(labels.shape)}")

    def on_device(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> ConditionalModel:
        return lambda x, t, y: fn(x, t, y.to(x.device))

    return guided(on_device(model), labels, torch.full_like(labels, null_label), scale, torch.cat, learned_sigma)


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


def drop_captions(ids: Tensor, mask: Tensor, p: float, empty: Tensor,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Replace each caption of ids (B, S) / mask (B, S) by the empty prompt's ids ``empty`` (E,), E <= S,
    with probability p: the model learns the unconditional prediction as that of the empty prompt."""
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"caption dropout probability must be in [0, 1], got {p}")
    if p == 0.0:
        return ids, mask
    if empty.numel() > ids.shape[1]:
        raise ValueError(f"the empty prompt has {empty.numel()} tokens, more than the batch's {ids.shape[1]}")
    device = generator.device if generator is not None else ids.device
    drop = (torch.rand(ids.shape[0], generator=generator, device=device) < p).to(ids.device)
    if not bool(drop.any()):
        return ids, mask
    blank_ids = torch.full_like(ids[0], int(empty[0]))
    blank_ids[:empty.numel()] = empty.to(ids.device)
    blank_mask = torch.zeros_like(mask[0])
    blank_mask[:empty.numel()] = True
    return (torch.where(drop[:, None], blank_ids, ids), torch.where(drop[:, None], blank_mask, mask))
