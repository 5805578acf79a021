"""SpecAugment (Park et al. 2019): time warping, frequency masks and time masks on (log-)mel features.

Each example in a batch gets its own masks, drawn from one ``torch.Generator`` (the same seed gives the
same masks). With ``lengths`` (a padded batch), warps and masks touch only each example's own frames
(its padding is left as it was), and a time mask is at most ``time_ratio`` of that example's length
(the paper's ``p``).
``time_mask_rate`` > 0 makes the number of time masks adaptive (Park et al. 2020): ``floor(rate * length)``
masks per example, at least ``time_masks``.

    cfg = SpecAugmentConfig(freq_masks=2, freq_width=27, time_masks=2, time_width=40, time_ratio=0.05)
    out = spec_augment(feats, cfg, generator=torch.Generator().manual_seed(0), lengths=frame_lengths)
    aug = SpecAugment(cfg)   # an nn.Module: applies only in training mode
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import check_float, check_int
from ..errors import ConfigError


@dataclass
class SpecAugmentConfig:
    """Masks of up to ``freq_width`` mel channels (``freq_masks`` of them) and of up to ``time_width``
    frames (``time_masks``, or ``time_mask_rate`` per frame), each at most ``time_ratio`` of the length;
    a time warp by up to ``time_warp`` frames (0: none). Masked cells take ``mask_value``."""

    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 2
    time_width: int = 40
    time_ratio: float = 1.0
    time_mask_rate: float = 0.0
    time_warp: int = 0
    mask_value: float = 0.0

    def __post_init__(self) -> None:
        check_int("specaugment.freq_masks", self.freq_masks, 0, 64)
        check_int("specaugment.freq_width", self.freq_width, 0, 4096)
        check_int("specaugment.time_masks", self.time_masks, 0, 1024)
        check_int("specaugment.time_width", self.time_width, 0, 1 << 20)
        check_float("specaugment.time_ratio", self.time_ratio, 0.0, 1.0)
        check_float("specaugment.time_mask_rate", self.time_mask_rate, 0.0, 1.0)
        check_int("specaugment.time_warp", self.time_warp, 0, 1 << 16)
        check_float("specaugment.mask_value", self.mask_value)


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64)


def _lengths(features: Tensor, lengths: Tensor | None) -> Tensor:
    b, _, t = features.shape
    if lengths is None:
        return torch.full((b,), t, dtype=torch.long)
    lengths = torch.as_tensor(lengths).to("cpu", torch.long)
    if lengths.shape != (b,) or bool((lengths < 0).any()) or bool((lengths > t).any()):
        raise ConfigError(f"lengths must be (B,) = ({b},) frame counts in 0..{t}, got {lengths.tolist()}")
    return lengths


def time_warp(features: Tensor, max_warp: int, lengths: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """Warp each example's time axis piecewise-linearly: a point ``w0`` drawn from [W, len - W) moves to
    ``w0 + w``, ``w`` from [-W, W], the first and last frames stay; frames are linearly interpolated. (B, F, T) -> (B, F, T); frames
    past an example's length are left as they were. Examples shorter than 2W + 2 frames are unchanged."""
    b, _, t = features.shape
    lens = _lengths(features, lengths)
    if max_warp <= 0 or t < 2:
        return features
    u = _uniform((b, 2), generator)
    length = lens.double()
    room = length - 2 * max_warp                                         # choices for the centre
    ok = room >= 2
    centre = max_warp + torch.floor(u[:, 0] * room.clamp(min=1))         # (B,) in [W, len - W)
    shift = torch.floor(u[:, 1] * (2 * max_warp + 1)) - max_warp          # (B,) in [-W, W]
    shift = torch.where(ok, shift, torch.zeros_like(shift))
    target = centre + shift                                              # where the centre lands
    grid = torch.arange(t, dtype=torch.float64)[None, :].expand(b, t)    # output frame index
    left = grid * centre[:, None] / target[:, None].clamp(min=1)
    right = centre[:, None] + (grid - target[:, None]) * (length - 1 - centre)[:, None] \
        / (length - 1 - target).clamp(min=1)[:, None]                   # [target, len-1] -> [centre, len-1]
    inside = (grid < length[:, None]) & ok[:, None]                       # frames that move
    last = (length[:, None] - 1).clamp(min=0)
    source = torch.minimum(torch.where(grid < target[:, None], left, right), last).clamp(min=0)
    source = torch.where(inside, source, grid)                           # (B, T) source positions
    lo = source.floor().long()
    hi = torch.where(inside, torch.minimum(lo + 1, last.long()), lo)
    frac = (source - lo.double()).to(features.dtype).to(features.device)[:, None, :]   # (B, 1, T)
    idx_lo = lo.to(features.device)[:, None, :].expand_as(features)
    idx_hi = hi.to(features.device)[:, None, :].expand_as(features)
    return features.gather(2, idx_lo) * (1 - frac) + features.gather(2, idx_hi) * frac


def _band_mask(size: int, count: Tensor, max_width: Tensor, limit: Tensor, n: int,
               generator: torch.Generator | None) -> Tensor:
    """(B, size) bool: for each example, ``count[b]`` of ``n`` bands, each of width U{0..max_width[b]}
    starting in [0, limit[b] - width]."""
    b = count.shape[0]
    if n == 0:
        return torch.zeros(b, size, dtype=torch.bool)
    u = _uniform((b, n, 2), generator)
    width = torch.floor(u[..., 0] * (max_width[:, None] + 1).double()).long()             # (B, n)
    width = torch.minimum(width, limit[:, None])
    start = torch.floor(u[..., 1] * (limit[:, None] - width + 1).double()).long()          # (B, n)
    used = torch.arange(n)[None, :] < count[:, None]                                      # (B, n)
    pos = torch.arange(size)[None, None, :]                                               # (1, 1, size)
    inside = (pos >= start[..., None]) & (pos < (start + width)[..., None]) & used[..., None]
    return inside.any(dim=1)


def spec_augment(features: Tensor, config: SpecAugmentConfig | None = None, *,
                 generator: torch.Generator | None = None, lengths: Tensor | None = None) -> Tensor:
    """SpecAugment (B, F, T) or (F, T) features -> a new tensor of the same shape: time warp, then
    frequency masks, then time masks, each example its own. ``lengths`` (B,): valid frames per example."""
    cfg = config or SpecAugmentConfig()
    squeeze = features.ndim == 2
    if squeeze:
        features = features[None]
        lengths = None if lengths is None else torch.as_tensor(lengths).reshape(1)
    if features.ndim != 3:
        raise ConfigError(f"spec_augment takes (B, F, T) or (F, T) features, got shape {tuple(features.shape)}")
    b, f, t = features.shape
    lens = _lengths(features, lengths)
    out = time_warp(features, cfg.time_warp, lens, generator) if cfg.time_warp else features
    freq = _band_mask(f, torch.full((b,), cfg.freq_masks), torch.full((b,), min(cfg.freq_width, f)),
                      torch.full((b,), f), cfg.freq_masks, generator)                       # (B, F)
    counts = torch.full((b,), cfg.time_masks)
    if cfg.time_mask_rate > 0:
        counts = torch.maximum(counts, torch.floor(cfg.time_mask_rate * lens.double()).long())
    widest = torch.minimum(torch.full((b,), cfg.time_width), torch.floor(cfg.time_ratio * lens.double()).long())
    time = _band_mask(t, counts, widest, lens, int(counts.max()) if b else 0, generator)   # (B, T)
    valid = torch.arange(t)[None, :] < lens[:, None]                                        # (B, T)
    mask = ((freq[:, :, None] & valid[:, None, :]) | time[:, None, :]).to(features.device)
    out = out.masked_fill(mask, cfg.mask_value)
    return out[0] if squeeze else out


class SpecAugment(nn.Module):
    """:func:`spec_augment` as a module: augments in training mode, passes features through in eval."""

    def __init__(self, config: SpecAugmentConfig | None = None):
        super().__init__()
        self.config = config or SpecAugmentConfig()

    def forward(self, features: Tensor, lengths: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        if not self.training:
            return features
        return spec_augment(features, self.config, generator=generator, lengths=lengths)
