"""Word and character error rates by edit distance (Levenshtein), corpus-level.

    rates = error_rates(hypotheses, references)
    rates.wer, rates.cer          # total edits / total reference words (characters)

WER = (S + D + I) / N over the whole corpus: the edits of every utterance summed, divided by the
reference words summed (not a mean of per-utterance rates, which would weigh a two-word utterance as
much as a twenty-word one). CER is the same over characters, spaces included (as ``jiwer.cer``).
Words are the whitespace-separated pieces of each string; no other normalisation is done here —
normalise both sides first (``aigc.data.speech.normalize_transcript``).

The distance is the standard dynamic programme, one row at a time in numpy: substitutions and
deletions come from the row above elementwise, insertions along the row are a running minimum
(d[j] = min_k (t[k] + j - k) = j + cummin(t - k)), and the full table is kept for the backtrace that
splits the edits into substitutions, deletions and insertions (preferring, on ties, a match or
substitution, then a deletion, then an insertion).
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class Edits:
    """The edits turning a reference into a hypothesis."""
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def reference_length(self) -> int:
        return self.substitutions + self.deletions + self.hits

    def __add__(self, other: Edits) -> Edits:
        return Edits(self.substitutions + other.substitutions, self.deletions + other.deletions,
                     self.insertions + other.insertions, self.hits + other.hits)


def _ids(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    table: dict[Hashable, int] = {}
    r = np.array([table.setdefault(x, len(table)) for x in ref], dtype=np.int64)
    h = np.array([table.setdefault(x, len(table)) for x in hyp], dtype=np.int64)
    return r, h


def edit_distance(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> int:
    """Levenshtein distance between two sequences (words, characters, token ids)."""
    return align(ref, hyp).errors


def align(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> Edits:
    """The minimum edits between ``ref`` and ``hyp``, split into substitutions, deletions, insertions."""
    n, m = len(ref), len(hyp)
    if n == 0 or m == 0:
        return Edits(deletions=n, insertions=m)
    r, h = _ids(ref, hyp)
    cols = np.arange(m + 1, dtype=np.int64)
    d = np.empty((n + 1, m + 1), dtype=np.int64)                  # d[i, j]: ref[:i] -> hyp[:j]
    d[0] = cols
    for i in range(1, n + 1):
        t = np.empty(m + 1, dtype=np.int64)
        t[0] = i
        t[1:] = np.minimum(d[i - 1, :-1] + (h != r[i - 1]), d[i - 1, 1:] + 1)   # substitute/match, delete
        d[i] = cols + np.minimum.accumulate(t - cols)                           # then insertions
    s = dl = ins = hits = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i, j] == d[i - 1, j - 1] + (r[i - 1] != h[j - 1]):
            if r[i - 1] == h[j - 1]:
                hits += 1
            else:
                s += 1
            i, j = i - 1, j - 1
        elif i > 0 and d[i, j] == d[i - 1, j] + 1:
            dl, i = dl + 1, i - 1
        else:
            ins, j = ins + 1, j - 1
    return Edits(s, dl, ins, hits)


@dataclass(frozen=True)
class ErrorRates:
    """Corpus-level error rates of a set of hypotheses against their references."""
    wer: float                 # word edits / reference words
    cer: float                 # character edits / reference characters (spaces included)
    words: Edits               # summed word edits
    chars: Edits               # summed character edits
    utterances: int
    sentence_errors: int       # utterances with at least one word error

    @property
    def ser(self) -> float:
        return self.sentence_errors / self.utterances if self.utterances else 0.0

    def as_dict(self) -> dict[str, float | int]:
        w = self.words
        return {"wer": self.wer, "cer": self.cer, "ser": self.ser, "utterances": self.utterances,
                "reference_words": w.reference_length, "substitutions": w.substitutions,
                "deletions": w.deletions, "insertions": w.insertions,
                "reference_chars": self.chars.reference_length, "char_errors": self.chars.errors}


def _rate(edits: Edits) -> float:
    total = edits.reference_length
    if total == 0:
        return 0.0 if edits.errors == 0 else float("inf")
    return edits.errors / total


def error_rates(hypotheses: Sequence[str], references: Sequence[str]) -> ErrorRates:
    """WER and CER of ``hypotheses`` against ``references`` (one string each, same order)."""
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise ConfigError("error_rates takes lists of strings (one per utterance), not a single string")
    if len(hypotheses) != len(references):
        raise ConfigError(f"{len(hypotheses)} hypotheses for {len(references)} references: give one each")
    words, chars, wrong = Edits(), Edits(), 0
    for hyp, ref in zip(hypotheses, references):
        w = align(ref.split(), hyp.split())
        words += w
        chars += align(ref.strip(), hyp.strip())
        wrong += w.errors > 0
    return ErrorRates(_rate(words), _rate(chars), words, chars, len(references), wrong)


def wer(hypotheses: Sequence[str] | str, references: Sequence[str] | str) -> float:
    """Corpus word error rate (a single pair of strings may be given as strings)."""
    hyps = [hypotheses] if isinstance(hypotheses, str) else hypotheses
    refs = [references] if isinstance(references, str) else references
    return error_rates(hyps, refs).wer


def cer(hypotheses: Sequence[str] | str, references: Sequence[str] | str) -> float:
    """Corpus character error rate (a single pair of strings may be given as strings)."""
    hyps = [hypotheses] if isinstance(hypotheses, str) else hypotheses
    refs = [references] if isinstance(references, str) else references
    return error_rates(hyps, refs).cer


__all__ = ["Edits", "ErrorRates", "align", "cer", "edit_distance", "error_rates", "wer"]
