"""Mel spectrograms and log-mel features through ``torch.stft``, with a mel filterbank built here.

The mel scale is Slaney's (linear below 1 kHz, logarithmic above; the Auditory Toolbox's, which is
librosa's default) or, with ``htk=True``, ``2595 log10(1 + f / 700)``. Filter ``i`` is a triangle from
mel point ``i`` up to ``i + 1`` and down to ``i + 2`` (``n_mels + 2`` points evenly spaced in mel between
``f_min`` and ``f_max``), evaluated at the FFT bin frequencies. Slaney normalisation divides each
triangle by its width in Hz / 2, so each has unit area.

    cfg = FeatureConfig()                       # 16 kHz, 25 ms windows, 10 ms hop, 80 mels
    mel = MelSpectrogram(cfg)(wave)             # (B, N) -> (B, 80, 1 + N // 160)
    feats = log_mel(wave, cfg)                  # log(max(mel, 1e-10)); db=True: 10 log10
    n_frames = frames(16000, cfg)               # 101
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..config import check_float, check_int
from ..errors import ConfigError, DataError

# Slaney's mel scale: 200/3 Hz per mel up to 1 kHz (= 15 mel), then log steps of ln(6.4) / 27 per mel
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: Tensor, htk: bool = False) -> Tensor:
    """Frequencies in Hz -> mels (Slaney's scale, or HTK's with ``htk=True``); any shape, float64 kept."""
    hz = torch.as_tensor(hz, dtype=torch.float64)
    if htk:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + torch.log(hz.clamp(min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return torch.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: Tensor, htk: bool = False) -> Tensor:
    """Mels -> Hz: the inverse of :func:`hz_to_mel`."""
    mel = torch.as_tensor(mel, dtype=torch.float64)
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * torch.exp(_LOG_STEP * (mel.clamp(min=_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_filterbank(n_fft: int, n_mels: int, sr: int, f_min: float = 0.0, f_max: float | None = None,
                   norm: Literal["slaney"] | None = "slaney", htk: bool = False) -> Tensor:
    """Triangular mel filters (n_mels, n_fft // 2 + 1) float32, to multiply a power spectrum with.

    ``f_max`` None means ``sr / 2``. ``norm="slaney"`` gives each filter unit area (librosa's default);
    None leaves peaks of 1. ``htk`` picks the HTK mel formula instead of Slaney's.
    """
    check_int("n_fft", n_fft, 2, 1 << 20)
    check_int("n_mels", n_mels, 1, 4096)
    check_int("sr", sr, 1, 768_000)
    f_max = sr / 2.0 if f_max is None else f_max
    check_float("f_min", f_min, 0.0)
    check_float("f_max", f_max, f_min, sr / 2.0, low_open=True)
    if norm not in ("slaney", None):
        raise ConfigError(f"norm must be 'slaney' or None, got {norm!r}")
    bins = torch.linspace(0.0, sr / 2.0, n_fft // 2 + 1, dtype=torch.float64)            # (F,)
    mels = torch.linspace(float(hz_to_mel(torch.tensor(f_min), htk)), float(hz_to_mel(torch.tensor(f_max), htk)),
                          n_mels + 2, dtype=torch.float64)
    points = mel_to_hz(mels, htk)                                                          # (n_mels + 2,)
    widths = points.diff()                                                                 # (n_mels + 1,)
    ramps = points[:, None] - bins[None, :]                                                # (n_mels + 2, F)
    rising = -ramps[:-2] / widths[:-1, None]                                               # (n_mels, F)
    falling = ramps[2:] / widths[1:, None]
    weights = torch.minimum(rising, falling).clamp(min=0.0)
    if norm == "slaney":
        weights = weights * (2.0 / (points[2:] - points[:-2]))[:, None]
    return weights.float()


@dataclass
class FeatureConfig:
    """Log-mel front end: STFT of ``win``-sample Hann windows every ``hop`` samples (``n_fft``-point,
    centred with reflect padding as librosa), |X|^power, ``n_mels`` mel filters from f_min to f_max
    (None: sr / 2)."""

    sample_rate: int = 16000
    n_fft: int = 400
    hop: int = 160
    win: int = 400
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    norm: str | None = "slaney"
    htk: bool = False
    power: float = 2.0
    center: bool = True
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        check_int("features.sample_rate", self.sample_rate, 1, 768_000)
        check_int("features.n_fft", self.n_fft, 2, 1 << 20)
        check_int("features.hop", self.hop, 1, 1 << 20)
        check_int("features.win", self.win, 1, self.n_fft)
        check_int("features.n_mels", self.n_mels, 1, 4096)
        check_float("features.f_min", self.f_min, 0.0, self.sample_rate / 2.0, high_open=True)
        if self.f_max is not None:
            check_float("features.f_max", self.f_max, self.f_min, self.sample_rate / 2.0, low_open=True)
        check_float("features.power", self.power, 0.0, 4.0, low_open=True)
        if self.norm not in ("slaney", None):
            raise ConfigError(f"features.norm must be 'slaney' or null, got {self.norm!r}")
        if self.pad_mode not in ("reflect", "constant"):
            raise ConfigError(f"features.pad_mode must be 'reflect' or 'constant', got {self.pad_mode!r}")


def frames(n_samples: int | Tensor, config: FeatureConfig | None = None) -> int | Tensor:
    """Frames the STFT gives for ``n_samples`` (an int, or a (B,) tensor of lengths of a padded batch):
    ``1 + n // hop`` when centred, else ``1 + (n - n_fft) // hop``."""
    cfg = config or FeatureConfig()
    if cfg.center:
        return 1 + n_samples // cfg.hop
    return 1 + (n_samples - cfg.n_fft) // cfg.hop


class MelSpectrogram(nn.Module):
    """(B, N) or (N,) waves -> (B, n_mels, frames) or (n_mels, frames) mel power spectrograms.

    In a padded batch, example ``b`` has ``frames(lengths[b])`` valid frames; the last of them also see
    the padding."""

    def __init__(self, config: FeatureConfig | None = None):
        super().__init__()
        self.config = cfg = config or FeatureConfig()
        window = torch.hann_window(cfg.win, periodic=True, dtype=torch.float64)
        left = (cfg.n_fft - cfg.win) // 2                         # centred in the n_fft frame, as librosa
        window = nn.functional.pad(window, (left, cfg.n_fft - cfg.win - left))
        self.register_buffer("window", window.float(), persistent=False)
        fb = mel_filterbank(cfg.n_fft, cfg.n_mels, cfg.sample_rate, cfg.f_min, cfg.f_max, cfg.norm, cfg.htk)
        self.register_buffer("filters", fb, persistent=False)   # (n_mels, n_fft // 2 + 1)

    def spectrogram(self, wave: Tensor) -> Tensor:
        """(B, N) -> (B, n_fft // 2 + 1, frames) |STFT|^power."""
        cfg = self.config
        if cfg.center and cfg.pad_mode == "reflect" and wave.shape[-1] <= cfg.n_fft // 2:
            raise DataError(f"a clip of {wave.shape[-1]} samples is too short for {cfg.n_fft}-point frames "
                            f"({cfg.n_fft // 2 + 1} samples at least)")
        if not cfg.center and wave.shape[-1] < cfg.n_fft:
            raise DataError(f"a clip of {wave.shape[-1]} samples is shorter than one {cfg.n_fft}-sample frame")
        spec = torch.stft(wave.to(self.window.dtype), cfg.n_fft, hop_length=cfg.hop, win_length=cfg.n_fft,
                          window=self.window, center=cfg.center, pad_mode=cfg.pad_mode, return_complex=True)
        mag = spec.abs()
        return mag.square() if cfg.power == 2.0 else mag.pow(cfg.power)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.ndim not in (1, 2):
            raise ConfigError(f"MelSpectrogram takes (N,) or (B, N) waves, got shape {tuple(wave.shape)}")
        spec = self.spectrogram(wave)                                  # (B, F, T)
        return torch.matmul(self.filters, spec)                        # (B, n_mels, T)


_MODULES: dict[tuple, MelSpectrogram] = {}


def _module(config: FeatureConfig, device: torch.device) -> MelSpectrogram:
    """One MelSpectrogram per (config, device), built once (a few, at most 16, are kept)."""
    key = (*vars(config).values(), str(device))
    module = _MODULES.get(key)
    if module is None:
        if len(_MODULES) >= 16:
            _MODULES.clear()
        module = _MODULES[key] = MelSpectrogram(config).to(device)
    return module


def mel_spectrogram(wave: Tensor, config: FeatureConfig | None = None) -> Tensor:
    """(B, N) or (N,) -> (B, n_mels, frames) or (n_mels, frames) mel power (on ``wave``'s device)."""
    return _module(config or FeatureConfig(), wave.device)(wave)


def log_mel(wave: Tensor, config: FeatureConfig | None = None, *, floor: float = 1e-10, db: bool = False,
            top_db: float | None = None) -> Tensor:
    """Log mel features (B, n_mels, frames) of (B, N) waves: ``log(max(mel, floor))``, or with ``db``
    ``10 log10(max(mel, floor))`` (librosa's ``power_to_db`` with ref 1). ``top_db`` clips each example
    to at most that far (in the chosen unit's dB, converted for natural log) below its own maximum."""
    check_float("floor", floor, 0.0, low_open=True)
    mel = mel_spectrogram(wave, config).clamp(min=floor)
    out = 10.0 * torch.log10(mel) if db else torch.log(mel)
    if top_db is not None:
        check_float("top_db", top_db, 0.0)
        span = top_db if db else top_db * math.log(10.0) / 10.0
        peak = out.amax(dim=(-2, -1), keepdim=True)
        out = torch.maximum(out, peak - span)
    return out
