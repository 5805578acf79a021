"""Analytic denoisers for toy data, shared by the diffusion tests."""
from __future__ import annotations

import numpy as np
import torch

from aigc.diffusion import GaussianDiffusion, MeanType


def gaussian_denoiser(process: GaussianDiffusion, mu: float, s: float, learned_v: float | None = None,
                      reverse: GaussianDiffusion | None = None):
    """The Bayes-optimal model for data x0 ~ N(mu, s²) per dimension under ``process`` (the training schedule):
    E[x0|x_t] = mu + √ᾱ s²/(ᾱ s² + 1 − ᾱ) (x_t − √ᾱ mu), output in the process's mean type.

    With ``learned_v`` it appends that constant as the variance channels; with ``reverse`` (a respacing of
    ``process``) it appends the v that makes Σ the exact reverse variance of ``reverse`` for this data:
    Var[x_{i-1}|x_i] = β̃'_i + coef1'_i² Var[x0|x_i], Var[x0|x_t] = s²(1 − ᾱ)/(ᾱ s² + 1 − ᾱ).
    """
    abar_all = torch.from_numpy(process.alphas_cumprod)
    if reverse is not None:
        index = {int(m): i for i, m in enumerate(reverse.timestep_map)}
        a = reverse.alphas_cumprod
        var_x0 = s ** 2 * (1 - a) / (a * s ** 2 + 1 - a)
        exact = np.log(reverse.posterior_variance + reverse.posterior_mean_coef1 ** 2 * var_x0)
        lo, hi = reverse.posterior_log_variance_clipped, reverse.log_betas
        v_table = torch.from_numpy(np.clip(2 * (exact - lo) / (hi - lo) - 1, -1, 1))

    def model_fn(x, t):
        a = abar_all[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        x0 = mu + a.sqrt() * s ** 2 / (a * s ** 2 + 1 - a) * (x - a.sqrt() * mu)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        if process.mean_type is MeanType.EPSILON:
            out = eps
        elif process.mean_type is MeanType.START_X:
            out = x0
        else:
            out = a.sqrt() * eps - (1 - a).sqrt() * x0
        if reverse is not None:
            v = v_table[[index[int(ti)] for ti in t]].to(x.dtype).view_as(a)
            out = torch.cat([out, v.expand_as(out)], dim=1)
        elif learned_v is not None:
            out = torch.cat([out, torch.full_like(out, learned_v)], dim=1)
        return out

    return model_fn
