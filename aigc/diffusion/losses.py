"""Elementwise pieces of the diffusion losses: Gaussian KL and the decoders (discretised, continuous).

All functions work elementwise and keep the input shape; :func:`mean_flat` averages
everything but the batch dimension (per-example terms, as in Improved DDPM).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

LOG2 = math.log(2.0)


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all non-batch dimensions: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats, elementwise:
    ½ (log σ2² − log σ1² + σ1²/σ2² + (μ1 − μ2)²/σ2² − 1)."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor,
                                        bins: int = 256) -> Tensor:
    """log p(x) in nats for data x in [-1, 1] quantised to ``bins`` levels under N(means, e^{2 log_scales})
    (DDPM §3.3, the decoder L_0): the Gaussian mass of the bin [x - 1/(bins-1), x + 1/(bins-1)],
    with the edge bins extended to ±∞."""
    half = 1.0 / (bins - 1)
    centered = x - means
    inv_std = torch.exp(-log_scales)
    plus_in = inv_std * (centered + half)
    min_in = inv_std * (centered - half)
    log_cdf_plus = torch.special.log_ndtr(plus_in)            # log Φ(upper edge), for the bin at -1
    log_one_minus_cdf_min = torch.special.log_ndtr(-min_in)   # log (1 - Φ(lower edge)), for the bin at +1
    # Interior bins: Φ(plus) − Φ(min), computed on the side of the mean that avoids cancellation.
    delta = torch.where(centered > 0,
                        torch.special.ndtr(-min_in) - torch.special.ndtr(-plus_in),
                        torch.special.ndtr(plus_in) - torch.special.ndtr(min_in))
    log_delta = torch.log(delta.clamp(min=1e-12))
    edge = 1.0 - 1e-3 * half  # x is exactly ±1 for the edge bins; allow rounding
    return torch.where(x < -edge, log_cdf_plus, torch.where(x > edge, log_one_minus_cdf_min, log_delta))


def gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log N(x; means, e^{2 log_scales}) in nats, elementwise: the decoder L_0 for continuous data
    (audio, latents), −½ (log 2π + 2 log σ + (x − μ)² / σ²)."""
    return -0.5 * (math.log(2.0 * math.pi) + 2.0 * log_scales + (x - means) ** 2 * torch.exp(-2.0 * log_scales))
