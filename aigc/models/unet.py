"""UNet noise predictor of Improved DDPM (Nichol & Dhariwal 2021; Ho et al. 2020).

    x (B, C, H, W), t (B,), y (B,) ->
      conv_in -> [ResBlock (+ self-attention)] x num_res_blocks, stride-2 conv, ... (encoder, skips saved)
      -> ResBlock, self-attention, ResBlock (middle)
      -> [concat skip, ResBlock (+ self-attention)] x (num_res_blocks + 1), nearest upsample + conv, ...
      -> GroupNorm, SiLU, zero-initialised conv -> (B, out_channels, H, W)

Each residual block receives the timestep (+ class) embedding as a per-channel
scale and shift of its second GroupNorm ("adaptive group normalisation",
Dhariwal & Nichol 2021); its last convolution starts at zero, so every block
is the identity at initialisation and the whole network outputs exactly zero.
Down-sampling is a stride-2 convolution (28 -> 14 -> 7 -> 4), and up-sampling
is nearest-neighbour to the size of the matching skip, so odd sizes round-trip.
With ``learn_sigma`` the output has 2·C channels: the mean (ε) and the
interpolation weight v of the learned variance.

Text conditioning (``context_dim`` > 0, as in latent diffusion, Rombach et al.
2022): blocks at ``cross_attention_resolutions`` and the middle block attend
from every pixel to a caption's token embeddings (B, L, context_dim), padding
masked; the caption's pooled embedding (B, context_dim) is projected and added
to the timestep embedding, as Imagen and SDXL do.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn.embeddings import grid_sinusoids
from ..nn.timestep import timestep_embedding

GN_EPS = 1e-5


@dataclass
class UNetConfig:
    image_size: int = 28
    in_channels: int = 1
    model_channels: int = 64                  # channels of the first level
    out_channels: int = 0                     # 0 -> in_channels (doubled when learn_sigma)
    learn_sigma: bool = False                 # also output the variance interpolation v (Improved DDPM)
    channel_mult: tuple[int, ...] = (1, 2, 2)  # channels of level i = model_channels * channel_mult[i]
    num_res_blocks: int = 2                   # residual blocks per level (encoder; decoder has one more)
    attention_resolutions: tuple[int, ...] = (7,)  # feature-map sizes (pixels) that get self-attention
    num_heads: int = 4
    head_channels: int = 0                    # > 0: heads = channels // head_channels (overrides num_heads)
    dropout: float = 0.0
    num_classes: int | None = None            # None/0: unconditional; else + one learned null class
    use_scale_shift_norm: bool = True
    norm_groups: int = 32                     # GroupNorm groups, lowered to divide the channels
    context_dim: int = 0                      # > 0: cross-attention to text tokens of this width
    cross_attention_resolutions: tuple[int, ...] | None = None  # None -> attention_resolutions
    patch_size: int = 1                       # > 1: p x p pixel patches folded into channels first (pixel
                                              # unshuffle, as "simple diffusion", Hoogeboom et al. 2023): the
                                              # levels start at image_size / p; unfolded again at the output
    position_embedding: bool = False          # add a learned absolute position embedding after conv_in (as
                                              # ViT/DiT do), so every pixel knows where it is (on shapes it
                                              # did not improve "left of" / "above": see the README)

    def __post_init__(self) -> None:          # JSON gives lists
        self.channel_mult = tuple(self.channel_mult)
        self.attention_resolutions = tuple(self.attention_resolutions)
        if self.cross_attention_resolutions is not None:
            self.cross_attention_resolutions = tuple(self.cross_attention_resolutions)

    @property
    def text_conditional(self) -> bool:
        return self.context_dim > 0

    @property
    def cross_resolutions(self) -> tuple[int, ...]:
        """Feature-map sizes whose blocks cross-attend to the text (none without ``context_dim``)."""
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

    def resolutions(self) -> list[int]:
        """Feature-map size of each level: image_size / patch_size, then ceil(size / 2) per stride-2 conv."""
        sizes = [self.image_size // self.patch_size]
        for _ in self.channel_mult[1:]:
            sizes.append((sizes[-1] + 1) // 2)
        return sizes

    def heads(self, channels: int) -> int:
        return channels // self.head_channels if self.head_channels > 0 else self.num_heads

    def validate(self) -> None:
        for name in ("image_size", "in_channels", "model_channels", "num_res_blocks", "num_heads", "norm_groups",
                     "patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        for name in ("out_channels", "head_channels", "context_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be 0 or a positive integer, got {getattr(self, name)!r}")
        if not self.channel_mult or any(not isinstance(m, int) or m <= 0 for m in self.channel_mult):
            raise ConfigError(f"model.channel_mult must be positive integers, e.g. [1, 2, 2]; got {list(self.channel_mult)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes is not None and (not isinstance(self.num_classes, int) or self.num_classes < 0):
            raise ConfigError(f"model.num_classes must be null, 0 or a positive integer, got {self.num_classes!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"model.patch_size ({self.patch_size}) must divide the image size ({self.image_size})")
        sizes = [self.image_size // self.patch_size]
        for _ in self.channel_mult[1:]:
            if sizes[-1] < 2:
                raise ConfigError(
                    f"model.channel_mult has {len(self.channel_mult)} levels, too many for "
                    f"{self.image_size}x{self.image_size} images (each level halves the size); use fewer")
            sizes.append((sizes[-1] + 1) // 2)
        for name in ("attention_resolutions", "cross_attention_resolutions"):
            for res in getattr(self, name) or ():
                if res not in sizes:
                    raise ConfigError(
                        f"model.{name} asks for {res}x{res}, which this UNet never reaches; "
                        f"its levels are {', '.join(f'{s}x{s}' for s in sizes)}")
        attended = {self.model_channels * m for m, s in zip(self.channel_mult, sizes)
                    if s in self.attention_resolutions or s in self.cross_resolutions}
        attended.add(self.model_channels * self.channel_mult[-1])  # the middle block always attends
        for ch in sorted(attended):
            if self.head_channels > 0 and ch % self.head_channels:
                raise ConfigError(f"model.head_channels ({self.head_channels}) must divide the {ch} channels "
                                  "of every attention layer")
            if self.head_channels == 0 and ch % self.num_heads:
                raise ConfigError(f"model.num_heads ({self.num_heads}) must divide the {ch} channels "
                                  "of every attention layer")


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= ``max_groups`` that divides ``channels``."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def _conv_flops(c_in: int, c_out: int, k: int, h: int, w: int) -> int:
    return 2 * c_in * c_out * k * k * h * w


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv; + embedding as scale/shift of the second GroupNorm; SiLU, dropout, zero conv."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, scale_shift: bool,
                 max_groups: int) -> None:
        super().__init__()
        self.c_in, self.c_out, self.emb_dim, self.scale_shift = c_in, c_out, emb_dim, scale_shift
        self.norm1 = nn.GroupNorm(norm_groups(c_in, max_groups), c_in, eps=GN_EPS)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out if scale_shift else c_out)
        self.norm2 = nn.GroupNorm(norm_groups(c_out, max_groups), c_out, eps=GN_EPS)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x (B, C_in, H, W), emb (B, E) already through SiLU -> (B, C_out, H, W)."""
        n1 = self.norm1
        h = self.conv1(F.silu(F.group_norm(x, n1.num_groups, n1.weight, n1.bias, n1.eps)))  # (B, C_out, H, W)
        e = self.emb(emb)[:, :, None, None]                                                # (B, 2C_out, 1, 1)
        n2 = self.norm2
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, F.group_norm(h, n2.num_groups, n2.weight, n2.bias, n2.eps), 1 + scale)
        else:
            h = F.group_norm(h + e, n2.num_groups, n2.weight, n2.bias, n2.eps)
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h

    def flops(self, h: int, w: int) -> int:
        n = _conv_flops(self.c_in, self.c_out, 3, h, w) + _conv_flops(self.c_out, self.c_out, 3, h, w)
        n += 2 * self.emb_dim * self.emb.out_features
        if self.c_in != self.c_out:
            n += _conv_flops(self.c_in, self.c_out, 1, h, w)
        return n


class Attention(nn.Module):
    """Multi-head self-attention over the H·W positions of a feature map (residual, zero-init output)."""

    def __init__(self, channels: int, heads: int, max_groups: int) -> None:
        super().__init__()
        self.channels, self.heads = channels, heads
        self.norm = nn.GroupNorm(norm_groups(channels, max_groups), channels, eps=GN_EPS)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        L, nh = H * W, self.heads
        n = self.norm
        h = F.group_norm(x, n.num_groups, n.weight, n.bias, n.eps).flatten(2).transpose(1, 2)  # (B, L, C)
        q, k, v = self.qkv(h).view(B, L, 3, nh, C // nh).permute(2, 0, 3, 1, 4)              # (B, nh, L, D) each
        o = F.scaled_dot_product_attention(q, k, v)                                          # (B, nh, L, D)
        o = self.proj(o.transpose(1, 2).reshape(B, L, C))                                    # (B, L, C)
        return x + o.transpose(1, 2).reshape(B, C, H, W)

    def flops(self, h: int, w: int) -> int:
        L, C = h * w, self.channels
        return 2 * L * C * 3 * C + 4 * L * L * C + 2 * L * C * C  # qkv, QK^T and AV, output projection


class CrossAttention(nn.Module):
    """Every pixel attends to the caption's tokens: softmax(Q K^T / sqrt(D)) V with Q from the
    normalised feature map and K, V from the text (padding masked); residual, zero-init output."""

    def __init__(self, channels: int, context_dim: int, heads: int, max_groups: int) -> None:
        super().__init__()
        self.channels, self.context_dim, self.heads = channels, context_dim, heads
        self.norm = nn.GroupNorm(norm_groups(channels, max_groups), channels, eps=GN_EPS)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, C, H, W), context (B, S, E), mask (B, S) bool (True = a real token) or None."""
        B, C, H, W = x.shape
        S, nh = context.shape[1], self.heads
        n = self.norm
        h = F.group_norm(x, n.num_groups, n.weight, n.bias, n.eps).flatten(2).transpose(1, 2)  # (B, L, C)
        q = self.q(h).view(B, H * W, nh, C // nh).transpose(1, 2)                            # (B, nh, L, D)
        k, v = self.kv(context).view(B, S, 2, nh, C // nh).permute(2, 0, 3, 1, 4)            # (B, nh, S, D) each
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, None, None, :])
        o = self.proj(o.transpose(1, 2).reshape(B, H * W, C))                                # (B, L, C)
        return x + o.transpose(1, 2).reshape(B, C, H, W)

    def flops(self, h: int, w: int, tokens: int) -> int:
        L, C = h * w, self.channels
        return 2 * L * C * C + 2 * tokens * self.context_dim * 2 * C + 4 * L * tokens * C + 2 * L * C * C


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: H -> ceil(H / 2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def flops(self, h: int, w: int) -> int:
        return _conv_flops(self.channels, self.channels, 3, (h + 1) // 2, (w + 1) // 2)


class Upsample(nn.Module):
    """Nearest-neighbour resize to a given size (that of the next skip), then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))

    def flops(self, h: int, w: int) -> int:  # h, w: the output size
        return _conv_flops(self.channels, self.channels, 3, h, w)


class Block(nn.Module):
    """One step of the encoder or decoder path: a ResBlock, optional self-attention, optional
    cross-attention to the text, optional upsampling."""

    def __init__(self, res: ResBlock, attn: Attention | None = None, up: Upsample | None = None,
                 cross: CrossAttention | None = None) -> None:
        super().__init__()
        self.res, self.attn, self.cross, self.up = res, attn, cross, up

    def forward(self, x: Tensor, emb: Tensor, size: tuple[int, int] | None = None,
                context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x)
        if self.cross is not None:
            x = self.cross(x, context, context_mask)
        if self.up is not None:
            x = self.up(x, size)
        return x

    def flops(self, h: int, w: int, size: tuple[int, int] | None = None, tokens: int = 0) -> int:
        n = self.res.flops(h, w) + (self.attn.flops(h, w) if self.attn is not None else 0)
        n += self.cross.flops(h, w, tokens) if self.cross is not None else 0
        return n + (self.up.flops(*size) if self.up is not None else 0)


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        mc, groups = cfg.model_channels, cfg.norm_groups
        emb_dim = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # index num_classes is the learned "null" class of classifier-free guidance (Ho & Salimans 2022)
        self.label_embed = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.conditional else None
        self.pooled_embed = nn.Linear(cfg.context_dim, emb_dim) if cfg.text_conditional else None

        def res(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, emb_dim, cfg.dropout, cfg.use_scale_shift_norm, groups)

        def attn(ch: int) -> Attention:
            return Attention(ch, cfg.heads(ch), groups)

        def cross(ch: int, size: int | None) -> CrossAttention | None:  # size None: the middle block
            if not cfg.text_conditional or (size is not None and size not in cfg.cross_resolutions):
                return None
            return CrossAttention(ch, cfg.context_dim, cfg.heads(ch), groups)

        sizes = cfg.resolutions()
        p2 = cfg.patch_size ** 2
        self.conv_in = nn.Conv2d(cfg.in_channels * p2, mc, 3, padding=1)
        # initialised to 2-D sinusoids (half the channels encode the row, half the column), then learned
        self.pos_embed = nn.Parameter(grid_sinusoids(sizes[0], mc)) if cfg.position_embedding else None
        self.down = nn.ModuleList()            # Block | Downsample; each output is a skip
        skip_ch, ch = [mc], mc
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                out = mc * mult
                self.down.append(Block(res(ch, out), attn(out) if sizes[level] in cfg.attention_resolutions else None,
                                       cross=cross(out, sizes[level])))
                ch = out
                skip_ch.append(ch)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(Downsample(ch))
                skip_ch.append(ch)
        self.mid = nn.ModuleList([Block(res(ch, ch), attn(ch), cross=cross(ch, None)), Block(res(ch, ch))])
        self.up = nn.ModuleList()              # Block, each consuming one skip
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                out = mc * mult
                a = attn(out) if sizes[level] in cfg.attention_resolutions else None
                u = Upsample(out) if level > 0 and i == cfg.num_res_blocks else None
                self.up.append(Block(res(ch + skip_ch.pop(), out), a, u, cross(out, sizes[level])))
                ch = out
        self.norm_out = nn.GroupNorm(norm_groups(ch, groups), ch, eps=GN_EPS)
        self.conv_out = nn.Conv2d(ch, cfg.out_ch * p2, 3, padding=1)
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
                context_mask: Tensor | None = None, pooled: Tensor | None = None) -> Tensor:
        """x (B, C, H, W), t (B,) or scalar timesteps (floats allowed), y (B,) class ids or None
        (num_classes = the null class) -> (B, out_channels, H, W). A text-conditional UNet also takes
        the caption's token embeddings ``context`` (B, S, context_dim), which of them are real tokens
        ``context_mask`` (B, S) bool (None: all), and its ``pooled`` embedding (B, context_dim)."""
        cfg = self.config
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
        p = cfg.patch_size
        h = self.conv_in(F.pixel_unshuffle(x, p) if p > 1 else x)  # (B, mc, H/p, W/p)
        if self.pos_embed is not None:
            h = h + self.pos_embed
        skips = [h]
        for blk in self.down:
            h = blk(h, emb, None, context, context_mask) if isinstance(blk, Block) else blk(h)
            skips.append(h)
        for blk in self.mid:
            h = blk(h, emb, None, context, context_mask)
        for blk in self.up:
            h = torch.cat((h, skips.pop()), dim=1)
            h = blk(h, emb, skips[-1].shape[-2:] if blk.up is not None else None, context, context_mask)
        n = self.norm_out
        out = self.conv_out(F.silu(F.group_norm(h, n.num_groups, n.weight, n.bias, n.eps)))
        return F.pixel_shuffle(out, p) if p > 1 else out  # channel c*p^2 + i*p + j -> pixel (i, j) of channel c

    def flops_per_image(self, tokens: int = 0) -> int:
        """Forward FLOPs for one image (2 per multiply-add) of convolutions, linear layers and attention
        matmuls, with a caption of ``tokens`` tokens for a text-conditional UNet; normalisation and
        elementwise work are left out, as in ``torch.utils.flop_counter``."""
        cfg = self.config
        mc, emb_dim = cfg.model_channels, 4 * cfg.model_channels
        n = 2 * mc * emb_dim + 2 * emb_dim * emb_dim     # time MLP
        n += 2 * cfg.context_dim * emb_dim if cfg.text_conditional else 0
        h = w = cfg.image_size // cfg.patch_size
        n += _conv_flops(self.conv_in.in_channels, mc, 3, h, w)
        skips = [(h, w)]
        for blk in self.down:
            n += blk.flops(h, w, None, tokens) if isinstance(blk, Block) else blk.flops(h, w)
            if isinstance(blk, Downsample):
                h, w = (h + 1) // 2, (w + 1) // 2
            skips.append((h, w))
        n += sum(blk.flops(h, w, None, tokens) for blk in self.mid)
        for blk in self.up:
            skips.pop()
            size = skips[-1] if blk.up is not None else None
            n += blk.flops(h, w, size, tokens)
            if size is not None:
                h, w = size
        return n + _conv_flops(self.conv_out.in_channels, self.conv_out.out_channels, 3, h, w)
