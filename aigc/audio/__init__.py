"""Audio foundations shared by every audio family (speech recognition, waveform diffusion, speech synthesis).

* :mod:`.io` — WAV/FLAC reading and writing (``soundfile``) with generation parameters stored inside;
* :mod:`.resample` — band-limited (Kaiser-windowed sinc, polyphase) resampling in torch;
* :mod:`.features` — mel filterbank, mel spectrogram and log-mel features through ``torch.stft``;
* :mod:`.augment` — SpecAugment (time warp, frequency and time masks);
* :mod:`.loudness` — peak / RMS normalisation and BS.1770 integrated loudness;
* :mod:`.plot` — spectrogram pictures and sheets of clips.

Waves are float tensors (C, N) (or (N,), or batches (B, N)) in [-1, 1]; features are (B, n_mels, frames).
This package sits in layer 1 beside :mod:`aigc.data`: it imports only errors, config and plotting.
"""
from .augment import SpecAugment, SpecAugmentConfig, spec_augment, time_warp
from .features import FeatureConfig, MelSpectrogram, frames, hz_to_mel, log_mel, mel_filterbank, mel_spectrogram, mel_to_hz
from .io import (MAX_SECONDS, AudioInfo, audio_format, audio_info, read_audio, read_audio_parameters,
                 write_audio)
from .loudness import (integrated_loudness, k_weight, k_weighting, normalize_loudness, normalize_peak,
                       normalize_rms)
from .plot import plot_sheet, plot_spectrogram
from .resample import Resampler, resample, resampled_length

__all__ = [
    "AudioInfo", "FeatureConfig", "MAX_SECONDS", "MelSpectrogram", "Resampler", "SpecAugment",
    "SpecAugmentConfig", "audio_format", "audio_info", "frames", "hz_to_mel", "integrated_loudness",
    "k_weight", "k_weighting", "log_mel", "mel_filterbank", "mel_spectrogram", "mel_to_hz",
    "normalize_loudness", "normalize_peak", "normalize_rms", "plot_sheet", "plot_spectrogram",
    "read_audio", "read_audio_parameters", "resample", "resampled_length", "spec_augment", "time_warp",
    "write_audio",
]
