"""UNet noise predictor of Improved DDPM (Nichol & Dhariwal 2021; Ho et al. 2020), in 1, 2 or 3
spatial dimensions, and as a factorised space-time video UNet.

    x (B, C, *S), t (B,), y (B,) ->
      conv_in -> [ResBlock (+ self-attention)] x num_res_blocks, stride-2 conv, ... (encoder, skips saved)
      -> ResBlock, self-attention, ResBlock (middle)
      -> [concat skip, ResBlock (+ self-attention)] x (num_res_blocks + 1), nearest upsample + conv, ...
      -> GroupNorm, SiLU, zero-initialised conv -> (B, out_channels, *S)

S is (H, W) for images (``dims=2``, the default), (L,) for audio (``dims=1``), (D, H, W) for volumes
(``dims=3``). Each residual block receives the timestep (+ class) embedding as a per-channel scale
and shift of its second GroupNorm ("adaptive group normalisation", Dhariwal & Nichol 2021); its
last convolution starts at zero, so every block is the identity at initialisation and the whole
network outputs exactly zero. Down-sampling is a stride-2 convolution (28 -> 14 -> 7 -> 4), and
up-sampling is nearest-neighbour to the size of the matching skip, so odd sizes round-trip. With
``learn_sigma`` the output has 2·C channels: the mean (ε) and the interpolation weight v of the
learned variance.

Text conditioning (``context_dim`` > 0, as in latent diffusion, Rombach et al. 2022): blocks at
``cross_attention_resolutions`` and the middle block attend from every position to a caption's token
embeddings (B, L, context_dim), padding masked; the caption's pooled embedding (B, context_dim) is
projected and added to the timestep embedding, as Imagen and SDXL do.

Video (``frames`` > 0; Ho et al. 2022, "Video Diffusion Models"): x (B, C, F, *S). Every frame goes
through the spatial blocks above (frames folded into the batch), and every block adds a temporal
convolution and a temporal attention (relative-position bias) across the frames at each pixel, both
the identity at initialisation. ``frame_mask`` (B, F) marks independent images among the frames
(joint image-video training): they are kept out of the temporal layers, as if each were alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SIZE_BOUNDS, check_sizes
from ..errors import ConfigError
from ..nn.conv import (Downsample, ResBlock, TemporalConv, Upsample, apply_norm, conv_flops, conv_nd, group_norm,
                       norm_groups, pixel_shuffle, pixel_unshuffle)
from ..nn.embeddings import grid_sinusoids
from ..nn.map_attention import MapCrossAttention, MapSelfAttention, TemporalAttention
from ..nn.timestep import timestep_embedding

Attention, CrossAttention = MapSelfAttention, MapCrossAttention  # the names the 2-D UNet always used
__all__ = ["UNetConfig", "UNet", "Block", "ResBlock", "Attention", "CrossAttention", "norm_groups"]


@dataclass
class UNetConfig:
    image_size: int | tuple[int, ...] = 28    # an int: that size along every spatial dim; or one size per dim
    in_channels: int = 1
    model_channels: int = 64                  # channels of the first level
    out_channels: int = 0                     # 0 -> in_channels (doubled when learn_sigma)
    learn_sigma: bool = False                 # also output the variance interpolation v (Improved DDPM)
    channel_mult: tuple[int, ...] = (1, 2, 2)  # channels of level i = model_channels * channel_mult[i]
    num_res_blocks: int = 2                   # residual blocks per level (encoder; decoder has one more)
    attention_resolutions: tuple[int, ...] = (7,)  # level sizes (largest side, in pixels) with self-attention
    num_heads: int = 4
    head_channels: int = 0                    # > 0: heads = channels // head_channels (overrides num_heads)
    dropout: float = 0.0
    num_classes: int | None = None            # None/0: unconditional; else + one learned null class
    use_scale_shift_norm: bool = True
    norm_groups: int = 32                     # GroupNorm groups, lowered to divide the channels
    context_dim: int = 0                      # > 0: cross-attention to text tokens of this width
    cross_attention_resolutions: tuple[int, ...] | None = None  # None -> attention_resolutions
    patch_size: int = 1                       # > 1: p^d pixel patches folded into channels first (pixel
                                              # unshuffle, as "simple diffusion", Hoogeboom et al. 2023): the
                                              # levels start at image_size / p; unfolded again at the output
    position_embedding: bool = False          # add a learned absolute position embedding after conv_in (as
                                              # ViT/DiT do), so every pixel knows where it is (on shapes it
                                              # did not improve "left of" / "above": see the README)
    dims: int = 2                             # spatial dimensions: 1 audio (B, C, L), 2 images, 3 volumes
    frames: int = 0                           # > 0: a video UNet of clips (B, C, F, *S), F = frames by
                                              # default; temporal conv + attention in every block

    def __post_init__(self) -> None:          # JSON gives lists
        if isinstance(self.image_size, (list, tuple)):
            self.image_size = tuple(self.image_size)
        self.channel_mult = tuple(self.channel_mult)
        self.attention_resolutions = tuple(self.attention_resolutions)
        if self.cross_attention_resolutions is not None:
            self.cross_attention_resolutions = tuple(self.cross_attention_resolutions)

    @property
    def spatial_size(self) -> tuple[int, ...]:
        """The size along each of the ``dims`` spatial axes."""
        if isinstance(self.image_size, tuple):
            return self.image_size
        return (self.image_size,) * self.dims

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample: (C, *S), or (C, frames, *S) for a video UNet."""
        return (self.in_channels, *((self.frames,) if self.video else ()), *self.spatial_size)

    @property
    def video(self) -> bool:
        return self.frames > 0

    @property
    def text_conditional(self) -> bool:
        return self.context_dim > 0

    @property
    def cross_resolutions(self) -> tuple[int, ...]:
        """Level sizes whose blocks cross-attend to the text (none without ``context_dim``)."""
        if not self.text_conditional:
            return ()
        res = self.cross_attention_resolutions
        return self.attention_resolutions if res is None else res

    @property
    def conditional(self) -> bool:
        return bool(self.num_classes)

    @property
    def out_ch(self) -> int:
        """Channels of the output: ``out_channels`` or C (2·C with a learned Σ)."""
        if self.out_channels:
            return self.out_channels
        return self.in_channels * (2 if self.learn_sigma else 1)

    def level_shapes(self) -> list[tuple[int, ...]]:
        """Spatial size of each level: image_size / patch_size, then ceil(size / 2) per stride-2 conv."""
        shapes = [tuple(s // self.patch_size for s in self.spatial_size)]
        for _ in self.channel_mult[1:]:
            shapes.append(tuple((s + 1) // 2 for s in shapes[-1]))
        return shapes

    def resolutions(self) -> list[int]:
        """The size of each level that ``attention_resolutions`` names: its largest side."""
        return [max(shape) for shape in self.level_shapes()]

    def heads(self, channels: int) -> int:
        return channels // self.head_channels if self.head_channels > 0 else self.num_heads

    def validate(self) -> None:
        check_sizes("model", self, {"in_channels": "width", "model_channels": "width", "num_res_blocks": "blocks",
                                    "num_heads": "heads", "norm_groups": "width", "patch_size": "pixels"})
        if len(self.channel_mult) > SIZE_BOUNDS["levels"]:
            raise ConfigError(f"model.channel_mult may have at most {SIZE_BOUNDS['levels']} levels")
        if self.dims not in (1, 2, 3):
            raise ConfigError(f"model.dims must be 1 (audio), 2 (images) or 3 (volumes), got {self.dims!r}")
        size = self.image_size
        if not isinstance(size, (int, tuple)) or isinstance(size, bool) \
                or (isinstance(size, tuple) and len(size) != self.dims) \
                or any(not isinstance(s, int) or s <= 0 for s in self.spatial_size):
            raise ConfigError(f"model.image_size must be a positive integer or {self.dims} of them "
                              f"(one per spatial dim), got {size!r}")
        if max(self.spatial_size) > SIZE_BOUNDS["pixels"]:
            raise ConfigError(f"model.image_size may be at most {SIZE_BOUNDS['pixels']} per side, got {size!r}")
        for name in ("out_channels", "head_channels", "context_dim", "frames"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be 0 or a positive integer, got {getattr(self, name)!r}")
        if not self.channel_mult or any(not isinstance(m, int) or m <= 0 for m in self.channel_mult):
            raise ConfigError(f"model.channel_mult must be positive integers, e.g. [1, 2, 2]; got {list(self.channel_mult)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes is not None and (not isinstance(self.num_classes, int) or self.num_classes < 0):
            raise ConfigError(f"model.num_classes must be null, 0 or a positive integer, got {self.num_classes!r}")
        if any(s % self.patch_size for s in self.spatial_size):
            raise ConfigError(f"model.patch_size ({self.patch_size}) must divide the image size ({_shape(size, self.dims)})")
        shapes = [tuple(s // self.patch_size for s in self.spatial_size)]
        for _ in self.channel_mult[1:]:
            if min(shapes[-1]) < 2:
                raise ConfigError(
                    f"model.channel_mult has {len(self.channel_mult)} levels, too many for "
                    f"{_shape(size, self.dims)} inputs (each level halves the size); use fewer")
            shapes.append(tuple((s + 1) // 2 for s in shapes[-1]))
        sizes = [max(s) for s in shapes]
        for name in ("attention_resolutions", "cross_attention_resolutions"):
            for res in getattr(self, name) or ():
                if res not in sizes:
                    raise ConfigError(
                        f"model.{name} asks for {_shape(res, self.dims)}, which this UNet never reaches; "
                        f"its levels are {', '.join(_shape(s, self.dims) for s in shapes)}")
        attended = {self.model_channels * m for m, s in zip(self.channel_mult, sizes)
                    if s in self.attention_resolutions or s in self.cross_resolutions or self.video}
        attended.add(self.model_channels * self.channel_mult[-1])  # the middle block always attends
        for ch in sorted(attended):
            if self.head_channels > 0 and ch % self.head_channels:
                raise ConfigError(f"model.head_channels ({self.head_channels}) must divide the {ch} channels "
                                  "of every attention layer")
            if self.head_channels == 0 and ch % self.num_heads:
                raise ConfigError(f"model.num_heads ({self.num_heads}) must divide the {ch} channels "
                                  "of every attention layer")


def _shape(size: int | Sequence[int], dims: int) -> str:
    """28 -> '28x28' (2-D), (16, 8) -> '16x8'."""
    return "x".join(str(s) for s in ((size,) * dims if isinstance(size, int) else size))


class Block(nn.Module):
    """One step of the encoder or decoder path: a ResBlock, optional self-attention, optional
    cross-attention to the text, optional upsampling; a video UNet's blocks also mix frames
    (temporal convolution after the ResBlock, temporal attention after the self-attention)."""

    def __init__(self, res: ResBlock, attn: MapSelfAttention | None = None, up: Upsample | None = None,
                 cross: MapCrossAttention | None = None, tconv: TemporalConv | None = None,
                 tattn: TemporalAttention | None = None) -> None:
        super().__init__()
        self.res, self.attn, self.cross, self.up = res, attn, cross, up
        if tconv is not None:  # registered only for video, so image state dicts keep their keys
            self.tconv, self.tattn = tconv, tattn
        else:
            self.tconv = self.tattn = None

    def forward(self, x: Tensor, emb: Tensor, size: Sequence[int] | None = None,
                context: Tensor | None = None, context_mask: Tensor | None = None, frames: int = 0,
                frame_mask: Tensor | None = None) -> Tensor:
        x = self.res(x, emb)
        if self.tconv is not None:
            x = self.tconv(x, frames, frame_mask)
        if self.attn is not None:
            x = self.attn(x)
        if self.tattn is not None:
            x = self.tattn(x, frames, frame_mask)
        if self.cross is not None:
            x = self.cross(x, context, context_mask)
        if self.up is not None:
            x = self.up(x, size)
        return x

    def flops(self, shape: Sequence[int], size: Sequence[int] | None = None, tokens: int = 0,
              frames: int = 0) -> int:
        """Per frame (per clip of ``frames`` frames for video) at input size ``shape``."""
        P = math.prod(shape)
        n = self.res.flops(shape) + (self.attn.flops(P) if self.attn is not None else 0)
        n += self.cross.flops(P, tokens) if self.cross is not None else 0
        n += self.up.flops(size) if self.up is not None else 0
        if self.tconv is not None:
            n = n * frames + self.tconv.flops(frames, shape) + self.tattn.flops(frames, P)
        return n


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        mc, groups, d = cfg.model_channels, cfg.norm_groups, cfg.dims
        emb_dim = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # index num_classes is the learned "null" class of classifier-free guidance (Ho & Salimans 2022)
        self.label_embed = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.conditional else None
        self.pooled_embed = nn.Linear(cfg.context_dim, emb_dim) if cfg.text_conditional else None

        def block(c_in: int, c_out: int, size: int | None, attend: bool, up: bool | None = None) -> Block:
            # size None: the middle block (self- and cross-attention always); up None: an encoder block.
            # Layers are made in the order the 2-D UNet always made them (the same seed, the same init).
            heads = cfg.heads(c_out)
            temporal = (TemporalConv(c_out), TemporalAttention(c_out, heads, groups, max(cfg.frames - 1, 1))) \
                if cfg.video else (None, None)
            if up is not None:
                a = MapSelfAttention(c_out, heads, groups) if attend else None
                u = Upsample(c_out, d) if up else None
            res = ResBlock(c_in, c_out, emb_dim, cfg.dropout, cfg.use_scale_shift_norm, groups, d)
            if up is None:
                a, u = MapSelfAttention(c_out, heads, groups) if attend else None, None
            cross = cfg.text_conditional and (size is None or size in cfg.cross_resolutions)
            return Block(res, a, u, MapCrossAttention(c_out, cfg.context_dim, heads, groups) if cross else None,
                         *temporal)

        sizes = cfg.resolutions()
        self.conv_in = conv_nd(d, cfg.in_channels * cfg.patch_size ** d, mc, 3, padding=1)
        # initialised to n-D sinusoids (for 2-D: half the channels encode the row, half the column), then learned
        self.pos_embed = nn.Parameter(grid_sinusoids(cfg.level_shapes()[0], mc)) if cfg.position_embedding else None
        self.down = nn.ModuleList()            # Block | Downsample; each output is a skip
        skip_ch, ch = [mc], mc
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                out = mc * mult
                self.down.append(block(ch, out, sizes[level], sizes[level] in cfg.attention_resolutions))
                ch = out
                skip_ch.append(ch)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(Downsample(ch, d))
                skip_ch.append(ch)
        self.mid = nn.ModuleList([block(ch, ch, None, True), block(ch, ch, -1, False)])
        self.up = nn.ModuleList()              # Block, each consuming one skip
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                out = mc * mult
                up = level > 0 and i == cfg.num_res_blocks
                self.up.append(block(ch + skip_ch.pop(), out, sizes[level], sizes[level] in cfg.attention_resolutions,
                                     up))
                ch = out
        self.norm_out = group_norm(ch, groups)
        self.conv_out = conv_nd(d, ch, cfg.out_ch * cfg.patch_size ** d, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, t: Tensor, y: Tensor | None, batch: int, pooled: Tensor | None = None) -> Tensor:
        """Timestep (+ class, + pooled text) embedding, (B, 4·model_channels), before the blocks' SiLU."""
        t = torch.as_tensor(t, device=self.conv_in.weight.device)
        if t.dim() == 0:
            t = t.expand(batch)
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(self.conv_in.weight.dtype))
        if self.label_embed is not None:
            if y is None:  # unconditional prediction: the null class
                y = torch.full((batch,), self.config.num_classes, dtype=torch.long, device=emb.device)
            emb = emb + self.label_embed(y)
        elif y is not None:
            raise ValueError("this UNet is unconditional (num_classes is not set); pass y=None")
        if self.pooled_embed is not None:
            if pooled is None:
                raise ValueError("this UNet is text-conditional: pass the caption's pooled embedding")
            emb = emb + self.pooled_embed(pooled.to(emb.dtype))
        return emb

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None,
                frame_mask: Tensor | None = None) -> Tensor:
        """x (B, C, *S) (video: (B, C, F, *S)), t (B,) or scalar timesteps (floats allowed), y (B,) class
        ids or None (num_classes = the null class) -> (B, out_channels, *S) (video: (B, out, F, *S)).
        A text-conditional UNet also takes the caption's token embeddings ``context`` (B, S, context_dim),
        which of them are real tokens ``context_mask`` (B, S) bool (None: all), and its ``pooled``
        embedding (B, context_dim). A video UNet takes ``frame_mask`` (B, F) bool: False frames are
        independent images (None: every frame belongs to its clip)."""
        cfg = self.config
        want = cfg.dims + 2 + cfg.video
        if x.dim() != want:
            what = f"(B, C, F, {cfg.dims} spatial dims)" if cfg.video else f"(B, C, {cfg.dims} spatial dims)"
            raise ValueError(f"this UNet takes x of {want} dims {what}, got {tuple(x.shape)}")
        if cfg.text_conditional:
            if context is None or context.dim() != 3 or context.shape[0] != x.shape[0] \
                    or context.shape[2] != cfg.context_dim:
                raise ValueError(f"this UNet cross-attends to text: context must be (B={x.shape[0]}, S, "
                                 f"{cfg.context_dim}), got {None if context is None else tuple(context.shape)}")
            if context_mask is not None and tuple(context_mask.shape) != tuple(context.shape[:2]):
                raise ValueError(f"context_mask must be {tuple(context.shape[:2])}, got {tuple(context_mask.shape)}")
            context = context.to(x.dtype)
        elif context is not None:
            raise ValueError("this UNet has no cross-attention (model.context_dim is 0); pass context=None")
        emb = F.silu(self.embed(t, y, x.shape[0], pooled))  # (B, E); every block's embedding layer starts with SiLU
        frames = 0
        if cfg.video:  # fold the frames into the batch: (B, C, F, *S) -> (B·F, C, *S)
            B, C, frames = x.shape[:3]
            if frame_mask is not None and tuple(frame_mask.shape) != (B, frames):
                raise ValueError(f"frame_mask must be (B, F) = {(B, frames)}, got {tuple(frame_mask.shape)}")
            x = x.transpose(1, 2).reshape(B * frames, C, *x.shape[3:])
            emb = emb.repeat_interleave(frames, 0)
            if context is not None:
                context = context.repeat_interleave(frames, 0)
                context_mask = None if context_mask is None else context_mask.repeat_interleave(frames, 0)
        elif frame_mask is not None:
            raise ValueError("frame_mask is for video UNets (model.frames > 0)")
        p = cfg.patch_size
        h = self.conv_in(pixel_unshuffle(x, p))  # (B, mc, *S/p)
        if self.pos_embed is not None:
            h = h + self.pos_embed
        skips = [h]
        for blk in self.down:
            h = blk(h, emb, None, context, context_mask, frames, frame_mask) if isinstance(blk, Block) else blk(h)
            skips.append(h)
        for blk in self.mid:
            h = blk(h, emb, None, context, context_mask, frames, frame_mask)
        for blk in self.up:
            h = torch.cat((h, skips.pop()), dim=1)
            size = skips[-1].shape[2:] if blk.up is not None else None
            h = blk(h, emb, size, context, context_mask, frames, frame_mask)
        out = self.conv_out(F.silu(apply_norm(h, self.norm_out)))
        out = pixel_shuffle(out, p)  # channel c·p^d + patch offset -> that pixel of channel c
        if cfg.video:
            out = out.reshape(-1, frames, *out.shape[1:]).transpose(1, 2)  # (B, out, F, *S)
        return out

    def flops_per_image(self, tokens: int = 0) -> int:
        """Forward FLOPs for one sample (2 per multiply-add) of convolutions, linear layers and attention
        matmuls, with a caption of ``tokens`` tokens for a text-conditional UNet (a video UNet: one clip
        of ``frames`` frames); normalisation and elementwise work are left out, as in
        ``torch.utils.flop_counter``."""
        cfg = self.config
        mc, emb_dim, frames = cfg.model_channels, 4 * cfg.model_channels, cfg.frames
        n = 2 * mc * emb_dim + 2 * emb_dim * emb_dim     # time MLP
        n += 2 * cfg.context_dim * emb_dim if cfg.text_conditional else 0
        per_frame = max(frames, 1)                        # per-frame layers outside the blocks
        shape = cfg.level_shapes()[0]
        n += conv_flops(self.conv_in.in_channels, mc, 3, shape) * per_frame
        skips = [shape]
        for blk in self.down:
            if isinstance(blk, Downsample):
                n += blk.flops(shape) * per_frame
                shape = tuple((s + 1) // 2 for s in shape)
            else:
                n += blk.flops(shape, None, tokens, frames)
            skips.append(shape)
        n += sum(blk.flops(shape, None, tokens, frames) for blk in self.mid)
        for blk in self.up:
            skips.pop()
            size = skips[-1] if blk.up is not None else None
            n += blk.flops(shape, size, tokens, frames)
            if size is not None:
                shape = size
        return n + conv_flops(self.conv_out.in_channels, self.conv_out.out_channels, 3, shape) * per_frame
