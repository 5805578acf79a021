"""Position embeddings: rotary (RoPE, Su et al. 2021), sinusoidal (Vaswani et al. 2017) and 2-D sinusoidal maps."""
from __future__ import annotations

import math

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


def grid_sinusoids(size: int, channels: int) -> Tensor:
    """A (1, channels, size, size) 2-D position map: the first half of the channels is the
    sinusoidal table of the row index, the second half that of the column (as in MAE's 2-D
    sin-cos embedding, He et al. 2022); an odd last channel stays zero."""
    half = channels // 2
    if half < 1:
        raise ValueError(f"a 2-D position embedding needs at least 2 channels, got {channels}")
    table = sinusoidal_table(size, half).t()                               # (half, size)
    out = torch.zeros(1, channels, size, size)
    out[0, :half] = table[:, :, None].expand(half, size, size)             # varies along rows
    out[0, half:2 * half] = table[:, None, :].expand(half, size, size)     # varies along columns
    return out
