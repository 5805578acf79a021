"""Diffusion models: the Gaussian process (DDPM / Improved DDPM), its losses, timestep samplers,
samplers (DDPM, DDIM, DPM-Solver++), classifier-free guidance and image editing.

The network is never imported here: every function takes ``model_fn(x_t, t) -> output``.
"""
from .editing import img2img, inpaint, repaint_schedule
from .guidance import classifier_free, drop_captions, drop_labels, guided
from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .process import (SPACINGS, GaussianDiffusion, LossType, MeanType, VarType, logsnr_timesteps, respace,
                      space_timesteps)
from .samplers import (DEFAULT_SAMPLER, DEFAULT_SPACING, ETA_DEFAULTS, SAMPLERS, Schedule, ddim_step, ddpm_step,
                       default_spacing, get_sampler, sample_ddim, sample_ddpm, sample_dpmpp_2m, sampling_schedule)
from .sampling import SamplingConfig, sample, sampling_config
from .schedules import SCHEDULES, cosine_betas, linear_betas, make_betas
from .timesteps import LogitNormalSampler, LossSecondMomentResampler, UniformSampler, make_timestep_sampler

__all__ = [
    "GaussianDiffusion", "MeanType", "VarType", "LossType", "respace", "space_timesteps",
    "logsnr_timesteps", "SPACINGS",
    "linear_betas", "cosine_betas", "make_betas", "SCHEDULES",
    "normal_kl", "discretized_gaussian_log_likelihood", "mean_flat",
    "UniformSampler", "LossSecondMomentResampler", "LogitNormalSampler", "make_timestep_sampler",
    "sample_ddpm", "sample_ddim", "sample_dpmpp_2m", "ddpm_step", "ddim_step", "SAMPLERS", "DEFAULT_SAMPLER",
    "DEFAULT_SPACING", "default_spacing", "ETA_DEFAULTS", "Schedule",
    "get_sampler", "sampling_schedule", "SamplingConfig", "sample", "sampling_config",
    "classifier_free", "guided", "drop_labels", "drop_captions",
    "inpaint", "img2img", "repaint_schedule",
]
