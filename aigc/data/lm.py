"""Random windows of a token stream: the batches of language-model training.

The global batch of step ``s`` is drawn from a generator seeded by (seed, s),
so it is the same whatever the number of processes or micro-batches and a
resumed run draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError


class TokenWindows:
    def __init__(self, tokens: Tensor, block_size: int, batch_size: int, seed: int) -> None:
        if tokens.numel() < block_size + 2:
            raise ValueError(f"{tokens.numel()} tokens cannot fill one window of {block_size + 1}")
        self.tokens = tokens
        self.block_size, self.batch_size, self.seed = block_size, batch_size, seed
        self._span = torch.arange(block_size + 1)

    def items(self, step: int) -> int:
        return self.batch_size * self.block_size

    def batch(self, step: int, part: int = 0, parts: int = 1) -> tuple[Tensor, Tensor]:
        """Share ``part`` of ``parts`` of the step's windows: inputs and next-token targets, (rows, T) each."""
        if self.batch_size % parts:
            raise ConfigError(f"train.batch_size ({self.batch_size}) must be divisible by "
                              f"processes x grad_accum ({parts})")
        rows = self.batch_size // parts
        g = torch.Generator().manual_seed((self.seed * 104_729 + step) % 2 ** 64)
        starts = torch.randint(0, self.tokens.numel() - self.block_size - 1, (self.batch_size,), generator=g)
        window = self.tokens[starts[part * rows:(part + 1) * rows, None] + self._span].long()  # (rows, T+1)
        return window[:, :-1], window[:, 1:]

    def fixed_batches(self, n: int, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        """``n`` reproducible batches (validation during training)."""
        g = torch.Generator().manual_seed((self.seed + 17) % 2 ** 64)
        out = []
        for _ in range(n):
            starts = torch.randint(0, self.tokens.numel() - self.block_size - 1, (batch_size,), generator=g)
            window = self.tokens[starts[:, None] + self._span].long()
            out.append((window[:, :-1], window[:, 1:]))
        return out
