"""Image editing with a trained diffusion model: inpainting (RePaint) and img2img (SDEdit).

Both take the same ``model_fn(x, t)`` as the samplers and a :class:`SamplingConfig`, and return a
tensor shaped like ``image`` (values in [-1, 1] like the training data).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError
from .process import GaussianDiffusion, ModelFn
from .samplers import ETA_DEFAULTS, Callback, _evaluate, ddim_step, ddpm_step
from .sampling import SamplingConfig, run_sampler


def _check_image(image: Tensor, what: str = "image") -> None:
    if not isinstance(image, Tensor) or not image.is_floating_point() or image.dim() < 2:
        raise ConfigError(f"the {what} must be a floating-point tensor shaped (B, C, ...), got "
                          f"{type(image).__name__}{tuple(image.shape) if isinstance(image, Tensor) else ''}")


def _blend(x: Tensor, known: Tensor, mask: Tensor) -> Tensor:
    """mask·known + (1 − mask)·x, with exactly ``known`` where mask == 1."""
    return torch.where(mask == 1, known, mask * known + (1 - mask) * x)


def repaint_schedule(steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """The sequence of respaced state indices RePaint visits (Lugmayr et al. 2022, §4.2): from steps−1 down
    to −1 (clean); after reaching each of steps−1−L, steps−1−2L, … ≥ 0 it jumps back up L levels,
    jump_n_sample − 1 times, so every stretch of L steps is denoised jump_n_sample times."""
    jumps = {j: jump_n_sample - 1 for j in range(steps - 1 - jump_length, -1, -jump_length)}
    i = steps - 1
    states = [i]
    while i > -1:
        i -= 1
        states.append(i)
        if jumps.get(i, 0) > 0:
            jumps[i] -= 1
            i += jump_length
            states.append(i)
    return states


@torch.no_grad()
def inpaint(model_fn: ModelFn, process: GaussianDiffusion, image: Tensor, mask: Tensor, config: SamplingConfig, *,
            jump_length: int = 10, jump_n_sample: int = 1, generator: torch.Generator | None = None,
            callback: Callback | None = None, clip_denoised: bool = True, noise: Tensor | None = None) -> Tensor:
    """Fill the pixels where ``mask`` == 0 and keep those where ``mask`` == 1 (RePaint, Lugmayr et al. 2022).

    After every reverse step the known region is replaced by q_sample of ``image`` at the noise level x now
    has (eq. 8 of RePaint); at the end it equals ``image`` exactly. With ``jump_n_sample`` > 1 the sampler
    goes back ``jump_length`` steps by re-noising with q(x_{i+L} | x_i) = Π q(x_{k+1} | x_k) and repeats, which
    harmonises the filled region with the known one (costs ≈ jump_n_sample× the network evaluations).
    ``mask`` must broadcast to the image shape, e.g. (H, W), (B, 1, H, W); soft values in [0, 1] blend.
    """
    _check_image(image)
    mask = torch.as_tensor(mask)
    try:
        shape = torch.broadcast_shapes(mask.shape, image.shape)
    except RuntimeError:
        shape = None
    if shape != image.shape:
        raise ConfigError(f"the mask has shape {tuple(mask.shape)} but the image has shape {tuple(image.shape)}; "
                          f"give a mask of the image's size (H, W) = {tuple(image.shape[-2:])}")
    mask = mask.to(device=image.device, dtype=image.dtype)
    if mask.numel() and (mask.min() < 0 or mask.max() > 1):
        raise ConfigError("mask values must lie in [0, 1] (1 = keep the pixel, 0 = fill it in)")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (jump_length, jump_n_sample)):
        raise ConfigError(f"jump_length and jump_n_sample must be whole numbers >= 1, got {jump_length!r} and "
                          f"{jump_n_sample!r}")
    if jump_n_sample > 1 and config.sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"resampling jumps (jump_n_sample > 1) need the 'ddpm' or 'ddim' sampler, "
                          f"not the multistep '{config.sampler}'")
    schedule = config.schedule(process)  # validates steps
    rp, kept, steps = schedule.process, schedule.kept, schedule.steps

    def project(x: Tensor, t_next: int) -> Tensor:
        known = image if t_next < 0 else process.q_sample(image, t_next, generator=generator)
        return _blend(x, known, mask)

    if noise is None:
        noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    x = project(noise, kept[-1])
    if jump_n_sample == 1:
        return run_sampler(model_fn, x, schedule, config, generator=generator, callback=callback,
                           clip_denoised=clip_denoised, project=project)

    if config.sampler == "ddpm":
        def step(out, x, i):
            return ddpm_step(rp, out, x, i, generator=generator, clip_denoised=clip_denoised)
    else:
        eta = config.eta if config.eta is not None else ETA_DEFAULTS["ddim"]

        def step(out, x, i):
            return ddim_step(rp, out, x, i, eta=eta, generator=generator, clip_denoised=clip_denoised)
    states = repaint_schedule(steps, jump_length, jump_n_sample)
    total = sum(1 for a, b in zip(states, states[1:]) if b < a)
    done = 0
    for cur, nxt in zip(states, states[1:]):
        if nxt < cur:  # one reverse step cur -> cur − 1, then re-impose the known pixels
            out, _ = _evaluate(model_fn, rp, x, cur)
            x, pred_x0 = step(out, x, cur)
            x = project(x, kept[nxt] if nxt >= 0 else -1)
            if callback is not None:
                callback({"step": done, "steps": total, "t": int(rp.timestep_map[cur]), "x": x, "pred_x0": pred_x0})
            done += 1
        else:  # jump back: x_nxt ~ q(x_nxt | x_cur) = N(√(ᾱ_nxt/ᾱ_cur) x_cur, (1 − ᾱ_nxt/ᾱ_cur) I)
            ratio = float(rp.alphas_cumprod[nxt] / rp.alphas_cumprod[cur])
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = math.sqrt(ratio) * x + math.sqrt(1.0 - ratio) * z
    return x


def img2img_start(steps: int, strength: float) -> int:
    """The first step run by img2img: the last ⌈strength·steps⌉ of ``steps`` are run."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
        raise ConfigError(f"strength must be in (0, 1] (0 keeps the image, 1 ignores it), got {strength!r}")
    n_run = max(1, math.ceil(round(strength * steps, 9)))
    return steps - min(n_run, steps)


@torch.no_grad()
def img2img(model_fn: ModelFn, process: GaussianDiffusion, image: Tensor, strength: float, config: SamplingConfig,
            *, generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """SDEdit (Meng et al. 2022): noise ``image`` with q(x_t | x_0) to the level of the first step that runs
    (≈ strength·T), then run the last ⌈strength·steps⌉ of the config's sampler steps. Small strength stays close
    to the image; strength 1 starts from (almost) pure noise."""
    _check_image(image)
    schedule = config.schedule(process)  # validates steps
    start = img2img_start(schedule.steps, strength)
    t0 = schedule.kept[schedule.steps - 1 - start]
    x = process.q_sample(image, t0, generator=generator)
    return run_sampler(model_fn, x, schedule, config, generator=generator, callback=callback, start_step=start)
