"""Multi-head attention through ``F.scaled_dot_product_attention``, with a KV cache.

One module serves self-attention (causal or not) and cross-attention, so the
decoder-only GPT, the encoder-decoder translator and the UNet's attention over
feature maps (:mod:`aigc.nn.map_attention`) share it. Shapes:
B batch, T query length, S key length, H heads, D head size, C = H * D.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import apply_rotary
from .skinny import skinny_linear


class KVCache:
    """Preallocated keys/values for every layer: (L, B, H, max_len, D) each.

    ``length`` counts the positions already written; a decoding step writes at
    ``length`` and the model advances it once per forward (``advance``).
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0
        self.plan: object = None  # what a model keeps for its decoding steps (GPT: its weights, gathered once)

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (B, H, T, D) after the cached prefix; return the full (B, H, S, D) views."""
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; asked for {end}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search reorders hypotheses)."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)


class MultiHeadAttention(nn.Module):
    """softmax(Q K^T / sqrt(D)) V over H heads, with fused Q/K/V projections."""

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True,
                 cross: bool = False, attn_dropout: float | None = None, memory_dim: int | None = None) -> None:
        """``dropout`` on the output; ``attn_dropout`` (default: the same) on the attention weights;
        ``memory_dim``: width of the cross-attended sequence (default ``d_model``)."""
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"width {d_model} is not divisible by {n_head} heads")
        self.n_head, self.head_dim, self.cross = n_head, d_model // n_head, cross
        if cross:
            self.q = nn.Linear(d_model, d_model, bias=bias)
            self.kv = nn.Linear(memory_dim or d_model, 2 * d_model, bias=bias)
        else:
            self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout if attn_dropout is None else attn_dropout
        self.resid_dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, H, T, D)
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, *, causal: bool = False, mask: Tensor | None = None,
                rope: tuple[Tensor, Tensor] | None = None, cache: KVCache | None = None,
                layer: int = 0, memory: Tensor | None = None,
                memory_kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (B, T, C) -> (B, T, C).

        Self-attention: ``causal`` masks the future; with ``cache`` the new keys
        are appended and the queries attend to everything cached. ``mask`` is a
        boolean (B|1, 1, T|1, S) "may attend" mask, or an additive float one (a
        position bias). Cross-attention attends to ``memory`` (B, S, memory_dim), or
        to its precomputed ``memory_kv`` (B, H, S, D) pair.
        """
        B, T, C = x.shape
        if self.cross:
            q = self._heads(self.q(x))
            k, v = memory_kv if memory_kv is not None else self.memory_kv(memory)
            is_causal = False
        else:
            q, k, v = self._heads_qkv(x)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            past = cache.length if cache is not None else 0
            if cache is not None:
                k, v = cache.write(layer, k, v)
            # A single new query may see every cached key; a block of queries
            # after a non-empty cache needs an explicit offset causal mask.
            is_causal = causal and mask is None and past == 0 and T > 1
            if causal and mask is None and past > 0 and T > 1:
                mask = _offset_causal(T, past + T, x.device)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.proj(y))

    def _heads_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, C = x.shape
        # unbind (not indexing): its backward stacks the three gradients in one
        # copy instead of zero-filling and summing three qkv-sized buffers
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D) each

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of the cross-attended sequence, (B, H, S, D) each; compute once per input."""
        B, S, _ = memory.shape
        kv = self.kv(memory).view(B, S, 2, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]


# ---- decoding steps: one new position per row, in few operations ---------------------------------------
# The same functions as ``MultiHeadAttention.forward`` with a cache (no dropout), on rows (N, C) rather
# than (B, T, C) and on weights passed in, so a model can gather them once per decoding call: decoding a
# small model is bound by per-operation overhead (a module call or attribute lookup costs about as much
# as a small op), a large one by reading the weights (``linear``: aigc.nn.skinny).

Linear = tuple[Tensor, Tensor | None]  # (weight, bias) of a projection


def attention_step(x: Tensor, qkv: Linear, proj: Linear, n_head: int, cache, layer: int, *, group: int = 1,
                   mask: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None,
                   linear=skinny_linear) -> Tensor:
    """Causal self-attention of one new position per row: x (N, C) -> (N, C), N = B·G rows (G per
    sequence: beams). ``cache.write(layer, k, v)`` stores the new keys/values (B, H, G, D) and returns
    all the rows attend to (B, H, S, D), under ``mask`` (B|1, 1, G, S) (None: every one)."""
    N, C = x.shape
    H, B = n_head, N // group
    h = linear(x, *qkv)
    if group == 1:
        q, k, v = h.view(B, 3, H, 1, C // H).unbind(1)                        # (B, H, 1, D) each
    else:
        q, k, v = h.view(B, group, 3, H, C // H).transpose(1, 3).unbind(2)    # (B, H, G, D) each
    if rope is not None:
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    k, v = cache.write(layer, k, v)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)             # (B, H, G, D)
    y = y.reshape(N, C) if group == 1 else y.transpose(1, 2).reshape(N, C)
    return linear(y, *proj)


def cross_attention_step(x: Tensor, q_proj: Linear, proj: Linear, n_head: int, memory_kv: tuple[Tensor, Tensor],
                         *, group: int = 1, mask: Tensor | None = None, linear=skinny_linear) -> Tensor:
    """Cross-attention of each sequence's G rows to its memory: x (N, C) -> (N, C); memory_kv (B, H, S, D)
    each, ``mask`` additive (B, 1, 1, S) or None."""
    N, C = x.shape
    H = n_head
    D = C // H
    q = linear(x, *q_proj).mul_(D ** -0.5).view(N // group, group, H, D).transpose(1, 2)  # (B, H, G, D), scaled
    k, v = memory_kv
    # softmax(q k^T / sqrt(D)) v as two batched matmuls: for a few query rows against a short
    # memory they beat the fused kernel (0.76 against 1.15 ms a layer, 32 sources x 4 beams, one core)
    scores = torch.matmul(q, k.transpose(-1, -2))                      # (B, H, G, S)
    if mask is not None:
        scores.add_(mask)
    y = torch.matmul(torch.softmax(scores, -1), v)                       # (B, H, G, D)
    return linear(y.transpose(1, 2).reshape(N, C), *proj)


def _offset_causal(t_query: int, t_key: int, device: torch.device) -> Tensor:
    """(1, 1, Tq, Tk) mask where query i (at absolute position Tk - Tq + i) sees keys <= it."""
    q_pos = torch.arange(t_key - t_query, t_key, device=device).unsqueeze(1)
    return (torch.arange(t_key, device=device).unsqueeze(0) <= q_pos).view(1, 1, t_query, t_key)


def padded_causal_mask(valid: Tensor) -> Tensor:
    """Causal mask for a left-padded batch: valid (B, S) bool of real tokens -> (B, 1, S, S).

    Every query also sees itself, so padding rows never attend to nothing (NaN).
    """
    S = valid.size(1)
    causal = torch.ones(S, S, dtype=torch.bool, device=valid.device).tril()
    mask = causal & valid[:, None, :]
    mask |= torch.eye(S, dtype=torch.bool, device=valid.device)
    return mask.unsqueeze(1)
