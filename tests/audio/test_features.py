"""The mel filterbank and mel / log-mel spectrograms against librosa."""
from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from aigc.audio import FeatureConfig, MelSpectrogram, frames, hz_to_mel, log_mel, mel_filterbank, mel_to_hz
from aigc.errors import ConfigError, DataError

from .signals import chirp, sine

BANKS = [dict(n_fft=400, n_mels=80, sr=16000), dict(n_fft=2048, n_mels=128, sr=22050, f_min=30.0, f_max=8000.0),
         dict(n_fft=512, n_mels=40, sr=8000, f_min=133.0)]


@pytest.mark.parametrize("norm", ["slaney", None])
@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("bank", BANKS)
def test_filterbank_matches_librosa(bank, norm, htk):
    ours = mel_filterbank(bank["n_fft"], bank["n_mels"], bank["sr"], bank.get("f_min", 0.0), bank.get("f_max"),
                          norm=norm, htk=htk)
    ref = librosa.filters.mel(sr=bank["sr"], n_fft=bank["n_fft"], n_mels=bank["n_mels"], fmin=bank.get("f_min", 0.0),
                              fmax=bank.get("f_max"), norm=norm, htk=htk, dtype=np.float64)
    assert ours.shape == ref.shape == (bank["n_mels"], bank["n_fft"] // 2 + 1)
    assert np.abs(ours.double().numpy() - ref).max() <= 1e-6 * ref.max()  # measured <= 5e-8 (float32 rounding)


def test_mel_scales_invert_and_match_librosa():
    hz = torch.tensor([0.0, 100.0, 999.0, 1000.0, 4000.0, 8000.0], dtype=torch.float64)
    for htk in (False, True):
        assert np.allclose(hz_to_mel(hz, htk).numpy(), librosa.hz_to_mel(hz.numpy(), htk=htk), rtol=1e-12)
        assert torch.allclose(mel_to_hz(hz_to_mel(hz, htk), htk), hz, rtol=1e-12, atol=1e-9)


def batch() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([sine(440, 16000, 1.0, 0.5), chirp(16000, 1.0, 60, 7900), 0.1 * rng.standard_normal(16000)]
                    ).astype(np.float32)


def test_mel_spectrogram_matches_librosa():
    x = batch()
    ours = MelSpectrogram(FeatureConfig())(torch.from_numpy(x)).double().numpy()
    ref = librosa.feature.melspectrogram(y=x.astype(np.float64), sr=16000, n_fft=400, hop_length=160, win_length=400,
                                         n_mels=80, center=True, pad_mode="reflect", power=2.0)
    assert ours.shape == ref.shape == (3, 80, frames(16000))
    for b in range(3):  # measured: <= 2.4e-7 of each example's maximum
        assert np.abs(ours[b] - ref[b]).max() <= 1e-5 * ref[b].max()


def test_other_settings_match_librosa_too():
    x = batch()[1]
    cfg = FeatureConfig(sample_rate=22050, n_fft=1024, hop=256, win=800, n_mels=64, f_min=20.0, f_max=8000.0,
                        htk=True, norm=None, power=1.0, pad_mode="constant")
    ours = MelSpectrogram(cfg)(torch.from_numpy(x)).double().numpy()
    ref = librosa.feature.melspectrogram(y=x.astype(np.float64), sr=22050, n_fft=1024, hop_length=256, win_length=800,
                                         n_mels=64, fmin=20.0, fmax=8000.0, htk=True, norm=None, power=1.0,
                                         pad_mode="constant")
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-5 * ref.max()


def test_log_mel_in_db_matches_power_to_db():
    x = batch()
    ours = log_mel(torch.from_numpy(x), db=True, top_db=80.0).double().numpy()
    ref = librosa.feature.melspectrogram(y=x.astype(np.float64), sr=16000, n_fft=400, hop_length=160, n_mels=80,
                                         pad_mode="reflect")
    ref_db = np.stack([librosa.power_to_db(r, ref=1.0, amin=1e-10, top_db=80.0) for r in ref])
    assert np.abs(ours - ref_db).max() < 1e-2  # dB; measured ~4e-4 (float32 in the quietest bins)
    nat = log_mel(torch.from_numpy(x)).double().numpy()
    loud = ref > 1e-8 * ref.max(axis=(1, 2), keepdims=True)  # within 80 dB of the peak: float32 resolves these
    assert np.abs(nat - np.log(np.maximum(ref, 1e-10)))[loud].max() < 1e-3


def test_batched_shapes_frames_and_lengths():
    cfg = FeatureConfig()
    x = torch.randn(4, 12345)
    feats = log_mel(x, cfg)
    assert feats.shape == (4, 80, frames(12345, cfg)) == (4, 80, 1 + 12345 // 160)
    assert log_mel(x[0], cfg).shape == (80, 78)
    assert torch.allclose(log_mel(x[0], cfg), feats[0], atol=1e-4)
    lengths = torch.tensor([12345, 8000, 1600, 400])
    assert frames(lengths, cfg).tolist() == [78, 51, 11, 3]
    assert frames(400, FeatureConfig(center=False)) == 1


@pytest.mark.parametrize("kwargs,match", [({"n_mels": 0}, "n_mels"), ({"win": 500}, "win"), ({"hop": 0}, "hop"),
                                          ({"f_max": 9000.0}, "f_max"), ({"f_min": -1.0}, "f_min"),
                                          ({"norm": "l2"}, "norm"), ({"pad_mode": "edge"}, "pad_mode"),
                                          ({"sample_rate": 16000.0}, "sample_rate")])
def test_bad_feature_configs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        FeatureConfig(**kwargs)


def test_filterbank_arguments_and_short_clips():
    with pytest.raises(ConfigError, match="f_max"):
        mel_filterbank(400, 80, 16000, f_min=4000.0, f_max=3000.0)
    with pytest.raises(ConfigError, match="norm"):
        mel_filterbank(400, 80, 16000, norm="l1")
    with pytest.raises(DataError, match="too short"):
        log_mel(torch.zeros(100))
