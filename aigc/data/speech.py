"""The ``speech`` data set (English sentences spoken offline by espeak-ng) and the user's own speech folders.

    train = load_speech("speech", "train", SpeechConfig(n_train=2000))   # SpeechSet of 2,000 clips
    test = load_speech("speech", "test")            # held-out sentences, voices seen in training
    voices = load_speech("speech", "test-voices")   # held-out sentences AND held-out voices
    mine = load_speech("/data/LibriSpeech/dev-clean", "train")            # a folder (see below)

Sentences come from the embedded corpora ``fortunes`` and ``bible-en``: entries are cut into sentences,
curly quotes and dashes turned to ASCII, and a sentence is kept only if it is plain ASCII letters and
punctuation, ``min_words``..``max_words`` words long, has **no digits** (espeak-ng would read "1984" in
a way a transcript cannot say honestly), no all-capital words (it spells some of them out) and no
abbreviations like "Mr." (it expands them). Sentences are de-duplicated by their transcript.

Transcripts are :func:`normalize_transcript` of the sentence — lowercase, hyphens and dashes as spaces,
every punctuation mark dropped except apostrophes inside words ("don't"), single spaces — which is
exactly what espeak-ng says, and the same function scores word error rates later.

Splits: each sentence is held out by a stable hash of its transcript (``test``: 4 %, ``test-voices``:
4 %, never used for ``train``, whatever the seed or sizes), so no test sentence is ever trained on.
Voices are ``"<accent>+<variant>"`` (8 English accents x ~97 variants, see :mod:`aigc.data.espeak`);
a stable hash of the variant's name holds out ``held_out_variants`` of the variants, and
``test-voices`` uses only those (with every accent) while ``train`` and ``test`` never do.

Each clip draws its voice, speaking rate and pitch (and noise and reverberation, if asked for) from a
generator seeded by (seed, split, index); it is loudness-normalised (EBU R 128, -23 LUFS, peaks kept
under -1 dBFS) and stored as 16-bit PCM, so the same seed gives bit-identical clips. A split is
synthesised once into ``cache_root()/speech/<key>/<split>.npz`` (key: the config, the espeak-ng
version and the source files' stamps; written atomically), so loading it again takes a second.

A user's folder holds audio files (.wav/.flac/.ogg, resampled to 16 kHz) with either
``transcripts.tsv`` (``relative/path.wav<TAB>text`` lines) or LibriSpeech's ``*/*/*.trans.txt``
(``ID text`` lines beside ``ID.flac``). If the folder has a sub-folder named after the split
(``train/``, ``test/``, ...), that is read; otherwise utterances go to ``test`` (5 %) or ``train``
by a stable hash of their path, and ``all`` gives every one.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from aigc.config import check_float, check_int, check_seed
from aigc.data import espeak, registry
from aigc.data.cache import cache_key, cache_root, file_stamp, read_npz, write_npz
from aigc.errors import ConfigError, DataError

FORMAT = 1                      # bump when what is cached changes
SPLITS = ("train", "test", "test-voices")
SOURCES = ("fortunes", "bible-en")
HELD_OUT = {"test": (0.0, 0.04), "test-voices": (0.04, 0.08)}   # hash ranges of held-out sentences
TARGET_LUFS = -23.0
PEAK_DB = -1.0
USER_TEST_FRACTION = 0.05

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')])\s+")
_ASCII_MAP = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": " - ",
                            "\u2013": " - ", "\u2026": "...", "\u00a0": " ", "\t": " ", "\n": " "})
_ALLOWED = re.compile(r"[A-Za-z .,;:!?'\"()-]+")
_ABBREVIATIONS = re.compile(r"\b(mr|mrs|ms|dr|st|jr|sr|vs|etc|e\.g|i\.e|no|prof|gen|col|capt|lt|sgt|mt|ft)\.",
                            re.IGNORECASE)
_CAPS_WORD = re.compile(r"\b[A-Z]{2,}")


# ---- transcripts and sentences -----------------------------------------------------------------------


def normalize_transcript(text: str) -> str:
    """The words of ``text`` as a transcript: lowercase ASCII, hyphens/dashes as spaces, punctuation
    dropped except apostrophes inside words, single spaces. Used for the data and for WER alike."""
    text = unicodedata.normalize("NFKC", str(text)).translate(_ASCII_MAP).lower()
    text = re.sub(r"[-_/]", " ", text)
    text = re.sub(r"[^a-z0-9' ]", " ", text)
    text = re.sub(r"(?<![a-z0-9])'|'(?![a-z0-9])", " ", text)    # quotes, not apostrophes
    return " ".join(text.split())


def clean_sentence(text: str, min_words: int = 3, max_words: int = 20) -> str | None:
    """``text`` as a sentence to speak (ASCII, single spaces, no quotes or brackets), or None if it
    should not be used (see the module notes)."""
    text = " ".join(unicodedata.normalize("NFKC", text).translate(_ASCII_MAP).split())
    if not text or not _ALLOWED.fullmatch(text) or _CAPS_WORD.search(text) or _ABBREVIATIONS.search(text):
        return None
    text = " ".join(re.sub(r"[\"()]", " ", text).split())
    text = re.sub(r"\s+([.,;:!?])", r"\1", text).strip(" -,;:")
    words = normalize_transcript(text).split()
    if not (min_words <= len(words) <= max_words) or any(len(w) == 1 and w not in "aio" for w in words):
        return None
    return text


def split_sentences(text: str) -> list[str]:
    """A passage (a fortune, a verse) cut at sentence ends; fortune attributions ("-- Author") dropped."""
    lines = [line for line in text.split("\n") if not line.strip().startswith("--")]
    joined = " ".join(unicodedata.normalize("NFKC", " ".join(lines)).translate(_ASCII_MAP).split())
    return [s for s in _SENTENCE_END.split(joined) if s]


def _source_texts(source: str) -> list[str]:
    from aigc.data.text import _bible_en, _fortunes
    loaders = {"fortunes": _fortunes, "bible-en": _bible_en}
    if source not in loaders:
        raise ConfigError(f"unknown speech source {source!r}; choose from {', '.join(SOURCES)}")
    docs, _ = loaders[source]()
    return [text for _, text in docs]


def source_files(source: str) -> list[Path]:
    """The installed files a source reads (their stamps key the cache)."""
    if source == "fortunes":
        return registry.fortune_files()
    if source == "bible-en":
        return registry.sword_module_files("engWEB2015eb")
    raise ConfigError(f"unknown speech source {source!r}; choose from {', '.join(SOURCES)}")


@functools.lru_cache(maxsize=2)
def sentence_pool(sources: tuple[str, ...] = SOURCES, min_words: int = 3, max_words: int = 20) -> tuple[str, ...]:
    """Every usable sentence of the sources, in source order, one per distinct transcript (kept in
    memory for the process: reading the corpora takes a few seconds)."""
    seen, pool = set(), []
    for source in sources:
        for passage in _source_texts(source):
            for s in split_sentences(passage):
                s = clean_sentence(s, min_words, max_words)
                if s is not None and (key := normalize_transcript(s)) not in seen:
                    seen.add(key)
                    pool.append(s)
    return tuple(pool)


def _unit(text: str, salt: str) -> float:
    digest = hashlib.blake2b(f"{salt}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def sentence_split(sentence: str) -> str:
    """Which split a sentence belongs to ('train', 'test', 'test-voices'): a stable hash of its transcript."""
    u = _unit(normalize_transcript(sentence), "speech-sentence")
    for split, (lo, hi) in HELD_OUT.items():
        if lo <= u < hi:
            return split
    return "train"


def held_out_variant(variant: str, fraction: float) -> bool:
    """Whether a voice variant is held out of training (a stable hash of its name)."""
    return _unit(variant, "speech-variant") < fraction


def split_voices(split: str, fraction: float) -> list[str]:
    """The ``"<accent>+<variant>"`` voices a split draws from."""
    held = split == "test-voices"
    pool = [f"{v}+{var}" for var in espeak.variants() for v in espeak.english_voices()
            if held_out_variant(var, fraction) == held]
    if not pool:
        raise ConfigError(f"no voices are left for the {split} split with held_out_variants={fraction}")
    return tuple(pool)


# ---- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechConfig:
    """What the synthesised ``speech`` set holds. Sizes are clips per split."""

    n_train: int = 10_000
    n_test: int = 500
    n_test_voices: int = 500
    sample_rate: int = 16_000
    seed: int = 0
    sources: tuple[str, ...] = SOURCES
    min_words: int = 3
    max_words: int = 20
    speed: tuple[int, int] = (130, 210)            # words per minute, drawn uniformly
    pitch: tuple[int, int] = (25, 75)              # espeak-ng pitch 0..99
    held_out_variants: float = 0.15                # share of variants kept for test-voices
    noise: float = 0.0                             # share of clips given additive noise
    noise_kind: str = "mixed"                      # 'white' | 'pink' | 'mixed' (either, per clip)
    snr_db: tuple[float, float] = (10.0, 30.0)
    reverb: float = 0.0                            # share of clips given reverberation
    rt60: tuple[float, float] = (0.2, 0.7)         # reverberation time (s) of the synthetic room

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "n_test_voices"):
            check_int(name, getattr(self, name), 0, 10_000_000)
        check_int("sample_rate", self.sample_rate, 8000, 48_000)
        check_seed("seed", self.seed)
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.sources or any(s not in SOURCES for s in self.sources) or len(set(self.sources)) != len(self.sources):
            raise ConfigError(f"sources must be distinct names from {', '.join(SOURCES)}, got {list(self.sources)}")
        check_int("min_words", self.min_words, 1, 100)
        check_int("max_words", self.max_words, self.min_words, 100)
        for name, lo, hi, check in (("speed", 80, 450, check_int), ("pitch", 0, 99, check_int),
                                    ("snr_db", -10, 100, check_float), ("rt60", 0.05, 3.0, check_float)):
            pair = tuple(getattr(self, name))
            if len(pair) != 2:
                raise ConfigError(f"{name} must be a (low, high) pair, got {list(pair)}")
            check(f"{name}[0]", pair[0], lo, hi)
            check(f"{name}[1]", pair[1], pair[0], hi)
            object.__setattr__(self, name, pair)
        check_float("held_out_variants", self.held_out_variants, 0.0, 1.0, low_open=True, high_open=True)
        check_float("noise", self.noise, 0.0, 1.0)
        check_float("reverb", self.reverb, 0.0, 1.0)
        if self.noise_kind not in ("white", "pink", "mixed"):
            raise ConfigError(f"noise_kind must be 'white', 'pink' or 'mixed', got {self.noise_kind!r}")

    def size(self, split: str) -> int:
        return {"train": self.n_train, "test": self.n_test, "test-voices": self.n_test_voices}[check_split(split)]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} of the speech set; choose from {', '.join(SPLITS)}")
    return split


# ---- the data ----------------------------------------------------------------------------------------


@dataclass
class SpeechSet:
    """Utterances: ``waves[i]`` (float32 (N_i,) at ``sample_rate``) says ``texts[i]`` (normalised)."""

    waves: list[Tensor] = field(repr=False)
    texts: list[str] = field(repr=False)
    voices: list[str] = field(repr=False)           # voice id ("en-us+f3"; a speaker for user data)
    sample_rate: int = 16_000
    name: str = "speech"
    split: str = "train"
    ids: list[str] = field(default_factory=list, repr=False)
    speeds: list[int] | None = field(default=None, repr=False)
    pitches: list[int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> tuple[Tensor, str]:
        return self.waves[i], self.texts[i]

    @property
    def seconds(self) -> float:
        return sum(w.shape[-1] for w in self.waves) / self.sample_rate

    def __repr__(self) -> str:
        return (f"SpeechSet(name={self.name!r}, split={self.split!r}, {len(self)} clips, {self.seconds / 3600:.2f} h, "
                f"{len(set(self.voices))} voices, {self.sample_rate} Hz)")


def to_pcm16(wave: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 (how clips are kept: 16-bit PCM, a quarter of float64's memory)."""
    return np.clip(np.round(wave * 32767.0), -32768, 32767).astype(np.int16)


def pack(waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """int16 (or float) waves -> (one int16 array, int64 offsets of length N + 1)."""
    lengths = np.array([0] + [w.shape[0] for w in waves], dtype=np.int64)
    flat = np.concatenate(waves) if waves else np.zeros(0, dtype=np.int16)
    return (flat if flat.dtype == np.int16 else to_pcm16(flat)), np.cumsum(lengths)


def unpack(audio: np.ndarray, offsets: np.ndarray) -> list[Tensor]:
    """The inverse of :func:`pack`: float32 views of one tensor."""
    flat = torch.from_numpy(audio.astype(np.float32) / 32767.0)
    return [flat[int(a):int(b)] for a, b in zip(offsets[:-1], offsets[1:])]


# ---- effects (numpy float64, driven by a numpy Generator) ---------------------------------------------


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = x.shape[0] + h.shape[0] - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:n]


def coloured_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """White or pink (1/f power, shaped in the frequency domain) noise of unit RMS, (n,)."""
    white = rng.standard_normal(n)
    if kind == "pink":
        spec = np.fft.rfft(white)
        f = np.arange(spec.shape[0], dtype=np.float64)
        f[0] = 1.0
        white = np.fft.irfft(spec / np.sqrt(f), n)
    return white / max(float(np.sqrt(np.mean(white**2))), 1e-12)


def add_noise(wave: np.ndarray, snr_db: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``wave`` plus noise at ``snr_db`` dB below the speech's RMS."""
    rms = float(np.sqrt(np.mean(wave**2))) if wave.size else 0.0
    return wave if rms == 0.0 else wave + coloured_noise(wave.shape[0], kind, rng) * rms * 10 ** (-snr_db / 20)


def room_impulse(rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: a direct path, then Gaussian noise decaying 60 dB in ``rt60`` seconds."""
    n = max(int(rt60 * sample_rate), 2)
    t = np.arange(n) / sample_rate
    h = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60) * 0.25
    h[: int(0.003 * sample_rate)] = 0.0      # a few ms before the first reflection
    h[0] = 1.0
    return h


def reverberate(wave: np.ndarray, rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``wave`` in a synthetic room (FFT convolution); the reverberant tail is kept."""
    return _fft_convolve(wave, room_impulse(rt60, sample_rate, rng))


def finish(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Loudness to TARGET_LUFS with peaks kept under PEAK_DB (float64 in, float64 out)."""
    from aigc.audio import integrated_loudness
    x = torch.from_numpy(wave)
    lufs = integrated_loudness(x, sample_rate)
    if math.isfinite(lufs):
        wave = wave * 10 ** ((TARGET_LUFS - lufs) / 20)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    limit = 10 ** (PEAK_DB / 20)
    return wave * (limit / peak) if peak > limit else wave


# ---- synthesis and caching ---------------------------------------------------------------------------

SPLIT_CODE = {"train": 0, "test": 1, "test-voices": 2}


def plan(config: SpeechConfig, split: str, sentences: tuple[str, ...] | list[str]) -> list[dict]:
    """What each clip of a split will be: sentence, voice, rate, pitch, effect draws, per-clip seed."""
    pool = [s for s in sentences if sentence_split(s) == split]
    n = config.size(split)
    if n and not pool:
        raise DataError(f"no sentences are left for the {split} split; use more sources or a wider word range")
    voices = split_voices(split, config.held_out_variants)
    rng = np.random.default_rng([config.seed, SPLIT_CODE[split], 0])
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // max(len(pool), 1)))]) \
        if n else np.zeros(0, dtype=np.int64)
    out = []
    for i in range(n):
        r = np.random.default_rng([config.seed, SPLIT_CODE[split], 1, i])
        out.append({
            "text": pool[int(order[i])], "voice": voices[int(r.integers(len(voices)))],
            "speed": int(r.integers(config.speed[0], config.speed[1] + 1)),
            "pitch": int(r.integers(config.pitch[0], config.pitch[1] + 1)),
            "noise": bool(r.random() < config.noise), "reverb": bool(r.random() < config.reverb),
            "seed": int(r.integers(2**63)),
        })
    return out


def _post(config: SpeechConfig, items: list[dict]) -> Callable[[int, np.ndarray], np.ndarray]:
    def post(i: int, wave: np.ndarray) -> np.ndarray:
        item, sr = items[i], config.sample_rate
        r = np.random.default_rng(item["seed"])
        if item["reverb"]:
            wave = reverberate(wave, float(r.uniform(*config.rt60)), sr, r)
        if item["noise"]:
            kind = config.noise_kind if config.noise_kind != "mixed" else ("white", "pink")[int(r.integers(2))]
            wave = add_noise(wave, float(r.uniform(*config.snr_db)), kind, r)
        return to_pcm16(finish(wave, sr))
    return post


def synthesise(config: SpeechConfig, split: str, workers: int = 2, progress: bool = False,
               sentences: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Synthesise one split -> the arrays that are cached (audio int16, offsets, texts, voices, ...)."""
    if sentences is None:
        sentences = sentence_pool(tuple(config.sources), config.min_words, config.max_words)
    items = plan(config, split, sentences)
    utts = [espeak.Utterance(it["text"], *espeak.split_voice(it["voice"]), speed=it["speed"], pitch=it["pitch"])
            for it in items]
    bar = _bar(len(utts), f"speech {split}", progress)
    try:
        waves = espeak.speak_many(utts, config.sample_rate, workers, post=_post(config, items),
                                  progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    audio, offsets = pack(waves)
    return {"audio": audio, "offsets": offsets,
            "texts": np.array([normalize_transcript(it["text"]) for it in items], dtype=str),
            "sentences": np.array([it["text"] for it in items], dtype=str),
            "voices": np.array([it["voice"] for it in items], dtype=str),
            "speeds": np.array([it["speed"] for it in items], dtype=np.int64),
            "pitches": np.array([it["pitch"] for it in items], dtype=np.int64)}


def _bar(total: int, desc: str, show: bool):
    if not show or total < 50:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="clip", leave=False)


def speech_cache_dir(config: SpeechConfig) -> Path:
    """``cache_root()/speech/<key>``: key of the config, the espeak-ng version and the source stamps."""
    stamps = [file_stamp(p) for s in config.sources for p in source_files(s)]
    key = {"format": FORMAT, "config": asdict(config), "espeak": espeak.espeak_version(), "sources": stamps}
    return cache_root() / "speech" / cache_key(key)


def _to_set(arrays: dict[str, np.ndarray], split: str, sample_rate: int) -> SpeechSet:
    n = len(arrays["texts"])
    return SpeechSet(unpack(arrays["audio"], arrays["offsets"]), [str(t) for t in arrays["texts"]],
                     [str(v) for v in arrays["voices"]], sample_rate, "speech", split,
                     [f"{split}-{i:06d}" for i in range(n)], [int(x) for x in arrays["speeds"]],
                     [int(x) for x in arrays["pitches"]])


def load_synthetic_speech(split: str = "train", config: SpeechConfig | None = None, *, workers: int = 2,
                          cache: bool = True, progress: bool = False) -> SpeechSet:
    """One split of the ``speech`` set, from the cache or synthesised (then cached)."""
    config = config or SpeechConfig()
    check_split(split)
    espeak.espeak_binary()
    folder = speech_cache_dir(config)
    path = folder / f"{split}.npz"
    arrays = read_npz(path) if cache else None
    if arrays is None or not {"audio", "offsets", "texts", "voices", "speeds", "pitches"} <= set(arrays):
        arrays = synthesise(config, split, workers, progress)
        if cache and write_npz(path, arrays):
            _write_json(folder / "config.json", {"config": asdict(config), "espeak": espeak.espeak_version()})
    return _to_set(arrays, split, config.sample_rate)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)


# ---- the user's own folders --------------------------------------------------------------------------

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def folder_transcripts(folder: Path) -> list[tuple[Path, str]]:
    """(audio file, raw text) pairs of a folder with ``transcripts.tsv`` or LibriSpeech ``*.trans.txt``."""
    tsv = folder / "transcripts.tsv"
    pairs: list[tuple[Path, str]] = []
    if tsv.is_file():
        for n, line in enumerate(tsv.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            rel, tab, text = line.partition("\t")
            if not tab or not rel.strip() or not text.strip():
                raise DataError(f"{tsv} line {n}: expected 'relative/path.wav<TAB>text', got {line[:80]!r}")
            pairs.append((folder / rel.strip(), text.strip()))
        source = str(tsv)
    else:
        trans = sorted(folder.glob("*/*/*.trans.txt")) or sorted(folder.rglob("*.trans.txt"))
        for path in trans:
            for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
                if not line.strip():
                    continue
                uid, _, text = line.strip().partition(" ")
                if not text.strip():
                    raise DataError(f"{path} line {n}: expected 'ID text', got {line[:80]!r}")
                audio = next((path.parent / f"{uid}{s}" for s in AUDIO_SUFFIXES
                              if (path.parent / f"{uid}{s}").is_file()), path.parent / f"{uid}.flac")
                pairs.append((audio, text.strip()))
        source = "the *.trans.txt files"
    if not pairs:
        if not folder.is_dir():
            raise DataError(f"no such speech folder: '{folder}'")
        raise DataError(f"the folder {folder} has no transcripts: put a transcripts.tsv there "
                        "('relative/path.wav<TAB>text' per line) or use LibriSpeech's */*/ID.trans.txt layout")
    missing = [p for p, _ in pairs if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} transcript(s) in {source} have no audio file, e.g. '{missing[0]}'; "
                        "add the audio or remove those lines")
    return pairs


def load_speech_folder(folder: str | Path, split: str = "train", sample_rate: int = 16_000) -> SpeechSet:
    """A user's folder as a SpeechSet (see the module notes for the layouts and the split)."""
    from aigc.audio import read_audio
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"no such speech folder: '{folder}'")
    root, pick = folder, None
    if (folder / split).is_dir():
        root = folder / split
    elif split not in ("train", "test", "all"):
        raise DataError(f"the folder {folder} has no '{split}' sub-folder; a user folder gives 'train', 'test' "
                        "(5 % of files by a stable hash) or 'all', or the split's own sub-folder")
    else:
        pick = split
    pairs = folder_transcripts(root)
    rel = [p.relative_to(root).as_posix() if p.is_relative_to(root) else p.as_posix() for p, _ in pairs]
    keep = [i for i, r in enumerate(rel) if pick in (None, "all")
            or (_unit(r, "speech-user") < USER_TEST_FRACTION) == (pick == "test")]
    if not keep:
        raise DataError(f"the folder {folder} gives no utterances for the '{split}' split; add files or use 'all'")
    waves, texts, voices = [], [], []
    for i in keep:
        wave, _ = read_audio(pairs[i][0], sr=sample_rate)
        waves.append(wave[0].contiguous())
        texts.append(normalize_transcript(pairs[i][1]))
        parts = rel[i].split("/")
        voices.append(parts[-3] if len(parts) >= 3 else "user")   # LibriSpeech: speaker/chapter/file
    return SpeechSet(waves, texts, voices, sample_rate, str(folder), split, [rel[i] for i in keep])


def load_speech(name_or_folder: str | Path = "speech", split: str = "train", config: SpeechConfig | None = None,
                *, workers: int = 2, cache: bool = True, progress: bool = False) -> SpeechSet:
    """The one entry point for speech data: ``"speech"`` (synthesised, see :class:`SpeechConfig`) or
    the path of a user's folder (resampled to ``config.sample_rate``, 16 kHz by default)."""
    if str(name_or_folder) == "speech":
        return load_synthetic_speech(split, config, workers=workers, cache=cache, progress=progress)
    if str(name_or_folder) == "spoken-digits":
        raise ConfigError("spoken-digits is a classification set; load it with aigc.data.spoken_digits.load_digits")
    path = Path(name_or_folder).expanduser()
    if not path.exists():
        raise DataError(f"unknown speech data {str(name_or_folder)!r}: not 'speech' and no such folder")
    return load_speech_folder(path, split, (config or SpeechConfig()).sample_rate)
