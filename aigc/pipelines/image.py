"""A trained diffusion model behind generate(), inpaint() and img2img().

Images go in and come out as (N, C, H, W) uint8 tensors; ``save_png`` and
``make_grid`` in :mod:`aigc.generate.images` turn them into files. Every call
takes a seed (same seed, same pictures) and a per-step callback (progress,
previews, cancellation by raising). A class-conditional model takes a class; a
text-to-image model takes a prompt (and a negative prompt for guidance to move
away from; by default the empty prompt, which is the unconditional model).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..config import from_dict
from ..data.images import from_model_range, to_model_range
from ..diffusion import DEFAULT_SAMPLER, SAMPLERS, GaussianDiffusion, classifier_free, guided, img2img, inpaint
from ..diffusion.config import DiffusionConfig
from ..errors import CheckpointError, ConfigError
from ..models.minilm import load_minilm_tokenizer
from ..models.t2i import TextCondition, TextToImage, build_text_to_image
from ..models.text_encoder import TextEncoderConfig
from ..models.unet import UNet, UNetConfig
from ..tokenizers.batch import TokenBatch, tokenize_prompts
from .loading import build_model, load_weights, read_tokenizer

Callback = Callable[[dict], None]
Prompts = list[str] | str | None


class ImageModel:
    """A trained UNet (or text-to-image model), the diffusion process it was trained with, and what it
    is conditioned on: class names, or a tokenizer for prompts."""

    def __init__(self, model: UNet | TextToImage, process: GaussianDiffusion, config: dict[str, Any], path: Path,
                 tokenize: Callable[[list[str]], TokenBatch] | None = None) -> None:
        self.model, self.process, self.config, self.path = model.eval(), process, config, path
        self.class_names: list[str] = list(config.get("class_names") or [])
        self.tokenize = tokenize

    # ---- what the model is --------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        cfg = self.model.config
        return cfg.in_channels, cfg.image_size, cfg.image_size

    @property
    def num_classes(self) -> int:
        return self.model.config.num_classes or 0

    @property
    def text_conditional(self) -> bool:
        return isinstance(self.model, TextToImage)

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
    def encode_prompts(self, prompts: list[str]) -> TextCondition:
        """Prompts -> the encoded captions the UNet attends to; a prompt longer than the text encoder
        reads is cut, with a warning."""
        if self.tokenize is None:
            raise ConfigError(f"'{self.path}' is not a text-to-image model: it takes no prompt"
                              + (" (it takes a class)" if self.num_classes else ""))
        if any(not isinstance(p, str) for p in prompts):
            raise ConfigError("prompts must be strings")
        batch = self.tokenize(list(prompts))
        for text, cut, length in zip(prompts, batch.truncated, batch.lengths):
            if cut:
                warnings.warn(f"prompt truncated to the text encoder's {batch.ids.shape[1]} tokens "
                              f"(it has {length}): {text[:60]!r}...", stacklevel=3)
        with torch.no_grad():
            return self.model.encode(batch.ids.to(self.device), batch.mask.to(self.device))

    def _prompt_list(self, prompts: Prompts, n: int, what: str) -> list[str]:
        if isinstance(prompts, str):
            return [prompts] * n
        prompts = list(prompts)
        if len(prompts) == 1:
            return prompts * n
        if len(prompts) != n:
            raise ConfigError(f"{len(prompts)} {what}s given for {n} images")
        return prompts

    def _text_model_fn(self, n: int, prompt: Prompts, negative_prompt: Prompts, guidance: float) -> Callable:
        prompts = self._prompt_list("" if prompt is None else prompt, n, "prompt")
        negatives = self._prompt_list("" if negative_prompt is None else negative_prompt, n, "negative prompt")
        unique = list(dict.fromkeys(prompts + negatives))            # encode each distinct prompt once
        encoded = self.encode_prompts(unique)
        rows = {p: i for i, p in enumerate(unique)}

        def pick(texts: list[str]) -> TextCondition:
            idx = torch.tensor([rows[p] for p in texts], device=self.device)
            return TextCondition(encoded.tokens[idx], encoded.mask[idx], encoded.pooled[idx])

        return guided(self.model, pick(prompts), pick(negatives), guidance, TextCondition.cat,
                      learned_sigma=self.process.learned_sigma)

    def model_fn(self, n: int, labels: list[int | str] | int | str | None, guidance: float,
                 prompt: Prompts = None, negative_prompt: Prompts = None) -> Callable:
        """``model_fn(x, t)`` for a batch of n: conditional (with classifier-free guidance) or not."""
        if guidance <= 0:
            raise ConfigError(f"guidance must be positive (1 = plain conditional model), got {guidance}")
        if self.text_conditional:
            if labels is not None:
                raise ConfigError(f"'{self.path}' is a text-to-image model: give a prompt, not a class")
            return self._text_model_fn(n, prompt, negative_prompt, guidance)
        if prompt is not None or negative_prompt is not None:
            raise ConfigError(f"'{self.path}' is not a text-to-image model: it takes no prompt"
                              + (" (it takes a class)" if self.num_classes else ""))
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
    def generate(self, n: int = 16, *, sampler: str = DEFAULT_SAMPLER, steps: int = 20,
                 label: list[int | str] | int | str | None = None, guidance: float = 1.0,
                 seed: int | None = 0, callback: Callback | None = None, eta: float = 0.0,
                 prompt: Prompts = None, negative_prompt: Prompts = None) -> Tensor:
        """n new images, (n, C, H, W) uint8. ``label``: one class (index or name) for all, or one per
        image; None samples the unconditional model. A text-to-image model takes ``prompt`` (one for
        all, or one per image; "" or None is unconditional) and ``negative_prompt``. ``guidance`` > 1
        strengthens the class or prompt."""
        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        self.check_request(sampler, steps)
        fn = self.model_fn(n, label, guidance, prompt, negative_prompt)
        g = self._generator(seed)
        noise = torch.randn((n, *self.image_shape), generator=g, device=self.device)
        extra = {"eta": eta} if sampler == "ddim" else {}
        x = SAMPLERS[sampler](fn, noise, self.process, steps, generator=g, callback=callback, **extra)
        return from_model_range(x.cpu())

    @torch.no_grad()
    def inpaint(self, image: Tensor, mask: Tensor, *, sampler: str = "ddpm", steps: int = 50,
                label: int | str | None = None, guidance: float = 1.0, jump_length: int = 10,
                jump_n_sample: int = 1, seed: int | None = 0, callback: Callback | None = None,
                prompt: Prompts = None, negative_prompt: Prompts = None) -> Tensor:
        """Fill the pixels where ``mask`` is 0, keep those where it is 1. image (C, H, W) or (N, C, H, W)
        uint8; mask (H, W) or broadcastable, values in [0, 1]. Returns uint8 like the input batch."""
        x0 = self._images_in(image)
        self.check_request(sampler, steps)
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.shape[-2:] != x0.shape[-2:]:
            raise ConfigError(f"the mask is {tuple(mask.shape[-2:])} but the image is {tuple(x0.shape[-2:])}; "
                              "give a mask of the image's size")
        g = self._generator(seed)
        fn = self.model_fn(x0.size(0), label, guidance, prompt, negative_prompt)
        out = inpaint(fn, self.process, x0, mask.to(self.device), steps, sampler=sampler,
                      jump_length=jump_length, jump_n_sample=jump_n_sample, generator=g, callback=callback)
        return from_model_range(out.cpu())

    @torch.no_grad()
    def img2img(self, image: Tensor, *, strength: float = 0.6, sampler: str = "ddim", steps: int = 50,
                label: int | str | None = None, guidance: float = 1.0, seed: int | None = 0,
                callback: Callback | None = None, prompt: Prompts = None,
                negative_prompt: Prompts = None) -> Tensor:
        """SDEdit: noise the image to ``strength`` (0 keeps it, 1 ignores it) and denoise it again."""
        x0 = self._images_in(image)
        self.check_request(sampler, steps)
        g = self._generator(seed)
        fn = self.model_fn(x0.size(0), label, guidance, prompt, negative_prompt)
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


def load_t2i_model(folder: Path, config: dict[str, Any], ema: bool, device: str | torch.device) -> ImageModel:
    """A text-to-image checkpoint: the UNet and its own text encoder from the weights, or the frozen
    MiniLM from its package; prompts through the run's tokenizer (or MiniLM's WordPiece)."""
    try:
        kind = config["text_encoder"]
        unet_cfg = from_dict(UNetConfig, config["model"])
        text_cfg = from_dict(TextEncoderConfig, config["text"])
        max_len = int(config["max_text_len"])
        model = build_text_to_image(unet_cfg, text_cfg, kind)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"checkpoint '{folder}' has a broken config ({exc})") from None
    load_weights(folder, model, ema)
    tokenizer = load_minilm_tokenizer() if kind == "minilm" else read_tokenizer(folder)
    try:
        process = from_dict(DiffusionConfig, config["diffusion"]).process()
    except KeyError:
        raise CheckpointError(f"checkpoint '{folder}' has no diffusion settings") from None
    return ImageModel(model.to(device), process, config, Path(folder),
                      tokenize=lambda texts: tokenize_prompts(tokenizer, texts, max_len))
