"""Attention over feature maps (N, C, *S): the shared :class:`MultiHeadAttention` with a GroupNorm in
front and a residual around, its output projection zero-initialised (the identity at first).

* :class:`MapSelfAttention`: every position attends to every position of its map (Improved DDPM);
* :class:`MapCrossAttention`: every position attends to a caption's tokens (latent diffusion, Rombach
  et al. 2022), padding masked;
* :class:`TemporalAttention`: every pixel attends to itself in the other frames of its clip, with a
  learned relative-position bias per head (Ho et al. 2022, "Video Diffusion Models"); a frame mask
  keeps independent images (joint image-video training) to themselves.

The wrappers add no parameters of their own besides ``norm`` (and the temporal bias), so their
state-dict keys are those of the attention: ``norm``, ``qkv`` (or ``q``, ``kv``) and ``proj``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import MultiHeadAttention
from .conv import apply_norm, group_norm


def _zero_proj(attn: MultiHeadAttention) -> None:
    nn.init.zeros_(attn.proj.weight)
    nn.init.zeros_(attn.proj.bias)


def _norm_first(attn: MultiHeadAttention, norm: nn.GroupNorm) -> None:
    """Register ``norm`` as the first child, so the parameters come in the order they always did
    (norm, projections): an optimizer state saved by position still matches them."""
    rest = dict(attn._modules)
    attn._modules.clear()
    attn._modules["norm"] = norm
    attn._modules.update(rest)


class MapSelfAttention(MultiHeadAttention):
    """x + attention(GroupNorm(x)) over the positions of each map: (N, C, *S) -> (N, C, *S)."""

    def __init__(self, channels: int, heads: int, max_groups: int) -> None:
        super().__init__(channels, heads)
        self.channels, self.heads = channels, heads
        _norm_first(self, group_norm(channels, max_groups))
        _zero_proj(self)

    def forward(self, x: Tensor) -> Tensor:
        h = apply_norm(x, self.norm).flatten(2).transpose(1, 2)        # (N, L, C), L = prod(S)
        return x + super().forward(h).transpose(1, 2).reshape(x.shape)

    def flops(self, positions: int) -> int:
        L, C = positions, self.channels
        return 2 * L * C * 3 * C + 4 * L * L * C + 2 * L * C * C       # qkv, QK^T and AV, output projection


class MapCrossAttention(MultiHeadAttention):
    """x + attention from GroupNorm(x)'s positions to ``context`` (N, S, E): (N, C, *S) -> (N, C, *S)."""

    def __init__(self, channels: int, context_dim: int, heads: int, max_groups: int) -> None:
        super().__init__(channels, heads, cross=True, memory_dim=context_dim)
        self.channels, self.context_dim, self.heads = channels, context_dim, heads
        _norm_first(self, group_norm(channels, max_groups))
        _zero_proj(self)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:  # type: ignore[override]
        """mask (N, S) bool, True at real tokens (None: all)."""
        h = apply_norm(x, self.norm).flatten(2).transpose(1, 2)        # (N, L, C)
        o = super().forward(h, memory=context, mask=None if mask is None else mask[:, None, None, :])
        return x + o.transpose(1, 2).reshape(x.shape)

    def flops(self, positions: int, tokens: int) -> int:
        L, C = positions, self.channels
        return 2 * L * C * C + 2 * tokens * self.context_dim * 2 * C + 4 * L * tokens * C + 2 * L * C * C


class TemporalAttention(MultiHeadAttention):
    """x + attention across the F frames of a clip at every pixel: (B·F, C, *S) -> (B·F, C, *S).

    The logits get a learned bias b[h, clip(j - i, ±max_distance)] per head h and frame offset j - i
    (a relative position embedding, as the temporal attention of Ho et al. 2022), so clips of any
    length work. ``frame_mask`` (B, F) bool: True frames form the clip, each False frame is an image
    of its own (it attends to itself only, and no frame attends to it).
    """

    def __init__(self, channels: int, heads: int, max_groups: int, max_distance: int) -> None:
        super().__init__(channels, heads)
        self.channels, self.heads, self.max_distance = channels, heads, max_distance
        _norm_first(self, group_norm(channels, max_groups))
        self.rel_bias = nn.Parameter(torch.zeros(heads, 2 * max_distance + 1))
        _zero_proj(self)

    def bias(self, frames: int, frame_mask: Tensor | None, device: torch.device) -> Tensor:
        """The additive (1|B, H, F, F) attention mask: relative-position bias, -inf where masked."""
        pos = torch.arange(frames, device=device)
        offset = (pos[None, :] - pos[:, None]).clamp(-self.max_distance, self.max_distance) + self.max_distance
        bias = self.rel_bias[:, offset].unsqueeze(0)                     # (1, H, F, F)
        if frame_mask is None:
            return bias
        allowed = (frame_mask[:, :, None] & frame_mask[:, None, :]) | torch.eye(frames, dtype=torch.bool,
                                                                                device=device)
        return bias.masked_fill(~allowed[:, None], float("-inf"))       # (B, H, F, F)

    def forward(self, x: Tensor, frames: int, frame_mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        BF, C, *S = x.shape
        B = BF // frames
        h = apply_norm(x, self.norm).reshape(B, frames, C, -1)          # (B, F, C, P), P pixels
        P = h.shape[-1]
        h = h.permute(0, 3, 1, 2).reshape(B * P, frames, C)              # (B·P, F, C)
        bias = self.bias(frames, frame_mask, x.device).to(h.dtype)
        if bias.shape[0] > 1:
            bias = bias.repeat_interleave(P, 0)                          # (B·P, H, F, F)
        o = super().forward(h, mask=bias)                                # (B·P, F, C)
        return x + o.reshape(B, P, frames, C).permute(0, 2, 3, 1).reshape(x.shape)

    def flops(self, frames: int, positions: int) -> int:  # per clip
        F_, C = frames, self.channels
        return positions * (2 * F_ * C * 3 * C + 4 * F_ * F_ * C + 2 * F_ * C * C)
