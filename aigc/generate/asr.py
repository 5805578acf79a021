"""Decoding speech: greedy CTC, attention beam search, joint CTC/attention rescoring, long audio in chunks.

* ``greedy-ctc``: the most likely label of every encoder frame, repeats collapsed, blanks dropped.
* ``beam``: the attention decoder's beam search — :func:`aigc.generate.seq2seq.beam_search_n_best` on the
  decoder bound to the encoded speech (:meth:`aigc.models.asr.ASRModel.bind`), ranked by the GNMT length
  penalty.
* ``joint``: the beam's n-best list rescored (Watanabe et al. 2017, rescoring variant): each full hypothesis
  gets its CTC log-likelihood log p_ctc(y | x) by the forward algorithm (:func:`aigc.objectives.ctc.
  ctc_log_likelihood`), and the hypotheses are ranked by

      (λ · log p_ctc(y | x) + (1 − λ) · log p_att(y, eos | x)) / ((5 + |y| + 1) / 6) ** alpha

  (λ = ``ctc_weight``, alpha = ``length_penalty``). CTC's monotonic alignment removes the attention
  decoder's typical failures (looping, dropping the end of an utterance) from the top of the list.
* ``one-pass``: joint decoding (Watanabe et al. 2017, Algorithm 2): every extension of a beam is scored by
  λ · CTC prefix score + (1 − λ) · attention log-probability as it is made (:class:`CTCPrefixScorer`), so
  CTC prunes during the search, not after. Slower (a loop over the frames per output token).

Long audio (:func:`transcribe`) is cut into windows of ``chunk_s`` seconds overlapping by ``overlap_s``,
all decoded in one batch; each token is placed in time by a CTC forced alignment (Viterbi) of the window's
hypothesis, and each window keeps only the tokens that start in its own part of the audio: from the middle
of its overlap with the previous window to the middle of its overlap with the next. Audio that fits one
window is decoded as one window, so its result is exactly the unchunked one.

Token ids: the model's ``config.blank_id`` is the CTC blank; ``bos_id``/``eos_id`` are the tokenizer's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import check_float, check_int
from ..errors import ConfigError
from ..models.asr import ASRModel, check_features, subsampled_lengths
from ..objectives.ctc import NEG, ctc_log_likelihood
from .seq2seq import MAX_BEAM, MAX_LENGTH, DecodeConfig, beam_search_n_best, length_penalty

METHODS = ("greedy-ctc", "beam", "joint", "one-pass")
SUBSAMPLING = 4          # feature frames per encoder frame
RECEPTIVE_CENTRE = 3     # encoder frame j sees feature frames 4j .. 4j + 6: its centre


@dataclass
class TranscribeConfig:
    """How to transcribe; validated when made (and by ``dataclasses.replace``)."""
    method: str = "joint"          # greedy-ctc | beam | joint (rescoring) | one-pass (CTC prefix scores)
    beam: int = 4
    ctc_weight: float = 0.3        # λ of joint rescoring
    length_penalty: float = 0.6    # GNMT alpha of beam search and rescoring; 0: raw log-probabilities
    chunk_s: float = 20.0          # window of long audio, seconds
    overlap_s: float = 2.0         # overlap of consecutive windows, seconds
    max_len: int = 200             # tokens of one window's transcript (also at most its encoder frames)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        check_int("beam", self.beam, 1, MAX_BEAM)
        check_float("ctc_weight", self.ctc_weight, 0.0, 1.0)
        check_float("length_penalty", self.length_penalty, -10.0, 10.0)
        check_float("chunk_s", self.chunk_s, 0.1, 3600.0)
        check_float("overlap_s", self.overlap_s, 0.0, self.chunk_s, high_open=True)
        check_int("max_len", self.max_len, 1, MAX_LENGTH)


@dataclass
class Transcript:
    tokens: list[int]              # transcript ids (no start/end token, no blank)
    score: float                   # what the method ranked by (joint: the combined, length-normalised score)
    att_score: float | None = None  # log p_att(y, eos | x) (beam, joint)
    ctc_score: float | None = None  # log p_ctc(y | x) (joint), or the greedy path's log-probability
    frames: list[int] = field(default_factory=list)  # feature frame where each token starts (CTC alignment)

    def times(self, frame_rate: float = 100.0) -> list[float]:
        """Start of each token in seconds (``frame_rate``: feature frames per second)."""
        return [f / frame_rate for f in self.frames]


# ---- CTC ---------------------------------------------------------------------------------------------


def ctc_greedy(log_probs: Tensor, lengths: Tensor, blank: int = 0) -> list[tuple[list[int], list[int], float]]:
    """log_probs (B, T, V), lengths (B,) -> per utterance (tokens, encoder frame of each token, path score):
    the best label per frame, repeats collapsed, blanks dropped."""
    best, ids = log_probs.max(-1)                                        # (B, T)
    out = []
    for b, n in enumerate(lengths.tolist()):
        path = ids[b, :n].tolist()
        tokens, frames, prev = [], [], blank
        for t, tok in enumerate(path):
            if tok != blank and tok != prev:
                tokens.append(tok)
                frames.append(t)
            prev = tok
        out.append((tokens, frames, float(best[b, :n].sum())))
    return out


def ctc_scores(log_probs: Tensor, length: int, hyps: list[list[int]], blank: int = 0) -> list[float]:
    """log p_ctc(y | x) of each full hypothesis of one utterance: log_probs (T, V), ``length`` real frames."""
    if not hyps:
        return []
    n = len(hyps)
    S = max(1, max(len(h) for h in hyps))
    targets = torch.full((n, S), blank, dtype=torch.long, device=log_probs.device)
    for i, h in enumerate(hyps):
        targets[i, :len(h)] = torch.tensor(h, dtype=torch.long)
    lp = log_probs[:length].float().unsqueeze(0).expand(n, -1, -1)
    ll = ctc_log_likelihood(lp, targets, torch.full((n,), length), torch.tensor([len(h) for h in hyps]), blank)
    return [float("-inf") if x < NEG / 2 else x for x in ll.tolist()]


def ctc_align(log_probs: Tensor, tokens: list[int], blank: int = 0) -> list[int] | None:
    """Viterbi (best single) CTC alignment of ``tokens`` to log_probs (T, V): the encoder frame where each
    token starts; None when the tokens cannot fit the frames."""
    T = log_probs.size(0)
    if not tokens:
        return []
    L = 2 * len(tokens) + 1
    ext = torch.full((L,), blank, dtype=torch.long)
    ext[1::2] = torch.tensor(tokens)
    skip = torch.zeros(L, dtype=torch.bool)
    skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    emit = log_probs.float().cpu()[:, ext]                               # (T, L)
    delta = torch.full((L,), NEG)
    delta[:2] = emit[0, :2]
    back = torch.zeros(T, L, dtype=torch.long)                           # predecessor move: 0, 1 or 2 back
    neg = torch.full((2,), NEG)
    for t in range(1, T):
        padded = torch.cat([neg, delta])
        moves = torch.stack([padded[2:], padded[1:-1], padded[:-2].masked_fill(~skip, NEG)])  # (3, L)
        best, arg = moves.max(0)
        delta = best + emit[t]
        back[t] = arg
    end = L - 1 if L == 1 or delta[L - 1] >= delta[L - 2] else L - 2
    if float(delta[end]) < NEG / 2:
        return None
    states = [end]
    for t in range(T - 1, 0, -1):
        states.append(states[-1] - int(back[t, states[-1]]))
    states.reverse()                                                     # state of each frame
    starts, seen = [], -1
    for t, s in enumerate(states):
        if s % 2 == 1 and s != seen:
            starts.append(t)
            seen = s
    return starts


# ---- decoding a batch of utterances (each fits one window) ---------------------------------------------


def _feature_frame(encoder_frame: int) -> int:
    return SUBSAMPLING * encoder_frame + RECEPTIVE_CENTRE


@torch.inference_mode()
def decode_batch(model: ASRModel, feats: Tensor, lengths: Tensor | None = None,
                 cfg: TranscribeConfig = TranscribeConfig(), *, bos_id: int, eos_id: int) -> list[Transcript]:
    """Transcribe each utterance of feats (B, n_mels, T) (real frames ``lengths``), each at most
    ``model.config.max_frames`` long, by ``cfg.method``."""
    blank = model.config.blank_id
    memory, mem_lengths = model.encode(feats, lengths)                  # (B, T', C), (B,)
    log_probs = torch.log_softmax(model.ctc_logits(memory).float(), -1)  # (B, T', V)
    if cfg.method == "greedy-ctc":
        return [Transcript(toks, score, ctc_score=score, frames=[_feature_frame(f) for f in frames])
                for toks, frames, score in ctc_greedy(log_probs, mem_lengths, blank)]
    if cfg.method == "one-pass":
        _check_beam(cfg, model)
        n_best = [None] * feats.size(0)
    else:
        n_best = attention_n_best(model, memory, mem_lengths, cfg, bos_id=bos_id, eos_id=eos_id)
    out = []
    for b, hyps in enumerate(n_best):
        n = int(mem_lengths[b])
        if cfg.method == "one-pass":
            best = one_pass_joint(model, memory[b:b + 1, :n], log_probs[b, :n], cfg, bos_id=bos_id, eos_id=eos_id)
        elif cfg.method == "joint":
            ranked = joint_rescore([h.tokens for h in hyps], [h.score for h in hyps],
                                   ctc_scores(log_probs[b], n, [h.tokens for h in hyps], blank),
                                   cfg.ctc_weight, cfg.length_penalty)
            best = ranked[0]
        else:
            best = Transcript(hyps[0].tokens, hyps[0].normalized, att_score=hyps[0].score)
        frames = ctc_align(log_probs[b, :n], best.tokens, blank)
        if frames is None:  # CTC cannot place them (too many tokens for the frames): spread them evenly
            frames = [int(i * n / max(1, len(best.tokens))) for i in range(len(best.tokens))]
        best.frames = [_feature_frame(f) for f in frames]
        out.append(best)
    return out


def attention_n_best(model: ASRModel, memory: Tensor, memory_lengths: Tensor, cfg: TranscribeConfig, *,
                     bos_id: int, eos_id: int) -> list[list]:
    """The attention decoder's finished hypotheses (``aigc.generate.seq2seq.Hypothesis``) per utterance,
    best first: at most ``cfg.max_len`` tokens and at most the utterance's encoder frames."""
    _check_beam(cfg, model)
    decode_cfg = DecodeConfig(beam=cfg.beam, length_penalty=cfg.length_penalty, max_len_a=1.0, max_len_b=0)
    limits = [min(int(n), cfg.max_len) for n in memory_lengths.tolist()]
    return beam_search_n_best(model.bind(memory, memory_lengths), memory, bos_id=bos_id, eos_id=eos_id,
                              cfg=decode_cfg, src_lengths=limits)


def _check_beam(cfg: TranscribeConfig, model: ASRModel) -> None:
    if 2 * cfg.beam > model.config.vocab_size:
        raise ConfigError(f"beam {cfg.beam} is too wide for a vocabulary of {model.config.vocab_size}: "
                          f"use at most {model.config.vocab_size // 2}")


def joint_rescore(tokens: list[list[int]], att_scores: list[float], ctc_scores: list[float],
                  ctc_weight: float, alpha: float) -> list[Transcript]:
    """Rank hypotheses by (λ·ctc + (1 − λ)·att) / GNMT penalty(|y| + 1), best first."""
    out = []
    for toks, att, ctc in zip(tokens, att_scores, ctc_scores):
        if ctc_weight == 0:
            combined = att
        elif ctc_weight == 1:
            combined = ctc
        else:
            combined = ctc_weight * ctc + (1.0 - ctc_weight) * att
        out.append(Transcript(list(toks), combined / length_penalty(len(toks) + 1, alpha), att, ctc))
    return sorted(out, key=lambda h: -h.score)


# ---- one-pass joint decoding (Watanabe et al. 2017, Algorithm 2) ------------------------------------------


class CTCPrefixScorer:
    """CTC prefix scores of one utterance, log_probs (T, V): for a prefix g, r_t^n(g) / r_t^b(g) are the
    log-probabilities of frames 0..t emitting g and ending in a label / a blank, and the prefix score
    psi(g + c) = log sum_t P(frames 0..t emit g + c, c first emitted at t) (the probability that the
    transcript *starts* with g + c); psi(g + eos) = log(r_{T-1}^n(g) + r_{T-1}^b(g)) = log p_ctc(g | x).

    Candidates are scored for a batch of prefixes at once (one loop over frames)."""

    def __init__(self, log_probs: Tensor, blank: int, eos: int) -> None:
        self.lp, self.blank, self.eos = log_probs.float(), blank, eos
        self.T = log_probs.size(0)

    def initial(self) -> Tensor:
        """r of the empty prefix (1, T, 2): only blanks so far."""
        r = self.lp.new_full((1, self.T, 2), NEG)
        r[0, :, 1] = torch.cumsum(self.lp[:, self.blank], 0)
        return r

    def score(self, r: Tensor, last: list[int | None], length: int, cand: Tensor) -> tuple[Tensor, Tensor]:
        """Prefixes with states r (N, T, 2), last tokens ``last`` (None: empty), ``length`` tokens each,
        candidates cand (N, C) -> psi (N, C) and the new states (N, C, T, 2) (eos candidates: psi of
        the full transcript, states unused)."""
        N, C = cand.shape
        T, lp = self.T, self.lp
        y_c = lp[:, cand].permute(1, 2, 0)                                    # (N, C, T) log y_t(c)
        y_b = lp[:, self.blank]                                               # (T,)
        last_t = torch.tensor([-1 if x is None else x for x in last], device=lp.device)
        same = (cand == last_t[:, None])                                      # (N, C): c repeats g's last
        rn_g, rb_g = r[..., 0][:, None, :], r[..., 1][:, None, :]            # (N, 1, T)
        # phi_t: probability mass from which c may be emitted at t + 1 (a repeat needs a blank between)
        phi = torch.logaddexp(rb_g, torch.where(same[..., None], torch.full_like(rn_g, NEG), rn_g))  # (N, C, T)
        rn = lp.new_full((N, C, T), NEG)
        rb = lp.new_full((N, C, T), NEG)
        if length == 0:
            rn[:, :, 0] = y_c[:, :, 0]
        psi = rn[:, :, 0].clone()
        start = max(1, length)  # a prefix of L tokens needs L frames
        for t in range(start, T):
            rn[:, :, t] = torch.logaddexp(rn[:, :, t - 1], phi[:, :, t - 1]) + y_c[:, :, t]
            rb[:, :, t] = torch.logaddexp(rb[:, :, t - 1], rn[:, :, t - 1]) + y_b[t]
            psi = torch.logaddexp(psi, phi[:, :, t - 1] + y_c[:, :, t])
        full = torch.logaddexp(r[:, T - 1, 0], r[:, T - 1, 1])[:, None].expand(N, C)
        psi = torch.where(cand == self.eos, full, psi)
        return psi, torch.stack([rn, rb], -1)


@torch.inference_mode()
def one_pass_joint(model: ASRModel, memory: Tensor, log_probs: Tensor, cfg: TranscribeConfig, *,
                   bos_id: int, eos_id: int) -> Transcript:
    """Joint CTC/attention beam search of one utterance, memory (1, T', C) and its CTC log_probs (T', V):
    every extension g + c of a beam is scored λ·psi_ctc(g + c) + (1 − λ)·log p_att(g + c) as it is made
    (candidates: the ``2 * beam`` best by attention, and the end token); finished hypotheses are ranked
    by that score over the GNMT length penalty. The decoder's cache is the seq2seq DecodeState."""
    K, lam, blank = cfg.beam, cfg.ctc_weight, model.config.blank_id
    T = memory.size(1)
    max_len = max(1, min(cfg.max_len, T, model.config.max_target_len - 1))
    scorer = CTCPrefixScorer(log_probs, blank, eos_id)
    mask = torch.ones(1, 1, 1, T, dtype=torch.bool, device=memory.device)
    state = model.decoder.start_decoding(memory, mask, 1, max_len + 1, widen_to=K)
    # the beams: tokens, summed attention log-prob, CTC prefix states
    tokens: list[list[int]] = [[]]
    att = torch.zeros(1, device=memory.device)
    r = scorer.initial()
    finished: list[Transcript] = []
    n_cand = min(2 * K, model.config.vocab_size - 1)
    for length in range(max_len):
        last = torch.tensor([bos_id if not t else t[-1] for t in tokens], device=memory.device)
        logp = torch.log_softmax(model.decoder.step(last, state).float(), -1)       # (N, V)
        logp[:, blank] = float("-inf")
        if length == max_len - 1:  # out of room: only the end token
            cand = torch.full((len(tokens), 1), eos_id, device=memory.device)
        else:
            cand = logp.topk(n_cand, -1).indices                                   # (N, C)
            has_eos = (cand == eos_id).any(1, keepdim=True)
            cand = torch.cat([cand, torch.where(has_eos, cand[:, :1], torch.full_like(cand[:, :1], eos_id))], 1)
        new_psi, new_r = scorer.score(r, [t[-1] if t else None for t in tokens], length, cand)
        new_att = att[:, None] + logp.gather(1, cand)                              # (N, C)
        joint = lam * new_psi + (1.0 - lam) * new_att
        order = joint.flatten().argsort(descending=True).tolist()
        C = cand.size(1)
        keep, seen = [], set()
        for i in order:
            h, c = divmod(i, C)
            tok = int(cand[h, c])
            if (h, tok) in seen or joint[h, c] < NEG / 2 or not torch.isfinite(joint[h, c]):
                continue
            seen.add((h, tok))
            if tok == eos_id:
                if len(seen) <= K:  # an end counts only among the K best extensions
                    finished.append(Transcript(list(tokens[h]), float(joint[h, c]) / length_penalty(length + 1,
                                               cfg.length_penalty), float(new_att[h, c]), float(new_psi[h, c])))
            else:
                keep.append((h, c, tok))
            if len(keep) == K:
                break
        if not keep or len(finished) >= K:
            break
        rows = torch.tensor([h for h, _, _ in keep], device=memory.device)
        cols = torch.tensor([c for _, c, _ in keep], device=memory.device)
        tokens = [tokens[h] + [tok] for h, _, tok in keep]
        att, r = new_att[rows, cols], new_r[rows, cols]
        index = rows
        if len(keep) < K:  # too few live beams: pad with copies of the last, scored -inf (never kept)
            pad = K - len(keep)
            index = torch.cat([rows, rows[-1:].expand(pad)])
            tokens += [tokens[-1]] * pad
            att = torch.cat([att, att.new_full((pad,), float("-inf"))])
            r = torch.cat([r, r[-1:].expand(pad, -1, -1)])
        if state.group == 1:  # the first step ran on one row: every beam continues it
            state.widen(K)
        else:
            state.reorder(index)
    if not finished:
        return Transcript([], float("-inf"))
    return max(finished, key=lambda h: h.score)


# ---- long audio -----------------------------------------------------------------------------------------


def windows(n_frames: int, chunk: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, end, keep_from, keep_to) feature frames of each window over ``n_frames``: windows of
    ``chunk`` frames every ``chunk - overlap``, the last one moved back to end at the end; each keeps the
    tokens starting in [keep_from, keep_to), split at the middle of each overlap."""
    if n_frames <= chunk:
        return [(0, n_frames, 0, n_frames)]
    step = chunk - overlap
    starts = list(range(0, n_frames - chunk, step)) + [n_frames - chunk]
    spans = [(s, s + chunk) for s in starts]
    cuts = [0] + [(spans[i + 1][0] + spans[i][1]) // 2 for i in range(len(spans) - 1)] + [n_frames]
    return [(s, e, cuts[i], cuts[i + 1]) for i, (s, e) in enumerate(spans)]


@torch.inference_mode()
def transcribe(model: ASRModel, feats: Tensor, cfg: TranscribeConfig = TranscribeConfig(), *, bos_id: int,
               eos_id: int, frame_rate: float = 100.0, batch_size: int = 8) -> Transcript:
    """Transcribe one recording of any length: feats (n_mels, T) (or (1, n_mels, T)) log-mel features at
    ``frame_rate`` frames per second (aigc.audio.FeatureConfig: sample_rate / hop). Windows are decoded
    ``batch_size`` at a time; the result's ``frames`` are feature frames of the whole recording."""
    if isinstance(feats, Tensor) and feats.dim() == 2:
        feats = feats.unsqueeze(0)
    M = model.config.n_mels
    if isinstance(feats, Tensor) and feats.dim() == 3 and feats.size(0) != 1:
        raise ConfigError(f"transcribe takes one recording (n_mels, frames); got a batch of {feats.size(0)}: "
                          "use decode_batch")
    check_features(feats, None, M)
    check_float("frame_rate", frame_rate, 0.0, 1e6, low_open=True)
    check_int("batch_size", batch_size, 1, 4096)
    T = feats.size(2)
    chunk, overlap = round(cfg.chunk_s * frame_rate), round(cfg.overlap_s * frame_rate)
    chunk = min(chunk, model.config.max_frames)
    overlap = min(overlap, chunk - 1)
    if chunk < 7 or subsampled_lengths(chunk) < 1:
        raise ConfigError(f"chunk_s={cfg.chunk_s} gives windows of {chunk} frames: too short to read")
    spans = windows(T, chunk, overlap)
    if len(spans) == 1:
        return decode_batch(model, feats, None, cfg, bos_id=bos_id, eos_id=eos_id)[0]
    tokens, frames, score = [], [], 0.0
    for i in range(0, len(spans), batch_size):
        group = spans[i:i + batch_size]
        batch = torch.stack([feats[0, :, s:e] for s, e, _, _ in group])  # all full windows: (b, M, chunk)
        for (s, _, lo, hi), part in zip(group, decode_batch(model, batch, None, cfg, bos_id=bos_id,
                                                             eos_id=eos_id)):
            keep = [j for j, f in enumerate(part.frames) if lo <= s + f < hi]
            tokens += [part.tokens[j] for j in keep]
            frames += [s + part.frames[j] for j in keep]
            score += part.score
    return Transcript(tokens, score, frames=frames)

