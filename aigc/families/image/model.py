"""A trained diffusion model behind generate(), inpaint() and img2img().

Images go in and come out as (N, C, H, W) uint8 tensors; ``save_png`` and
``make_grid`` in :mod:`aigc.data.image_files` turn them into files. Every call
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

from ...checkpoint.loading import build_model
from ...config import from_dict
from ...data.images import from_model_range, to_model_range
from ...diffusion import GaussianDiffusion, SamplingConfig, classifier_free, guided, img2img, inpaint, sample
from ...diffusion.config import DiffusionConfig
from ...diffusion.sampling import sampling_config
from ...diffusion.samplers import RowGenerators, draw_noise
from ...errors import CheckpointError, ConfigError
from ...models.t2i import TextCondition, TextToImage
from ...models.unet import UNet, UNetConfig
from ...tokenizers.batch import TokenBatch

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
        if not guidance > 0 or guidance == float("inf"):
            raise ConfigError(f"guidance must be a finite number > 0 (1 = plain conditional model), got {guidance}")
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

    def sampling(self, sampling: SamplingConfig | None = None, **options: Any) -> SamplingConfig:
        """``sampling`` (default: the defaults) with keyword overrides, checked against this model's
        schedule, so bad options fail before any sampling."""
        cfg = sampling_config(sampling, **options)
        cfg.schedule(self.process)
        return cfg

    # ---- generation -------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int = 16, sampling: SamplingConfig | None = None, *,
                 label: list[int | str] | int | str | None = None, prompt: Prompts = None,
                 negative_prompt: Prompts = None, callback: Callback | None = None,
                 row_seeds: list[tuple[int, int]] | None = None, **options: Any) -> Tensor:
        """n new images, (n, C, H, W) uint8, sampled as ``sampling`` says (a :class:`SamplingConfig`;
        keyword ``options`` such as ``steps=10, guidance=3, seed=1`` replace its fields). ``label``: one
        class (index or name) for all, or one per image; None samples the unconditional model. A
        text-to-image model takes ``prompt`` (one for all, or one per image; "" or None is unconditional)
        and ``negative_prompt``. ``guidance`` > 1 strengthens the class or prompt. ``row_seeds``
        ``[(seed, count), ...]`` seeds blocks of the n images apart (replacing the config's seed): each block
        gets the images it would get alone (the service batches requests this way)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n must be a whole number >= 1, got {n!r}")
        cfg = self.sampling(sampling, **options)
        fn = self.model_fn(n, label, cfg.guidance, prompt, negative_prompt)
        if row_seeds is not None:
            if sum(count for _, count in row_seeds) != n:
                raise ConfigError(f"row_seeds cover {sum(c for _, c in row_seeds)} images, not {n}")
            g: torch.Generator | RowGenerators = RowGenerators.from_seeds(row_seeds, self.device)
        else:
            g = cfg.generator(self.device)
        noise = draw_noise((n, *self.image_shape), g, torch.float32, self.device)
        x = sample(fn, noise, self.process, cfg, generator=g, callback=callback)
        return from_model_range(x.cpu())

    @torch.no_grad()
    def inpaint(self, image: Tensor, mask: Tensor, sampling: SamplingConfig | None = None, *,
                label: int | str | None = None, prompt: Prompts = None, negative_prompt: Prompts = None,
                jump_length: int = 10, jump_n_sample: int = 1, callback: Callback | None = None,
                **options: Any) -> Tensor:
        """Fill the pixels where ``mask`` is 0, keep those where it is 1 (RePaint; ``jump_n_sample`` > 1
        resamples every ``jump_length`` steps). image (C, H, W) or (N, C, H, W) uint8; mask (H, W) or
        broadcastable, values in [0, 1]. Returns uint8 like the input batch."""
        x0 = self._images_in(image)
        cfg = self.sampling(sampling, **options)
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.shape[-2:] != x0.shape[-2:]:
            raise ConfigError(f"the mask is {tuple(mask.shape[-2:])} but the image is {tuple(x0.shape[-2:])}; "
                              "give a mask of the image's size")
        g = cfg.generator(self.device)
        fn = self.model_fn(x0.size(0), label, cfg.guidance, prompt, negative_prompt)
        out = inpaint(fn, self.process, x0, mask.to(self.device), cfg, jump_length=jump_length,
                      jump_n_sample=jump_n_sample, generator=g, callback=callback)
        return from_model_range(out.cpu())

    @torch.no_grad()
    def img2img(self, image: Tensor, sampling: SamplingConfig | None = None, *, strength: float = 0.6,
                label: int | str | None = None, prompt: Prompts = None, negative_prompt: Prompts = None,
                callback: Callback | None = None, **options: Any) -> Tensor:
        """SDEdit: noise the image to ``strength`` (0 keeps it, 1 ignores it) and denoise it again."""
        x0 = self._images_in(image)
        cfg = self.sampling(sampling, **options)
        g = cfg.generator(self.device)
        fn = self.model_fn(x0.size(0), label, cfg.guidance, prompt, negative_prompt)
        out = img2img(fn, self.process, x0, strength, cfg, generator=g, callback=callback)
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
    return ImageModel(model, read_process(folder, config), config, Path(folder))


def read_process(folder: Path, config: dict[str, Any]) -> GaussianDiffusion:
    """The diffusion process a checkpoint was trained with."""
    try:
        return from_dict(DiffusionConfig, config["diffusion"]).process()
    except KeyError:
        raise CheckpointError(f"checkpoint '{folder}' has no diffusion settings") from None
