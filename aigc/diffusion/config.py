"""The diffusion settings a run is trained with, saved in its checkpoint, and the process they make."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check_int, refuse_non_finite
from ..errors import ConfigError
from .process import DEFAULT_CLIP_RANGE, GaussianDiffusion, Likelihood, VarType
from .schedules import make_betas
from .timesteps import UniformSampler, make_timestep_sampler


@dataclass
class DiffusionConfig:
    timesteps: int = 1000            # T of the training schedule (samplers respace it)
    schedule: str = "cosine"         # cosine | linear
    mean_type: str = "epsilon"       # epsilon | x0 | v: what the network predicts
    learn_sigma: bool = True         # learned-range Σ (Improved DDPM); else fixed_variance
    fixed_variance: str = "fixed_large"  # fixed_large (β_t) | fixed_small (β̃_t), when Σ is not learned
    loss: str = "hybrid"             # mse | kl | hybrid (L_simple + λ L_vlb)
    vlb_weight: float = 0.001        # λ of the hybrid loss
    snr_gamma: float = 0.0           # min-SNR-γ weighting of the mse term (Hang et al. 2023; 5 is theirs); 0: off
    timestep_sampler: str = "uniform"  # uniform | loss-second-moment (importance sampling, for kl) | logit-normal
    logit_normal_mean: float = 0.0   # where the logit-normal sampler centres logit(t/T): > 0 leans to noise
    logit_normal_std: float = 1.0    # and its spread
    logit_normal_mix: list[list[float]] = field(default_factory=list)  # more [weight, mean, std] components
    class_dropout: float = 0.1       # label dropout for classifier-free guidance (class-conditional runs)
    data_likelihood: str = "discretized8"  # decoder of L_0: discretized8 (8-bit images) | gaussian (continuous)
    clip_range: list[float] | None = field(default_factory=lambda: list(DEFAULT_CLIP_RANGE))  # x̂_0 range; null: none

    def validate(self) -> None:
        refuse_non_finite(self, "diffusion")
        check_int("diffusion.timesteps", self.timesteps, 1, 100_000)
        if not 0.0 <= self.class_dropout < 1.0:
            raise ConfigError(f"diffusion.class_dropout must be in [0, 1), got {self.class_dropout}")
        if self.fixed_variance not in ("fixed_large", "fixed_small"):
            raise ConfigError(f"diffusion.fixed_variance must be fixed_large or fixed_small, got "
                              f"'{self.fixed_variance}'")
        if self.loss == "hybrid" and not self.learn_sigma:
            raise ConfigError("the hybrid loss trains a learned Σ: use diffusion.loss=mse without --learn-sigma")
        if self.data_likelihood not in {m.value for m in Likelihood}:
            raise ConfigError(f"diffusion.data_likelihood must be one of {', '.join(m.value for m in Likelihood)}, "
                              f"got '{self.data_likelihood}'")
        if self.clip_range is not None and (len(self.clip_range) != 2 or not self.clip_range[0] < self.clip_range[1]):
            raise ConfigError(f"diffusion.clip_range must be [low, high] with low < high (or null), "
                              f"got {self.clip_range}")
        self.timestep_sampler_for(self.timesteps)  # an unknown sampler or a bad logit-normal fails here
        self.process()  # unknown schedule, mean type or loss fail here

    def timestep_sampler_for(self, num_timesteps: int) -> UniformSampler:
        """The training-timestep sampler these settings name, over ``num_timesteps`` steps."""
        return make_timestep_sampler(self.timestep_sampler, num_timesteps, self.logit_normal_mean,
                                     self.logit_normal_std, self.logit_normal_mix)

    def process(self) -> GaussianDiffusion:
        var = VarType.LEARNED_RANGE if self.learn_sigma else VarType(self.fixed_variance)
        return GaussianDiffusion(make_betas(self.schedule, self.timesteps), mean_type=self.mean_type,
                                 var_type=var, loss_type=self.loss, vlb_weight=self.vlb_weight,
                                 snr_gamma=self.snr_gamma, likelihood=self.data_likelihood,
                                 clip_range=self.clip_range)
