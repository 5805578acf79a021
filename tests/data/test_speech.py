"""Embedded speech data: espeak-ng wrapper, the `speech` and `spoken-digits` sets, caching and user folders."""
import shutil

import numpy as np
import pytest
import torch

from aigc.audio import read_audio, write_audio
from aigc.data import espeak as E
from aigc.data import speech as S
from aigc.data import spoken_digits as D
from aigc.data.registry import list_datasets
from aigc.errors import ConfigError, DataError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the Debian package espeak-ng")
TINY = dict(n_train=6, n_test=3, n_test_voices=3)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def count_espeak(monkeypatch):
    calls = []
    real = E.run_espeak

    def counted(args, text=None, timeout=30.0):
        calls.append(text)
        return real(args, text, timeout)

    monkeypatch.setattr(E, "run_espeak", counted)
    return calls


# ---- transcripts and sentences (no synthesis) -----------------------------------------------------------


def test_normalize_transcript_keeps_words_and_inner_apostrophes():
    assert S.normalize_transcript("“Don’t panic!” — said the well-known 'Guide'.") == \
        "don't panic said the well known guide"
    assert S.normalize_transcript("  HELLO,\tWorld...  ") == "hello world"
    assert S.normalize_transcript("James' hat") == "james hat"


def test_clean_sentence_refuses_what_espeak_would_not_say_as_written():
    assert S.clean_sentence("Jesus wept, and they said nothing.") == "Jesus wept, and they said nothing."
    assert S.clean_sentence('"Hello there," she said (quietly).') == "Hello there, she said quietly."
    for bad in ("In 1984 it rained a lot.", "The FBI came to town today.", "Mr. Smith went home early.",
                "Too short.", "word " * 25, "Caf\u00e9 au lait is nice here.", "Use a <tag> here please.",
                "Section v of the book is long."):
        assert S.clean_sentence(bad) is None, bad


def test_split_sentences_cuts_at_sentence_ends_and_drops_attributions():
    text = "First one here. \u201cSecond one?\u201d Third!\n\t\t-- Somebody Famous"
    assert S.split_sentences(text) == ["First one here.", '"Second one?"', "Third!"]


def test_held_out_sentences_and_voices_never_reach_train():
    pool = S.sentence_pool()
    assert len(pool) > 20_000
    assert len({S.normalize_transcript(s) for s in pool}) == len(pool)
    cfg = S.SpeechConfig(n_train=4000, n_test=400, n_test_voices=400)
    plans = {split: S.plan(cfg, split, pool) for split in S.SPLITS}
    texts = {split: {S.normalize_transcript(p["text"]) for p in items} for split, items in plans.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["test-voices"]
    assert not texts["test"] & texts["test-voices"]
    variants = {split: {p["voice"].split("+")[1] for p in items} for split, items in plans.items()}
    assert not variants["train"] & variants["test-voices"] and not variants["test"] & variants["test-voices"]
    assert len(variants["train"]) > 50 and len(variants["test-voices"]) >= 5
    speeds = [p["speed"] for p in plans["train"]]
    assert min(speeds) >= 130 and max(speeds) <= 210 and len(set(speeds)) > 40
    assert S.plan(cfg, "train", pool) == plans["train"]                       # deterministic
    assert S.plan(S.SpeechConfig(n_train=4000, seed=1), "train", pool) != plans["train"]


@needs_espeak
def test_voice_pool_is_english_voices_times_variants():
    voices, variants = E.english_voices(), E.variants()
    assert "en-us" in voices and "en-gb" in voices and not any(v.startswith("mb-") for v in voices)
    assert len(variants) > 50 and "f3" in variants and "whisper" not in variants
    assert len(E.voice_pool()) == len(voices) * len(variants)


def test_config_checks():
    for bad in (dict(n_train=-1), dict(sources=("nope",)), dict(speed=(200, 100)), dict(pitch=(0, 120)),
                dict(noise_kind="brown"), dict(noise=1.5), dict(held_out_variants=0.0), dict(max_words=2)):
        with pytest.raises(ConfigError):
            S.SpeechConfig(**bad)
    with pytest.raises(ConfigError, match="split"):
        S.check_split("valid")
    with pytest.raises(ConfigError):
        D.DigitsConfig(amplitude=(10, 300))
    with pytest.raises(ConfigError):
        E.Utterance("hi", voice="en-us; rm -rf /")


def test_missing_espeak_names_the_package(monkeypatch, cache):
    monkeypatch.setattr(E.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        S.load_speech("speech", "train", S.SpeechConfig(**TINY))
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        D.load_digits("spoken-digits", "train", D.DigitsConfig(n_train=10))


def test_registry_rows():
    rows = {r.name: r for r in list_datasets()}
    for name in ("speech", "spoken-digits"):
        assert rows[name].kind == "audio" and rows[name].install_hint == "apt-get install espeak-ng"
        assert rows[name].installed == (shutil.which("espeak-ng") is not None)


def test_effects_noise_level_and_reverb_tail():
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(16000) * 0.05)
    for kind in ("white", "pink"):
        noisy = S.add_noise(x, 20.0, kind, np.random.default_rng(1))
        snr = 10 * np.log10(np.mean(x**2) / np.mean((noisy - x) ** 2))
        assert abs(snr - 20.0) < 0.01
    wet = S.reverberate(x, 0.3, 16000, rng)
    assert wet.shape[0] == 16000 + int(0.3 * 16000) - 1 and np.allclose(wet[:40], x[:40])


# ---- synthesis -----------------------------------------------------------------------------------------


@needs_espeak
def test_speak_gives_16k_float32():
    wave = E.speak("Testing one two three.", "en-gb", "m3", speed=160, pitch=40)
    assert wave.dtype == torch.float32 and wave.ndim == 1 and 0.5 * 16000 < wave.shape[0] < 4 * 16000
    assert 0.05 < float(wave.abs().max()) <= 1.05
    assert E.speak("-v en-us --help", "en-us").shape[0] > 8000        # text on stdin is never an option


@needs_espeak
def test_speech_is_deterministic_by_seed():
    cfg = S.SpeechConfig(**TINY, noise=1.0, reverb=0.5)
    a = S.synthesise(cfg, "train", workers=2)
    b = S.synthesise(cfg, "train", workers=1)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    c = S.synthesise(S.SpeechConfig(**TINY, noise=1.0, reverb=0.5, seed=7), "train", workers=2)
    assert not np.array_equal(a["texts"], c["texts"])


@needs_espeak
def test_load_speech_caches_and_second_load_does_not_synthesise(cache, count_espeak):
    cfg = S.SpeechConfig(**TINY)
    first = S.load_speech("speech", "test-voices", cfg)
    n_calls = len(count_espeak)
    assert n_calls >= 3
    assert len(first) == 3 and first.sample_rate == 16000 and all(w.dtype == torch.float32 for w in first.waves)
    assert all(t == S.normalize_transcript(t) for t in first.texts)
    assert all(v.split("+")[1] in E.variants() for v in first.voices)
    assert all(130 <= s <= 210 for s in first.speeds) and all(25 <= p <= 75 for p in first.pitches)
    files = list((cache / "speech").glob("*/test-voices.npz"))
    assert len(files) == 1 and not list((cache / "speech").glob("*/.*tmp"))
    second = S.load_speech("speech", "test-voices", cfg)
    assert len(count_espeak) == n_calls                                  # read from the cache
    assert second.texts == first.texts and all(torch.equal(x, y) for x, y in zip(first.waves, second.waves))
    files[0].write_bytes(b"PK\x03\x04 half a file")                      # a broken entry is rebuilt
    third = S.load_speech("speech", "test-voices", cfg)
    assert len(count_espeak) > n_calls and all(torch.equal(x, y) for x, y in zip(first.waves, third.waves))


# ---- spoken digits -------------------------------------------------------------------------------------


@needs_espeak
def test_spoken_digits_shapes_labels_voices_and_sc09_export(cache, tmp_path):
    cfg = D.DigitsConfig(n_train=20, n_valid=10, n_test=10, n_test_voices=10)
    train = D.load_digits("spoken-digits", "train", cfg)
    assert train.waves.shape == (20, 16000) and train.waves.dtype == torch.float32
    assert sorted(train.labels.tolist()) == sorted(list(range(10)) * 2)
    assert float(train.waves.abs().max()) <= 1.0
    centre = train.waves[:, 6000:10000].abs().amax(dim=1)
    assert (centre > 0.05).all()                                       # the word sits in the middle
    held = D.load_digits("spoken-digits", "test-voices", cfg)
    tr_var = {v.split("+")[1] for v in train.voices}
    assert not tr_var & {v.split("+")[1] for v in held.voices}
    again = D.load_digits("spoken-digits", "train", cfg)
    assert torch.equal(again.waves, train.waves)

    out = D.export_sc09(tmp_path / "sc09", cfg)
    wavs = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.wav"))
    assert len(wavs) == 50 and {w.split("/")[0] for w in wavs} == set(D.WORDS)
    assert all(len(w.split("/")[1].split("_nohash_")[0]) == 8 for w in wavs)
    valid = (out / "validation_list.txt").read_text().split()
    test = (out / "testing_list.txt").read_text().split()
    assert len(valid) == 10 and len(test) == 10 and set(valid) <= set(wavs) and not set(valid) & set(test)
    wave, sr = read_audio(out / wavs[0])
    assert sr == 16000 and wave.shape == (1, 16000)
    back = {s: D.load_digits(out, s, cfg) for s in D.SPLITS}
    assert [len(back[s]) for s in D.SPLITS] == [20, 10, 10, 10]
    assert sorted(back["test-voices"].labels.tolist()) == sorted(held.labels.tolist())
    with pytest.raises(DataError, match="not an empty folder"):
        D.export_sc09(out, cfg)


def test_sc09_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such"):
        D.load_digits(tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no digit clips"):
        D.load_digits(tmp_path / "empty", "train")
    write_audio(tmp_path / "sc" / "one" / "aa_nohash_0.wav", np.zeros(8000, np.float32), 8000)
    one = D.load_digits(tmp_path / "sc", "train")
    assert one.waves.shape == (1, 16000) and one.labels.tolist() == [1] and one.voices == ["aa"]
    with pytest.raises(DataError, match="validation_list"):
        D.load_digits(tmp_path / "sc", "valid")


# ---- the user's own folders ----------------------------------------------------------------------------


def _tone(seconds: float, sr: int) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def test_user_folder_with_transcripts_tsv(tmp_path):
    folder = tmp_path / "mine"
    write_audio(folder / "a.wav", _tone(0.5, 22050), 22050)
    write_audio(folder / "sub" / "b.flac", _tone(0.25, 16000), 16000)
    (folder / "transcripts.tsv").write_text("a.wav\tHello, World!\nsub/b.flac\tIt's  FINE\n", encoding="utf-8")
    data = S.load_speech(folder, "all")
    assert data.texts == ["hello world", "it's fine"] and data.ids == ["a.wav", "sub/b.flac"]
    assert data.sample_rate == 16000 and data.waves[0].shape == (8000,) and data.waves[1].shape == (4000,)


def test_user_folder_train_test_split_is_a_stable_partition(tmp_path):
    folder = tmp_path / "many"
    lines = []
    for i in range(60):
        write_audio(folder / f"c{i:02d}.wav", _tone(0.02, 16000), 16000)
        lines.append(f"c{i:02d}.wav\tclip number {i}\n")
    (folder / "transcripts.tsv").write_text("".join(lines))
    train, test = S.load_speech(folder, "train"), S.load_speech(folder, "test")
    assert len(test) >= 1 and not set(train.ids) & set(test.ids) and len(train) + len(test) == 60
    assert S.load_speech(folder, "test").ids == test.ids


def test_user_folder_librispeech_layout(tmp_path):
    root = tmp_path / "dev-clean"
    chapter = root / "19" / "198"
    for i in range(3):
        write_audio(chapter / f"19-198-{i:04d}.flac", _tone(0.2 + 0.1 * i, 16000), 16000)
    (chapter / "19-198.trans.txt").write_text(
        "".join(f"19-198-{i:04d} NUMBER {w} IS HERE\n" for i, w in enumerate(("ONE", "TWO", "THREE"))))
    data = S.load_speech(root, "all")
    assert data.texts == ["number one is here", "number two is here", "number three is here"]
    assert data.voices == ["19"] * 3 and [w.shape[0] for w in data.waves] == [3200, 4800, 6400]
    (root / "test").mkdir()
    with pytest.raises(DataError, match="no transcripts"):
        S.load_speech(root, "test")                                         # a split sub-folder wins


def test_user_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        S.load_speech(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no transcripts"):
        S.load_speech(tmp_path / "empty", "all")
    bad = tmp_path / "bad"
    write_audio(bad / "a.wav", _tone(0.2, 16000), 16000)
    (bad / "transcripts.tsv").write_text("a.wav\thello\nb.wav\tno audio for this one\n")
    with pytest.raises(DataError, match="no audio file.*b.wav"):
        S.load_speech(bad, "all")
    (bad / "transcripts.tsv").write_text("a.wav hello without a tab\n")
    with pytest.raises(DataError, match="line 1"):
        S.load_speech(bad, "all")
    (bad / "transcripts.tsv").write_text("a.wav\thello\n")
    with pytest.raises(DataError, match="test-voices"):
        S.load_speech(bad, "test-voices")
    (bad / "a.wav").write_bytes(b"not audio at all")
    with pytest.raises(DataError):
        S.load_speech(bad, "all")
