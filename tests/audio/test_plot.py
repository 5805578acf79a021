"""Spectrogram pictures and sheets are written as PNG files."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from aigc.audio import log_mel, plot_sheet, plot_spectrogram
from aigc.errors import ConfigError

from .signals import chirp, sine


def test_plot_spectrogram_of_a_wave_and_of_features(tmp_path):
    wave = torch.from_numpy(chirp(16000, 1.0, 100, 7000))
    a = plot_spectrogram(wave, tmp_path / "wave.png", title="a chirp — 啁啾")
    b = plot_spectrogram(log_mel(wave, db=True), tmp_path / "mel.png")
    for path in (a, b):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mel.png", "wave.png"]  # no temporary files


def test_plot_sheet_of_clips(tmp_path):
    clips = [torch.from_numpy(sine(440, 16000, 0.5, 0.5)), torch.from_numpy(chirp(16000, 0.8, 100, 7000))[None]]
    path = plot_sheet(clips, tmp_path / "sub" / "sheet.png", titles=["sine", "chirp"], title="two clips")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[1] > im.size[0] / 4
    with pytest.raises(ConfigError, match="titles"):
        plot_sheet(clips, tmp_path / "x.png", titles=["one"])
    with pytest.raises(ConfigError, match="kind"):
        plot_spectrogram(clips[0], tmp_path / "y.png", kind="image")
