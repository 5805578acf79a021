"""Level normalisation: peak, RMS, and integrated loudness after ITU-R BS.1770-4 (LUFS).

Integrated loudness: each channel is K-weighted (a high shelf of about +4 dB above 1.5 kHz, the head's
effect, then a 38 Hz high-pass, the RLB curve), mean squares are taken over 400 ms blocks every 100 ms,
a block's loudness is ``-0.691 + 10 log10(sum_c G_c z_c)``, and the mean over blocks is gated twice:
at -70 LUFS (absolute), then at 10 LU below the loudness of the blocks that passed (relative).

The two biquads are designed for any sample rate from their analogue prototypes (centre frequency, Q,
gain); at 48 kHz they give the coefficients tabled in BS.1770. They are applied as an FFT convolution
with their impulse response, cut where it has decayed below 1e-12 of its peak (an approximation far
below anything a loudness reading resolves).

    lufs = integrated_loudness(wave, 48000)         # (C, N) or (N,) -> float (-inf for silence)
    out = normalize_loudness(wave, 48000, -23.0)    # scaled so that it reads -23 LUFS
    out = normalize_peak(wave, -1.0); out = normalize_rms(wave, -20.0)
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from ..config import check_float, check_int
from ..errors import ConfigError

# the analogue prototypes behind BS.1770's 48 kHz coefficients
SHELF_HZ, SHELF_Q, SHELF_GAIN_DB = 1681.974450955533, 0.7071752369554196, 3.999843853973347
HIGHPASS_HZ, HIGHPASS_Q = 38.13547087602444, 0.5003270373238773
BLOCK_S, STEP_S = 0.4, 0.1
ABSOLUTE_GATE = -70.0
RELATIVE_GATE = -10.0
SURROUND_GAIN = 1.41  # the rear channels Ls, Rs of a 5-channel (L R C Ls Rs) programme


def k_weighting(sr: int) -> tuple[tuple[list[float], list[float]], tuple[list[float], list[float]]]:
    """((b, a) of the shelf, (b, a) of the high-pass) at ``sr`` Hz; each a normalised biquad
    (a[0] = 1): y[n] = b0 x[n] + b1 x[n-1] + b2 x[n-2] - a1 y[n-1] - a2 y[n-2]."""
    check_int("sr", sr, 1, 768_000)
    k = math.tan(math.pi * SHELF_HZ / sr)
    vh = 10.0 ** (SHELF_GAIN_DB / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / SHELF_Q + k * k
    shelf = ([(vh + vb * k / SHELF_Q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / SHELF_Q + k * k) / a0],
             [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / SHELF_Q + k * k) / a0])
    k = math.tan(math.pi * HIGHPASS_HZ / sr)
    a0 = 1.0 + k / HIGHPASS_Q + k * k
    highpass = ([1.0, -2.0, 1.0], [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / HIGHPASS_Q + k * k) / a0])
    return shelf, highpass


def _biquad_response(b: list[float], a: list[float], n: int, x: list[float]) -> list[float]:
    """Run a biquad over ``x`` (a short list) for ``n`` samples, in plain float64 Python."""
    y: list[float] = []
    x1 = x2 = y1 = y2 = 0.0
    for i in range(n):
        x0 = x[i] if i < len(x) else 0.0
        y0 = b[0] * x0 + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
        y.append(y0)
        x2, x1, y2, y1 = x1, x0, y1, y0
    return y


@lru_cache(maxsize=16)
def k_weighting_impulse(sr: int, tol: float = 1e-12) -> Tensor:
    """The K-weighting filter's impulse response (L,) float64, cut once it stays below ``tol`` x its peak."""
    shelf, highpass = k_weighting(sr)
    # decay of the slowest pole decides the length: |p|^L < tol
    radius = max(math.sqrt(abs(a[2])) if a[1] ** 2 < 4 * a[2] else
                 max(abs((-a[1] + s * math.sqrt(a[1] ** 2 - 4 * a[2])) / 2) for s in (1, -1))
                 for _, a in (shelf, highpass))
    length = int(min(10 * sr, max(64, math.ceil(math.log(tol) / math.log(max(radius, 1e-9))) + 64)))
    h = _biquad_response(*highpass, length, _biquad_response(*shelf, length, [1.0]))
    return torch.tensor(h, dtype=torch.float64)


def _fft_convolve(x: Tensor, h: Tensor, chunk: int = 1 << 18) -> Tensor:
    """(C, N) * (L,) -> (C, N): causal convolution by overlap-add FFTs, in float64."""
    n, taps = x.shape[-1], h.shape[-1]
    chunk = min(chunk, n)  # a short clip gets a short FFT
    size = 1 << (chunk + taps - 1).bit_length()
    spectrum = torch.fft.rfft(h, size)
    out = torch.zeros(x.shape[0], n + size, dtype=torch.float64)
    for start in range(0, n, chunk):
        part = x[:, start:start + chunk]
        y = torch.fft.irfft(torch.fft.rfft(part, size) * spectrum, size)
        out[:, start:start + size] += y
    return out[:, :n]


def k_weight(wave: Tensor, sr: int) -> Tensor:
    """K-weighted copy of (C, N) or (N,) audio (float64, same shape)."""
    x = wave.detach().to("cpu", torch.float64)
    flat = x.reshape(-1, x.shape[-1])
    return _fft_convolve(flat, k_weighting_impulse(sr)).reshape(x.shape)


def _channel_gains(channels: int) -> Tensor:
    gains = torch.ones(channels, dtype=torch.float64)
    if channels == 5:
        gains[3:] = SURROUND_GAIN
    return gains


def _as_channels(wave: Tensor) -> Tensor:
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2 or wave.shape[-1] == 0:
        raise ConfigError(f"loudness takes (N,) or (C, N) audio with N >= 1, got shape {tuple(wave.shape)}")
    return wave


def integrated_loudness(wave: Tensor, sr: int) -> float:
    """Integrated loudness of (C, N) or (N,) audio in LUFS (BS.1770-4, gated); -inf when every block
    is below the absolute gate (silence). Clips shorter than 400 ms count as one block."""
    wave = _as_channels(wave)
    z = k_weight(wave, sr).square()                                          # (C, N)
    block, step = round(BLOCK_S * sr), round(STEP_S * sr)
    n = z.shape[-1]
    if n < block:
        means = z.mean(dim=-1, keepdim=True)                                  # (C, 1)
    else:
        csum = torch.nn.functional.pad(z.cumsum(dim=-1), (1, 0))              # (C, N + 1)
        starts = torch.arange(0, n - block + 1, step)
        means = (csum[:, starts + block] - csum[:, starts]) / block            # (C, J)
    power = (_channel_gains(wave.shape[0])[:, None] * means).sum(dim=0)       # (J,)
    loud = -0.691 + 10.0 * torch.log10(power.clamp(min=1e-300))
    kept = loud > ABSOLUTE_GATE
    if not bool(kept.any()):
        return -math.inf
    relative = -0.691 + 10.0 * math.log10(float(power[kept].mean())) + RELATIVE_GATE
    kept &= loud > relative
    return -0.691 + 10.0 * math.log10(float(power[kept].mean()))


def _scaled(wave: Tensor, gain_db: float) -> Tensor:
    return wave * (10.0 ** (gain_db / 20.0))


def normalize_loudness(wave: Tensor, sr: int, target_lufs: float = -23.0) -> Tensor:
    """``wave`` scaled to read ``target_lufs`` (EBU R 128's -23 by default); silence is returned as it
    is. Peaks may then pass 1.0: follow with :func:`normalize_peak` if the result must not clip."""
    check_float("target_lufs", target_lufs, -120.0, 20.0)
    measured = integrated_loudness(wave, sr)
    return wave if math.isinf(measured) else _scaled(wave, target_lufs - measured)


def normalize_peak(wave: Tensor, peak_db: float = -1.0) -> Tensor:
    """``wave`` scaled so its largest |sample| (over all channels) is ``peak_db`` dBFS; silence unchanged."""
    check_float("peak_db", peak_db, -120.0, 20.0)
    peak = float(wave.detach().abs().max()) if wave.numel() else 0.0
    return wave if peak == 0.0 else _scaled(wave, peak_db - 20.0 * math.log10(peak))


def normalize_rms(wave: Tensor, target_db: float = -20.0) -> Tensor:
    """``wave`` scaled so its RMS (over all channels) is ``target_db`` dBFS; silence unchanged."""
    check_float("target_db", target_db, -120.0, 20.0)
    rms = float(wave.detach().double().square().mean().sqrt()) if wave.numel() else 0.0
    return wave if rms == 0.0 else _scaled(wave, target_db - 20.0 * math.log10(rms))
