"""Position embeddings: rotary (RoPE, Su et al. 2021), sinusoidal (Vaswani et al. 2017) and n-D sinusoidal maps."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn


class Rotary(nn.Module):
    """Precomputed cos/sin tables for rotary position embedding.

    ``forward(positions)`` gives (cos, sin) of shape (T, D/2) for a 1-D position
    vector or (B, T, D/2) for per-row positions (left-padded batches).
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError("rotary embedding needs an even head dimension")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        return self.cos[positions], self.sin[positions]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[..., :D/2], x[..., D/2:]) of x (B, H, T, D) by the given angles."""
    if cos.dim() == 3:  # per-row positions (B, T, D/2) -> broadcast over heads
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def sinusoidal_table(max_len: int, dim: int) -> Tensor:
    """The fixed sin/cos position table of "Attention Is All You Need", (max_len, dim)."""
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return table.float()


def grid_sinusoids(size: int | Sequence[int], channels: int) -> Tensor:
    """A (1, channels, *size) position map over d = len(size) axes (an int: a square 2-D map). The
    channels are cut into d equal parts; part a is the sinusoidal table of the index along axis a
    (for 2-D: rows, then columns, as MAE's 2-D sin-cos embedding, He et al. 2022); the channels
    left over stay zero."""
    sizes = (size, size) if isinstance(size, int) else tuple(size)
    d = len(sizes)
    part = channels // d
    if part < 1:
        raise ValueError(f"a {d}-D position embedding needs at least {d} channels, got {channels}")
    out = torch.zeros(1, channels, *sizes)
    for a, n in enumerate(sizes):
        table = sinusoidal_table(n, part).t()                              # (part, n)
        view = [part] + [1] * d
        view[1 + a] = n
        out[0, a * part:(a + 1) * part] = table.reshape(view).expand(part, *sizes)  # varies along axis a
    return out
