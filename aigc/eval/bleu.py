"""Corpus BLEU and chrF as the field reports them: sacreBLEU, with its signature."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError


@dataclass
class TranslationScore:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str
    bleu_detail: str      # n-gram precisions, brevity penalty, lengths
    sentences: int


def score_translations(hypotheses: list[str], references: list[str]) -> TranslationScore:
    """sacreBLEU corpus BLEU (13a tokenisation, exp smoothing) and chrF2 against one reference each."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise DataError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise DataError("no sentences to score")
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return TranslationScore(bleu=b.score, chrf=c.score, bleu_signature=str(bleu.get_signature()),
                            chrf_signature=str(chrf.get_signature()), bleu_detail=str(b),
                            sentences=len(hypotheses))
