"""Offline speech synthesis through Debian's ``espeak-ng``: the voices it has and a safe way to run it.

    voices = english_voices()                       # ("en-029", "en-gb", ..., "en-us-nyc")
    wave = speak("Hello there.", "en-us", "f3", speed=170, pitch=50)     # (N,) float32 at 16 kHz
    waves = speak_many([Utterance("one", "en-gb", "m3"), ...], workers=2)

espeak-ng runs as a subprocess (never through a shell): the text goes in on stdin, so no text can be
taken for an option, and a run that hangs is killed after ``timeout`` seconds. Its 22.05 kHz 16-bit
WAV comes back on stdout and is resampled here (:func:`aigc.audio.resample`, float64) to the rate
asked for. ``speak_many`` keeps up to ``workers`` espeak-ng processes running at once (threads that
wait on subprocesses); each clip depends only on its own request, so results never depend on
``workers``. ``run_espeak`` is the one place a process is started (tests count calls through it).

A voice is an English base voice (an accent: ``en-us``, ``en-gb-scotland``, ...; the MBROLA ``mb-*``
voices are left out, as they need the separate ``mbrola`` program) and a variant (``f3``, ``m7``,
``klatt4``, ``Storm``, ...: timbre, breathiness, formant shifts). Their identifier is
``"<voice>+<variant>"``, exactly what ``espeak-ng -v`` takes.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aigc.config import check_int
from aigc.errors import ConfigError, DataError

ESPEAK = "espeak-ng"
INSTALL_HINT = "apt-get install espeak-ng"
# Variants left out of the default pools: a speed-test voice, whispers (no voicing at all) and one whose
# name holds a space (``-v en+Mr serious`` cannot be passed as one voice name reliably).
EXCLUDED_VARIANTS = frozenset({"fast", "whisper", "whisperf", "Mr serious"})
_VOICE_LINE = re.compile(r"^\s*\d+\s+(\S+)\s+\S+\s+.*?\s(\S+/\S+)\s*(\(.*\))?\s*$")


def espeak_binary() -> str:
    """The espeak-ng executable, or a DataError that says how to install it."""
    path = shutil.which(ESPEAK)
    if path is None:
        raise DataError(f"speech synthesis needs the Debian package espeak-ng (the `{ESPEAK}` program is not "
                        f"on PATH); install it with `sudo {INSTALL_HINT}`.")
    return path


def run_espeak(args: list[str], text: str | None = None, timeout: float = 30.0) -> bytes:
    """Run ``espeak-ng ARGS`` (no shell) with ``text`` on stdin; its stdout, or a DataError."""
    cmd = [espeak_binary(), *args]
    try:
        res = subprocess.run(cmd, input=None if text is None else text.encode("utf-8"), capture_output=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"espeak-ng took longer than {timeout:g} s on {' '.join(args)!r} and was stopped") from None
    except OSError as exc:
        raise DataError(f"espeak-ng could not be started: {exc}") from None
    if res.returncode != 0:
        msg = res.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DataError(f"espeak-ng failed (exit status {res.returncode}) for {' '.join(args)!r}: "
                        f"{msg[-1] if msg else 'no message'}")
    return res.stdout


@functools.lru_cache(maxsize=1)
def espeak_version() -> str:
    """The espeak-ng version line (part of every cache key: another version speaks differently)."""
    return run_espeak(["--version"]).decode("utf-8", "replace").strip()


def data_dir() -> Path | None:
    """espeak-ng's data folder (``Data at: ...`` of ``--version``), if it says."""
    m = re.search(r"Data at:\s*(.+)$", espeak_version())
    return Path(m.group(1).strip()) if m else None


@functools.lru_cache(maxsize=1)
def english_voices() -> tuple[str, ...]:
    """The English base voices (accents) espeak-ng has, sorted; MBROLA voices left out."""
    out = run_espeak(["--voices=en"]).decode("utf-8", "replace").splitlines()[1:]
    found = set()
    for line in out:
        m = _VOICE_LINE.match(line)
        if m and m.group(1) != "variant" and not m.group(2).startswith("mb/"):
            found.add(m.group(1))
    if not found:
        raise DataError("espeak-ng lists no English voices; reinstall it with `sudo apt-get install --reinstall "
                        "espeak-ng-data`.")
    return tuple(sorted(found))


@functools.lru_cache(maxsize=1)
def variants(include_excluded: bool = False) -> tuple[str, ...]:
    """The voice variants (file names in espeak-ng's ``voices/!v`` folder), sorted; without
    :data:`EXCLUDED_VARIANTS` unless ``include_excluded``."""
    root = data_dir()
    folder = root / "voices" / "!v" if root is not None else None
    if folder is not None and folder.is_dir():
        names = {p.name for p in folder.iterdir() if p.is_file()}
    else:  # fall back on the listing (its File column is "!v/<name>")
        out = run_espeak(["--voices=variant"]).decode("utf-8", "replace").splitlines()[1:]
        names = {m.group(1) for line in out if (m := re.search(r"\s!v/(\S+)", line))}
    if not include_excluded:
        names -= EXCLUDED_VARIANTS
    return tuple(sorted(names, key=lambda s: (s.lower(), s)))


def voice_pool() -> list[str]:
    """Every ``"<voice>+<variant>"`` of the English voices and the default variants."""
    return [f"{v}+{var}" for var in variants() for v in english_voices()]


def split_voice(voice_id: str) -> tuple[str, str | None]:
    """``"en-us+f3"`` -> ("en-us", "f3"); ``"en-us"`` -> ("en-us", None)."""
    voice, _, variant = voice_id.partition("+")
    return voice, variant or None


# ---- synthesis ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One request to the synthesiser: the text and how to say it (espeak-ng's own units)."""

    text: str
    voice: str = "en-us"
    variant: str | None = None
    speed: int = 175          # words per minute (-s), 80..450
    pitch: int = 50           # 0..99 (-p)
    amplitude: int = 100      # 0..200 (-a)
    word_gap: int = 0         # extra pause between words, in units of 10 ms (-g)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ConfigError("an utterance needs some text to speak")
        if not re.fullmatch(r"[A-Za-z0-9-]+", self.voice or ""):
            raise ConfigError(f"unknown espeak-ng voice {self.voice!r}; see `espeak-ng --voices=en`")
        if self.variant is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", self.variant):
            raise ConfigError(f"unknown espeak-ng variant {self.variant!r}; see `espeak-ng --voices=variant`")
        check_int("speed", self.speed, 80, 450)
        check_int("pitch", self.pitch, 0, 99)
        check_int("amplitude", self.amplitude, 0, 200)
        check_int("word_gap", self.word_gap, 0, 100)

    @property
    def voice_id(self) -> str:
        return f"{self.voice}+{self.variant}" if self.variant else self.voice

    def args(self) -> list[str]:
        return ["--stdout", "-v", self.voice_id, "-s", str(self.speed), "-p", str(self.pitch),
                "-a", str(self.amplitude), "-g", str(self.word_gap), "--stdin"]


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """espeak-ng's 16-bit PCM mono WAV (its streaming header gives no true sizes) -> (float64 (N,), rate)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataError("espeak-ng did not write a WAV file on stdout")
    pos, rate = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"fmt ":
            fmt = data[pos + 8:pos + 24]
            channels, rate, bits = (int.from_bytes(fmt[2:4], "little"), int.from_bytes(fmt[4:8], "little"),
                                    int.from_bytes(fmt[14:16], "little"))
            if channels != 1 or bits != 16:
                raise DataError(f"espeak-ng wrote {channels} channel(s) of {bits}-bit audio; expected 16-bit mono")
        elif cid == b"data":
            if rate is None:
                raise DataError("espeak-ng's WAV has no format chunk before its samples")
            body = data[pos + 8:]
            body = body[:len(body) // 2 * 2]
            return np.frombuffer(body, dtype="<i2").astype(np.float64) / 32768.0, rate
        pos += 8 + size + (size & 1)
    raise DataError("espeak-ng's WAV has no samples")


def speak_utterance(utt: Utterance, sample_rate: int = 16000, timeout: float = 30.0) -> np.ndarray:
    """Synthesise one utterance -> float64 (N,) at ``sample_rate`` (resampled from espeak's rate)."""
    wave, rate = parse_wav(run_espeak(utt.args(), utt.text, timeout))
    if wave.size == 0:
        raise DataError(f"espeak-ng produced no audio for {utt.text!r} ({utt.voice_id})")
    if rate != sample_rate:
        from aigc.audio import resample
        wave = resample(torch.from_numpy(wave), rate, sample_rate).numpy()
    return wave


def speak(text: str, voice: str = "en-us", variant: str | None = None, speed: int = 175, pitch: int = 50,
          amplitude: int = 100, word_gap: int = 0, sample_rate: int = 16000, timeout: float = 30.0) -> torch.Tensor:
    """``text`` spoken by espeak-ng -> float32 (N,) at ``sample_rate`` Hz, in [-1, 1] (give or take
    resampling overshoot)."""
    utt = Utterance(text, voice, variant, speed, pitch, amplitude, word_gap)
    return torch.from_numpy(speak_utterance(utt, sample_rate, timeout).astype(np.float32))


def speak_many(utterances: list[Utterance], sample_rate: int = 16000, workers: int = 2, timeout: float = 30.0,
               post=None, progress=None) -> list:
    """Synthesise many utterances with up to ``workers`` espeak-ng processes at once, in order.

    ``post(i, wave)`` (optional) turns each float64 wave into what is returned (noise, trimming, ...);
    it runs in the worker thread, so it must depend only on ``i`` and ``wave``. ``progress(n)`` is
    called in the calling thread after each finished clip."""
    workers = check_int("workers", workers, 1, 64)

    def one(i: int):
        wave = speak_utterance(utterances[i], sample_rate, timeout)
        return post(i, wave) if post is not None else wave

    if workers == 1 or len(utterances) <= 1:
        out = []
        for i in range(len(utterances)):
            out.append(one(i))
            if progress is not None:
                progress(1)
        return out
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(one, i) for i in range(len(utterances))]
        out = []
        for f in futures:
            out.append(f.result())
            if progress is not None:
                progress(1)
        return out
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, the clips not yet started are dropped
