"""WER/CER by our edit distance, against jiwer (corpus-level: total edits / total reference words)."""
from __future__ import annotations

import random

import jiwer
import pytest

from aigc.errors import ConfigError
from aigc.eval.wer import align, cer, edit_distance, error_rates, wer

WORDS = "the cat sat on a mat and dog ran far away".split()


def _corpus(seed: int, n: int = 60) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    refs, hyps = [], []
    for _ in range(n):
        ref = [rng.choice(WORDS) for _ in range(rng.randint(1, 12))]
        hyp = list(ref)
        for _ in range(rng.randint(0, 4)):
            op = rng.random()
            if op < 0.33 and hyp:
                hyp[rng.randrange(len(hyp))] = rng.choice(WORDS)
            elif op < 0.66 and hyp:
                del hyp[rng.randrange(len(hyp))]
            else:
                hyp.insert(rng.randint(0, len(hyp)), rng.choice(WORDS))
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    return hyps, refs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corpus_wer_and_cer_match_jiwer(seed):
    hyps, refs = _corpus(seed)
    hyps[0] = ""  # an empty hypothesis: every reference word deleted
    ours = error_rates(hyps, refs)
    out = jiwer.process_words(refs, hyps)
    assert ours.wer == pytest.approx(out.wer, abs=1e-12)
    assert ours.words.errors == out.substitutions + out.deletions + out.insertions
    # (equal-cost alignments may split the edits differently: only their sum is compared here)
    assert ours.cer == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)


def test_split_of_edits_matches_jiwer_on_clear_cases():
    cases = [("a b c d", "a x c d"), ("a b c d", "a c d"), ("a b c", "a b z c"), ("a b", "c d e f")]
    for ref, hyp in cases:
        ours = align(ref.split(), hyp.split())
        out = jiwer.process_words(ref, hyp)
        assert (ours.substitutions, ours.deletions, ours.insertions) == \
            (out.substitutions, out.deletions, out.insertions), (ref, hyp)


def test_corpus_level_is_total_edits_over_total_words():
    # one error in a 1-word utterance, none in a 9-word one: 1/10, not the mean (1 + 0) / 2
    assert wer(["x", "a b c d e f g h i"], ["y", "a b c d e f g h i"]) == pytest.approx(0.1)
    assert wer("a b c", "a b c") == 0.0 and cer("abc", "abd") == pytest.approx(1 / 3)
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2]) == 2 and edit_distance([1, 2], []) == 2


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="hypotheses for"):
        error_rates(["a"], ["a", "b"])
    with pytest.raises(ConfigError, match="lists of strings"):
        error_rates("a", ["a"])
