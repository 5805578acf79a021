"""A trained speech recogniser behind transcribe().

    asr = aigc.load("runs/asr")
    asr.transcribe("clip.wav")                       # -> "the transcript"
    asr.transcribe(["a.wav", wave_tensor])           # -> ["...", "..."]
    asr.transcribe_verbose("clip.wav", beam=8)       # -> Transcription(text, audio_s, elapsed_s, rtf, ...)

Token ids: the model's vocabulary is the tokenizer's shifted up by one (model id = tokenizer id + 1), so
id 0 is free for the CTC blank (and padding); the tokenizer's end-of-text token (model id 1 for the char
tokenizer) is the decoder's start and end token. A transcript never contains it.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

from ...audio import MAX_SECONDS, FeatureConfig, frames, log_mel, read_audio, resample
from ...checkpoint.loading import build_model, read_tokenizer
from ...config import from_dict, with_options
from ...errors import CheckpointError, DataError
from ...generate.asr import TranscribeConfig, transcribe as transcribe_features
from ...models.asr import ASRConfig, ASRModel
from ...tokenizers import Tokenizer

BLANK = 0           # the CTC blank: no tokenizer id maps to it
OFFSET = 1          # model id = tokenizer id + OFFSET
MIN_FRAMES = 7      # the two stride-2 3x3 convolutions need 7 feature frames

Audio = Union[str, Path, Tensor, np.ndarray]


class Vocabulary:
    """The tokenizer seen from the model: ids shifted by one (0 = blank), start = end = end-of-text."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.size = tokenizer.vocab_size + OFFSET
        self.bos_id = self.eos_id = tokenizer.eos_id + OFFSET

    def encode(self, text: str) -> np.ndarray:
        return self.tokenizer.encode_to_array(text).astype(np.int64) + OFFSET

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) - OFFSET for i in ids if int(i) >= OFFSET and int(i) != self.eos_id])


def features_of(wave: Tensor, cfg: FeatureConfig) -> Tensor:
    """(N,) samples -> log-mel features (n_mels, frames): the one front end of training and inference."""
    return log_mel(wave.float()[None], cfg)[0]


@dataclass
class Transcription:
    """One recording's transcript and what it took."""
    text: str
    audio_s: float                 # duration of the audio
    elapsed_s: float               # wall clock of features + decoding
    source: str | None = None      # the file it came from
    score: float = 0.0             # what the decoding method ranked by
    token_times: list[float] = field(default_factory=list, repr=False)  # start of each token (s)

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of computing per second of audio (< 1: faster than real time)."""
        return self.elapsed_s / self.audio_s if self.audio_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.source, "text": self.text, "audio_s": round(self.audio_s, 3),
                "elapsed_s": round(self.elapsed_s, 4), "rtf": round(self.rtf, 4)}


class SpeechRecognizer:
    """A trained recogniser, its tokenizer and its feature front end."""

    def __init__(self, model: ASRModel, tokenizer: Tokenizer, config: dict[str, Any], path: Path) -> None:
        self.model, self.tokenizer, self.config, self.path = model.eval(), tokenizer, config, path
        self.vocab = Vocabulary(tokenizer)
        self.features = from_dict(FeatureConfig, config.get("features", {}), "features")
        self.sample_rate = self.features.sample_rate
        if self.vocab.size > model.config.vocab_size:
            raise CheckpointError(f"checkpoint '{path}': its tokenizer ({self.vocab.size} ids) does not fit the "
                                  f"model's vocabulary of {model.config.vocab_size}")

    # ---- audio in ----------------------------------------------------------------------------------
    def load_audio(self, audio: Audio, sample_rate: int | None = None) -> tuple[Tensor, str | None]:
        """A file (any rate: resampled) or samples ((N,) or (C, N) at ``sample_rate``, default the model's)
        -> mono (N,) float32 samples at the model's rate, and the file name (None for samples)."""
        if isinstance(audio, (str, Path)):
            wave, _ = read_audio(audio, sr=self.sample_rate)
            return self._checked(wave[0], str(audio)), str(audio)
        if isinstance(audio, np.ndarray):
            audio = torch.from_numpy(np.ascontiguousarray(audio))
        if not isinstance(audio, Tensor):
            raise DataError(f"cannot transcribe a {type(audio).__name__}: give a file path, or samples as a "
                            "tensor (N,) or (channels, N)")
        if audio.dim() not in (1, 2) or not (audio.is_floating_point() or audio.dtype == torch.int16):
            raise DataError(f"samples must be a float tensor (N,) or (channels, N), got {tuple(audio.shape)} of "
                            f"{audio.dtype}")
        wave = audio.float() / 32768.0 if audio.dtype == torch.int16 else audio.float()
        wave = wave.mean(0) if wave.dim() == 2 else wave
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        if rate <= 0:
            raise DataError(f"sample_rate must be positive, got {sample_rate}")
        if wave.numel() and rate != self.sample_rate:
            wave = resample(wave[None], rate, self.sample_rate)[0]
        return self._checked(wave.cpu(), None), None

    def _checked(self, wave: Tensor, source: str | None) -> Tensor:
        what = f"'{source}'" if source else "the audio"
        n = wave.numel()
        if n == 0:
            raise DataError(f"{what} holds no samples")
        if not bool(torch.isfinite(wave).all()):
            raise DataError(f"{what} holds samples that are not finite numbers (NaN or inf)")
        if n / self.sample_rate > MAX_SECONDS:
            raise DataError(f"{what} is {n / self.sample_rate / 3600:.1f} h long, over the limit of "
                            f"{MAX_SECONDS / 3600:g} h; cut it into shorter files")
        if n <= self.features.n_fft // 2 or frames(n, self.features) < MIN_FRAMES:
            need = max(self.features.n_fft // 2 + 1, (MIN_FRAMES - 1) * self.features.hop)
            raise DataError(f"{what} is too short to transcribe ({n} samples, {n / self.sample_rate * 1000:.0f} ms); "
                            f"it needs at least {need / self.sample_rate * 1000:.0f} ms")
        return wave

    # ---- transcripts out ---------------------------------------------------------------------------
    def transcribe_verbose(self, audio: Audio | list[Audio], config: TranscribeConfig | None = None, *,
                           sample_rate: int | None = None, on_result: Callable[[int, Transcription], None] | None = None,
                           **options: Any) -> Transcription | list[Transcription]:
        """As :meth:`transcribe`, with timing: a :class:`Transcription` per recording."""
        cfg = transcribe_config(config, **options)
        single = not isinstance(audio, (list, tuple))
        items = [audio] if single else list(audio)
        if not items:
            raise DataError("nothing to transcribe: no audio given")
        waves = [self.load_audio(a, sample_rate) for a in items]   # every input checked before any decoding
        frame_rate = self.sample_rate / self.features.hop
        out = []
        device = next(self.model.parameters()).device
        for i, (wave, source) in enumerate(waves):
            t0 = time.perf_counter()
            feats = features_of(wave, self.features).to(device)
            with torch.inference_mode():
                result = transcribe_features(self.model, feats, cfg, bos_id=self.vocab.bos_id,
                                             eos_id=self.vocab.eos_id, frame_rate=frame_rate)
            text = self.vocab.decode(result.tokens)
            item = Transcription(text, wave.numel() / self.sample_rate, time.perf_counter() - t0, source,
                                 float(result.score), result.times(frame_rate))
            out.append(item)
            if on_result is not None:
                on_result(i, item)
        return out[0] if single else out

    def transcribe(self, audio: Audio | list[Audio], config: TranscribeConfig | None = None, *,
                   sample_rate: int | None = None, **options: Any) -> str | list[str]:
        """Transcribe one recording or a list of them: audio files (any sample rate; resampled) or samples
        ((N,) or (channels, N) floats in [-1, 1] at ``sample_rate``, default the model's). Decoded as
        ``config`` says (:class:`aigc.generate.asr.TranscribeConfig`; keyword ``options`` such as
        ``method="greedy-ctc"`` or ``beam=8`` replace its fields). Long audio goes in overlapping chunks."""
        out = self.transcribe_verbose(audio, config, sample_rate=sample_rate, **options)
        return out.text if isinstance(out, Transcription) else [t.text for t in out]


def transcribe_config(base: TranscribeConfig | None = None, **options: Any) -> TranscribeConfig:
    """``base`` (default: the defaults) with keyword ``options`` replaced; an unknown option is an error."""
    return with_options(TranscribeConfig, base, "transcription", options)


def load_recognizer(folder: Path, config: dict[str, Any], ema: bool = True,
                    device: str | torch.device = "cpu") -> SpeechRecognizer:
    model = build_model(folder, config, ASRModel, ASRConfig, ema)
    return SpeechRecognizer(model.to(device), read_tokenizer(folder), config, folder)


__all__ = ["SpeechRecognizer", "Transcription", "Vocabulary", "features_of", "load_recognizer",
           "transcribe_config", "BLANK", "OFFSET"]
