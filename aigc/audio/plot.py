"""Pictures of audio: a (log-)mel spectrogram, and a sheet of waveforms beside their spectrograms.

    plot_spectrogram(wave, "clip.png", sr=16000, title="sample 3")     # a wave: log-mel in dB first
    plot_spectrogram(feats, "feats.png")                                # (n_mels, frames) as given
    plot_sheet([w1, w2], "sheet.png", sr=16000, titles=["a", "b"])      # one row per clip

Figures are drawn with matplotlib on Agg (:func:`aigc.plotting.pyplot`, which also gives CJK glyphs to
titles) and written atomically as PNG.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from ..plotting import pyplot
from .features import FeatureConfig, log_mel


def _as_mono(wave: Tensor) -> Tensor:
    """(N,) or (C, N) -> (N,) float32 (channels averaged)."""
    wave = torch.as_tensor(wave).detach().to("cpu", torch.float32)
    return wave if wave.ndim == 1 else wave.mean(dim=0)


def _is_wave(x: Tensor, kind: str) -> bool:
    if kind not in ("auto", "wave", "mel"):
        raise ConfigError(f"kind must be 'auto', 'wave' or 'mel', got {kind!r}")
    if kind != "auto":
        return kind == "wave"
    return x.ndim == 1 or (x.ndim == 2 and x.shape[0] <= 2)


def _spectrogram_db(x: Tensor, sr: int, config: FeatureConfig | None, kind: str) -> tuple[Tensor, FeatureConfig]:
    """(n_mels, frames) in dB for drawing, and the feature config that made (or describes) it."""
    cfg = config or FeatureConfig(sample_rate=sr)
    x = torch.as_tensor(x).detach().to("cpu", torch.float32)
    if _is_wave(x, kind):
        return log_mel(_as_mono(x), cfg, db=True, top_db=80.0), cfg
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ConfigError(f"a spectrogram to plot must be (n_mels, frames), got shape {tuple(x.shape)}")
    return x, cfg


def _draw_spectrogram(ax, mel: Tensor, cfg: FeatureConfig) -> object:
    seconds = mel.shape[-1] * cfg.hop / cfg.sample_rate
    image = ax.imshow(mel.numpy(), origin="lower", aspect="auto", cmap="magma",
                      extent=(0.0, seconds, 0, mel.shape[0]), interpolation="nearest")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel channel")
    return image


def _save(fig, path: Path, plt) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_spectrogram(x: Tensor, path: str | Path, *, sr: int = 16000, title: str | None = None,
                     config: FeatureConfig | None = None, kind: Literal["auto", "wave", "mel"] = "auto") -> Path:
    """Draw a spectrogram to a PNG at ``path``. ``x`` is a wave ((N,) or (C, N) with C <= 2, made into
    a log-mel in dB with ``config`` or 16 kHz defaults at ``sr``) or features (n_mels, frames), drawn as
    they are; ``kind`` says which when the shape would not. Returns the path."""
    plt = pyplot()
    mel, cfg = _spectrogram_db(x, sr, config, kind)
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    image = _draw_spectrogram(ax, mel, cfg)
    fig.colorbar(image, ax=ax, format="%+.0f")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, Path(path), plt)


def plot_sheet(clips: Sequence[Tensor], path: str | Path, *, sr: int = 16000,
               titles: Sequence[str] | None = None, config: FeatureConfig | None = None,
               title: str | None = None) -> Path:
    """One row per clip ((N,) or (C, N) waves at ``sr``): the waveform on the left, its log-mel
    spectrogram (dB) on the right. Returns the path of the PNG."""
    if not clips:
        raise ConfigError("plot_sheet needs at least one clip")
    if titles is not None and len(titles) != len(clips):
        raise ConfigError(f"plot_sheet got {len(clips)} clips but {len(titles)} titles")
    plt = pyplot()
    fig, axes = plt.subplots(len(clips), 2, figsize=(12, 2.4 * len(clips)), dpi=100, squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.3]})
    for i, clip in enumerate(clips):
        wave = _as_mono(clip)
        left, right = axes[i]
        time = torch.arange(wave.shape[0], dtype=torch.float32) / sr
        left.plot(time.numpy(), wave.numpy(), lw=0.5, color="tab:blue")
        left.set_xlim(0.0, max(wave.shape[0] / sr, 1e-9))
        left.set_ylim(-1.05, 1.05)
        left.set_ylabel("amplitude")
        left.set_xlabel("time (s)")
        if titles is not None:
            left.set_title(titles[i], loc="left")
        mel, cfg = _spectrogram_db(wave, sr, config, "wave")
        _draw_spectrogram(right, mel, cfg)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, Path(path), plt)
