"""GPT: a pre-LayerNorm decoder-only Transformer language model.

    tokens (B, T) -> embeddings (+ learned positions, or rotary in attention)
      -> n_layer x [x + Attn(LN(x)), x + MLP(LN(x))] -> LN -> logits (B, T, V)

Radford et al. 2019 (GPT-2) layout; output projection tied to the token
embedding; residual projections scaled by 1/sqrt(2 n_layer) at init.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_sizes
from ..errors import ConfigError
from ..nn.attention import KVCache, MultiHeadAttention, attention_step
from ..nn.blocks import FeedForward, feed_forward_step
from ..nn.embeddings import Rotary
from ..nn.skinny import rows_linear


@dataclass
class GPTConfig:
    vocab_size: int = 0          # set from the tokenizer when 0
    block_size: int = 256        # context window in tokens
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    mlp_ratio: int = 4
    activation: str = "gelu"     # "gelu" (exact) | "gelu_tanh" (GPT-2's approximation)
    dropout: float = 0.0
    bias: bool = True
    pos: str = "learned"         # "learned" | "rotary"
    rope_base: float = 10000.0
    tie_embeddings: bool = True

    def validate(self) -> None:
        check_sizes("model", self, {"vocab_size": "vocab", "block_size": "context", "n_layer": "layers",
                                    "n_head": "heads", "n_embd": "width", "mlp_ratio": "ratio"})
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if self.activation not in ("gelu", "gelu_tanh"):
            raise ConfigError(f"model.activation must be 'gelu' or 'gelu_tanh', got '{self.activation}'")
        if self.pos not in ("learned", "rotary"):
            raise ConfigError(f"model.pos must be 'learned' or 'rotary', got '{self.pos}'")
        if self.pos == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ConfigError("rotary positions need an even head size (n_embd / n_head)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


class MLP(FeedForward):
    """The shared feed-forward block (aigc.nn.blocks), C -> mlp_ratio·C -> C, sized by a GPTConfig."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, cfg.activation, cfg.dropout, bias=cfg.bias)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = MultiHeadAttention(cfg.n_embd, cfg.n_head, cfg.dropout, cfg.bias)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, layer: int, mask: Tensor | None, rope, cache: KVCache | None) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal=True, mask=mask, rope=rope, cache=cache, layer=layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.rotary = (Rotary(cfg.n_embd // cfg.n_head, cfg.block_size, cfg.rope_base)
                       if cfg.pos == "rotary" else None)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.wpe is not None:
            n -= self.wpe.weight.numel()
        return n

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        cfg = self.config
        p = self.wte.weight
        return KVCache(cfg.n_layer, batch, cfg.n_head, max_len or cfg.block_size,
                       cfg.n_embd // cfg.n_head, p.dtype, p.device)

    def forward(self, idx: Tensor, *, cache: KVCache | None = None, positions: Tensor | None = None,
                mask: Tensor | None = None, last_only: bool = False) -> Tensor:
        """idx (B, T) token ids -> logits (B, T, V), or (B, 1, V) with ``last_only``.

        With ``cache`` the tokens continue the cached sequence. ``positions``
        ((T,) or per-row (B, T)) and ``mask`` (bool (B, 1, T, S)) serve
        left-padded batches; by default positions continue from the cache.
        """
        B, T = idx.shape
        if cache is not None and T == 1 and not self.training and not torch.is_grad_enabled():
            return self._decode(idx, cache, positions, mask)
        past = cache.length if cache is not None else 0
        if positions is None:
            if past + T > self.config.block_size:
                raise ValueError(f"sequence of {past + T} tokens exceeds the context of {self.config.block_size}")
            positions = torch.arange(past, past + T, device=idx.device)
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(positions)
        rope = self.rotary(positions) if self.rotary is not None else None
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, i, mask, rope, cache)
        if cache is not None:
            cache.advance(T)
        if last_only:
            x = x[:, -1:, :]
        return self.lm_head(self.ln_f(x))

    def _decode(self, idx: Tensor, cache: KVCache, positions: Tensor | None, mask: Tensor | None) -> Tensor:
        """``forward`` for one new token per row (B, 1) after ``cache``: the decoding step.

        The same blocks on (B, C) rows through the shared decoding-step functions
        (:func:`~aigc.nn.attention.attention_step`, :func:`~aigc.nn.blocks.feed_forward_step`), on
        weights gathered once per cache: decoding a small model is bound by per-operation overhead,
        a large one by reading the weights (``rows_linear``). Returns logits (B, 1, V).
        """
        B = idx.size(0)
        past = cache.length
        if cache.plan is None:
            cache.plan = self._decode_weights()
        blocks, ln_f, head, act, C, H = cache.plan
        x = F.embedding(idx.view(B), self.wte.weight)  # (B, C)
        if positions is None:
            if past + 1 > self.config.block_size:
                raise ValueError(f"sequence of {past + 1} tokens exceeds the context of {self.config.block_size}")
            if self.wpe is not None:
                x += self.wpe.weight[past]
            rope = None if self.rotary is None else (self.rotary.cos[past:past + 1], self.rotary.sin[past:past + 1])
        else:  # (1,) or per-row (B, 1)
            if self.wpe is not None:
                x += self.wpe(positions.view(-1))
            rope = self.rotary(positions) if self.rotary is not None else None
        for i, (ln_1, qkv, proj, ln_2, fc, fc_proj) in enumerate(blocks):
            # the query sees every cached key (or ``mask``'s)
            x += attention_step(F.layer_norm(x, (C,), *ln_1), qkv, proj, H, cache, i, mask=mask, rope=rope,
                                linear=rows_linear)
            x += feed_forward_step(F.layer_norm(x, (C,), *ln_2), fc, fc_proj, act, rows_linear)
        cache.advance(1)
        return rows_linear(F.layer_norm(x, (C,), *ln_f), head, None).contiguous().unsqueeze(1)

    def _decode_weights(self) -> tuple:
        """What ``_decode`` reads: per block the (weight, bias[, eps]) of ln_1, qkv, proj, ln_2, fc and
        fc_proj; then ln_f's, the output weight, the activation, the width and the head count (module
        attribute lookups cost microseconds each: looked up once per cache)."""
        def norm(m: nn.LayerNorm) -> tuple:
            return m.weight, m.bias, m.eps

        def linear(m: nn.Linear) -> tuple:
            return m.weight, m.bias

        blocks = [(norm(b.ln_1), linear(b.attn.qkv), linear(b.attn.proj), norm(b.ln_2), linear(b.mlp.fc),
                   linear(b.mlp.proj)) for b in self.blocks]
        return (blocks, norm(self.ln_f), self.lm_head.weight, self.blocks[0].mlp.act, self.config.n_embd,
                self.config.n_head)

