"""A small contrastive image–text model (CLIP, Radford et al. 2021) to score prompt adherence.

    images (B, 3, S, S) in [-1, 1] -> ResNet-ish CNN -> avg pool -> linear   -> L2-norm (B, D)
    texts  [B str]  -> frozen MiniLM pooled (B, 384) -> linear (or MLP)    -> L2-norm (B, D)
                    or our TextEncoder from scratch (char / BPE) -> linear -> L2-norm (B, D)
    logits = exp(logit_scale) * img @ txt.T                                    (B, B)

The loss is CLIP's symmetric InfoNCE (mean of the image->text and text->image
cross-entropies), generalised to several positives per row: a text is a
positive for every image that has it among its captions, so two emoji sharing
an alias in one batch are not pushed apart. The temperature is learned as
``logit_scale = log(1/T)``, initialised at ``T = 0.07`` and clamped to at most
``log(100)`` like CLIP.

Text towers:

* ``minilm`` (default): the frozen pre-trained all-MiniLM-L6-v2 sentence
  embedding with a trainable projection. Held-out emoji have names the model
  never saw in training ("flag of Togo", "broken chain"); a pre-trained
  sentence encoder still places them near related training names, which a
  tower trained on 1.7k names cannot. Only the projection is trained, so its
  input (the frozen embedding) is computed once per caption
  (:meth:`ContrastiveModel.frozen_text_features`).
* ``own``: our :class:`~aigc.models.text_encoder.TextEncoder` trained from
  scratch with a char or BPE tokenizer (passed in; it is part of the model).

Only the trainable weights belong to a checkpoint (:meth:`trainable_state_dict`);
the MiniLM weights come from their installed package each time.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..tokenizers.base import Tokenizer
from ..tokenizers.batch import encode_batch
from .minilm import MiniLM, load_minilm
from .text_encoder import TextEncoder, TextEncoderConfig

TEXT_TOWERS = ("minilm", "own")
NORMS = ("batch", "group")
TOKENIZERS = ("char", "bpe")
BACKBONE = "text_backbone."  # prefix of the frozen MiniLM weights (never saved)


@dataclass
class ContrastiveConfig:
    image_size: int = 32
    channels: tuple[int, ...] = (32, 64, 128)  # one stage per entry, stride 2 between stages
    blocks: int = 1                            # residual blocks per stage
    stem_stride: int = 2                       # 2: stages at 16, 8, 4 px (6x less CPU than 1 at 32 px)
    norm: str = "batch"                        # batch | group (GroupNorm, 8 groups)
    embed_dim: int = 128                       # the shared space D
    text_tower: str = "minilm"                 # minilm | own
    text_hidden: int = 0                       # 0: a linear map of MiniLM; > 0: an MLP this wide
    dropout: float = 0.0                       # before both projections
    init_temperature: float = 0.07             # CLIP's initial T
    max_logit_scale: float = 100.0             # clamp on 1/T
    # the "own" text tower (TextEncoder from scratch); vocab_size is set from the tokenizer
    text_tokenizer: str = "char"               # char | bpe, trained on the training captions
    text_bpe_vocab: int = 2000                 # BPE only
    text_vocab_size: int = 0
    text_d_model: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_max_len: int = 64
    text_dropout: float = 0.1

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)

    def validate(self) -> None:
        for name in ("image_size", "blocks", "embed_dim", "stem_stride"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ConfigError(f"contrastive.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.channels or any(not isinstance(c, int) or c <= 0 for c in self.channels):
            raise ConfigError(f"contrastive.channels must be positive integers, got {list(self.channels)}")
        if self.norm == "group" and any(c % 8 for c in self.channels):
            raise ConfigError(f"norm='group' uses 8 groups; every channel count must be divisible by 8, "
                              f"got {list(self.channels)}")
        if self.norm not in NORMS:
            raise ConfigError(f"contrastive.norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.text_tower not in TEXT_TOWERS:
            raise ConfigError(f"contrastive.text_tower must be one of {', '.join(TEXT_TOWERS)}, "
                              f"got {self.text_tower!r}")
        if self.text_tokenizer not in TOKENIZERS:
            raise ConfigError(f"contrastive.text_tokenizer must be one of {', '.join(TOKENIZERS)}, "
                              f"got {self.text_tokenizer!r}")
        if self.text_hidden < 0:
            raise ConfigError(f"contrastive.text_hidden must be 0 (linear) or positive, got {self.text_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"contrastive.dropout must be in [0, 1), got {self.dropout}")
        if not (self.init_temperature > 0 and self.max_logit_scale >= 1.0
                and 1.0 / self.init_temperature <= self.max_logit_scale):
            raise ConfigError(f"contrastive.init_temperature must be positive with 1/T <= max_logit_scale "
                              f"(>= 1), got T={self.init_temperature}, max={self.max_logit_scale}")

    def text_encoder_config(self) -> TextEncoderConfig:
        """The from-scratch TextEncoder of the ``own`` tower (pre-norm, mean pooling)."""
        return TextEncoderConfig(vocab_size=self.text_vocab_size, max_len=self.text_max_len,
                                 d_model=self.text_d_model, n_layer=self.text_layers, n_head=self.text_heads,
                                 d_ff=4 * self.text_d_model, dropout=self.text_dropout, pooling="mean")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ContrastiveConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown contrastive config field(s): {', '.join(unknown)}")
        return cls(**d)


# ---- image tower ----------------------------------------------------------------------------------


def _norm(kind: str, ch: int) -> nn.Module:
    return nn.BatchNorm2d(ch) if kind == "batch" else nn.GroupNorm(8, ch)


class BasicBlock(nn.Module):
    """The "basic block" of a ResNet (He et al. 2016): x -> conv3x3(stride) -> norm -> ReLU -> conv3x3 ->
    norm, + skip (1x1 conv when the shape changes), ReLU. A classifier's block, post-activation, strided,
    BatchNorm by default and unconditioned: not the diffusion UNet's pre-norm, timestep-modulated,
    zero-initialised :class:`aigc.nn.conv.ResBlock`, whose job (the identity at init, an embedding in
    every block) is a different one."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(norm, c_out)
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(norm, c_out)))

    def forward(self, x: Tensor) -> Tensor:  # (B, Ci, H, W) -> (B, Co, H/s, W/s)
        h = F.relu(self.norm1(self.conv1(x)), inplace=True)
        return F.relu(self.norm2(self.conv2(h)) + self.skip(x), inplace=True)


class ImageTower(nn.Module):
    """A small ResNet for RGB icons: stem, len(channels) stages, global average pool -> (B, channels[-1])."""

    def __init__(self, cfg: ContrastiveConfig) -> None:
        super().__init__()
        c0 = cfg.channels[0]
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, cfg.stem_stride, 1, bias=False), _norm(cfg.norm, c0),
                                  nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        c_in = c0
        for s, c in enumerate(cfg.channels):
            for b in range(cfg.blocks):
                blocks.append(BasicBlock(c_in, c, 2 if s > 0 and b == 0 else 1, cfg.norm))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = c_in

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, S, S) -> (B, C)
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


# ---- the model ------------------------------------------------------------------------------------


class ContrastiveModel(nn.Module):
    def __init__(self, cfg: ContrastiveConfig, tokenizer: Tokenizer | None = None,
                 minilm: MiniLM | None = None) -> None:
        """``tokenizer`` is required by (and only by) the ``own`` tower; ``minilm`` lets callers share one
        loaded MiniLM (default: loaded from its installed package)."""
        super().__init__()
        cfg = replace(cfg)  # text_vocab_size is filled in below; leave the caller's config alone
        cfg.validate()
        self.tokenizer: Tokenizer | None = None
        self.minilm: MiniLM | None = None
        D = cfg.embed_dim
        self.image_tower = ImageTower(cfg)
        self.image_proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(self.image_tower.out_dim, D))
        if cfg.text_tower == "minilm":
            if tokenizer is not None:
                raise ConfigError("the minilm text tower brings its own WordPiece tokenizer; pass tokenizer=None")
            self.minilm = minilm if minilm is not None else load_minilm()
            self.text_backbone = self.minilm.encoder  # frozen; excluded from trainable_state_dict
            d_in = self.minilm.d_model
            self.text_proj = (nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d_in, D)) if cfg.text_hidden == 0
                              else nn.Sequential(nn.Linear(d_in, cfg.text_hidden), nn.GELU(),
                                                 nn.Dropout(cfg.dropout), nn.Linear(cfg.text_hidden, D)))
        else:
            if tokenizer is None:
                raise ConfigError("the own text tower needs the tokenizer it was built with (char or BPE)")
            if tokenizer.kind != cfg.text_tokenizer:
                raise ConfigError(f"contrastive.text_tokenizer is {cfg.text_tokenizer!r} but a {tokenizer.kind!r} "
                                  "tokenizer was given")
            if cfg.text_vocab_size not in (0, tokenizer.vocab_size):
                raise ConfigError(f"contrastive.text_vocab_size={cfg.text_vocab_size} but the tokenizer has "
                                  f"{tokenizer.vocab_size} tokens; leave it 0 to take the tokenizer's")
            cfg.text_vocab_size = tokenizer.vocab_size
            self.tokenizer = tokenizer
            self.text_encoder = TextEncoder(cfg.text_encoder_config())
            self.text_proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.text_d_model, D))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        self.config = cfg

    # -- bookkeeping --

    def train(self, mode: bool = True) -> ContrastiveModel:
        super().train(mode)
        if self.minilm is not None:
            self.text_backbone.eval()  # frozen: no dropout, ever
        return self

    def num_params(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The weights a checkpoint holds: all but the frozen MiniLM backbone."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(BACKBONE)}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(BACKBONE)]
        if missing or unexpected:
            raise DataError(f"contrastive weights do not fit the config: {len(missing)} missing "
                            f"(e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})")

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    # -- towers --

    def scale(self) -> Tensor:
        """exp(logit_scale), clamped to max_logit_scale (CLIP)."""
        return self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    def encode_images(self, x: Tensor) -> Tensor:
        """Float images (B, 3, S, S) in [-1, 1] -> unit embeddings (B, D)."""
        if x.dim() != 4 or x.shape[1] != 3 or not x.dtype.is_floating_point:
            raise DataError(f"the image tower takes float RGB images (B, 3, H, W) in [-1, 1], "
                            f"got {x.dtype} {tuple(x.shape)}")
        return F.normalize(self.image_proj(self.image_tower(x)), dim=-1)

    @torch.no_grad()
    def frozen_text_features(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """The frozen MiniLM sentence embeddings (N, 384) that the minilm tower projects."""
        if self.minilm is None:
            raise ConfigError("frozen_text_features needs the minilm text tower")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths: less padding
        out = torch.zeros(len(texts), self.minilm.d_model, device=self.device)
        for s in range(0, len(texts), batch_size):
            rows = order[s:s + batch_size]
            out[rows] = self.minilm.encode([texts[i] for i in rows])[0].pooled
        return out

    def project_text(self, features: Tensor) -> Tensor:
        """Frozen MiniLM features (B, 384) -> unit embeddings (B, D)."""
        return F.normalize(self.text_proj(features), dim=-1)

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """Prompts -> unit embeddings (B, D) (gradients flow into the trainable parts)."""
        if isinstance(texts, str) or not len(texts):
            raise DataError("encode_texts takes a non-empty list of prompts")
        if self.minilm is not None:
            return self.project_text(self.frozen_text_features(texts))
        batch = encode_batch(self.tokenizer, list(texts), self.config.text_max_len).to(self.device)
        pooled = self.text_encoder(batch.ids, batch.mask).pooled    # (B, C)
        return F.normalize(self.text_proj(pooled), dim=-1)


def positives(captions: Sequence[Sequence[str]], texts: Sequence[str]) -> Tensor:
    """(B, B) bool: image i and text j match when text j is one of image i's captions."""
    sets = [set(c) for c in captions]
    return torch.tensor([[t in s for t in texts] for s in sets], dtype=torch.bool)


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, scale: Tensor, pos: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE (CLIP) over a batch of unit embeddings (B, D); ``pos`` (B, B) bool marks the
    matching pairs (default: the diagonal). With several positives in a row the target is uniform over
    them (each row keeps at least its diagonal)."""
    B = image_emb.shape[0]
    if text_emb.shape[0] != B:
        raise DataError(f"{B} image embeddings but {text_emb.shape[0]} text embeddings")
    logits = scale * image_emb @ text_emb.T                         # (B, B) image i vs text j
    eye = torch.eye(B, dtype=torch.bool, device=logits.device)
    pos = eye if pos is None else (pos.to(logits.device) | eye)
    target = pos.to(logits.dtype)
    i2t = F.cross_entropy(logits, target / target.sum(1, keepdim=True))
    t2i = F.cross_entropy(logits.T, target.T / target.T.sum(1, keepdim=True))
    return 0.5 * (i2t + t2i)
