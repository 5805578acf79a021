"""A trained diffusion model behind generate(), inpaint() and img2img().

Images go in and come out as (N, C, H, W) uint8 tensors; ``save_png`` and
``make_grid`` in :mod:`aigc.generate.images` turn them into files. Every call
takes a seed (same seed, same pictures) and a per-step callback (progress,
previews, cancellation by raising).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..config import from_dict
from ..data.images import from_model_range, to_model_range
from ..diffusion import SAMPLERS, GaussianDiffusion, classifier_free, img2img, inpaint
from ..diffusion.config import DiffusionConfig
from ..errors import CheckpointError, ConfigError
from ..models.unet import UNet, UNetConfig
from .loading import build_model

Callback = Callable[[dict], None]


class ImageModel:
    """A trained UNet, the diffusion process it was trained with, and its class names."""

    def __init__(self, model: UNet, process: GaussianDiffusion, config: dict[str, Any], path: Path) -> None:
        self.model, self.process, self.config, self.path = model.eval(), process, config, path
        self.class_names: list[str] = list(config.get("class_names") or [])

    # ---- what the model is --------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        cfg = self.model.config
        return cfg.in_channels, cfg.image_size, cfg.image_size

    @property
    def num_classes(self) -> int:
        return self.model.config.num_classes or 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def class_index(self, label: int | str) -> int:
        """A class given by index or name -> its index; ConfigError when this model has no such class."""
        if not self.num_classes:
            raise ConfigError(f"'{self.path}' is an unconditional model: it takes no class")
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in self.class_names:
                raise ConfigError(f"unknown class '{label}'; this model knows: {', '.join(self.class_names)}")
            return self.class_names.index(label)
        index = int(label)
        if not 0 <= index < self.num_classes:
            raise ConfigError(f"class {index} is outside this model's classes 0..{self.num_classes - 1}")
        return index

    # ---- the network as the samplers call it ----------------------------------------
    def model_fn(self, n: int, labels: list[int | str] | int | str | None, guidance: float) -> Callable:
        """``model_fn(x, t)`` for a batch of n: conditional (with classifier-free guidance) or not."""
        if guidance <= 0:
            raise ConfigError(f"guidance must be positive (1 = plain conditional model), got {guidance}")
        if not self.num_classes:
            if labels is not None:
                raise ConfigError(f"'{self.path}' is an unconditional model: it takes no class")
            if guidance != 1.0:
                raise ConfigError("guidance needs a class-conditional model; this one is unconditional")
            return lambda x, t: self.model(x, t)
        if labels is None:  # the null class: the model's unconditional half
            y = torch.full((n,), self.num_classes, dtype=torch.long)
            if guidance != 1.0:
                raise ConfigError("guidance needs a class to steer towards; give one")
            return lambda x, t: self.model(x, t, y.to(x.device))
        if isinstance(labels, (int, str)):
            labels = [labels] * n
        if len(labels) != n:
            raise ConfigError(f"{len(labels)} classes given for {n} images")
        y = torch.tensor([self.class_index(c) for c in labels], dtype=torch.long)
        return classifier_free(self.model, y, guidance, null_label=self.num_classes,
                               learned_sigma=self.process.learned_sigma)

    def _generator(self, seed: int | None) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(seed if seed is not None else torch.seed())
        return g

    def check_request(self, sampler: str, steps: int) -> None:
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{sampler}'; choose one of {', '.join(SAMPLERS)}")
        T = self.process.num_timesteps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
            raise ConfigError(f"steps must be a whole number in 1..{T} (this model's schedule), got {steps!r}")

    # ---- generation -------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int = 16, *, sampler: str = "dpm++", steps: int = 20,
                 label: list[int | str] | int | str | None = None, guidance: float = 1.0,
                 seed: int | None = 0, callback: Callback | None = None, eta: float = 0.0) -> Tensor:
        """n new images, (n, C, H, W) uint8. ``label``: one class (index or name) for all, or one per
        image; None samples the unconditional model. ``guidance`` > 1 strengthens the class."""
        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        self.check_request(sampler, steps)
        fn = self.model_fn(n, label, guidance)
        g = self._generator(seed)
        noise = torch.randn((n, *self.image_shape), generator=g, device=self.device)
        extra = {"eta": eta} if sampler == "ddim" else {}
        x = SAMPLERS[sampler](fn, noise, self.process, steps, generator=g, callback=callback, **extra)
        return from_model_range(x.cpu())

    @torch.no_grad()
    def inpaint(self, image: Tensor, mask: Tensor, *, sampler: str = "ddpm", steps: int = 50,
                label: int | str | None = None, guidance: float = 1.0, jump_length: int = 10,
                jump_n_sample: int = 1, seed: int | None = 0, callback: Callback | None = None) -> Tensor:
        """Fill the pixels where ``mask`` is 0, keep those where it is 1. image (C, H, W) or (N, C, H, W)
        uint8; mask (H, W) or broadcastable, values in [0, 1]. Returns uint8 like the input batch."""
        x0 = self._images_in(image)
        self.check_request(sampler, steps)
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.shape[-2:] != x0.shape[-2:]:
            raise ConfigError(f"the mask is {tuple(mask.shape[-2:])} but the image is {tuple(x0.shape[-2:])}; "
                              "give a mask of the image's size")
        g = self._generator(seed)
        fn = self.model_fn(x0.size(0), label, guidance)
        out = inpaint(fn, self.process, x0, mask.to(self.device), steps, sampler=sampler,
                      jump_length=jump_length, jump_n_sample=jump_n_sample, generator=g, callback=callback)
        return from_model_range(out.cpu())

    @torch.no_grad()
    def img2img(self, image: Tensor, *, strength: float = 0.6, sampler: str = "ddim", steps: int = 50,
                label: int | str | None = None, guidance: float = 1.0, seed: int | None = 0,
                callback: Callback | None = None) -> Tensor:
        """SDEdit: noise the image to ``strength`` (0 keeps it, 1 ignores it) and denoise it again."""
        x0 = self._images_in(image)
        self.check_request(sampler, steps)
        g = self._generator(seed)
        fn = self.model_fn(x0.size(0), label, guidance)
        out = img2img(fn, self.process, x0, strength, steps, sampler=sampler, generator=g, callback=callback)
        return from_model_range(out.cpu())

    def _images_in(self, image: Tensor) -> Tensor:
        image = torch.as_tensor(image)
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or tuple(image.shape[1:]) != self.image_shape:
            raise ConfigError(f"the image has shape {tuple(image.shape)}; this model takes "
                              f"(N, {', '.join(map(str, self.image_shape))}) images")
        if image.dtype != torch.uint8:
            raise ConfigError(f"images must be uint8 (0..255), got {image.dtype}")
        return to_model_range(image).to(self.device)


def load_image_model(folder: Path, config: dict[str, Any], ema: bool, device: str | torch.device) -> ImageModel:
    model = build_model(folder, config, UNet, UNetConfig, ema).to(device)
    try:
        process = from_dict(DiffusionConfig, config["diffusion"]).process()
    except KeyError:
        raise CheckpointError(f"checkpoint '{folder}' has no diffusion settings") from None
    return ImageModel(model, process, config, Path(folder))
