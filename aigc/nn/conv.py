"""Convolutional blocks parametrised by the number of spatial dimensions (1: audio, 2: images, 3: volumes).

Tensors are (N, C, *spatial) with ``dims`` spatial axes. A video UNet runs these 2-D blocks on every
frame (frames folded into N) and mixes frames with :class:`TemporalConv` (and temporal attention),
the factorised space-time layout of Ho et al. 2022, "Video Diffusion Models".

FLOP counts are 2 per multiply-add of the convolutions and linear layers (as
``torch.utils.flop_counter``); ``shape`` arguments are the spatial sizes of the output.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GN_EPS = 1e-5
CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def conv_nd(dims: int, c_in: int, c_out: int, kernel: int, **kw) -> nn.Module:
    """``nn.Conv{dims}d(c_in, c_out, kernel, **kw)``."""
    try:
        return CONVS[dims](c_in, c_out, kernel, **kw)
    except KeyError:
        raise ValueError(f"convolutions have 1, 2 or 3 spatial dimensions, got {dims}") from None


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= ``max_groups`` that divides ``channels``."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def group_norm(channels: int, max_groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels, max_groups), channels, eps=GN_EPS)


def apply_norm(x: Tensor, n: nn.GroupNorm) -> Tensor:
    """``n(x)`` as one functional call (a module call costs about as much as a small op)."""
    return F.group_norm(x, n.num_groups, n.weight, n.bias, n.eps)


def conv_flops(c_in: int, c_out: int, k: int, shape: Sequence[int]) -> int:
    """A k^dims convolution producing ``shape`` (its spatial sizes)."""
    return 2 * c_in * c_out * k ** len(shape) * math.prod(shape)


# ---- patching: pixel (un)shuffle in any number of dimensions -----------------------------------------


def pixel_unshuffle(x: Tensor, p: int) -> Tensor:
    """(N, C, *S) -> (N, C·p^d, *S/p): every p^d patch folded into channels, channel c·p^d + the patch
    offset in row-major order (for d = 2: ``F.pixel_unshuffle``, "simple diffusion", Hoogeboom et al.)."""
    d = x.dim() - 2
    if p == 1:
        return x
    if d == 2:
        return F.pixel_unshuffle(x, p)
    N, C, *S = x.shape
    x = x.reshape(N, C, *(v for s in S for v in (s // p, p)))            # (N, C, S1/p, p, S2/p, p, ...)
    order = [0, 1, *(3 + 2 * i for i in range(d)), *(2 + 2 * i for i in range(d))]
    return x.permute(order).reshape(N, C * p ** d, *(s // p for s in S))


def pixel_shuffle(x: Tensor, p: int) -> Tensor:
    """The inverse of :func:`pixel_unshuffle`: (N, C·p^d, *S) -> (N, C, *S·p)."""
    d = x.dim() - 2
    if p == 1:
        return x
    if d == 2:
        return F.pixel_shuffle(x, p)
    N, Cp, *S = x.shape
    x = x.reshape(N, Cp // p ** d, *([p] * d), *S)                       # (N, C, p, ..., p, S1, ...)
    order = [0, 1, *(v for i in range(d) for v in (2 + d + i, 2 + i))]
    return x.permute(order).reshape(N, Cp // p ** d, *(s * p for s in S))


# ---- blocks -----------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv; + embedding as scale/shift of the second GroupNorm ("adaptive group
    normalisation", Dhariwal & Nichol 2021) or added before it; SiLU, dropout, zero-initialised conv;
    + skip (1x1 conv when the width changes). The identity at initialisation."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, scale_shift: bool,
                 max_groups: int, dims: int = 2) -> None:
        super().__init__()
        self.c_in, self.c_out, self.emb_dim, self.scale_shift, self.dims = c_in, c_out, emb_dim, scale_shift, dims
        self.norm1 = group_norm(c_in, max_groups)
        self.conv1 = conv_nd(dims, c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out if scale_shift else c_out)
        self.norm2 = group_norm(c_out, max_groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = conv_nd(dims, c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = conv_nd(dims, c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x (N, C_in, *S), emb (N, E) already through SiLU -> (N, C_out, *S)."""
        h = self.conv1(F.silu(apply_norm(x, self.norm1)))                   # (N, C_out, *S)
        e = self.emb(emb).view(*emb.shape[:1], -1, *([1] * self.dims))      # (N, 2C_out, 1, ...)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, apply_norm(h, self.norm2), 1 + scale)
        else:
            h = apply_norm(h + e, self.norm2)
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h

    def flops(self, shape: Sequence[int]) -> int:
        n = conv_flops(self.c_in, self.c_out, 3, shape) + conv_flops(self.c_out, self.c_out, 3, shape)
        n += 2 * self.emb_dim * self.emb.out_features
        if self.c_in != self.c_out:
            n += conv_flops(self.c_in, self.c_out, 1, shape)
        return n


class Downsample(nn.Module):
    """Stride-2 3^d convolution: every size S -> ceil(S / 2)."""

    def __init__(self, channels: int, dims: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.conv = conv_nd(dims, channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def flops(self, shape: Sequence[int]) -> int:  # shape: the input size
        return conv_flops(self.channels, self.channels, 3, [(s + 1) // 2 for s in shape])


class Upsample(nn.Module):
    """Nearest-neighbour resize to a given size (that of the next skip), then a 3^d convolution."""

    def __init__(self, channels: int, dims: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.conv = conv_nd(dims, channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))

    def flops(self, shape: Sequence[int]) -> int:  # shape: the output size
        return conv_flops(self.channels, self.channels, 3, shape)


class TemporalConv(nn.Module):
    """x + conv1d over frames (kernel 3, zero-initialised: the identity at first), at every pixel of every
    frame: (B·F, C, *S) -> (B·F, C, *S). With ``frame_mask`` (B, F) bool, False frames are independent
    images: their neighbours' taps are left out both ways, so they come out as if alone (F = 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, frames: int, frame_mask: Tensor | None = None) -> Tensor:
        BF, C, *S = x.shape
        B = BF // frames
        h = x.reshape(B, frames, C, -1).permute(0, 3, 2, 1).reshape(-1, C, frames)  # (B·P, C, F), P pixels
        if frame_mask is None:
            h = self.conv(h)
        else:  # centre tap for every frame; the side taps only between frames of the clip
            m = frame_mask.to(h.dtype).repeat_interleave(h.shape[0] // B, 0)[:, None, :]  # (B·P, 1, F)
            w = self.conv.weight
            side = w.clone()
            side[:, :, 1] = 0
            h = F.conv1d(h, w[:, :, 1:2], self.conv.bias) + m * F.conv1d(h * m, side, None, padding=1)
        h = h.reshape(B, -1, C, frames).permute(0, 3, 2, 1).reshape(x.shape)
        return x + h

    def flops(self, frames: int, shape: Sequence[int]) -> int:  # per clip of ``frames`` frames
        return conv_flops(self.channels, self.channels, 3, [frames]) * math.prod(shape)
