"""How to sample a diffusion model, as data: :class:`SamplingConfig`, and :func:`sample`, which runs it.

The command line, the Python API and the service build one ``SamplingConfig`` and pass the object
down; it is validated once, when it is made, and an option the chosen sampler cannot honour (an η for
a sampler without one) is an error, never dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import with_options
from ..errors import ConfigError
from .process import SPACINGS, GaussianDiffusion, ModelFn
from .samplers import DEFAULT_SAMPLER, ETA_DEFAULTS, SAMPLERS, Callback, Project, Schedule, sampling_schedule

MAX_SEED = 2 ** 63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed


@dataclass(frozen=True)
class SamplingConfig:
    """One diffusion sampling request: which sampler, how many network evaluations, the guidance scale
    and the seed. ``eta`` (None: the sampler's own) is DDIM's η or the SDE solver's noise scale;
    ``spacing`` (None: the sampler's default) picks the respaced timesteps."""
    sampler: str = DEFAULT_SAMPLER   # ddpm | ddim | dpm++ | dpm++sde
    steps: int = 25                  # network evaluations (per pass, for RePaint)
    eta: float | None = None         # ddim: 0 (deterministic) ... 1; dpm++sde: > 0 (1 by default)
    spacing: str | None = None       # linspace | trailing | logsnr
    guidance: float = 1.0            # classifier-free guidance scale (1 = the plain conditional model)
    seed: int | None = 0             # same seed, same samples; None draws a fresh one

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{self.sampler}'; choose one of {', '.join(SAMPLERS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be a whole number >= 1, got {self.steps!r}")
        if self.eta is not None:
            if self.sampler not in ETA_DEFAULTS:
                raise ConfigError(f"the '{self.sampler}' sampler takes no eta; eta is for "
                                  f"{' and '.join(ETA_DEFAULTS)}")
            if not _finite(self.eta) or self.eta < 0 or (self.sampler == "dpm++sde" and self.eta == 0):
                raise ConfigError(f"eta must be a finite number >= 0 (> 0 for dpm++sde), got {self.eta!r}")
        if self.spacing is not None and self.spacing not in SPACINGS:
            raise ConfigError(f"unknown timestep spacing '{self.spacing}'; choose one of: {', '.join(SPACINGS)}")
        if not _finite(self.guidance) or self.guidance <= 0:
            raise ConfigError(f"guidance must be a finite number > 0 (1 = plain conditional model), "
                              f"got {self.guidance!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed <= MAX_SEED):
            raise ConfigError(f"seed must be a whole number in 0..{MAX_SEED}, got {self.seed!r}")

    def schedule(self, process: GaussianDiffusion) -> Schedule:
        """The training ``process`` respaced for this sampler; steps beyond its T are refused."""
        T = process.num_timesteps
        if self.steps > T:
            raise ConfigError(f"steps must be a whole number in 1..{T}: {self.steps} asked, but the model's "
                              f"schedule has only {T} timesteps")
        return sampling_schedule(process, self.steps, self.spacing, self.sampler)

    def sampler_options(self) -> dict[str, Any]:
        """Keyword options of the sampler function beyond the shared signature."""
        return {} if self.eta is None else {"eta": self.eta}

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A generator seeded by ``seed`` (a fresh seed when it is None)."""
        g = torch.Generator(device=device)
        g.manual_seed(self.seed if self.seed is not None else torch.seed())
        return g

    def params(self) -> dict[str, Any]:
        """What an output file records: the fields that were set (eta and spacing only when given)."""
        out = {"sampler": self.sampler, "steps": self.steps, "guidance": self.guidance, "seed": self.seed}
        return {**out, **({"eta": self.eta} if self.eta is not None else {}),
                **({"spacing": self.spacing} if self.spacing is not None else {})}


def sampling_config(base: SamplingConfig | None = None, **options: Any) -> SamplingConfig:
    """``base`` (default: the defaults) with keyword ``options`` replaced; an unknown option is an error."""
    return with_options(SamplingConfig, base, "sampling", options)


@torch.no_grad()
def sample(model_fn: ModelFn, noise: Tensor, process: GaussianDiffusion, config: SamplingConfig, *,
           generator: torch.Generator | None = None, callback: Callback | None = None, clip_denoised: bool = True,
           start_step: int = 0, project: Project | None = None) -> Tensor:
    """Run the sampler ``config`` names from ``noise`` on ``process`` respaced to ``config.steps``."""
    return run_sampler(model_fn, noise, config.schedule(process), config, generator=generator, callback=callback,
                       clip_denoised=clip_denoised, start_step=start_step, project=project)


def run_sampler(model_fn: ModelFn, noise: Tensor, schedule: Schedule, config: SamplingConfig, **kwargs: Any) -> Tensor:
    """:func:`sample` on a schedule already made by ``config.schedule`` (editing makes it first)."""
    return SAMPLERS[config.sampler](model_fn, noise, schedule, **config.sampler_options(), **kwargs)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
