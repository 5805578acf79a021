"""Connectionist temporal classification (Graves et al. 2006) and the joint CTC/attention objective of
hybrid speech recognition (Watanabe et al. 2017).

CTC: a label sequence y (length U) is extended with blanks, y' = (_, y1, _, y2, ..., _, yU, _), length
2U + 1; an alignment emits one state of y' per frame, staying or moving on by one, or by two when it skips
a blank between two *different* labels. The forward variable alpha_t(s) = log of the probability of all
alignment prefixes of frames 0..t ending in state s:

    alpha_0(0) = lp_0(_),  alpha_0(1) = lp_0(y1)
    alpha_t(s) = logsumexp(alpha_{t-1}(s), alpha_{t-1}(s-1), [alpha_{t-1}(s-2) if y'_s != _ and y'_s != y'_{s-2}])
                 + lp_t(y'_s)
    log p(y | x) = logsumexp(alpha_{T-1}(2U), alpha_{T-1}(2U-1))

computed here in log space, batched over utterances and states (one loop over frames), gradients by
autograd. "log 0" is a large negative finite number, so dead paths carry zero gradient rather than NaN; an
impossible alignment (too few frames) gives an infinite loss (or 0 with ``zero_infinity``), as torch's.

Gradients match ``F.ctc_loss``'s with respect to the *logits* (before ``log_softmax``); with respect to the
log-probabilities themselves torch returns a gradient that assumes a log_softmax follows (``exp(lp) - γ``)
where the exact one is ``-γ``: both give the same gradient on the logits.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_float
from ..data.batching import IGNORE
from ..errors import ConfigError

NEG = -1e30  # log 0, finite
REDUCTIONS = ("mean", "sum", "none")


def ctc_log_likelihood(log_probs: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor,
                       blank: int = 0) -> Tensor:
    """log p(y | x) for each utterance: log_probs (B, T, V) (log_softmax over V; batch first), targets (B, S)
    padded (anything past ``target_lengths``), input_lengths (B,), target_lengths (B,) -> (B,).

    An impossible alignment gives about ``NEG`` (-1e30)."""
    B, T, _ = log_probs.shape
    device = log_probs.device
    input_lengths = torch.as_tensor(input_lengths, device=device).long()
    target_lengths = torch.as_tensor(target_lengths, device=device).long()
    S = targets.size(1) if targets.dim() == 2 else 0
    L = 2 * S + 1
    real = torch.arange(S, device=device)[None, :] < target_lengths[:, None]          # (B, S)
    labels = torch.where(real, targets.long(), torch.full_like(targets.long(), blank)) if S else targets.long()
    ext = torch.full((B, L), blank, dtype=torch.long, device=device)                  # (B, L) = y'
    if S:
        ext[:, 1::2] = labels
    # may state s be entered from s - 2 (skipping a blank)? as an additive mask: 0 or NEG
    skip = torch.zeros(B, L, dtype=torch.bool, device=device)
    if L > 2:
        skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    no_skip = log_probs.new_zeros(B, L).masked_fill_(~skip, NEG)
    emit = log_probs.gather(2, ext[:, None, :].expand(B, T, L)).unbind(1)               # T x (B, L): lp_t(y'_s)
    # alpha lives in (B, 2 + L) with two "log 0" columns in front, so the moves from s - 1 and s - 2
    # are views; a few elementwise kernels per frame (logaddexp, not logsumexp over a stack)
    front = log_probs.new_full((B, 2), NEG)
    first = emit[0].masked_fill(torch.arange(L, device=device) >= 2, NEG)                  # states 0 and 1 only
    buf = torch.cat([front, first], 1)
    alphas = [first]
    for t in range(1, T):
        a = torch.logaddexp(torch.logaddexp(buf[:, 2:], buf[:, 1:-1]), buf[:, :-2] + no_skip) + emit[t]
        alphas.append(a)
        buf = torch.cat([front, a], 1)
    # each utterance's alpha at its own last frame
    end = (input_lengths - 1).clamp(min=0)
    alpha = torch.stack(alphas, 1).gather(1, end[:, None, None].expand(B, 1, L))[:, 0]   # (B, L)
    last = alpha.gather(1, (2 * target_lengths)[:, None])[:, 0]                       # ends on the last blank
    prev = alpha.gather(1, (2 * target_lengths - 1).clamp(min=0)[:, None])[:, 0]      # or on the last label
    ll = torch.logaddexp(last, torch.where(target_lengths > 0, prev, torch.full_like(prev, NEG)))
    # no frames: only the empty label sequence is possible (probability 1)
    nothing = torch.where(target_lengths == 0, torch.zeros_like(ll), torch.full_like(ll, NEG))
    return torch.where(input_lengths > 0, ll, nothing)


def ctc_loss(log_probs: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, blank: int = 0,
             reduction: str = "mean", zero_infinity: bool = False) -> Tensor:
    """``F.ctc_loss``'s signature and layout: log_probs (T, B, V), targets (B, S) padded, lengths (B,).

    ``reduction``: ``mean`` (each loss divided by its target length, at least 1, then averaged over the
    batch: torch's default), ``sum`` or ``none`` (B,)."""
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if log_probs.dim() != 3:
        raise ConfigError(f"CTC log-probabilities must be (frames, batch, vocab), got {tuple(log_probs.shape)}")
    if targets.dim() != 2 or targets.size(0) != log_probs.size(1):
        raise ConfigError(f"CTC targets must be padded (batch, labels) for a batch of {log_probs.size(1)}, "
                          f"got {tuple(targets.shape)}")
    target_lengths = torch.as_tensor(target_lengths, device=log_probs.device).long()
    input_lengths = torch.as_tensor(input_lengths, device=log_probs.device).long()
    if bool((input_lengths > log_probs.size(0)).any()) or bool((target_lengths > targets.size(1)).any()):
        raise ConfigError("CTC lengths exceed the frames or labels given")
    ll = ctc_log_likelihood(log_probs.transpose(0, 1), targets, input_lengths, target_lengths, blank)
    impossible = ll < NEG / 2
    loss = torch.where(impossible, torch.zeros_like(ll) if zero_infinity else torch.full_like(ll, float("inf")),
                       -ll)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return (loss / target_lengths.clamp(min=1).to(loss.dtype)).mean()


# ---- the joint CTC/attention objective ----------------------------------------------------------------


class JointTerms(NamedTuple):
    loss: Tensor       # λ·ctc + (1 − λ)·att, what is minimised
    ctc: Tensor        # CTC loss, nats per target token (mean over the batch)
    att: Tensor        # label-smoothed cross-entropy of the decoder, nats per target token (end token included)


def ctc_targets(tgt_out: Tensor) -> tuple[Tensor, Tensor]:
    """Decoder targets (transcript + end token, padded with IGNORE) -> CTC targets (B, U) and lengths (B,)
    (the transcript alone: the end token is dropped, padding stays past the lengths)."""
    lengths = (tgt_out != IGNORE).sum(1) - 1
    if bool((lengths < 0).any()):
        raise ConfigError("every target row must hold at least the end token")
    return tgt_out[:, :max(int(lengths.max()), 0)], lengths


@dataclass
class JointCTCAttentionLoss:
    """Objective for :class:`aigc.models.asr.ASRModel`: L = λ·L_ctc + (1 − λ)·L_att (Watanabe et al. 2017).

    A batch is (feats (B, n_mels, T), feat_lengths (B,), tgt_in (B, U+1) = [bos] + y, tgt_out (B, U+1) =
    y + [eos] padded with IGNORE: :func:`aigc.data.batching.collate`'s target layout). Calling it returns
    the loss; ``terms`` returns its parts, and ``last`` keeps the parts of the latest call (detached) for
    logging. ``ctc`` may be ``F.ctc_loss`` (same signature) where speed matters more than owning the code.
    """
    ctc_weight: float = 0.3            # λ
    smoothing: float = 0.1             # label smoothing on the attention branch
    ctc: Callable[..., Tensor] = ctc_loss

    def __post_init__(self) -> None:
        check_float("ctc_weight", self.ctc_weight, 0.0, 1.0)
        check_float("smoothing", self.smoothing, 0.0, 1.0, high_open=True)
        self.last: JointTerms | None = None

    def terms(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor, Tensor]) -> JointTerms:
        feats, feat_lengths, tgt_in, tgt_out = batch
        lam = self.ctc_weight
        att_logits, ctc_logits, mem_lengths = model(feats, feat_lengths, tgt_in)        # (B, U, V), (B, T', V)
        att = F.cross_entropy(att_logits.reshape(-1, att_logits.size(-1)), tgt_out.reshape(-1),
                              ignore_index=IGNORE, label_smoothing=self.smoothing)
        if lam > 0:
            targets, lengths = ctc_targets(tgt_out)
            log_probs = torch.log_softmax(ctc_logits.float(), -1).transpose(0, 1)       # (T', B, V)
            ctc = self.ctc(log_probs, targets, mem_lengths, lengths, blank=model.config.blank_id,
                           reduction="mean", zero_infinity=True)
        else:
            ctc = att.new_zeros(())
        loss = lam * ctc + (1.0 - lam) * att if lam < 1 else ctc
        return JointTerms(loss, ctc, att)

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        terms = self.terms(model, batch)
        self.last = JointTerms(*(t.detach() for t in terms))
        return terms.loss
