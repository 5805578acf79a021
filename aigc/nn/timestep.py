"""Sinusoidal timestep embedding of diffusion models (Ho et al. 2020, after Vaswani et al. 2017).

Timesteps may be fractional (respaced or continuous-time samplers), so ``t`` is
any float or integer tensor; frequencies run geometrically from 1 down to
``1/max_period`` over ``dim/2`` channels, cosines first, then sines.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Embed timesteps ``t`` (B,) as (B, dim) float32 features [cos(t f_i), sin(t f_i)].

    An odd ``dim`` gets one trailing zero channel.
    """
    if dim <= 0:
        raise ValueError(f"timestep embedding needs a positive dim, got {dim}")
    t = t.reshape(-1).to(torch.float32)                                              # (B,)
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(max_period) / max(half, 1)))
    args = t[:, None] * freqs[None, :]                                                # (B, dim/2)
    emb = torch.cat((torch.cos(args), torch.sin(args)), dim=1)                       # (B, 2*(dim/2))
    if dim % 2:
        emb = torch.cat((emb, torch.zeros_like(emb[:, :1])), dim=1)                   # (B, dim)
    return emb
