"""Decoding for encoder-decoder models: greedy and batched beam search.

The source is encoded once; each decoder layer's cross-attention keys/values
are computed once per sentence and shared by its beams; the decoder's
self-attention keys/values grow in a cache that is never copied when beam
search reorders hypotheses (``Seq2Seq.step`` / ``DecodeState``: each beam
attends to its own path through an ancestry mask). Finished sentences leave
the batch, so work shrinks as decoding proceeds.

Scores are summed log-probabilities; beam search ranks finished hypotheses by
the GNMT length penalty (Wu et al. 2016): score / ((5 + |Y|) / 6) ** alpha,
where |Y| counts the generated tokens including the end token.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import check_float, check_int


@dataclass
class Hypothesis:
    tokens: list[int]      # generated ids, without the start token and without the end token
    score: float           # summed log-probability (end token included when it was produced)
    normalized: float      # score after the length penalty: what beam search ranks by


MAX_BEAM = 64         # hypotheses kept per sentence (and at most the target vocabulary)
MAX_LENGTH = 10_000   # tokens of a translation


@dataclass
class DecodeConfig:
    """How to decode a translation; validated when made (and by ``dataclasses.replace``)."""
    beam: int = 4
    length_penalty: float = 0.6   # GNMT alpha; 0 ranks by raw log-probability
    max_len_a: float = 1.5        # max target length = a * source length + b
    max_len_b: int = 10
    early_stopping: bool = True   # stop a sentence once it has `beam` finished hypotheses
    min_len: int = 0              # the end token is masked until this many tokens are generated

    def __post_init__(self) -> None:
        check_int("beam", self.beam, 1, MAX_BEAM)
        check_int("max_len_b", self.max_len_b, 0, MAX_LENGTH)
        check_int("min_len", self.min_len, 0, MAX_LENGTH)
        check_float("length_penalty", self.length_penalty)
        check_float("max_len_a", self.max_len_a, 0, 100)


def length_penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def _max_lengths(src: Tensor, pad_id: int, cfg: DecodeConfig, cap: int,
                 src_lengths: list[int] | None = None) -> list[int]:
    src_len = (src != pad_id).sum(1).tolist() if src_lengths is None else list(src_lengths)
    return [max(1, min(cap, int(cfg.max_len_a * n + cfg.max_len_b))) for n in src_len]


@torch.inference_mode()
def beam_search(model: nn.Module, src: Tensor, *, bos_id: int, eos_id: int,
                cfg: DecodeConfig = DecodeConfig(), use_cache: bool = True,
                src_lengths: list[int] | None = None) -> list[Hypothesis]:
    """Best hypothesis for each source row of src (B, S) (padded with the model's pad id).

    ``use_cache=False`` recomputes the whole prefix every step (for testing the cache).
    ``src_lengths`` (B,) replaces the source lengths counted from src's padding (for a source that is
    not token ids, e.g. a speech encoder's output handed over through ``model.start_decoding``).
    """
    return [h[0] for h in beam_search_n_best(model, src, bos_id=bos_id, eos_id=eos_id, cfg=cfg,
                                             use_cache=use_cache, src_lengths=src_lengths)]


@torch.inference_mode()
def beam_search_n_best(model: nn.Module, src: Tensor, *, bos_id: int, eos_id: int,
                       cfg: DecodeConfig = DecodeConfig(), use_cache: bool = True,
                       src_lengths: list[int] | None = None) -> list[list[Hypothesis]]:
    """Every finished hypothesis of each source row (at least one), best (``normalized``) first: what
    :func:`beam_search` picks from, for rescoring (e.g. joint CTC/attention in speech recognition)."""
    K, V = cfg.beam, model.config.vocab_size
    B = src.size(0)
    device = src.device
    max_lens = _max_lengths(src, model.config.pad_id, cfg, model.config.max_len - 1, src_lengths)
    steps = max(max_lens)
    # Every sentence gets G rows (beams); row i*G + k is beam k of the i-th sentence still decoding.
    # All beams start identical, so the first step runs on one row per sentence (G = 1), then K.
    state = model.start_decoding(src, 1, steps + 1, widen_to=K)
    tokens = torch.full((B, 1), bos_id, dtype=torch.long, device=device)
    scores = torch.zeros(B, device=device)
    active = list(range(B))  # sentence ids of the rows still decoding, in order
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    for t in range(steps):
        G = 1 if t == 0 else K
        if use_cache:
            logits = model.step(tokens[:, -1], state)  # (n*G, V)
        else:
            logits = model.decode(tokens, *state.expanded())[:, -1]
        n = len(active)
        logp = torch.log_softmax(logits.float(), -1)
        if t < cfg.min_len:
            logp[:, eos_id] = float("-inf")
        cand = logp.add_(scores.unsqueeze(1)).view(n, G * V)  # in place: no second (n*G, V) tensor
        top_scores, top_idx = _topk(cand, 2 * K)  # (n, 2K): enough to keep K alive
        ts, tb, tt = top_scores.tolist(), (top_idx // V).tolist(), (top_idx % V).tolist()
        length = t + 1
        penalty = length_penalty(length, cfg.length_penalty)
        index, keep_tok, keep_score, still = [], [], [], []
        for i, b in enumerate(active):
            alive = []  # (beam, token, score) of the kept candidates, best first
            for rank, (s, beam, tok) in enumerate(zip(ts[i], tb[i], tt[i])):
                if s == float("-inf"):
                    break
                if tok != eos_id:
                    alive.append((beam, tok, s))
                    if len(alive) == K:
                        break
                elif rank < K:  # an end token counts only among the K best candidates
                    finished[b].append(Hypothesis(tokens[i * G + beam, 1:].tolist(), s, s / penalty))
            if length >= max_lens[b]:  # out of room: the alive beams end here
                finished[b] += [Hypothesis(tokens[i * G + beam, 1:].tolist() + [tok], s, s / penalty)
                                for beam, tok, s in alive]
            elif not _done(finished[b], alive, max_lens[b], cfg):
                still.append(i)
                dead = K - len(alive)  # too few candidates: pad with dead beams (score -inf)
                index += [i * G + beam for beam, _, _ in alive] + [i * G] * dead
                keep_tok += [tok for _, tok, _ in alive] + [eos_id] * dead
                keep_score += [s for _, _, s in alive] + [float("-inf")] * dead
        if not still:
            break
        rows = torch.tensor(index, device=device)
        tokens = torch.cat([tokens.index_select(0, rows), torch.tensor(keep_tok, device=device)[:, None]], 1)
        scores = torch.tensor(keep_score, device=device)
        state.reorder(rows, still if len(still) != n else None)
        if G == 1:
            state.widen(K)
        active = [active[i] for i in still]
    return [sorted(h, key=lambda x: -x.normalized) for h in finished]


def _topk(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``x.topk(k, dim=1)`` for wide rows, faster: the k largest lie in the k blocks (of a
    row cut into equal blocks) with the largest maxima, so only those blocks are ranked."""
    n, width = x.shape
    block = next((b for b in (128, 125, 100, 64, 50, 32) if width % b == 0), 0)
    if not block or width // block <= 4 * k:
        return x.topk(k, dim=1)
    blocks = x.view(n, width // block, block)
    best = blocks.amax(-1).topk(k, dim=1).indices.sort(dim=1).values  # (n, k) block ids, ascending
    cand = blocks.gather(1, best.unsqueeze(-1).expand(n, k, block)).view(n, k * block)
    values, pos = cand.topk(k, dim=1)
    return values, best.gather(1, pos // block) * block + pos % block


def _done(finished: list[Hypothesis], alive: list, max_len: int, cfg: DecodeConfig) -> bool:
    """Whether a sentence can stop: K finished hypotheses, or none alive could beat the best."""
    if not alive:
        return True
    K = cfg.beam
    if len(finished) < K:
        return False
    if cfg.early_stopping:
        return True
    best_alive = max(s for _, _, s in alive)
    # log-probabilities only fall, so the best an alive beam can reach is its score now,
    # divided by the penalty of the longest length it may still grow to
    bound = best_alive / length_penalty(max_len, max(cfg.length_penalty, 0.0))
    return max(h.normalized for h in finished) >= bound


@torch.inference_mode()
def greedy_decode(model: nn.Module, src: Tensor, *, bos_id: int, eos_id: int,
                  cfg: DecodeConfig = DecodeConfig(beam=1), src_lengths: list[int] | None = None
                  ) -> list[Hypothesis]:
    """Most likely next token at every step, for each row of src (B, S) (``src_lengths``: as in beam_search)."""
    B, device = src.size(0), src.device
    max_lens = _max_lengths(src, model.config.pad_id, cfg, model.config.max_len - 1, src_lengths)
    state = model.start_decoding(src, 1, max(max_lens) + 1)
    token = torch.full((B,), bos_id, dtype=torch.long, device=device)
    out: list[list[int]] = [[] for _ in range(B)]
    score = [0.0] * B
    ended = [False] * B
    saw_eos = [False] * B
    for t in range(max(max_lens)):
        logp = torch.log_softmax(model.step(token, state).float(), -1)
        if t < cfg.min_len:
            logp[:, eos_id] = float("-inf")
        best, token = logp.max(-1)
        for b, (tok, s) in enumerate(zip(token.tolist(), best.tolist())):
            if ended[b]:
                continue
            score[b] += s
            if tok == eos_id:
                ended[b] = saw_eos[b] = True
            else:
                out[b].append(tok)
                ended[b] = len(out[b]) >= max_lens[b]
        if all(ended):
            break
    return [Hypothesis(o, s, s / length_penalty(len(o) + int(e), cfg.length_penalty))
            for o, s, e in zip(out, score, saw_eos)]
