"""A bidirectional Transformer text encoder (BERT layout, Devlin et al. 2019) for conditioning.

    ids (B, L), mask (B, L) -> embed (+ positions, + token type) -> N x EncoderLayer
      -> token embeddings (B, L, C) and a pooled embedding (B, C)

Two uses: trained jointly from scratch with a diffusion UNet (small, pre-norm),
and the frozen pre-trained all-MiniLM-L6-v2 (post-norm BERT; ``aigc.models.minilm``
loads its weights into this module). Layouts:

* ``norm="post"`` (BERT): LN over the summed embeddings, LN after every
  sub-layer, no final LN. ``norm="pre"``: no embedding LN, LN before every
  sub-layer and once at the end.
* ``positions="learned"``: ``tok + pos``. ``positions="sinusoidal"``:
  ``tok * sqrt(C) + sinusoid`` as in Vaswani et al. 2017 (and seq2seq.py).
* Pooling ``mean`` averages the real (unmasked) tokens, as sentence-transformers
  does for MiniLM; ``cls`` takes position 0; ``none`` gives no pooled output.
  ``normalize_pooled`` scales the pooled vector to unit L2 norm (MiniLM's
  ``Normalize`` module).

Padding positions are computed but never attended to, so they never change the
real positions' outputs; their own output rows are meaningless and must be
masked by the consumer (cross-attention gets ``mask``). A row with no real token
at all attends to every position (finite, not NaN) and pools to zeros.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_sizes
from ..errors import ConfigError, DataError
from ..nn.activations import ACTIVATIONS
from ..nn.blocks import EncoderLayer
from ..nn.embeddings import sinusoidal_table

POOLINGS = ("mean", "cls", "none")


@dataclass
class TextEncoderConfig:
    vocab_size: int = 0             # set from the tokenizer when 0
    max_len: int = 77               # longest token sequence (position table size)
    d_model: int = 256
    n_layer: int = 4
    n_head: int = 4
    d_ff: int = 1024
    dropout: float = 0.1            # on embeddings and every sub-layer's output
    attention_dropout: float = 0.0  # on attention weights
    activation: str = "gelu"        # relu | gelu (exact, BERT's) | gelu_tanh
    norm: str = "pre"               # pre | post (BERT)
    positions: str = "learned"      # learned | sinusoidal
    type_vocab_size: int = 0        # token-type (segment) embedding rows: 0 (none) or 2 (BERT)
    layer_norm_eps: float = 1e-5    # BERT: 1e-12
    pad_id: int = 0                 # id padding uses; derives the mask when none is given
    pooling: str = "mean"           # mean | cls | none
    normalize_pooled: bool = False  # L2-normalise the pooled embedding
    bias: bool = True

    def validate(self) -> None:
        if self.vocab_size <= 0:
            raise ConfigError("text_encoder.vocab_size must be positive (set it from the tokenizer)")
        check_sizes("text_encoder", self, {"vocab_size": "vocab", "max_len": "context", "d_model": "width",
                                           "n_layer": "layers", "n_head": "heads", "d_ff": "width"})
        if self.d_model % self.n_head:
            raise ConfigError(f"text_encoder.d_model ({self.d_model}) must be divisible by "
                              f"text_encoder.n_head ({self.n_head})")
        choices = {"norm": ("pre", "post"), "positions": ("learned", "sinusoidal"), "pooling": POOLINGS,
                   "activation": tuple(ACTIVATIONS)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"text_encoder.{name} must be one of {', '.join(allowed)}, "
                                  f"got '{getattr(self, name)}'")
        if self.positions == "sinusoidal" and self.d_model % 2:
            raise ConfigError(f"sinusoidal positions need an even text_encoder.d_model, got {self.d_model}")
        if self.type_vocab_size < 0:
            raise ConfigError(f"text_encoder.type_vocab_size must be 0 or more, got {self.type_vocab_size}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"text_encoder.{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"text_encoder.layer_norm_eps must be positive, got {self.layer_norm_eps}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(f"text_encoder.pad_id {self.pad_id} is outside the vocabulary "
                              f"(0..{self.vocab_size - 1})")


class TextEncoding(NamedTuple):
    tokens: Tensor          # (B, L, C) per-token embeddings (padding rows meaningless)
    pooled: Tensor | None   # (B, C), None when pooling == "none"
    mask: Tensor            # (B, L) bool, True at real tokens


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        C, eps, pre = cfg.d_model, cfg.layer_norm_eps, cfg.norm == "pre"
        self.tok_embed = nn.Embedding(cfg.vocab_size, C)
        if cfg.positions == "learned":
            self.pos_embed = nn.Embedding(cfg.max_len, C)
        else:
            self.register_buffer("positions", sinusoidal_table(cfg.max_len, C), persistent=False)
        self.type_embed = nn.Embedding(cfg.type_vocab_size, C) if cfg.type_vocab_size else None
        self.embed_norm = nn.Identity() if pre else nn.LayerNorm(C, eps=eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(C, cfg.n_head, cfg.d_ff, activation=cfg.activation, dropout=cfg.dropout,
                         attention_dropout=cfg.attention_dropout, bias=cfg.bias, pre=pre, eps=eps)
            for _ in range(cfg.n_layer))
        self.final_norm = nn.LayerNorm(C, eps=eps) if pre else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """BERT's init: N(0, 0.02) weights, zero biases, unit LayerNorms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        if self.config.positions == "sinusoidal":  # scaled by sqrt(C) in forward: unit size, like the sinusoid
            nn.init.normal_(self.tok_embed.weight, std=self.config.d_model ** -0.5)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids: Tensor, mask: Tensor | None = None, token_type_ids: Tensor | None = None) -> TextEncoding:
        """ids (B, L) integer, mask (B, L) bool True at real tokens (default: ids != pad_id)."""
        cfg = self.config
        mask = self._check(ids, mask, token_type_ids)
        B, L = ids.shape
        x = self.tok_embed(ids)                                            # (B, L, C)
        if cfg.positions == "learned":
            x = x + self.pos_embed.weight[:L]
        else:
            x = x * math.sqrt(cfg.d_model) + self.positions[:L]
        if self.type_embed is not None:
            x = x + (self.type_embed.weight[0] if token_type_ids is None else self.type_embed(token_type_ids))
        x = self.drop(self.embed_norm(x))
        attn_mask = None
        if not bool(mask.all()):
            # a row without any real token attends to everything, so it stays finite
            attn_mask = (mask | ~mask.any(1, keepdim=True))[:, None, None, :]  # (B, 1, 1, L)
        for layer in self.layers:
            x = layer(x, attn_mask)
        x = self.final_norm(x)
        return TextEncoding(x, self._pool(x, mask), mask)

    def _pool(self, x: Tensor, mask: Tensor) -> Tensor | None:
        pooling = self.config.pooling
        if pooling == "none":
            return None
        if pooling == "cls":
            pooled = x[:, 0]
        else:  # masked mean over real tokens (sentence-transformers' mean pooling)
            m = mask.unsqueeze(-1).to(x.dtype)                             # (B, L, 1)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1.0)              # (B, C)
        return F.normalize(pooled, dim=-1) if self.config.normalize_pooled else pooled

    def _check(self, ids: Tensor, mask: Tensor | None, token_type_ids: Tensor | None) -> Tensor:
        cfg = self.config
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            got = f"{tuple(ids.shape)} {ids.dtype}" if isinstance(ids, Tensor) else type(ids).__name__
            raise DataError(f"text encoder input must be a (batch, length) integer tensor of token ids, got {got}")
        B, L = ids.shape
        if B == 0 or L == 0:
            raise DataError(f"text encoder input is empty ({B} x {L}); give at least one token per row "
                            "(tokenizers add [CLS]/start tokens even to an empty prompt)")
        if L > cfg.max_len:
            raise DataError(f"{L} tokens exceed the text encoder's max_len={cfg.max_len}; truncate the prompt "
                            "(the tokenizer's encode_batch does)")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= cfg.vocab_size:
            raise DataError(f"token id {lo if lo < 0 else hi} is outside the text encoder's vocabulary "
                            f"(0..{cfg.vocab_size - 1}); was the prompt encoded with another tokenizer?")
        if mask is None:
            mask = ids != cfg.pad_id
        elif not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != ids.shape:
            got = f"{tuple(mask.shape)} {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
            raise DataError(f"attention mask must be a bool tensor of the ids' shape {tuple(ids.shape)} "
                            f"(True at real tokens), got {got}")
        if token_type_ids is not None:
            if self.type_embed is None:
                raise DataError("this text encoder has no token-type embedding (type_vocab_size=0); "
                                "pass token_type_ids=None")
            if token_type_ids.shape != ids.shape:
                raise DataError(f"token_type_ids must have the ids' shape {tuple(ids.shape)}, "
                                f"got {tuple(token_type_ids.shape)}")
            if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= cfg.type_vocab_size:
                raise DataError(f"token type ids must lie in 0..{cfg.type_vocab_size - 1}")
        return mask.to(ids.device)
