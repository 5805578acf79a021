"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017).

    src (B, S) -> embed * sqrt(C) + sinusoid -> N x EncoderLayer -> memory (B, S, C)
    tgt (B, T) -> embed * sqrt(C) + sinusoid -> N x DecoderLayer(memory) -> logits (B, T, V)

EncoderLayer: self-attention over the source (padding masked) + feed-forward.
DecoderLayer: causal self-attention + cross-attention over ``memory`` + feed-forward.
Residual connections with LayerNorm before (pre-norm) or after (post-norm, the
paper's layout) each sub-layer. One vocabulary for both languages; the source
embedding, target embedding and output projection can share one matrix.
"""
from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_sizes
from ..errors import ConfigError
from ..nn.activations import ACTIVATIONS
from ..nn.attention import KVCache, MultiHeadAttention, attention_step, cross_attention_step
from ..nn.blocks import EncoderLayer as _EncoderLayer
from ..nn.blocks import FeedForward as _FeedForward
from ..nn.blocks import Residual, feed_forward_step
from ..nn.embeddings import sinusoidal_table
from ..nn.skinny import output_logits


@dataclass
class Seq2SeqConfig:
    vocab_size: int = 0        # shared source/target vocabulary; set from the tokenizer when 0
    pad_id: int = 0
    max_len: int = 256         # longest source or target sequence, in tokens
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    d_model: int = 512
    n_head: int = 8
    d_ff: int = 2048
    dropout: float = 0.1       # on embeddings and every sublayer's output
    attention_dropout: float = 0.0   # on attention weights (fairseq's and Marian's default: none)
    activation_dropout: float = 0.0  # inside the feed-forward, after the activation
    activation: str = "relu"   # relu | gelu (exact) | gelu_tanh
    norm: str = "pre"          # pre | post
    tie_embeddings: bool = True
    bias: bool = True
    init: str = "normal"       # normal: N(0, 0.02) everywhere (BERT, Marian) | xavier: fairseq's (see _init_weights)

    def validate(self) -> None:
        check_sizes("model", self, {"vocab_size": "vocab", "max_len": "context", "n_encoder_layers": "layers",
                                    "n_decoder_layers": "layers", "d_model": "width", "n_head": "heads",
                                    "d_ff": "width"})
        if self.d_model % self.n_head:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by model.n_head ({self.n_head})")
        if self.norm not in ("pre", "post"):
            raise ConfigError(f"model.norm must be 'pre' or 'post', got '{self.norm}'")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got '{self.activation}'")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.init not in ("normal", "xavier"):
            raise ConfigError(f"model.init must be 'normal' or 'xavier', got '{self.init}'")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(f"model.pad_id {self.pad_id} is outside the vocabulary")


class FeedForward(_FeedForward):
    """The shared feed-forward block (aigc.nn.blocks), sized by a Seq2SeqConfig."""

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__(cfg.d_model, cfg.d_ff, cfg.activation, cfg.dropout, cfg.activation_dropout, cfg.bias)


class EncoderLayer(_EncoderLayer):
    """The shared encoder layer (aigc.nn.blocks), sized by a Seq2SeqConfig."""

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__(cfg.d_model, cfg.n_head, cfg.d_ff, activation=cfg.activation, dropout=cfg.dropout,
                         attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
                         bias=cfg.bias, pre=cfg.norm == "pre")


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        pre = cfg.norm == "pre"
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_head, cfg.dropout, cfg.bias,
                                            attn_dropout=cfg.attention_dropout)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_head, cfg.dropout, cfg.bias, cross=True,
                                             attn_dropout=cfg.attention_dropout)
        self.ff = FeedForward(cfg)
        self.res_self, self.res_cross, self.res_ff = (Residual(cfg.d_model, pre) for _ in range(3))

    def forward(self, x: Tensor, layer: int, memory_kv: tuple[Tensor, Tensor], src_mask: Tensor,
                cache: KVCache | None, tgt_mask: Tensor | None) -> Tensor:
        x = self.res_self(x, lambda h: self.self_attn(h, causal=True, mask=tgt_mask, cache=cache, layer=layer))
        x = self.res_cross(x, lambda h: self.cross_attn(h, memory_kv=memory_kv, mask=src_mask))
        return self.res_ff(x, self.ff)


class Seq2Seq(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.src_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.tgt_embed = self.src_embed if cfg.tie_embeddings else nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.register_buffer("positions", sinusoidal_table(cfg.max_len, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        pre = cfg.norm == "pre"
        self.enc_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.dec_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.out = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_embeddings:
            self.out.weight = self.src_embed.weight

    def _init_weights(self) -> None:
        """``normal``: every matrix and embedding N(0, 0.02), which keeps a post-norm model's residual branches
        and tied logits small early on; ``xavier``: Xavier-uniform matrices, embeddings N(0, C^-1/2) (they are
        scaled by sqrt(C) in forward). Biases start at zero, LayerNorms at the identity."""
        xavier = self.config.init == "xavier"
        for name, p in self.named_parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p) if xavier else nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        if xavier:
            nn.init.normal_(self.src_embed.weight, std=self.config.d_model ** -0.5)
            if self.tgt_embed is not self.src_embed:
                nn.init.normal_(self.tgt_embed.weight, std=self.config.d_model ** -0.5)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, table: nn.Embedding, ids: Tensor, start: int = 0) -> Tensor:
        T = ids.size(1)
        if start + T > self.config.max_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds model.max_len={self.config.max_len}")
        x = table(ids) * math.sqrt(self.config.d_model) + self.positions[start:start + T]
        return self.drop(x)

    def source_mask(self, src: Tensor) -> Tensor:
        """(B, 1, 1, S) True where a source token is real (not padding)."""
        return (src != self.config.pad_id)[:, None, None, :]

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, S) -> memory (B, S, C) and its padding mask (B, 1, 1, S)."""
        mask = self.source_mask(src)
        x = self._embed(self.src_embed, src)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x), mask

    def memory_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each decoder layer's cross-attention keys/values: computed once per source."""
        return [layer.cross_attn.memory_kv(memory) for layer in self.decoder]

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        cfg = self.config
        p = self.out.weight
        return KVCache(cfg.n_decoder_layers, batch, cfg.n_head, max_len or cfg.max_len,
                       cfg.d_model // cfg.n_head, p.dtype, p.device)

    def decode(self, tgt: Tensor, memory_kv: list[tuple[Tensor, Tensor]], src_mask: Tensor,
               cache: KVCache | None = None) -> Tensor:
        """tgt (B, T) -> logits (B, T, V); with ``cache`` tgt continues the cached prefix."""
        start = cache.length if cache is not None else 0
        x = self._embed(self.tgt_embed, tgt, start)
        for i, layer in enumerate(self.decoder):
            x = layer(x, i, memory_kv[i], src_mask, cache, None)
        if cache is not None:
            cache.advance(tgt.size(1))
        return self.out(self.dec_norm(x))

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Teacher forcing: src (B, S), tgt input (B, T) -> logits (B, T, V)."""
        memory, mask = self.encode(src)
        return self.decode(tgt, self.memory_kv(memory), mask)

    # ---- step-by-step inference (beam search, greedy) ---------------------------------
    @torch.no_grad()
    def start_decoding(self, src: Tensor, group: int, max_len: int, widen_to: int | None = None) -> "DecodeState":
        """Encode src (B, S) for decoding ``group`` rows per source (beams), at most ``max_len`` positions;
        ``widen_to`` reserves room for ``DecodeState.widen`` to that many rows without a copy."""
        memory, mask = self.encode(src)
        kv = [(k.contiguous(), v.contiguous()) for k, v in self.memory_kv(memory)]
        return DecodeState(self.config, kv, mask, group, max_len, widen_to, CacheWorkspace.of(self))

    @torch.no_grad()
    def step(self, tokens: Tensor, state: "DecodeState") -> Tensor:
        """One new token per row: tokens (N,) -> logits (N, V), N = B * group; advances ``state``.

        The same function as ``decode`` with a cache, in fewer and skinnier operations
        (for inference: dropout is not applied).
        """
        cfg, pre = self.config, self.config.norm == "pre"
        t = state.length
        if t >= state.max_len:
            raise ValueError(f"decoding state holds {state.max_len} positions; asked for {t + 1}")
        state.begin_step()
        x = self.tgt_embed(tokens) * math.sqrt(cfg.d_model) + self.positions[t]  # (N, C)

        def sublayer(x: Tensor, res: Residual, fn, *args) -> Tensor:  # Residual.forward
            if pre:
                return x + fn(_norm(x, res.norm), *args)
            return _norm(fn(x, *args).add_(x), res.norm)

        for i, layer in enumerate(self.decoder):
            x = sublayer(x, layer.res_self, _self_attn_step, layer.self_attn, state, i)
            x = sublayer(x, layer.res_cross, _cross_attn_step, layer.cross_attn, state, i)
            x = sublayer(x, layer.res_ff, _feed_forward, layer.ff)
        state.end_step()
        if pre:
            x = _norm(x, self.dec_norm)
        return output_logits(x, self.out.weight)  # (N, V) contiguous: log_softmax runs on rows


class CacheWorkspace:
    """Memory for the self-attention key/value caches of one model, reused from one decoding call
    to the next.

    A fresh cache of a batch of beams is hundreds of MB that decoding touches page by page: on
    this machine the page faults (and the kernel zeroing each page) took about 8 % of a batched
    beam search. Each ``DecodeState`` takes a free buffer that is large enough (or a new one) and
    gives it back when it is garbage; states alive at once (pipeline workers decode in threads)
    never share one. Free buffers a larger request outgrew are released, and at most
    ``MAX_FREE`` are kept.
    """

    MAX_FREE = 4
    _per_model: "weakref.WeakKeyDictionary[nn.Module, CacheWorkspace]" = weakref.WeakKeyDictionary()
    _models_lock = threading.Lock()

    def __init__(self) -> None:
        self.free: list[Tensor] = []
        self.lock = threading.RLock()  # a state can die (and give back) while this thread holds it

    @classmethod
    def of(cls, model: nn.Module) -> "CacheWorkspace":
        """The workspace of ``model`` (kept outside it, so the model still pickles and deep-copies)."""
        with cls._models_lock:
            return cls._per_model.setdefault(model, cls())

    def take(self, owner: object, like: Tensor, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """Key and value caches of ``shape`` for ``owner``, in one buffer that returns when owner is gone."""
        n = math.prod(shape)
        with self.lock:
            fits = [i for i, b in enumerate(self.free)
                    if b.numel() >= 2 * n and b.dtype == like.dtype and b.device == like.device]
            if not fits:  # the free buffers are too small for what decoding now asks: let them go
                self.free = [b for b in self.free if b.dtype != like.dtype or b.device != like.device]
            buf = self.free.pop(min(fits, key=lambda i: self.free[i].numel())) if fits else like.new_empty(2 * n)
        weakref.finalize(owner, self._give_back, buf)
        return buf[:n].view(shape), buf[n:2 * n].view(shape)

    def _give_back(self, buf: Tensor) -> None:
        with self.lock:
            self.free.append(buf)
            if len(self.free) > self.MAX_FREE:
                del self.free[min(range(len(self.free)), key=lambda i: self.free[i].numel())]


class DecodeState:
    """What decoding steps need, for N = B * G rows: G beams (rows b*G .. b*G+G-1) of each of B sources.

    Cross-attention keys/values stay one copy per source, (B, H, S, D) per layer.
    Self-attention keys/values are never moved when beam search reorders its
    hypotheses: each step writes its G rows' keys at G new key columns of their
    source in (L, B, H, max_len*G, D) (G: the widest group the state is made
    for), and ``ancestry`` (N, max_len*G), an additive mask (0 or -inf), marks
    for each row the columns on its own path. Each row attends to its source's
    columns under that mask, so a reorder only gathers mask rows. Columns no
    beam uses any more are dropped now and then; finished sources leave in place.
    """

    COMPACT_EVERY = 8  # steps between checks for unused key columns

    def __init__(self, cfg: Seq2SeqConfig, memory_kv: list[tuple[Tensor, Tensor]], src_mask: Tensor,
                 group: int, max_len: int, max_group: int | None = None,
                 workspace: "CacheWorkspace | None" = None) -> None:
        B, H = src_mask.size(0), cfg.n_head
        k0 = memory_kv[0][0]
        self.memory_kv, self.group = memory_kv, group
        self.max_len, self.length = max_len, 0
        self.filled = 0  # key columns in use (the same count for every source)
        # additive masks run the fused attention kernel faster than boolean ones
        self.src_mask = None if bool(src_mask.all()) else _additive(src_mask, k0.dtype)  # (B, 1, 1, S)
        shape = (cfg.n_decoder_layers, B, H, max_len * max(group, max_group or group), cfg.d_model // H)
        if workspace is None:
            self.k, self.v = k0.new_empty(shape), k0.new_empty(shape)
        else:
            self.k, self.v = workspace.take(self, k0, shape)
        self.ancestry = None
        if group > 1:
            self._new_ancestry()

    def _new_ancestry(self) -> None:
        """An empty (N, columns) path mask (no column on any path yet) and the (G, G) own-column block."""
        G = self.group
        self.ancestry = self.k.new_full((self.sources * G, self.k.size(3)), float("-inf"))
        self._own = _additive(torch.eye(G, dtype=torch.bool, device=self.k.device), self.k.dtype)

    @property
    def sources(self) -> int:
        return self.k.size(1)

    def begin_step(self) -> None:
        """Each row's new position (column ``filled`` + its beam) is on its own path."""
        if self.ancestry is not None:
            G, c = self.group, self.filled
            self.ancestry[:, c:c + G].view(self.sources, G, G).copy_(self._own)

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this step's keys/values (B, H, G, D) at key column ``filled`` + beam; return every
        column written so far (B, H, filled+G, D) (the rows' own paths are picked by ``self_mask``)."""
        c, end = self.filled, self.filled + self.group
        self.k[layer, :, :, c:end] = k
        self.v[layer, :, :, c:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def end_step(self) -> None:
        self.length += 1
        self.filled += self.group

    def self_mask(self) -> Tensor | None:
        """(B, 1, G, filled+G) additive mask of the key columns each row may attend to; None when G = 1."""
        if self.ancestry is None:
            return None
        end = self.filled + self.group
        return self.ancestry[:, :end].view(self.sources, 1, self.group, end)

    def reorder(self, index: Tensor, sources: list[int] | None = None) -> None:
        """Row r continues old row ``index[r]`` (of the same source); ``sources`` (ascending) keeps
        only those sources, whose rows ``index`` lists in order."""
        if self.ancestry is not None:
            self.ancestry = self.ancestry.index_select(0, index)
        if sources is not None:
            if sources[-1] - sources[0] + 1 == len(sources):  # a run of sources: views, no copies
                keep = slice(sources[0], sources[-1] + 1)
                self.memory_kv = [(k[keep], v[keep]) for k, v in self.memory_kv]
                self.src_mask = self.src_mask[keep] if self.src_mask is not None else None
                self.k, self.v = self.k[:, keep], self.v[:, keep]
            else:
                rows = torch.tensor(sources, device=self.k.device)
                self.memory_kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.memory_kv]
                self.src_mask = self.src_mask.index_select(0, rows) if self.src_mask is not None else None
                for cache in (self.k, self.v):  # in place, front to back: sources[i] >= i
                    for i, b in enumerate(sources):
                        if b != i:
                            cache[:, i].copy_(cache[:, b])
                self.k, self.v = self.k[:, :len(sources)], self.v[:, :len(sources)]
        if self.ancestry is not None and self.length % self.COMPACT_EVERY == 0:
            self._drop_unused_columns()

    def widen(self, group: int) -> None:
        """Turn the single row of each source into ``group`` rows that share its path so far.

        Beam search runs its first step on one row per source (all beams would be identical),
        then widens: every new row attends to the columns written until now."""
        if self.group != 1 or group < 1:
            raise ValueError(f"only a state of one row per source can widen, this one has {self.group}")
        if group == 1:
            return
        f = self.filled
        if self.k.size(3) < self.max_len * group:  # no room reserved (``max_group``): copy to a wider cache
            shape = list(self.k.shape)
            shape[3] = self.max_len * group
            for name in ("k", "v"):
                cache = getattr(self, name)
                wide = cache.new_empty(shape)
                wide[:, :, :, :f] = cache[:, :, :, :f]
                setattr(self, name, wide)
        self.group = group
        self._new_ancestry()
        self.ancestry[:, :f] = 0.0

    def _drop_unused_columns(self) -> None:
        """Move the key columns some beam still attends to to the front (attention then reads fewer),
        when at most 3/4 of the columns are in use."""
        B, G, f = self.sources, self.group, self.filled
        used = (self.ancestry[:, :f] == 0).view(B, G, f).any(1)  # (B, f)
        keep = int(used.sum(1).max()) if f else 0
        if not f or keep * 4 > f * 3:
            return
        # per source: its used columns first (in order), padded with unused ones (masked for all its rows)
        order = torch.sort((~used).to(torch.uint8), dim=1, stable=True).indices[:, :keep]  # (B, keep)
        src = torch.arange(B, device=order.device)[:, None]
        for cache in (self.k, self.v):
            cache[:, :, :, :keep] = cache[:, src, :, order].permute(2, 0, 3, 1, 4)  # (L, B, H, keep, D)
        rows = order.repeat_interleave(G, 0)  # (N, keep)
        self.ancestry[:, :keep] = self.ancestry[:, :f].gather(1, rows)
        self.ancestry[:, keep:f] = float("-inf")
        self.filled = keep

    def expanded(self) -> tuple[list[tuple[Tensor, Tensor]], Tensor | None]:
        """Cross-attention keys/values and source mask repeated for every row (for ``Seq2Seq.decode``)."""
        rows = torch.arange(self.sources, device=self.k.device).repeat_interleave(self.group)
        kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.memory_kv]
        return kv, self.src_mask.index_select(0, rows) if self.src_mask is not None else None


def _additive(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """Boolean "may attend" mask -> additive mask: 0 where allowed, -inf elsewhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


# Module calls cost microseconds each; a decoding step makes dozens, so call the functions.
def _norm(x: Tensor, ln: nn.LayerNorm) -> Tensor:
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def _w(layer: nn.Linear) -> tuple[Tensor, Tensor | None]:
    return layer.weight, layer.bias


def _feed_forward(x: Tensor, ff: FeedForward) -> Tensor:
    return feed_forward_step(x, _w(ff.fc), _w(ff.proj), ff.act)


def _self_attn_step(x: Tensor, attn: MultiHeadAttention, state: DecodeState, layer: int) -> Tensor:
    """Causal self-attention of one new position per row: x (N, C) -> (N, C)."""
    return attention_step(x, _w(attn.qkv), _w(attn.proj), attn.n_head, state, layer, group=state.group,
                          mask=state.self_mask())


def _cross_attn_step(x: Tensor, attn: MultiHeadAttention, state: DecodeState, layer: int) -> Tensor:
    """Cross-attention of each source's rows to its memory: x (N, C) -> (N, C)."""
    return cross_attention_step(x, _w(attn.q), _w(attn.proj), attn.n_head, state.memory_kv[layer],
                                group=state.group, mask=state.src_mask)
