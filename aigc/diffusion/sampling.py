"""How to sample a diffusion model, as data: :class:`SamplingConfig`, and :func:`sample`, which runs it.

The command line, the Python API and the service build one ``SamplingConfig`` and pass the object
down; it is validated once, when it is made, and an option the chosen sampler cannot honour (an η for
a sampler without one) is an error, never dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import check_float, check_int, check_seed, with_options
from ..errors import ConfigError
from .process import SPACINGS, GaussianDiffusion, ModelFn
from .samplers import DEFAULT_SAMPLER, ETA_DEFAULTS, SAMPLERS, Callback, Project, Schedule, sampling_schedule

MAX_STEPS = 10_000  # network evaluations per sample (a schedule of T steps allows at most T)


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
        check_int("steps", self.steps, 1, MAX_STEPS)
        if self.eta is not None:
            if self.sampler not in ETA_DEFAULTS:
                raise ConfigError(f"the '{self.sampler}' sampler takes no eta; eta is for "
                                  f"{' and '.join(ETA_DEFAULTS)}")
            check_float(f"eta of {self.sampler}", self.eta, 0, low_open=self.sampler == "dpm++sde")
        if self.spacing is not None and self.spacing not in SPACINGS:
            raise ConfigError(f"unknown timestep spacing '{self.spacing}'; choose one of: {', '.join(SPACINGS)}")
        check_float("guidance (1 = the plain conditional model)", self.guidance, 0, low_open=True)
        check_seed("seed", self.seed)

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
