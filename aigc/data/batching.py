"""Batches of sentence pairs built by token count, with length bucketing.

Pairs are sorted by length (ties broken by a seeded shuffle) and packed so
that each batch holds at most ``max_tokens`` tokens *including padding*
(rows x longest source + rows x longest target): similar lengths travel
together and little compute is spent on padding. The order of batches is
reshuffled every epoch from the seed, so the batch of a step is a pure
function of (seed, step): resume and any number of processes see the same.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError

IGNORE = -100  # target positions that do not count in the loss


def pack_by_tokens(src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, seed: int) -> list[np.ndarray]:
    """Index arrays of pairs whose padded size stays within ``max_tokens``."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(src_lens)), tgt_lens, src_lens))
    batches, start, s_max, t_max = [], 0, 0, 0
    for i, idx in enumerate(order):
        s_new, t_new = max(s_max, src_lens[idx]), max(t_max, tgt_lens[idx])
        if i > start and (i - start + 1) * (s_new + t_new) > max_tokens:
            batches.append(order[start:i])
            start, s_new, t_new = i, src_lens[idx], tgt_lens[idx]
        s_max, t_max = s_new, t_new
    if start < len(order):
        batches.append(order[start:])
    return batches


def collate(pairs: list[tuple[np.ndarray, np.ndarray]], pad_id: int, bos_id: int, eos_id: int
            ) -> tuple[Tensor, Tensor, Tensor]:
    """(src, tgt) id arrays -> src (B, S), decoder input [bos]+tgt (B, T), targets tgt+[eos] (B, T)."""
    B = len(pairs)
    S = max(len(s) for s, _ in pairs)
    T = max(len(t) for _, t in pairs) + 1
    src = torch.full((B, S), pad_id, dtype=torch.long)
    tgt_in = torch.full((B, T), pad_id, dtype=torch.long)
    tgt_out = torch.full((B, T), IGNORE, dtype=torch.long)
    for i, (s, t) in enumerate(pairs):
        src[i, :len(s)] = torch.as_tensor(s)
        tgt_in[i, 0] = bos_id
        tgt_in[i, 1:len(t) + 1] = torch.as_tensor(t)
        tgt_out[i, :len(t)] = torch.as_tensor(t)
        tgt_out[i, len(t)] = eos_id
    return src, tgt_in, tgt_out


class TokenBatches:
    """The trainer's batch source for translation: token-count batches, reshuffled per epoch."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], max_tokens: int, seed: int, *,
                 pad_id: int, bos_id: int, eos_id: int) -> None:
        if not pairs:
            raise ConfigError("no sentence pairs to train on")
        self.pairs, self.seed = pairs, seed
        self.ids = (pad_id, bos_id, eos_id)
        src_lens = np.array([len(s) for s, _ in pairs])
        tgt_lens = np.array([len(t) + 1 for _, t in pairs])
        longest = int((src_lens + tgt_lens).max())
        if max_tokens < longest:
            raise ConfigError(f"train max_tokens ({max_tokens}) is smaller than the longest pair ({longest} tokens)")
        self.batches = pack_by_tokens(src_lens, tgt_lens, max_tokens, seed)
        self.tokens = [int(src_lens[b].sum() + tgt_lens[b].sum()) for b in self.batches]

    def _index(self, step: int) -> int:
        n = len(self.batches)
        epoch, pos = divmod(step, n)
        return int(np.random.default_rng((self.seed, epoch)).permutation(n)[pos])

    def items(self, step: int) -> int:
        return self.tokens[self._index(step)]

    def batch(self, step: int, part: int = 0, parts: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """Share ``part`` of ``parts`` (every parts-th pair: lengths stay balanced)."""
        members = self.batches[self._index(step)]
        if len(members) < parts:
            raise ConfigError(f"a batch of {len(members)} pairs cannot be split {parts} ways; "
                              "raise train.max_tokens or use fewer processes / less accumulation")
        return collate([self.pairs[i] for i in members[part::parts]], *self.ids)
