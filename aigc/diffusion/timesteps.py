"""Samplers of training timesteps t, with importance weights.

``sample(batch_size)`` returns (t (B,) long, weights (B,) float); multiply each example's loss by its
weight and the mean stays an unbiased estimate of the uniform-t objective: E_p[w·L_t] = (1/T) Σ_t L_t
for w = 1/(T p_t).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError


class UniformSampler:
    """t ~ U{0, …, T−1}, all weights 1."""

    kind = "uniform"

    def __init__(self, num_timesteps: int) -> None:
        if num_timesteps < 1:
            raise ConfigError(f"num_timesteps must be >= 1, got {num_timesteps}")
        self.num_timesteps = int(num_timesteps)

    def probabilities(self) -> np.ndarray:
        return np.full(self.num_timesteps, 1.0 / self.num_timesteps)

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        t = torch.randint(0, self.num_timesteps, (batch_size,), generator=generator)
        return t.to(device), torch.ones(batch_size, device=device)

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record per-example losses at their timesteps (no-op for the uniform sampler)."""

    def state_dict(self) -> dict:
        return {"kind": self.kind, "num_timesteps": self.num_timesteps}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind or state.get("num_timesteps") != self.num_timesteps:
            raise ConfigError(f"timestep-sampler state is for {state.get('kind')} with "
                              f"T={state.get('num_timesteps')}, not {self.kind} with T={self.num_timesteps}")


class LossSecondMomentResampler(UniformSampler):
    """Importance sampling of t for the pure-VLB objective (Improved DDPM §3.3, eq. 18):
    p_t ∝ √E[L_t²] from the last ``history`` losses per t, mixed with ``uniform_prob`` of the uniform
    distribution; uniform until every t has a full history."""

    kind = "loss-second-moment"

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        if history < 1 or not 0 < uniform_prob <= 1:
            raise ConfigError("history must be >= 1 and uniform_prob in (0, 1]")
        self.history = int(history)
        self.uniform_prob = float(uniform_prob)
        self._losses = np.zeros((self.num_timesteps, self.history), dtype=np.float64)
        self._counts = np.zeros(self.num_timesteps, dtype=np.int64)

    @property
    def warmed_up(self) -> bool:
        return bool((self._counts == self.history).all())

    def probabilities(self) -> np.ndarray:
        if not self.warmed_up:
            return super().probabilities()
        w = np.sqrt(np.mean(self._losses ** 2, axis=-1))
        if not np.isfinite(w).all() or w.sum() <= 0:
            return super().probabilities()
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        if not self.warmed_up:
            return super().sample(batch_size, generator, device)
        p = torch.from_numpy(self.probabilities())
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p[t])  # importance weight 1/(T p_t)
        return t.to(device), weights.float().to(device)

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Append each example's loss to the history of its t (oldest dropped once full). In data-parallel
        training pass the gathered t and losses of all ranks so every rank keeps the same history."""
        for ti, li in zip(t.detach().cpu().tolist(), losses.detach().double().cpu().tolist()):
            if self._counts[ti] == self.history:
                self._losses[ti, :-1] = self._losses[ti, 1:]
                self._losses[ti, -1] = li
            else:
                self._losses[ti, self._counts[ti]] = li
                self._counts[ti] += 1

    def state_dict(self) -> dict:
        return {"kind": self.kind, "num_timesteps": self.num_timesteps, "history": self.history,
                "uniform_prob": self.uniform_prob, "losses": self._losses.tolist(),
                "counts": self._counts.tolist()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state.get("history") != self.history:
            raise ConfigError(f"timestep-sampler state keeps {state.get('history')} losses per t, not {self.history}")
        self.uniform_prob = float(state["uniform_prob"])
        self._losses = np.asarray(state["losses"], dtype=np.float64).reshape(self.num_timesteps, self.history)
        self._counts = np.asarray(state["counts"], dtype=np.int64).reshape(self.num_timesteps)


class LogitNormalSampler(UniformSampler):
    """t/T ~ logit-normal(mean, std), all weights 1: with (0, 1) most training steps go to the middle
    noise levels (SNR near 1 on the cosine schedule), few to the nearly clean and nearly pure-noise ends;
    a positive ``mean`` moves them towards noise, where a picture's layout is decided. ``mix`` adds
    components (weight, mean, std); the first one keeps 1 − Σ weight.

    Unlike the importance samplers this changes the objective on purpose — the chosen noise levels
    weigh more — as Esser et al. 2024 (Stable Diffusion 3, §3.1 and table 1) found best among timestep
    densities. p_t is the logit-normal mass of the bin [t/T, (t+1)/T)."""

    kind = "logit-normal"

    def __init__(self, num_timesteps: int, mean: float = 0.0, std: float = 1.0,
                 mix: Sequence[Sequence[float]] = ()) -> None:
        super().__init__(num_timesteps)
        extra = [tuple(float(v) for v in c) for c in mix]
        if any(len(c) != 3 or not 0 < c[0] < 1 for c in extra) or sum(c[0] for c in extra) >= 1:
            raise ConfigError(f"logit-normal mix components are [weight, mean, std] with weights in (0, 1) "
                              f"summing below 1, got {[list(c) for c in extra]}")
        self.components = [(1.0 - sum(c[0] for c in extra), float(mean), float(std))] + extra
        if not all(math.isfinite(m) and math.isfinite(s) and s > 0 for _, m, s in self.components):
            raise ConfigError(f"the logit-normal sampler needs finite means and each std > 0, got "
                              f"{[(m, s) for _, m, s in self.components]}")
        logit = torch.logit(torch.linspace(0.0, 1.0, self.num_timesteps + 1, dtype=torch.float64))
        cdf = sum(w * torch.special.ndtr((logit - m) / s) for w, m, s in self.components)  # ±inf ends: 0, 1
        self._p = (cdf[1:] - cdf[:-1]).clamp_min(0.0)
        self._p /= self._p.sum()

    @property
    def mean(self) -> float:
        return self.components[0][1]

    @property
    def std(self) -> float:
        return self.components[0][2]

    def probabilities(self) -> np.ndarray:
        return self._p.numpy().copy()

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        t = torch.multinomial(self._p, batch_size, replacement=True, generator=generator)
        return t.to(device), torch.ones(batch_size, device=device)


TIMESTEP_SAMPLERS = {"uniform": UniformSampler, "loss-second-moment": LossSecondMomentResampler,
                     "logit-normal": LogitNormalSampler}


def make_timestep_sampler(name: str, num_timesteps: int, logit_mean: float = 0.0, logit_std: float = 1.0,
                          logit_mix: Sequence[Sequence[float]] = ()) -> UniformSampler:
    """The sampler ``name``; ``logit_mean`` / ``logit_std`` (and ``logit_mix``) shape the logit-normal one."""
    if name not in TIMESTEP_SAMPLERS:
        raise ConfigError(f"unknown timestep sampler '{name}'; choose one of: {', '.join(TIMESTEP_SAMPLERS)}")
    if name == "logit-normal":
        return LogitNormalSampler(num_timesteps, logit_mean, logit_std, logit_mix)
    return TIMESTEP_SAMPLERS[name](num_timesteps)
