"""Band-limited resampling against librosa (soxr, high quality) and for aliasing suppression."""
from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from aigc.audio import Resampler, resample, resampled_length
from aigc.audio.resample import _resample_direct
from aigc.errors import ConfigError

from .signals import chirp, sine

RATIOS = [(48000, 16000), (44100, 16000), (22050, 16000), (8000, 16000), (16000, 22050)]


def interior(x: np.ndarray) -> slice:
    """The middle 90 %: both resamplers treat the signal's ends differently (zero padding)."""
    return slice(len(x) // 20, len(x) - len(x) // 20)


@pytest.mark.parametrize("orig,new", RATIOS)
def test_matches_librosa_soxr_on_a_chirp(orig, new):
    # a sweep from 50 Hz to 80 % of the lower Nyquist frequency: the whole pass band
    x = chirp(orig, 1.0, 50.0, 0.8 * min(orig, new) / 2)
    ours = resample(torch.from_numpy(x), orig, new).numpy()
    ref = librosa.resample(x, orig_sr=orig, target_sr=new, res_type="soxr_hq")
    assert ours.shape == ref.shape == (resampled_length(len(x), orig, new),)
    m = interior(ours)
    # measured: 1.2e-6 (48k->16k, 8k->16k), 6e-5 (16k->22.05k), 2.5e-4 (44.1k, 22.05k -> 16k)
    assert np.abs(ours[m] - ref[m]).max() < 5e-4


def test_matches_librosa_on_a_sine_to_within_float_precision():
    x = sine(1000.0, 48000, 0.5, 0.8)
    ours = resample(torch.from_numpy(x), 48000, 16000).numpy()
    ref = librosa.resample(x, orig_sr=48000, target_sr=16000, res_type="soxr_hq")
    m = interior(ours)
    assert np.abs(ours[m] - ref[m]).max() < 1e-5


@pytest.mark.parametrize("freq,expected_db", [(3000, 0.0), (7000, 0.0), (8600, None), (12000, None), (20000, None)])
def test_passes_the_band_and_suppresses_aliases(freq, expected_db):
    x = torch.from_numpy(sine(freq, 48000, 1.0))
    y = resample(x, 48000, 16000)[800:-800]  # away from the ends
    level = 20 * np.log10(float(y.square().mean().sqrt()) / np.sqrt(0.5))
    if expected_db is not None:
        assert abs(level - expected_db) < 0.2  # measured: 0.0 dB (3 kHz), -0.1 dB (7 kHz)
    else:
        assert level < -90.0  # above the new Nyquist (8 kHz): measured -118 dB at 8.6 kHz, < -140 dB beyond


def test_batched_over_leading_dimensions_and_the_module_agrees():
    x = torch.randn(2, 3, 4410)
    y = resample(x, 44100, 16000)
    assert y.shape == (2, 3, 1600)
    assert torch.allclose(y[1, 2], resample(x[1, 2], 44100, 16000), atol=1e-6)
    assert torch.allclose(Resampler(44100, 16000)(x), y, atol=1e-6)
    assert resample(x, 16000, 16000) is x


def test_the_direct_path_agrees_with_the_polyphase_bank():
    # ratios whose polyphase bank would be huge (44101 -> 16000) take the per-chunk path: same formula
    x = torch.from_numpy(chirp(22050, 0.3, 100, 7000)).double()[None]
    poly = resample(x, 22050, 16000)
    direct = _resample_direct(x, 320, 441, 0.945 * 320 / 441, int(np.ceil(32 / (0.945 * 320 / 441))), 12.0)
    assert torch.allclose(poly, direct, atol=1e-9)
    assert resample(torch.zeros(1, 44101), 44101, 16000).shape == (1, 16000)


def test_bad_rates_are_config_errors():
    with pytest.raises(ConfigError, match="new_sr"):
        resample(torch.zeros(100), 16000, 0)
    with pytest.raises(ConfigError, match="rolloff"):
        resample(torch.zeros(100), 16000, 8000, rolloff=1.5)
