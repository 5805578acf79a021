"""Noise schedules β_1..β_T as pure float64 numpy functions.

Index ``i`` (0-based) of every array is the paper's timestep ``t = i + 1``.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

SCHEDULES = ("linear", "cosine")


def _check_T(T: int) -> int:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ConfigError(f"the number of diffusion timesteps must be a whole number >= 1, got {T!r}")
    return int(T)


def linear_betas(T: int, max_beta: float = 0.999) -> np.ndarray:
    """DDPM's linear schedule β from 1e-4 to 0.02 (Ho et al. 2020, §4), rescaled by 1000/T
    so that any T gives about the same ᾱ_T (as Improved DDPM does for T=4000); clipped at
    ``max_beta`` for T < 50, where the rescaled β would pass 1."""
    T = _check_T(T)
    scale = 1000.0 / T
    return np.minimum(np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64), max_beta)


def cosine_alpha_bar(u: np.ndarray | float, s: float = 0.008) -> np.ndarray:
    """f(t)/f(0) of Improved DDPM eq. 17 at u = t/T: f = cos(((u + s)/(1 + s)) · π/2)²."""
    f = lambda x: np.cos((np.asarray(x, dtype=np.float64) + s) / (1.0 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(u) / f(0.0)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """The cosine schedule (Nichol & Dhariwal 2021, eq. 17): β_t = 1 - ᾱ_t/ᾱ_{t-1}, clipped at
    ``max_beta`` so the last steps never become singular."""
    T = _check_T(T)
    u = np.arange(T + 1, dtype=np.float64) / T
    abar = cosine_alpha_bar(u, s)
    betas = 1.0 - abar[1:] / abar[:-1]
    return np.minimum(betas, max_beta)


def make_betas(name: str, T: int) -> np.ndarray:
    """The named schedule ("linear" or "cosine") with T steps."""
    T = _check_T(T)
    if name == "linear":
        return linear_betas(T)
    if name == "cosine":
        return cosine_betas(T)
    raise ConfigError(f"unknown noise schedule '{name}'; choose one of: {', '.join(SCHEDULES)}")
