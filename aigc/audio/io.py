"""Reading and writing audio files (WAV, FLAC) through ``soundfile``, with generation parameters inside.

    wave, sr = read_audio("clip.flac", sr=16000)          # (C, N) float32 in [-1, 1], 16000
    write_audio("out.wav", wave, sr, {"seed": 3, "prompt": "…"})
    read_audio_parameters("out.wav")                       # {"seed": 3, "prompt": "…"}
    audio_info("clip.flac")                                # AudioInfo(sample_rate, channels, frames, ...)

Parameters travel as one JSON object: in a WAV file as the ``ICMT`` (comment) entry of a ``LIST/INFO``
chunk that this module writes into the RIFF structure itself; in a FLAC file as a Vorbis comment
``COMMENT=<json>`` in a VORBIS_COMMENT metadata block, also written here. Both are what other tools show
as the file's comment. Files are written atomically (a temporary file beside the target, then a rename),
so a crash never leaves half a file under the real name.

Bad input raises :class:`DataError` (a missing, empty, non-audio, corrupt or too long file) or
:class:`ConfigError` (an extension, a sample rate, a wave shape or parameters that cannot be written).
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from ..errors import ConfigError, DataError

READ_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
SUBTYPES = {"WAV": ("PCM_16", "PCM_24", "PCM_32", "FLOAT"), "FLAC": ("PCM_16", "PCM_24")}
MAX_SECONDS = 2 * 3600.0          # read_audio refuses longer files unless told otherwise
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64
PARAMETERS_LIMIT = 1 << 20        # bytes of JSON: far above any prompt, far below the chunk limits
FLAC_COMMENT_KEY = "COMMENT"
VENDOR = b"aigc"


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: sample rate (Hz), channels, frames (samples per channel), duration."""

    sample_rate: int
    channels: int
    frames: int
    seconds: float
    format: str      # "WAV", "FLAC", ...
    subtype: str     # "PCM_16", "FLOAT", ...


# ---- reading -------------------------------------------------------------------------------------------


def _checked_path(path: str | Path) -> Path:
    """``path`` as an existing, non-empty file with a readable audio extension, else DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such audio file: '{path}'")
    if not path.is_file():
        raise DataError(f"'{path}' is not a file (expected a {'/'.join(READ_FORMATS)} audio file)")
    suffix = path.suffix.lower()
    if suffix not in READ_FORMATS:
        raise DataError(f"cannot read '{path}': unsupported audio extension {suffix or '(none)'}; "
                        f"use one of {', '.join(READ_FORMATS)}")
    if path.stat().st_size == 0:
        raise DataError(f"the audio file '{path}' is empty (0 bytes)")
    return path


def audio_info(path: str | Path) -> AudioInfo:
    """The header of an audio file, read without decoding its samples. DataError for a missing, empty,
    non-audio or corrupt file, or one that holds no samples."""
    path = _checked_path(path)
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as exc:
        raise DataError(f"'{path}' is not a readable audio file (not audio, or a corrupt header): "
                        f"{_reason(exc)}") from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise DataError(f"'{path}' has a corrupt header: sample rate {info.samplerate}, "
                        f"{info.channels} channels")
    if info.frames <= 0:
        raise DataError(f"the audio file '{path}' holds no samples")
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames),
                     info.frames / info.samplerate, str(info.format), str(info.subtype))


def read_audio(path: str | Path, sr: int | None = None, mono: bool = True,
               max_seconds: float | None = MAX_SECONDS) -> tuple[Tensor, int]:
    """Decode an audio file to ((C, N) float32 in [-1, 1], sample rate).

    ``mono`` averages the channels (C = 1); ``sr`` resamples to that rate (band-limited, see
    :func:`aigc.audio.resample`; a full-scale signal may then overshoot 1 by a little). Files longer than ``max_seconds`` (default 2 hours; None: no limit)
    are refused before decoding, as are missing, empty, non-audio and corrupt files (DataError).
    """
    if sr is not None:
        sr = _check_rate("sr", sr)
    info = audio_info(path)
    if max_seconds is not None and info.seconds > max_seconds:
        raise DataError(f"'{path}' is {_duration(info.seconds)} long, over the limit of "
                        f"{_duration(max_seconds)}; cut it into shorter files (or raise max_seconds)")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (sf.SoundFileError, RuntimeError) as exc:
        raise DataError(f"'{path}' is corrupt: its samples cannot be decoded ({_reason(exc)})") from None
    if data.shape[0] == 0:
        raise DataError(f"the audio file '{path}' holds no samples")
    if not np.isfinite(data).all():
        raise DataError(f"'{path}' is corrupt: it holds samples that are not finite numbers (NaN or inf)")
    wave = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, N)
    if mono and wave.shape[0] > 1:
        wave = wave.mean(dim=0, keepdim=True)
    if sr is not None and sr != rate:
        from .resample import resample

        wave = resample(wave, rate, sr)
        rate = sr
    return wave, int(rate)


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _check_rate(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_SAMPLE_RATE:
        raise ConfigError(f"{name} must be a sample rate in Hz, a whole number in 1..{MAX_SAMPLE_RATE:,}; "
                          f"got {value!r}")
    return int(value)


# ---- writing -------------------------------------------------------------------------------------------


def audio_format(path: str | Path) -> str:
    """"WAV" or "FLAC" from the file name's extension; ConfigError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise ConfigError(f"cannot write '{path}': the file name must end in one of "
                          f"{', '.join(WRITE_FORMATS)} (got {suffix or 'no extension'})")
    return WRITE_FORMATS[suffix]


def encode_audio_parameters(parameters: dict[str, Any]) -> bytes:
    """``parameters`` as the UTF-8 JSON stored in a file; ConfigError when it is not a JSON object of
    finite values or is over 1 MiB."""
    if not isinstance(parameters, dict):
        raise ConfigError(f"audio parameters must be a dict, got {type(parameters).__name__}")
    try:
        text = json.dumps(parameters, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except ValueError:
        raise ConfigError("an audio parameter is NaN or infinite; only finite numbers can be stored") from None
    except TypeError as exc:
        raise ConfigError(f"audio parameters must be JSON values ({exc})") from None
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > PARAMETERS_LIMIT:
        raise ConfigError(f"audio parameters take {len(data):,} bytes as JSON, over the limit of "
                          f"{PARAMETERS_LIMIT:,}; store long values beside the file")
    return data


def _as_channels(wave: Tensor | np.ndarray) -> np.ndarray:
    """(N,) or (C, N) tensor/array -> (N, C) float32 array for soundfile; ConfigError for other shapes."""
    kind = wave.dtype.is_floating_point if isinstance(wave, Tensor) else np.issubdtype(np.asarray(wave).dtype, np.floating)
    if not kind:
        raise ConfigError(f"write_audio takes float samples in [-1, 1], got {wave.dtype} "
                          "(divide 16-bit integers by 32768 first)")
    if isinstance(wave, Tensor):
        wave = wave.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(wave, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or not 1 <= array.shape[0] <= MAX_CHANNELS:
        raise ConfigError(f"a wave to write must be (N,) or (C, N) with 1..{MAX_CHANNELS} channels, "
                          f"got shape {tuple(array.shape)}")
    if array.shape[1] == 0:
        raise ConfigError("the wave to write holds no samples")
    if not np.isfinite(array).all():
        raise ConfigError("the wave to write holds NaN or infinite samples")
    return np.ascontiguousarray(array.T)


def write_audio(path: str | Path, wave: Tensor | np.ndarray, sr: int,
                parameters: dict[str, Any] | None = None, subtype: str | None = None) -> Path:
    """Write ``wave`` ((N,) or (C, N), floats in [-1, 1]) at ``sr`` Hz as WAV or FLAC (by extension),
    with ``parameters`` (a JSON object) stored inside, atomically.

    ``subtype``: "PCM_16" (default), "PCM_24", "PCM_32" or "FLOAT" (WAV only). PCM samples are clipped
    to [-1, 1]. Everything is checked before anything is written; returns the path.
    """
    path = Path(path)
    fmt = audio_format(path)
    sr = _check_rate("sr", sr)
    subtype = "PCM_16" if subtype is None else str(subtype).upper()
    if subtype not in SUBTYPES[fmt]:
        raise ConfigError(f"subtype {subtype!r} cannot be written to {fmt}; use one of {', '.join(SUBTYPES[fmt])}")
    meta = encode_audio_parameters(parameters) if parameters else None
    data = _as_channels(wave)
    if subtype != "FLOAT":
        data = np.clip(data, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        sf.write(str(tmp), data, sr, format=fmt, subtype=subtype)
        if meta is not None:
            (_add_wav_comment if fmt == "WAV" else _add_flac_comment)(tmp, meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_audio_parameters(path: str | Path) -> dict[str, Any]:
    """The parameters stored by :func:`write_audio` ({} when there are none). A comment written by some
    other program that is not a JSON object reads as ``{"comment": text}``. Samples are not decoded."""
    path = _checked_path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        if magic == b"RIFF":
            text = _read_wav_comment(f)
        elif magic == b"fLaC":
            text = _read_flac_comment(f)
        else:
            audio_info(path)  # DataError for a file that is not audio at all
            text = None
    if not text:
        return {}
    try:
        out = json.loads(text)
    except json.JSONDecodeError:
        return {"comment": text}
    return out if isinstance(out, dict) else {"comment": text}


# ---- WAV: a LIST/INFO chunk appended to the RIFF structure -------------------------------------------------


def _chunk(cid: bytes, body: bytes) -> bytes:
    """A RIFF chunk: id, little-endian size, body, a pad byte when the size is odd."""
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _add_wav_comment(path: Path, meta: bytes) -> None:
    """Append LIST/INFO {ISFT "aigc", ICMT <json>} to the RIFF file at ``path`` and fix the RIFF size."""
    info = b"INFO" + _chunk(b"ISFT", VENDOR + b"\0") + _chunk(b"ICMT", meta + b"\0")
    chunk = _chunk(b"LIST", info)
    with open(path, "r+b") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ConfigError(f"cannot store parameters: soundfile wrote no RIFF/WAVE header ({head[:4]!r})")
        end = f.seek(0, os.SEEK_END)
        if end % 2:  # chunks start on even offsets
            f.write(b"\0")
            end += 1
        if end + len(chunk) - 8 > 0xFFFFFFFF:
            raise ConfigError("the WAV file would pass 4 GiB, the RIFF limit; write FLAC or shorter clips")
        f.write(chunk)
        f.seek(4)
        f.write(struct.pack("<I", end + len(chunk) - 8))


def _read_wav_comment(f) -> str | None:
    """The last ICMT entry of any LIST/INFO chunk, walking the RIFF chunks without reading samples."""
    head = f.read(12)
    if len(head) < 12 or head[8:12] != b"WAVE":
        return None
    size = f.seek(0, os.SEEK_END)
    pos, found = 12, None
    while pos + 8 <= size:
        f.seek(pos)
        cid, length = struct.unpack("<4sI", f.read(8))
        if length == 0xFFFFFFFF:  # RF64-style size held elsewhere: nothing more we can walk
            break
        if cid == b"LIST" and length >= 4 and length <= PARAMETERS_LIMIT * 2:
            body = f.read(length)
            if body[:4] == b"INFO":
                found = _info_entry(body[4:], b"ICMT") or found
        pos += 8 + length + (length % 2)
    return found


def _info_entry(body: bytes, key: bytes) -> str | None:
    pos, found = 0, None
    while pos + 8 <= len(body):
        cid, length = struct.unpack("<4sI", body[pos:pos + 8])
        if cid == key:
            found = body[pos + 8:pos + 8 + length].rstrip(b"\0").decode("utf-8", "replace")
        pos += 8 + length + (length % 2)
    return found


# ---- FLAC: a VORBIS_COMMENT metadata block --------------------------------------------------------------

_STREAMINFO, _VORBIS_COMMENT = 0, 4


def _flac_blocks(f) -> tuple[list[tuple[int, bytes]], int]:
    """The metadata blocks of a FLAC file as (type, body), and the offset where the audio frames start."""
    if f.read(4) != b"fLaC":
        raise DataError("not a FLAC file")
    blocks, last = [], False
    while not last:
        header = f.read(4)
        if len(header) < 4:
            raise DataError("a FLAC file whose metadata is cut short")
        last, kind = bool(header[0] & 0x80), header[0] & 0x7F
        length = int.from_bytes(header[1:4], "big")
        body = f.read(length)
        if len(body) < length:
            raise DataError("a FLAC file whose metadata is cut short")
        blocks.append((kind, body))
    return blocks, f.tell()


def _add_flac_comment(path: Path, meta: bytes) -> None:
    """Rewrite the FLAC file at ``path`` with one VORBIS_COMMENT block holding COMMENT=<json>."""
    entry = FLAC_COMMENT_KEY.encode() + b"=" + meta
    comment = (struct.pack("<I", len(VENDOR)) + VENDOR + struct.pack("<I", 1)
               + struct.pack("<I", len(entry)) + entry)
    if len(comment) >= 1 << 24:
        raise ConfigError("audio parameters are too long for a FLAC metadata block (16 MiB)")
    out = path.with_name(path.name + ".meta")
    try:
        with open(path, "rb") as src, open(out, "wb") as dst:
            blocks, _ = _flac_blocks(src)
            kept = [b for b in blocks if b[0] != _VORBIS_COMMENT]
            kept.insert(1 if kept and kept[0][0] == _STREAMINFO else 0, (_VORBIS_COMMENT, comment))
            dst.write(b"fLaC")
            for i, (kind, body) in enumerate(kept):
                flag = 0x80 if i == len(kept) - 1 else 0
                dst.write(bytes([flag | kind]) + len(body).to_bytes(3, "big") + body)
            shutil.copyfileobj(src, dst, 1 << 20)  # the audio frames, unchanged
        os.replace(out, path)
    finally:
        out.unlink(missing_ok=True)


def _read_flac_comment(f) -> str | None:
    try:
        blocks, _ = _flac_blocks(f)
    except DataError:
        return None
    found = None
    for kind, body in blocks:
        if kind != _VORBIS_COMMENT:
            continue
        for key, value in _vorbis_entries(body):
            if key.upper() in (FLAC_COMMENT_KEY, "DESCRIPTION"):
                found = value
    return found


def _vorbis_entries(body: bytes) -> list[tuple[str, str]]:
    """The KEY=value entries of a Vorbis comment block (a malformed one yields what could be read)."""
    out = []
    try:
        (vendor,) = struct.unpack_from("<I", body, 0)
        pos = 4 + vendor
        (count,) = struct.unpack_from("<I", body, pos)
        pos += 4
        for _ in range(count):
            (length,) = struct.unpack_from("<I", body, pos)
            pos += 4
            key, _, value = body[pos:pos + length].decode("utf-8", "replace").partition("=")
            out.append((key, value))
            pos += length
    except struct.error:
        pass
    return out

