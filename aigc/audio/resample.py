"""Band-limited resampling in torch: a Kaiser-windowed sinc, applied as a polyphase filter bank.

For a rational ratio new/orig = L/M (reduced by their gcd), output sample ``n`` is the band-limited
input evaluated at time ``n * M / L`` (input samples):

    y[n] = sum_k x[k] * c * sinc(c * (k - n M / L)) * kaiser((k - n M / L) / W),   c = rolloff * min(1, L / M)

``c`` is the cut-off as a fraction of the input's Nyquist frequency (below the lower of the two Nyquist
frequencies, so downsampling does not alias) and ``W = ceil(zeros / c)`` the half-width of the window in
input samples. The L output phases each have their own filter, so the whole resampler is one strided
``conv1d`` with L output channels, interleaved. Samples beyond the ends count as zeros; the output has
``ceil(N * L / M)`` samples, time-aligned with the input (sample 0 stays at time 0), as ``librosa.resample``.

    y = resample(wave, 44100, 16000)               # (..., N) -> (..., ceil(N * 160 / 441))
    r = Resampler(48000, 16000); y = r(batch)      # the filter built once, kept as a buffer
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor, nn

from ..config import check_float, check_int
from ..errors import ConfigError

ZEROS = 32          # zero crossings of the sinc on each side (at the lower rate): the filter's length
ROLLOFF = 0.945     # cut-off as a fraction of the lower Nyquist frequency
BETA = 12.0         # Kaiser window shape: stop-band rejection ~ 100+ dB
MAX_POLYPHASE = 1 << 23  # L x taps of the polyphase filter bank; beyond it, filters are made per chunk
MAX_RATE = 768_000


def _ratio(orig_sr: int, new_sr: int) -> tuple[int, int]:
    check_int("orig_sr", orig_sr, 1, MAX_RATE)
    check_int("new_sr", new_sr, 1, MAX_RATE)
    g = math.gcd(orig_sr, new_sr)
    return new_sr // g, orig_sr // g  # L (up), M (down)


def _check_filter(zeros: int, rolloff: float, beta: float) -> None:
    check_int("zeros", zeros, 1, 1024)
    check_float("rolloff", rolloff, 0.0, 1.0, low_open=True)
    check_float("beta", beta, 0.0, 100.0)


def _taps(t: Tensor, cutoff: float, half: int, beta: float) -> Tensor:
    """The windowed sinc at offsets ``t`` (input samples, float64), zero beyond ``half``."""
    x = (t / half).clamp(-1.0, 1.0)
    window = torch.special.i0(beta * torch.sqrt(1.0 - x * x)) / torch.special.i0(torch.tensor(beta, dtype=t.dtype))
    return torch.where(t.abs() <= half, cutoff * torch.sinc(cutoff * t) * window, torch.zeros_like(t))


@lru_cache(maxsize=32)
def polyphase_filters(orig_sr: int, new_sr: int, zeros: int = ZEROS, rolloff: float = ROLLOFF,
                      beta: float = BETA) -> tuple[Tensor, int, int, int]:
    """(filters (L, 1, 2W + M) float64, L, M, W): phase ``j``'s taps over inputs ``q M - W ..``."""
    up, down = _ratio(orig_sr, new_sr)
    cutoff = rolloff * min(1.0, up / down)
    half = math.ceil(zeros / cutoff)
    taps = torch.arange(-half, half + down, dtype=torch.float64)          # (K,)
    delay = torch.arange(up, dtype=torch.float64) * down / up              # (L,) in [0, M)
    filters = _taps(taps[None, :] - delay[:, None], cutoff, half, beta)    # (L, K)
    return filters[:, None, :], up, down, half


def resampled_length(n: int, orig_sr: int, new_sr: int) -> int:
    """Samples out for ``n`` samples in: ceil(n * new / orig)."""
    up, down = _ratio(orig_sr, new_sr)
    return -(-n * up // down)


def resample(wave: Tensor, orig_sr: int, new_sr: int, *, zeros: int = ZEROS, rolloff: float = ROLLOFF,
             beta: float = BETA) -> Tensor:
    """Resample (..., N) from ``orig_sr`` to ``new_sr`` Hz along the last dimension -> (..., N')
    with N' = ceil(N * new_sr / orig_sr); every leading dimension (channels, batch) is one signal."""
    _check_filter(zeros, rolloff, beta)
    if orig_sr == new_sr:
        _ratio(orig_sr, new_sr)
        return wave
    if wave.ndim == 0 or wave.shape[-1] == 0:
        raise ConfigError(f"resample needs a wave of shape (..., N) with N >= 1, got {tuple(wave.shape)}")
    up, down = _ratio(orig_sr, new_sr)
    dtype = wave.dtype if wave.is_floating_point() else torch.float32
    x = wave.reshape(-1, 1, wave.shape[-1]).to(dtype)                      # (B, 1, N)
    cutoff = rolloff * min(1.0, up / down)
    half = math.ceil(zeros / cutoff)
    if up * (2 * half + down) > MAX_POLYPHASE:
        y = _resample_direct(x[:, 0], up, down, cutoff, half, beta)
    else:
        filters, up, down, half = polyphase_filters(orig_sr, new_sr, zeros, rolloff, beta)
        y = _polyphase(x, filters.to(x.device, dtype), up, down, half)
    return y.reshape(*wave.shape[:-1], y.shape[-1])


def _polyphase(x: Tensor, filters: Tensor, up: int, down: int, half: int) -> Tensor:
    """(B, 1, N) -> (B, ceil(N L / M)) through the (L, 1, K) filter bank, stride M."""
    n = x.shape[-1]
    n_out = -(-n * up // down)
    blocks = -(-n_out // up)                           # q = 0 .. blocks-1, each giving L outputs
    need = (blocks - 1) * down + filters.shape[-1]     # padded input length the last block reads
    x = nn.functional.pad(x, (half, max(0, need - n - half)))
    y = nn.functional.conv1d(x, filters, stride=down)  # (B, L, blocks)
    return y.transpose(1, 2).reshape(x.shape[0], -1)[:, :n_out]


def _resample_direct(x: Tensor, up: int, down: int, cutoff: float, half: int, beta: float,
                     chunk: int = 4096) -> Tensor:
    """(B, N) -> (B, ceil(N L / M)) with taps made per block of outputs (for ratios whose polyphase
    filter bank would be too large, such as 44101 -> 16000)."""
    n = x.shape[-1]
    n_out = -(-n * up // down)
    xp = nn.functional.pad(x, (half, half + 2))
    offsets = torch.arange(-half, half + 2, dtype=torch.long)            # (K,)
    out = []
    for start in range(0, n_out, chunk):
        idx = torch.arange(start, min(n_out, start + chunk), dtype=torch.long)
        base = idx * down // up                                            # floor(n M / L)
        frac = (idx * down - base * up).double() / up                     # (n M / L) - base
        t = offsets[None, :].double() - frac[:, None]                     # (n, K)
        taps = _taps(t, cutoff, half, beta).to(x.device, x.dtype)
        windows = xp[:, (base[:, None] + offsets[None, :] + half).to(x.device)]   # (B, n, K)
        out.append(torch.einsum("bnk,nk->bn", windows, taps))
    return torch.cat(out, dim=1)


class Resampler(nn.Module):
    """:func:`resample` from ``orig_sr`` to ``new_sr`` with the filter bank kept as a buffer (moves
    with ``.to(device)``): (..., N) -> (..., ceil(N * new_sr / orig_sr))."""

    def __init__(self, orig_sr: int, new_sr: int, *, zeros: int = ZEROS, rolloff: float = ROLLOFF,
                 beta: float = BETA):
        super().__init__()
        _check_filter(zeros, rolloff, beta)
        self.orig_sr, self.new_sr, self.options = orig_sr, new_sr, (zeros, rolloff, beta)
        up, down = _ratio(orig_sr, new_sr)
        cutoff = rolloff * min(1.0, up / down)
        self.direct = up * (2 * math.ceil(zeros / cutoff) + down) > MAX_POLYPHASE
        filters, self.up, self.down, self.half = polyphase_filters(orig_sr, new_sr, zeros, rolloff, beta) \
            if not self.direct and orig_sr != new_sr else (torch.zeros(1, 1, 1, dtype=torch.float64), up, down, 0)
        self.register_buffer("filters", filters.float(), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        if self.orig_sr == self.new_sr:
            return wave
        if self.direct or wave.dtype != self.filters.dtype:
            zeros, rolloff, beta = self.options
            return resample(wave, self.orig_sr, self.new_sr, zeros=zeros, rolloff=rolloff, beta=beta)
        x = wave.reshape(-1, 1, wave.shape[-1])
        y = _polyphase(x, self.filters, self.up, self.down, self.half)
        return y.reshape(*wave.shape[:-1], y.shape[-1])
