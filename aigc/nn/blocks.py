"""Transformer building blocks shared by the encoders: feed-forward, residual + LayerNorm, encoder layer.

Residual connections put LayerNorm before (pre-norm) or after (post-norm, the
layout of "Attention Is All You Need" and BERT) each sub-layer. Shapes: B batch,
T length, C = d_model.
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from .activations import activation as activation_fn
from .attention import Linear, MultiHeadAttention
from .skinny import skinny_linear


class FeedForward(nn.Module):
    """proj(act(fc(x))): C -> d_ff -> C, dropout inside (after the activation) and on the output."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu", dropout: float = 0.0,
                 activation_dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.act = activation_fn(activation)
        self.dropout = nn.Dropout(dropout)
        self.inner_dropout = nn.Dropout(activation_dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.proj(self.inner_dropout(self.act(self.fc(x)))))


def feed_forward_step(x: Tensor, fc: Linear, proj: Linear, act: Callable[[Tensor], Tensor],
                      linear=skinny_linear) -> Tensor:
    """``FeedForward.forward`` (no dropout) on decoding rows x (N, C) and weights passed in (see
    :func:`aigc.nn.attention.attention_step`)."""
    h = linear(x, *fc)
    h = h.relu_() if act is F.relu else act(h)
    return linear(h, *proj)


class Residual(nn.Module):
    """x + sublayer(LN(x)) (pre-norm) or LN(x + sublayer(x)) (post-norm)."""

    def __init__(self, d_model: int, pre: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm, self.pre = nn.LayerNorm(d_model, eps=eps), pre

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.pre:
            return x + sublayer(self.norm(x))
        return self.norm(x + sublayer(x))


class EncoderLayer(nn.Module):
    """Bidirectional self-attention (padding masked) + feed-forward, each in a :class:`Residual`."""

    def __init__(self, d_model: int, n_head: int, d_ff: int, *, activation: str = "relu", dropout: float = 0.0,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0, bias: bool = True,
                 pre: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, n_head, dropout, bias, attn_dropout=attention_dropout)
        self.ff = FeedForward(d_model, d_ff, activation, dropout, activation_dropout, bias)
        self.res_attn, self.res_ff = Residual(d_model, pre, eps), Residual(d_model, pre, eps)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, T, C), mask (B|1, 1, 1|T, T) bool "may attend" (None: all) -> (B, T, C)."""
        x = self.res_attn(x, lambda h: self.attn(h, mask=mask))
        return self.res_ff(x, self.ff)
