"""``spoken-digits``: "zero" ... "nine" spoken by espeak-ng, one second at 16 kHz, like SC09.

    train = load_digits("spoken-digits", "train")          # DigitSet: waves (N, 16000), labels (N,)
    held = load_digits("spoken-digits", "test-voices")     # voices never used in train/valid/test
    export_sc09("sc09/")                                   # zero/1a2b3c4d_nohash_0.wav ... + lists
    real = load_digits("/data/speech_commands", "test")    # the real SC09 (or an export) read back

Every clip draws a voice (``"<accent>+<variant>"``, the same held-out variants as :mod:`.speech`), a
speaking rate, pitch, amplitude and word gap from a generator seeded by (seed, split, index); labels
are balanced (each digit n/10 times, shuffled). The word is cut from espeak-ng's silence (samples
under 1 % of the peak) and centred in one second — padded with zeros, or its middle second kept if
longer, as SC09 clips are. Levels follow espeak-ng's amplitude (no loudness normalisation; a peak
above 0.99 is scaled down). ``train``, ``valid`` and ``test`` share the training voices (different
draws); ``test-voices`` uses only held-out variants. Stored as 16-bit PCM in
``cache_root()/spoken-digits/<key>/<split>.npz`` (key: config, espeak-ng version).

The SC09 layout (Speech Commands' ten digit folders): ``<word>/<speaker>_nohash_<n>.wav``, with
``validation_list.txt`` and ``testing_list.txt`` naming the valid and test files (``word/file.wav``
per line) and every other file in training. An export adds ``testing_voices_list.txt`` for the
held-out voices; the speaker is the first 8 hex digits of a hash of the voice id.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from aigc.config import check_float, check_int, check_seed
from aigc.data import espeak
from aigc.data.cache import cache_key, cache_root, read_npz, write_npz
from aigc.data.speech import add_noise, split_voices, to_pcm16
from aigc.errors import ConfigError, DataError

FORMAT = 1
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "valid", "test", "test-voices")
LISTS = {"valid": "validation_list.txt", "test": "testing_list.txt", "test-voices": "testing_voices_list.txt"}
SPLIT_CODE = {"train": 0, "valid": 1, "test": 2, "test-voices": 3}
PEAK = 0.99


@dataclass(frozen=True)
class DigitsConfig:
    """What the synthesised ``spoken-digits`` set holds. Sizes are clips per split."""

    n_train: int = 8000
    n_valid: int = 1000
    n_test: int = 1000
    n_test_voices: int = 1000
    sample_rate: int = 16_000
    seconds: float = 1.0
    seed: int = 0
    speed: tuple[int, int] = (120, 220)
    pitch: tuple[int, int] = (20, 80)
    amplitude: tuple[int, int] = (50, 130)          # espeak-ng -a; louder voices saturate above ~130
    word_gap: tuple[int, int] = (0, 10)            # espeak-ng -g (10 ms units; little effect on one word)
    held_out_variants: float = 0.15
    noise: float = 0.0                             # share of clips given additive noise
    noise_kind: str = "mixed"
    snr_db: tuple[float, float] = (10.0, 30.0)

    def __post_init__(self) -> None:
        for name in ("n_train", "n_valid", "n_test", "n_test_voices"):
            check_int(name, getattr(self, name), 0, 10_000_000)
        check_int("sample_rate", self.sample_rate, 8000, 48_000)
        check_float("seconds", self.seconds, 0.25, 10.0)
        check_seed("seed", self.seed)
        for name, lo, hi, check in (("speed", 80, 450, check_int), ("pitch", 0, 99, check_int),
                                    ("amplitude", 0, 200, check_int), ("word_gap", 0, 100, check_int),
                                    ("snr_db", -10, 100, check_float)):
            pair = tuple(getattr(self, name))
            if len(pair) != 2:
                raise ConfigError(f"{name} must be a (low, high) pair, got {list(pair)}")
            check(f"{name}[0]", pair[0], lo, hi)
            check(f"{name}[1]", pair[1], pair[0], hi)
            object.__setattr__(self, name, pair)
        check_float("held_out_variants", self.held_out_variants, 0.0, 1.0, low_open=True, high_open=True)
        check_float("noise", self.noise, 0.0, 1.0)
        if self.noise_kind not in ("white", "pink", "mixed"):
            raise ConfigError(f"noise_kind must be 'white', 'pink' or 'mixed', got {self.noise_kind!r}")

    @property
    def length(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    def size(self, split: str) -> int:
        check_split(split)
        return {"train": self.n_train, "valid": self.n_valid, "test": self.n_test,
                "test-voices": self.n_test_voices}[split]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} of spoken-digits; choose from {', '.join(SPLITS)}")
    return split


@dataclass
class DigitSet:
    """Clips ``waves`` float32 (N, L) at ``sample_rate``; ``labels`` int64 (N,) index :data:`WORDS`."""

    waves: Tensor = field(repr=False)
    labels: Tensor = field(repr=False)
    voices: list[str] = field(repr=False)
    sample_rate: int = 16_000
    name: str = "spoken-digits"
    split: str = "train"
    ids: list[str] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.waves[i], int(self.labels[i])

    @property
    def words(self) -> list[str]:
        return [WORDS[int(k)] for k in self.labels]

    def __repr__(self) -> str:
        return (f"DigitSet(name={self.name!r}, split={self.split!r}, {len(self)} clips of "
                f"{self.waves.shape[-1] / self.sample_rate:g} s, {len(set(self.voices))} voices)")


def centre(wave: np.ndarray, length: int, threshold: float = 0.01) -> np.ndarray:
    """The word (samples above ``threshold`` x peak, and what lies between) centred in ``length``
    samples: zero-padded on both sides, or its middle ``length`` samples if longer."""
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > 0:
        loud = np.flatnonzero(np.abs(wave) > threshold * peak)
        wave = wave[loud[0]:loud[-1] + 1]
    n = wave.shape[0]
    if n >= length:
        start = (n - length) // 2
        return wave[start:start + length].copy()
    out = np.zeros(length, dtype=wave.dtype)
    start = (length - n) // 2
    out[start:start + n] = wave
    return out


def plan(config: DigitsConfig, split: str) -> list[dict]:
    """Label, voice and prosody of each clip of a split (deterministic by seed)."""
    n = config.size(split)
    voices = split_voices("test-voices" if split == "test-voices" else "train", config.held_out_variants)
    labels = np.random.default_rng([config.seed, 100 + SPLIT_CODE[split], 0]).permutation(np.arange(n) % 10)
    out = []
    for i in range(n):
        r = np.random.default_rng([config.seed, 100 + SPLIT_CODE[split], 1, i])
        out.append({"label": int(labels[i]), "voice": voices[int(r.integers(len(voices)))],
                    **{k: int(r.integers(lo, hi + 1)) for k, (lo, hi) in
                       (("speed", config.speed), ("pitch", config.pitch), ("amplitude", config.amplitude),
                        ("word_gap", config.word_gap))},
                    "noise": bool(r.random() < config.noise), "seed": int(r.integers(2**63))})
    return out


def synthesise(config: DigitsConfig, split: str, workers: int = 2, progress: bool = False) -> dict[str, np.ndarray]:
    """Synthesise one split -> the arrays that are cached."""
    items = plan(config, split)
    utts = [espeak.Utterance(WORDS[it["label"]], *espeak.split_voice(it["voice"]), speed=it["speed"],
                             pitch=it["pitch"], amplitude=it["amplitude"], word_gap=it["word_gap"]) for it in items]

    def post(i: int, wave: np.ndarray) -> np.ndarray:
        it = items[i]
        wave = centre(wave, config.length)
        if it["noise"]:
            r = np.random.default_rng(it["seed"])
            kind = config.noise_kind if config.noise_kind != "mixed" else ("white", "pink")[int(r.integers(2))]
            wave = add_noise(wave, float(r.uniform(*config.snr_db)), kind, r)
        peak = float(np.abs(wave).max())
        return to_pcm16(wave * (PEAK / peak) if peak > PEAK else wave)

    bar = None
    if progress and len(utts) >= 50:
        from tqdm import tqdm
        bar = tqdm(total=len(utts), desc=f"spoken-digits {split}", unit="clip", leave=False)
    try:
        waves = espeak.speak_many(utts, config.sample_rate, workers, post=post,
                                  progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return {"audio": np.stack(waves) if waves else np.zeros((0, config.length), dtype=np.int16),
            "labels": np.array([it["label"] for it in items], dtype=np.int64),
            "voices": np.array([it["voice"] for it in items], dtype=str),
            **{k: np.array([it[k] for it in items], dtype=np.int64) for k in ("speed", "pitch", "amplitude", "word_gap")}}


def digits_cache_path(config: DigitsConfig, split: str) -> Path:
    key = {"format": FORMAT, "config": asdict(config), "espeak": espeak.espeak_version()}
    return cache_root() / "spoken-digits" / cache_key(key) / f"{split}.npz"


def _arrays(config: DigitsConfig, split: str, workers: int, cache: bool, progress: bool) -> dict[str, np.ndarray]:
    check_split(split)
    espeak.espeak_binary()
    path = digits_cache_path(config, split)
    arrays = read_npz(path) if cache else None
    if arrays is None or not {"audio", "labels", "voices"} <= set(arrays):
        arrays = synthesise(config, split, workers, progress)
        if cache:
            write_npz(path, arrays)
    return arrays


def _to_set(arrays: dict[str, np.ndarray], split: str, sample_rate: int, name: str = "spoken-digits",
            ids: list[str] | None = None) -> DigitSet:
    waves = torch.from_numpy(arrays["audio"].astype(np.float32) / 32767.0)
    voices = [str(v) for v in arrays["voices"]]
    return DigitSet(waves, torch.from_numpy(arrays["labels"].astype(np.int64)), voices, sample_rate, name, split,
                    ids if ids is not None else [f"{split}-{i:06d}" for i in range(len(voices))])


def speaker_hash(voice: str) -> str:
    """An SC09-style speaker id for a voice: 8 hex digits."""
    return hashlib.blake2b(voice.encode(), digest_size=4).hexdigest()


def export_sc09(folder: str | Path, config: DigitsConfig | None = None, *, workers: int = 2, cache: bool = True,
                progress: bool = False) -> Path:
    """Write every split as WAV files in the SC09 layout under ``folder`` (see the module notes);
    refuses a folder that already holds files. Returns the folder."""
    from aigc.audio import write_audio
    config = config or DigitsConfig()
    folder = Path(folder).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"'{folder}' already exists and is not an empty folder; export into a new folder")
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    counts: dict[tuple[str, int], int] = {}
    lists: dict[str, list[str]] = {s: [] for s in LISTS}
    speakers: dict[str, str] = {}
    try:
        for split in SPLITS:
            arrays = _arrays(config, split, workers, cache, progress)
            for wave, label, voice in zip(arrays["audio"], arrays["labels"], arrays["voices"]):
                spk, label = speaker_hash(str(voice)), int(label)
                speakers[spk] = str(voice)
                n = counts.get((spk, label), 0)
                counts[(spk, label)] = n + 1
                rel = f"{WORDS[label]}/{spk}_nohash_{n}.wav"
                write_audio(tmp / rel, wave.astype(np.float32) / 32767.0, config.sample_rate)
                if split in lists:
                    lists[split].append(rel)
        for split, name in LISTS.items():
            (tmp / name).write_text("".join(f"{r}\n" for r in lists[split]), encoding="utf-8")
        (tmp / "voices.json").write_text(json.dumps(dict(sorted(speakers.items())), indent=1), encoding="utf-8")
        if folder.exists():
            folder.rmdir()          # empty, checked above
        tmp.rename(folder)          # all or nothing: a failed export leaves no half-written folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_sc09_folder(folder: str | Path, split: str = "train", sample_rate: int = 16_000,
                     seconds: float = 1.0) -> DigitSet:
    """A folder in the SC09 layout (the real Speech Commands, or an export) -> DigitSet; clips are
    resampled and centred in ``seconds``."""
    from aigc.audio import read_audio
    check_split(split)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"no such spoken-digits folder: '{folder}'")
    files = sorted(f"{w}/{p.name}" for w in WORDS if (folder / w).is_dir() for p in (folder / w).glob("*.wav"))
    if not files:
        raise DataError(f"the folder {folder} has no digit clips: expected zero/*.wav ... nine/*.wav (the SC09 layout)")
    listed = {}
    for s, name in LISTS.items():
        path = folder / name
        listed[s] = {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()} \
            if path.is_file() else set()
    if split == "train":
        chosen = [f for f in files if not any(f in v for v in listed.values())]
    else:
        if not (folder / LISTS[split]).is_file():
            raise DataError(f"the folder {folder} has no {LISTS[split]}, so it has no '{split}' split")
        chosen = [f for f in files if f in listed[split]]
        missing = sorted(listed[split] - set(files))
        if missing:
            raise DataError(f"{LISTS[split]} in {folder} names {len(missing)} missing file(s), e.g. '{missing[0]}'")
    if not chosen:
        raise DataError(f"the folder {folder} gives no clips for the '{split}' split")
    length = int(round(seconds * sample_rate))
    audio = np.stack([centre(read_audio(folder / f, sr=sample_rate)[0][0].numpy().astype(np.float64), length, 0.0)
                      for f in chosen])
    arrays = {"audio": to_pcm16(audio),
              "labels": np.array([WORDS.index(f.split("/")[0]) for f in chosen], dtype=np.int64),
              "voices": np.array([f.split("/")[1].split("_nohash_")[0] for f in chosen], dtype=str)}
    return _to_set(arrays, split, sample_rate, str(folder), chosen)


def load_digits(name_or_folder: str | Path = "spoken-digits", split: str = "train",
                config: DigitsConfig | None = None, *, workers: int = 2, cache: bool = True,
                progress: bool = False) -> DigitSet:
    """The one entry point for spoken digits: ``"spoken-digits"`` (synthesised) or an SC09 folder."""
    config = config or DigitsConfig()
    if str(name_or_folder) == "spoken-digits":
        return _to_set(_arrays(config, split, workers, cache, progress), split, config.sample_rate)
    path = Path(name_or_folder).expanduser()
    if not path.exists():
        raise DataError(f"unknown spoken-digits data {str(name_or_folder)!r}: not 'spoken-digits' and no such folder")
    return load_sc09_folder(path, split, config.sample_rate, config.seconds)
