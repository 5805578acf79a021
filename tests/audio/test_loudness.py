"""BS.1770 loudness: the standard's 48 kHz coefficients and its 997 Hz reference tone; normalisation."""
from __future__ import annotations

import math

import pytest
import torch

from aigc.audio import integrated_loudness, k_weighting, normalize_loudness, normalize_peak, normalize_rms
from aigc.errors import ConfigError

from .signals import sine

# ITU-R BS.1770-4, tables 1 and 2 (48 kHz)
SHELF_48K = ([1.53512485958697, -2.69169618940638, 1.19839281085285], [1.0, -1.69065929318241, 0.73248077421585])
HIGHPASS_48K = ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621])


def test_k_weighting_at_48k_is_the_standards_table():
    shelf, highpass = k_weighting(48000)
    for ours, ref in zip(shelf + highpass, SHELF_48K + HIGHPASS_48K):
        assert ours == pytest.approx(ref, abs=1e-10)


def test_a_full_scale_997_hz_sine_reads_minus_3_01_lufs():
    tone = torch.from_numpy(sine(997.0, 48000, 3.0))
    assert integrated_loudness(tone, 48000) == pytest.approx(-3.01, abs=0.01)   # measured -3.0103
    stereo = torch.stack([tone, tone])
    assert integrated_loudness(stereo, 48000) == pytest.approx(-3.01 + 10 * math.log10(2), abs=0.01)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100])
def test_other_rates_use_filters_designed_for_them(sr):
    # measured: -2.996 (8k), -2.970 (16k), -2.981 (22.05k), -3.008 (44.1k): the bilinear transform's warping
    assert integrated_loudness(torch.from_numpy(sine(997.0, sr, 2.0)), sr) == pytest.approx(-3.01, abs=0.05)


def test_gating_ignores_silence_and_quiet_passages():
    tone = torch.from_numpy(sine(997.0, 16000, 10.0, 0.5))
    alone = integrated_loudness(tone, 16000)
    # silence falls below the absolute gate (ungated, 5 s of it would take 1.8 LU off); a passage 30 dB
    # down falls below the relative gate (ungated: 2.9 LU off); what stays are the few blocks that overlap both
    padded = torch.cat([torch.zeros(40000), tone, torch.zeros(40000)])
    assert integrated_loudness(padded, 16000) == pytest.approx(alone, abs=0.2)
    quiet = torch.cat([tone, tone * 10 ** (-30 / 20)])
    assert integrated_loudness(quiet, 16000) == pytest.approx(alone, abs=0.2)
    assert integrated_loudness(torch.zeros(16000), 16000) == -math.inf


def test_normalisations_hit_their_targets():
    tone = torch.from_numpy(sine(997.0, 48000, 2.0, 0.1))
    out = normalize_loudness(tone, 48000, -23.0)
    assert integrated_loudness(out, 48000) == pytest.approx(-23.0, abs=1e-3)
    assert float(normalize_peak(tone, -1.0).abs().max()) == pytest.approx(10 ** (-1 / 20), rel=1e-5)
    rms = float(normalize_rms(tone, -20.0).double().square().mean().sqrt())
    assert 20 * math.log10(rms) == pytest.approx(-20.0, abs=1e-4)
    silence = torch.zeros(100)
    assert torch.equal(normalize_peak(silence), silence) and torch.equal(normalize_loudness(silence, 8000), silence)


def test_short_clips_and_bad_arguments():
    assert math.isfinite(integrated_loudness(torch.from_numpy(sine(997.0, 16000, 0.1)), 16000))
    with pytest.raises(ConfigError, match="target_lufs"):
        normalize_loudness(torch.ones(100), 16000, float("nan"))
    with pytest.raises(ConfigError, match="shape"):
        integrated_loudness(torch.zeros(2, 3, 4), 16000)
