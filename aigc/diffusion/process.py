"""The Gaussian diffusion process (Ho et al. 2020) with Improved DDPM's learned variance.

A plain object holding the float64 schedule; the network is passed in as a function
``model_fn(x_t, t, **model_kwargs) -> output`` and always receives the *training*
schedule's timestep indices (through ``timestep_map`` when the process is respaced).

Shapes: x (B, C, ...) for any number of trailing dims (images (B, C, H, W), audio (B, C, L),
video (B, C, F, H, W)); t (B,) long indices into this process's schedule (0-based: index i is the
paper's t = i + 1). What the data is enters in two places only, both chosen by the family: the
decoder likelihood of L_0 (:class:`Likelihood`) and the range x̂_0 is clipped to (:meth:`clip`).
"""
from __future__ import annotations

import enum
import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from .losses import LOG2, discretized_gaussian_log_likelihood, gaussian_log_likelihood, mean_flat, normal_kl

ModelFn = Callable[..., Tensor]


class MeanType(enum.Enum):
    """What the network's first C output channels predict."""
    EPSILON = "epsilon"    # the noise ε (DDPM)
    START_X = "x0"         # the clean image x_0
    VELOCITY = "v"         # v = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho 2022)


class VarType(enum.Enum):
    """How the reverse-process variance Σ_θ(x_t, t) is chosen."""
    FIXED_SMALL = "fixed_small"      # β̃_t, the posterior variance
    FIXED_LARGE = "fixed_large"      # β_t
    LEARNED_RANGE = "learned_range"  # Improved DDPM eq. 15: extra C channels interpolate log β̃_t .. log β_t


class LossType(enum.Enum):
    MSE = "mse"        # L_simple (DDPM eq. 14)
    KL = "kl"          # the variational bound L_vlb alone
    HYBRID = "hybrid"  # L_simple + λ L_vlb (Improved DDPM eq. 16), stop-gradient on the mean in L_vlb


class Likelihood(enum.Enum):
    """The decoder p_θ(x_0 | x_1) of the bound's last term L_0."""
    DISCRETIZED8 = "discretized8"  # 8-bit data in [-1, 1]: the Gaussian mass of each of 256 bins (DDPM §3.3)
    GAUSSIAN = "gaussian"          # continuous data (audio, latents): the Gaussian density itself


DEFAULT_CLIP_RANGE = (-1.0, 1.0)


def _enum(cls: type[enum.Enum], value) -> enum.Enum:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise ConfigError(f"unknown {cls.__name__} '{value}'; choose one of: {choices}") from None


def _extract(arr: np.ndarray, t: Tensor, like: Tensor) -> Tensor:
    """arr[t] as a (B, 1, ..., 1) tensor broadcastable to ``like`` (same dtype and device)."""
    vals = torch.from_numpy(arr)[t.detach().cpu().long()]
    return vals.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


class GaussianDiffusion:
    """The forward process q, the posterior q(x_{t-1}|x_t, x_0), the parametrised reverse process
    p_θ(x_{t-1}|x_t), and the training losses.

    ``timestep_map[i]`` is the training-schedule index the model sees for this process's index i
    (identity unless the process was made by :func:`respace`).
    """

    def __init__(self, betas: Sequence[float] | np.ndarray, mean_type: MeanType | str = MeanType.EPSILON,
                 var_type: VarType | str = VarType.FIXED_LARGE, loss_type: LossType | str = LossType.MSE,
                 vlb_weight: float = 0.001, timestep_map: Sequence[int] | None = None,
                 snr_gamma: float = 0.0, likelihood: Likelihood | str = Likelihood.DISCRETIZED8,
                 clip_range: Sequence[float] | None = DEFAULT_CLIP_RANGE) -> None:
        """``clip_range`` (lo, hi): where x̂_0 is clipped to when a sampler asks (None: never clipped)."""
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 1:
            raise ConfigError("betas must be a non-empty 1-D sequence")
        if not np.all((betas > 0) & (betas < 1)):
            raise ConfigError("every beta must lie strictly between 0 and 1")
        self.mean_type = _enum(MeanType, mean_type)
        self.var_type = _enum(VarType, var_type)
        self.loss_type = _enum(LossType, loss_type)
        self.vlb_weight = float(vlb_weight)
        self.likelihood = _enum(Likelihood, likelihood)
        if clip_range is not None:
            lo, hi = (float(v) for v in clip_range)
            if not lo < hi:
                raise ConfigError(f"clip_range must be (low, high) with low < high, got {tuple(clip_range)}")
            clip_range = (lo, hi)
        self.clip_range: tuple[float, float] | None = clip_range
        if not (snr_gamma >= 0 and math.isfinite(snr_gamma)):
            raise ConfigError(f"snr_gamma must be a finite number >= 0 (0: off), got {snr_gamma}")
        self.snr_gamma = float(snr_gamma)
        self.num_timesteps = T = int(betas.shape[0])
        self.timestep_map = (np.arange(T, dtype=np.int64) if timestep_map is None
                             else np.asarray(timestep_map, dtype=np.int64))
        if self.timestep_map.shape != (T,):
            raise ConfigError(f"timestep_map must have one entry per timestep ({T}), got {self.timestep_map.shape}")
        self._respaced: dict[tuple[int, str], GaussianDiffusion] = {}

        self.betas = betas
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)                                   # ᾱ_t
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])        # ᾱ_{t-1}, ᾱ_0 := 1
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # Posterior q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, β̃_t)  (DDPM eqs. 6-7)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # β̃ is 0 at the first step; Improved DDPM clips its log to β̃ of the second step.
        first = self.posterior_variance[1] if T > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        # Σ for FIXED_LARGE: β_t, except β̃_2 at the first step (a better decoder likelihood, Improved DDPM).
        self.fixed_large_variance = np.append(first, betas[1:])
        self.fixed_large_log_variance = np.log(self.fixed_large_variance)
        self.log_betas = np.log(betas)

    def __repr__(self) -> str:
        return (f"GaussianDiffusion(T={self.num_timesteps}, mean={self.mean_type.value}, "
                f"var={self.var_type.value}, loss={self.loss_type.value})")

    @property
    def learned_sigma(self) -> bool:
        return self.var_type is VarType.LEARNED_RANGE

    def clip(self, x: Tensor) -> Tensor:
        """x̂_0 clipped to the data range (``clip_range``; unchanged when None): what every sampler
        calls on its x_0 prediction ("clip_denoised")."""
        if self.clip_range is None:
            return x
        return x.clamp(*self.clip_range)

    # ---------------------------------------------------------------- forward process

    def model_timesteps(self, t: Tensor) -> Tensor:
        """The training-schedule indices the model sees for this process's indices t."""
        return torch.from_numpy(self.timestep_map)[t.detach().cpu().long()].to(t.device)

    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)  (DDPM eq. 4): (mean, variance, log variance)."""
        mean = _extract(self.sqrt_alphas_cumprod, t, x0) * x0
        return mean, _extract(1.0 - self.alphas_cumprod, t, x0), _extract(self.log_one_minus_alphas_cumprod, t, x0)

    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """A draw of x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε  (DDPM eq. 4)."""
        t = self._as_t(t, x0)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return (_extract(self.sqrt_alphas_cumprod, t, x0) * x0
                + _extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def q_posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7): (mean, variance β̃_t, clipped log variance)."""
        mean = _extract(self.posterior_mean_coef1, t, x_t) * x0 + _extract(self.posterior_mean_coef2, t, x_t) * x_t
        return (mean, _extract(self.posterior_variance, t, x_t),
                _extract(self.posterior_log_variance_clipped, t, x_t))

    @staticmethod
    def _as_t(t: Tensor | int, x: Tensor) -> Tensor:
        if isinstance(t, Tensor):
            return t if t.dim() else t.expand(x.shape[0])
        return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)

    # ---------------------------------------------------------------- reverse process

    def split_output(self, model_output: Tensor, x_t: Tensor) -> tuple[Tensor, Tensor | None]:
        """(mean channels, variance channels or None) of the network output."""
        C = x_t.shape[1]
        if self.learned_sigma:
            if model_output.shape[1] != 2 * C:
                raise ValueError(f"a learned-range variance needs 2*C = {2 * C} output channels, "
                                 f"got {model_output.shape[1]}")
            return model_output[:, :C], model_output[:, C:]
        if model_output.shape[1] != C:
            raise ValueError(f"expected {C} output channels, got {model_output.shape[1]}")
        return model_output, None

    def predict_start(self, model_output: Tensor, x_t: Tensor, t: Tensor,
                      clip_denoised: bool = True) -> tuple[Tensor, Tensor]:
        """(x̂_0, ε̂) from the mean channels of any mean type; x̂_0 clipped to the data range if asked
        (:meth:`clip`), and ε̂ consistent with the (clipped) x̂_0."""
        out, _ = self.split_output(model_output, x_t)
        if self.mean_type is MeanType.EPSILON:      # x_0 = (x_t − √(1−ᾱ) ε)/√ᾱ   (DDPM eq. 4 inverted)
            pred_x0 = (_extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                       - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * out)
        elif self.mean_type is MeanType.START_X:
            pred_x0 = out
        else:                                        # x_0 = √ᾱ x_t − √(1−ᾱ) v
            pred_x0 = (_extract(self.sqrt_alphas_cumprod, t, x_t) * x_t
                       - _extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * out)
        clip_denoised = clip_denoised and self.clip_range is not None
        if clip_denoised:
            pred_x0 = self.clip(pred_x0)
        if self.mean_type is MeanType.EPSILON and not clip_denoised:
            pred_eps = out
        else:                                        # ε = (x_t − √ᾱ x_0)/√(1−ᾱ)
            pred_eps = ((x_t - _extract(self.sqrt_alphas_cumprod, t, x_t) * pred_x0)
                        / _extract(self.sqrt_one_minus_alphas_cumprod, t, x_t))
        return pred_x0, pred_eps

    def p_mean_variance(self, model_output: Tensor, x_t: Tensor, t: Tensor,
                        clip_denoised: bool = True) -> dict[str, Tensor]:
        """p_θ(x_{t-1} | x_t) = N(μ_θ, Σ_θ): μ_θ is the posterior mean at x̂_0 (DDPM eq. 7 with x̂_0), Σ_θ
        per ``var_type``. Returns dict(mean, variance, log_variance, pred_x0, pred_eps)."""
        _, var_out = self.split_output(model_output, x_t)
        if self.var_type is VarType.LEARNED_RANGE:
            # Improved DDPM eq. 15: Σ = exp(v' log β_t + (1 − v') log β̃_t), v' = (v + 1)/2. v is clamped to
            # [-1, 1] so Σ always lies in [β̃_t, β_t], with a straight-through gradient: a hard clamp would
            # leave an output that overshot the range with no gradient to bring it back.
            v = var_out + (var_out.clamp(-1.0, 1.0) - var_out).detach()
            frac = (v + 1.0) / 2.0
            min_log = _extract(self.posterior_log_variance_clipped, t, x_t)
            max_log = _extract(self.log_betas, t, x_t)
            log_variance = frac * max_log + (1.0 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            var = self.posterior_variance if self.var_type is VarType.FIXED_SMALL else self.fixed_large_variance
            logvar = (self.posterior_log_variance_clipped if self.var_type is VarType.FIXED_SMALL
                      else self.fixed_large_log_variance)
            variance = _extract(var, t, x_t).expand_as(x_t)
            log_variance = _extract(logvar, t, x_t).expand_as(x_t)
        pred_x0, pred_eps = self.predict_start(model_output, x_t, t, clip_denoised)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "pred_x0": pred_x0, "pred_eps": pred_eps}

    # ---------------------------------------------------------------- losses

    def _vb_terms_bpd(self, model_output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor,
                      clip_denoised: bool) -> tuple[Tensor, Tensor]:
        """One term of L_vlb in bits/dim, per example (B,): KL(q(x_{t-1}|x_t,x_0) ‖ p_θ(x_{t-1}|x_t))
        for t > 0 (L_{t-1}, DDPM eq. 5) and the decoder −log p_θ(x_0|x_1) at t = 0 (L_0): discretised
        to 8 bits for images, a density for continuous data (``likelihood``)."""
        true_mean, _, true_logvar = self.q_posterior_mean_variance(x0, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_logvar, out["mean"], out["log_variance"])) / LOG2
        decoder = (discretized_gaussian_log_likelihood if self.likelihood is Likelihood.DISCRETIZED8
                   else gaussian_log_likelihood)
        nll = mean_flat(-decoder(x0, out["mean"], 0.5 * out["log_variance"])) / LOG2
        return torch.where(t == 0, nll, kl), out["pred_x0"]

    def training_losses(self, model_fn: ModelFn, x0: Tensor, t: Tensor, noise: Tensor | None = None,
                        model_kwargs: dict | None = None,
                        generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-example loss terms (B,) at timesteps t: "loss" (what to minimise), "mse" (DDPM eq. 14 on the
        mean channels, unweighted; detached for pure KL), "vb" (the L_{t} term in bits/dim, unscaled).
        With ``snr_gamma`` the mse inside "loss" carries :meth:`snr_loss_weight`.

        HYBRID: loss = mse + λ·T·vb (Improved DDPM eq. 16, L_vlb ≈ T·L_t under uniform t), with the mean
        channels detached inside vb so L_vlb only trains Σ. KL: loss = T·vb.
        """
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.q_sample(x0, t, noise)
        model_output = model_fn(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        T = self.num_timesteps
        mean_out, var_out = self.split_output(model_output, x_t)
        if self.mean_type is MeanType.EPSILON:
            target = noise
        elif self.mean_type is MeanType.START_X:
            target = x0
        else:
            target = (_extract(self.sqrt_alphas_cumprod, t, x0) * noise
                      - _extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0)
        terms = {"mse": mean_flat((target - mean_out) ** 2)}
        if self.loss_type is LossType.KL:  # the bound trains mean and variance; mse only for monitoring
            terms["mse"] = terms["mse"].detach()
            terms["vb"], _ = self._vb_terms_bpd(model_output, x0, x_t, t, clip_denoised=False)
            terms["loss"] = T * terms["vb"]
            return terms
        # Stop-gradient on the mean: the bound only trains Σ (Improved DDPM §3.1).
        frozen = torch.cat([mean_out.detach(), var_out], dim=1) if var_out is not None else model_output.detach()
        vb, _ = self._vb_terms_bpd(frozen, x0, x_t, t, clip_denoised=False)
        terms["vb"] = vb
        mse = terms["mse"] * self.snr_loss_weight(t).to(x0.dtype) if self.snr_gamma else terms["mse"]
        terms["loss"] = mse + self.vlb_weight * T * vb if self.loss_type is LossType.HYBRID else mse
        return terms

    def snr_loss_weight(self, t: Tensor) -> Tensor:
        """Min-SNR-γ weights (Hang et al. 2023) of the mse term at timesteps t (B,): the x₀ loss weighted
        by min(SNR_t, γ), written for the network's target: min(SNR, γ)/SNR for ε, min(SNR, γ) for x₀,
        min(SNR, γ)/(SNR + 1) for v. Low-noise steps, which mostly refine detail, stop dominating."""
        snr = torch.from_numpy(self.alphas_cumprod / (1.0 - self.alphas_cumprod)).to(t.device)[t]
        clipped = snr.clamp(max=self.snr_gamma)
        if self.mean_type is MeanType.EPSILON:
            return clipped / snr
        if self.mean_type is MeanType.START_X:
            return clipped
        return clipped / (snr + 1.0)

    def prior_bpd(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T|x_0) ‖ N(0, I)) in bits/dim, per example (B,)."""
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x0.device)
        mean, _, logvar = self.q_mean_variance(x0, t)
        return mean_flat(normal_kl(mean, logvar, torch.zeros_like(mean), torch.zeros_like(mean))) / LOG2

    @torch.no_grad()
    def calc_bpd_loop(self, model_fn: ModelFn, x0: Tensor, clip_denoised: bool = True,
                      model_kwargs: dict | None = None,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The full variational bound −log p(x_0) ≤ L_T + Σ_t L_{t-1} + L_0 in bits/dim (one fresh noise
        sample per t): dict(total_bpd (B,), prior_bpd (B,), vb (B, T), mse (B, T) of ε̂, xstart_mse (B, T))."""
        vbs, mses, x0_mses = [], [], []
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((x0.shape[0],), i, dtype=torch.long, device=x0.device)
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            x_t = self.q_sample(x0, t, noise)
            out = model_fn(x_t, self.model_timesteps(t), **(model_kwargs or {}))
            vb, pred_x0 = self._vb_terms_bpd(out, x0, x_t, t, clip_denoised)
            _, pred_eps = self.predict_start(out, x_t, t, clip_denoised)
            vbs.append(vb)
            mses.append(mean_flat((pred_eps - noise) ** 2))
            x0_mses.append(mean_flat((pred_x0 - x0) ** 2))
        vb = torch.stack(vbs[::-1], dim=1)
        prior = self.prior_bpd(x0)
        return {"total_bpd": vb.sum(dim=1) + prior, "prior_bpd": prior, "vb": vb,
                "mse": torch.stack(mses[::-1], dim=1), "xstart_mse": torch.stack(x0_mses[::-1], dim=1)}

    # ---------------------------------------------------------------- respacing

    def sampling_timesteps(self, steps: int, spacing: str = "linspace") -> list[int]:
        """The ``steps`` indices of this schedule a sampler visits (see :func:`space_timesteps`)."""
        if spacing == "logsnr":
            return logsnr_timesteps(self.alphas_cumprod, steps)
        return space_timesteps(self.num_timesteps, steps, spacing)

    def respaced(self, steps: int, spacing: str = "linspace") -> "GaussianDiffusion":
        """This process respaced to ``steps`` timesteps (cached; ``self`` when steps == T)."""
        steps = _check_steps(steps, self.num_timesteps)
        if steps == self.num_timesteps:
            return self
        key = (steps, spacing)
        if key not in self._respaced:
            self._respaced[key] = respace(self, self.sampling_timesteps(steps, spacing))
        return self._respaced[key]


SPACINGS = ("linspace", "trailing", "logsnr")


def _check_steps(steps: int, T: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ConfigError(f"the number of sampling steps must be a whole number, got {steps!r}")
    if steps < 1:
        raise ConfigError(f"the number of sampling steps must be at least 1, got {steps}")
    if steps > T:
        raise ConfigError(f"{steps} sampling steps asked, but the model's schedule has only {T} timesteps; "
                          f"use at most {T}")
    return int(steps)


def space_timesteps(T: int, steps: int, spacing: str = "linspace") -> list[int]:
    """``steps`` sorted indices of 0..T-1, always including the last (T-1).

    "linspace": evenly spaced from 0 to T-1 (Improved DDPM §4); "trailing": T-1, T-1-T/steps, … (evenly
    spaced, the last step denoises from about T/steps; Lin et al. 2024). For "logsnr" (needs the schedule)
    see :func:`logsnr_timesteps`.
    """
    steps = _check_steps(steps, T)
    if spacing == "linspace":
        if steps == 1:
            return [T - 1]
        # floor(x + ½) keeps them distinct: consecutive points are ≥ 1 apart when steps ≤ T.
        return [int(v) for v in np.floor(np.linspace(0, T - 1, steps) + 0.5)]
    if spacing == "trailing":
        return sorted(int(v) for v in np.floor(T - np.arange(steps) * (T / steps) + 0.5).astype(np.int64) - 1)
    raise ConfigError(f"unknown timestep spacing '{spacing}'; choose one of: {', '.join(SPACINGS)}")


def logsnr_timesteps(alphas_cumprod: np.ndarray, steps: int, min_logsnr: float = -5.0) -> list[int]:
    """``steps`` indices whose half-log-SNR λ = log(√ᾱ/√(1−ᾱ)) is as evenly spaced as the discrete schedule
    allows, from λ(T-1) (or ``min_logsnr``, whichever is higher; T-1 is kept anyway) to λ(0) — the
    "logSNR" step choice of DPM-Solver (Lu et al. 2022, §3.3). The floor keeps the cosine schedule's clipped
    last steps (λ ≈ −10) from taking several evaluations where the input is pure noise anyway."""
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    T = abar.shape[0]
    steps = _check_steps(steps, T)
    lam = 0.5 * (np.log(abar) - np.log1p(-abar))  # decreasing in t
    targets = np.linspace(lam[0], max(lam[-1], min(min_logsnr, lam[0])), steps)
    ts = [int(np.argmin(np.abs(lam - target))) for target in targets]
    for k in range(1, steps):            # make them distinct: up from the first ...
        ts[k] = max(ts[k], ts[k - 1] + 1)
    ts[-1] = T - 1
    for k in range(steps - 2, -1, -1):   # ... then down from T-1 (each stays >= k)
        ts[k] = min(ts[k], ts[k + 1] - 1)
    return ts


def respace(process: GaussianDiffusion, use_timesteps: Sequence[int]) -> GaussianDiffusion:
    """A process over the kept timesteps only: ᾱ'_i = ᾱ_{k_i}, β'_i = 1 − ᾱ_{k_i}/ᾱ_{k_{i-1}} (Improved DDPM §4),
    same mean/variance/loss types, likelihood and clip range; its timestep_map sends index i to the model's
    index of k_i."""
    kept = sorted({int(k) for k in use_timesteps})
    if not kept or kept[0] < 0 or kept[-1] >= process.num_timesteps:
        raise ConfigError(f"timesteps to keep must be within 0..{process.num_timesteps - 1}")
    abar = process.alphas_cumprod[kept]
    prev = np.append(1.0, abar[:-1])
    betas = 1.0 - abar / prev
    return GaussianDiffusion(betas, process.mean_type, process.var_type, process.loss_type, process.vlb_weight,
                             timestep_map=process.timestep_map[kept], snr_gamma=process.snr_gamma,
                             likelihood=process.likelihood, clip_range=process.clip_range)
