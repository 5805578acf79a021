"""The utterances of an asr run, by split: ``speech``, ``spoken-digits`` or a user's folder, read the same way
by training (train, valid) and by ``aigc eval asr`` (test, test-voices).

* ``speech``: :func:`aigc.data.speech.load_speech` with ``n_train + n_valid`` training clips; the last
  ``n_valid`` are validation, less any whose transcript also occurs in the first ``n_train`` (so the
  validation sentences are unseen). ``test`` (held-out sentences) and ``test-voices`` (held-out sentences
  and voices) have ``n_test`` clips each.
* ``spoken-digits``: :func:`aigc.data.spoken_digits.load_digits` (its own ``valid`` split); transcripts
  are the digit words ("seven").
* a folder: its ``train`` split (the last ``n_valid`` utterances validate, at most ``n_train`` of the rest
  train; 0: all), its ``test`` split, and ``test-voices`` only when it has that sub-folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ...errors import ConfigError, DataError

SPLITS = ("train", "valid", "test", "test-voices")


@dataclass
class Utterances:
    waves: list[Tensor]           # (N_i,) float32 at the run's sample rate
    texts: list[str]              # normalised transcripts
    voices: list[str]

    def __len__(self) -> int:
        return len(self.waves)

    def head(self, n: int | None) -> Utterances:
        return self if n is None else Utterances(self.waves[:n], self.texts[:n], self.voices[:n])


def load_split(cfg: Any, split: str, *, progress: bool = False) -> Utterances:
    """The ``split`` of run config ``cfg`` (an :class:`ASRRunConfig` or its saved dict)."""
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; choose from {', '.join(SPLITS)}")
    data, n_train, n_valid, n_test, seed = (get(k) for k in ("data", "n_train", "n_valid", "n_test", "data_seed"))
    features = get("features")
    rate = features["sample_rate"] if isinstance(features, dict) else features.sample_rate
    if data == "spoken-digits":
        from ...data.spoken_digits import WORDS, DigitsConfig, load_digits
        dc = DigitsConfig(n_train=n_train, n_valid=n_valid, n_test=n_test, n_test_voices=n_test, seed=seed,
                          sample_rate=rate)
        digits = load_digits("spoken-digits", split, dc, progress=progress)
        return Utterances(list(digits.waves), [WORDS[int(k)] for k in digits.labels], list(digits.voices))
    from ...data.speech import SpeechConfig, load_speech
    if data == "speech":
        sc = SpeechConfig(n_train=n_train + n_valid, n_test=n_test, n_test_voices=n_test, seed=seed, sample_rate=rate)
        if split in ("test", "test-voices"):
            s = load_speech("speech", split, sc, progress=progress)
            return Utterances(s.waves, s.texts, s.voices)
        s = load_speech("speech", "train", sc, progress=progress)
        return _train_or_valid(Utterances(s.waves, s.texts, s.voices), split, n_train, n_valid)
    if split in ("test", "test-voices"):
        s = load_speech(data, split, SpeechConfig(sample_rate=rate))
        return Utterances(s.waves, s.texts, s.voices)
    s = load_speech(data, "train", SpeechConfig(sample_rate=rate))
    all_ = Utterances(s.waves, s.texts, s.voices)
    if len(all_) <= n_valid:
        raise DataError(f"the folder {data} has {len(all_)} training utterances, not more than n_valid={n_valid}; "
                        "add data or lower --n-valid")
    return _train_or_valid(all_, split, n_train or len(all_) - n_valid, n_valid)


def _train_or_valid(u: Utterances, split: str, n_train: int, n_valid: int) -> Utterances:
    cut = len(u) - n_valid
    if split == "train":
        return Utterances(u.waves[:min(n_train, cut)], u.texts[:min(n_train, cut)], u.voices[:min(n_train, cut)])
    seen = set(u.texts[:cut])
    keep = [i for i in range(cut, len(u)) if u.texts[i] not in seen]
    if not keep:
        raise DataError("every validation utterance repeats a training transcript; raise n_valid or n_train")
    return Utterances([u.waves[i] for i in keep], [u.texts[i] for i in keep], [u.voices[i] for i in keep])
