"""Random windows of a token stream: the batches of language-model training.

The global batch of step ``s`` is drawn from a generator seeded by (seed, s),
so it is the same whatever the number of processes or micro-batches and a
resumed run draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

import torch
from torch import Tensor


class TokenWindows:
    def __init__(self, tokens: Tensor, block_size: int, batch_size: int, seed: int) -> None:
        if tokens.numel() < block_size + 2:
            raise ValueError(f"{tokens.numel()} tokens cannot fill one window of {block_size + 1}")
        self.tokens = tokens
        self.block_size, self.batch_size, self.seed = block_size, batch_size, seed
        self.items_per_row = block_size
        self._span = torch.arange(block_size + 1)

    def batch(self, step: int, rows: slice) -> tuple[Tensor, Tensor]:
        """Inputs and next-token targets, (rows, T) each."""
        g = torch.Generator().manual_seed(self.seed * 104_729 + step)
        starts = torch.randint(0, self.tokens.numel() - self.block_size - 1, (self.batch_size,), generator=g)
        window = self.tokens[starts[rows, None] + self._span].long()  # (rows, T+1)
        return window[:, :-1], window[:, 1:]

    def fixed_batches(self, n: int, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        """``n`` reproducible batches (validation during training)."""
        g = torch.Generator().manual_seed(self.seed + 17)
        out = []
        for _ in range(n):
            starts = torch.randint(0, self.tokens.numel() - self.block_size - 1, (batch_size,), generator=g)
            window = self.tokens[starts[:, None] + self._span].long()
            out.append((window[:, :-1], window[:, 1:]))
        return out
