"""Noise-level experts: one trained image model per range of diffusion timesteps, joined at sampling
(eDiff-I, Balaji et al. 2022).

A picture's layout — where each object goes, and so the relations a caption states — is decided at
the noisiest steps, its shapes and edges later. A single small network trained on every noise level
spends little of its training on the first part; runs trained each on its own range (a run's
timesteps are placed by ``--diffusion.logit_normal_mean`` / ``--diffusion.logit_normal_std``) can be
joined: at every step the sampler asks the expert whose range holds the current t. Each expert keeps
its own text encoder and tokenizer, so the runs need only share the image size and the diffusion
process (schedule, T, what the network predicts, Σ).

A folder of experts holds ``experts.json`` and loads like a run (``aigc.load``, ``--model``)::

    {"experts": [{"model": "../detail", "from_t": 0}, {"model": "../layout", "from_t": 850}]}

``model`` paths are relative to the folder; an expert serves t from its ``from_t`` up to the next
expert's (the first starts at 0; t counts the training schedule's steps, 0 .. T-1). An entry may fix
its own classifier-free guidance scale (``"guidance": 2``); the others take the scale asked for at
sampling. Strong guidance sharpens shapes but, on the noisiest steps, also crowds objects together, so
a layout expert can be steered more gently than the detail expert (guidance limited to an interval of
noise levels, Kynkäänniemi et al. 2024).
"""
from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import Tensor

from ...errors import CheckpointError, ConfigError
from .model import ImageModel

EXPERTS_FILE = "experts.json"
# what every expert must agree on for one process to read all their outputs
SHARED_DIFFUSION = ("timesteps", "schedule", "mean_type", "learn_sigma", "fixed_variance")


class ExpertImageModel(ImageModel):
    """Image models that each denoise one range of timesteps; ``generate``, ``inpaint`` and ``img2img``
    route every network call by its t. ``model``, ``encode_prompts`` and ``config`` are the first
    (lowest-noise) expert's."""

    def __init__(self, experts: Sequence[tuple[int, ImageModel]], path: Path,
                 guidance: Sequence[float | None] | None = None) -> None:
        """``experts``: (from_t, model) pairs; ``guidance``: per pair, a fixed guidance scale or None
        (take the scale asked for at sampling)."""
        guidance = [None] * len(experts) if guidance is None else list(guidance)
        if len(guidance) != len(experts):
            raise ConfigError(f"{len(experts)} experts but {len(guidance)} guidance entries")
        for g in guidance:
            if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not g > 0):
                raise ConfigError(f"an expert's guidance must be a positive number (1 = no guidance), got {g!r}")
        order = sorted(range(len(experts)), key=lambda i: experts[i][0])
        experts, guidance = [experts[i] for i in order], [guidance[i] for i in order]
        if not experts or experts[0][0] != 0:
            raise ConfigError("the experts must cover every timestep: the first needs from_t 0")
        starts = [s for s, _ in experts]
        if len(set(starts)) != len(starts):
            raise ConfigError(f"two experts start at the same timestep: {starts}")
        base = experts[0][1]
        for start, im in experts:
            if isinstance(im, ExpertImageModel) or not isinstance(im, ImageModel):
                raise ConfigError(f"expert '{getattr(im, 'path', im)}' must be one trained image model, "
                                  "not a folder of experts")
            if start >= im.process.num_timesteps:
                raise ConfigError(f"expert '{im.path}' starts at t={start}, past its schedule's "
                                  f"{im.process.num_timesteps} steps")
            _check_compatible(base, im)
        listed = [{"model": str(im.path), "from_t": s, **({} if g is None else {"guidance": g})}
                  for (s, im), g in zip(experts, guidance)]
        super().__init__(base.model, base.process, {**base.config, "experts": listed}, Path(path),
                         tokenize=base.tokenize)
        self.class_names = base.class_names
        self.experts: list[tuple[int, ImageModel]] = list(experts)
        self.guidance: list[float | None] = guidance

    def _index(self, t: int) -> int:
        return bisect.bisect_right([start for start, _ in self.experts], t) - 1

    def expert_for(self, t: int) -> ImageModel:
        """The expert that denoises timestep ``t``."""
        return self.experts[self._index(t)][1]

    def model_fn(self, n: int, labels: Any, guidance: float, prompt: Any = None,
                 negative_prompt: Any = None) -> Callable[[Tensor, Tensor], Tensor]:
        fns = [im.model_fn(n, labels, guidance if own is None else float(own), prompt, negative_prompt)
               for (_, im), own in zip(self.experts, self.guidance)]

        def routed(x: Tensor, t: Tensor) -> Tensor:
            lo, hi = int(t.min()), int(t.max())
            k = self._index(lo)
            if self._index(hi) != k:
                raise ValueError(f"one batch spans timesteps {lo}..{hi} of two experts; give one t per call")
            return fns[k](x, t)

        return routed


def _check_compatible(base: ImageModel, other: ImageModel) -> None:
    if other.image_shape != base.image_shape:
        raise ConfigError(f"expert '{other.path}' makes {other.image_shape} images, '{base.path}' {base.image_shape}")
    if other.text_conditional != base.text_conditional or other.class_names != base.class_names:
        raise ConfigError(f"experts '{base.path}' and '{other.path}' are conditioned differently "
                          "(prompts against classes, or different classes)")
    a, b = base.config.get("diffusion", {}), other.config.get("diffusion", {})
    differ = [k for k in SHARED_DIFFUSION if a.get(k) != b.get(k)]
    if differ:
        raise ConfigError(f"experts '{base.path}' and '{other.path}' were trained with different diffusion "
                          f"processes ({', '.join(f'{k}: {a.get(k)} / {b.get(k)}' for k in differ)})")


def is_experts_folder(path: str | Path) -> bool:
    return (Path(path) / EXPERTS_FILE).is_file()


def open_experts(folder: str | Path, load: Callable[..., Any], **kwargs: Any) -> ExpertImageModel | None:
    """The experts of ``folder`` when it holds an ``experts.json`` (else None), each loaded by ``load``."""
    return load_experts(folder, load, **kwargs) if is_experts_folder(folder) else None


def load_experts(folder: str | Path, load: Callable[..., Any], **kwargs: Any) -> ExpertImageModel:
    """The experts listed in ``folder/experts.json``, each loaded by ``load(path, **kwargs)``."""
    folder = Path(folder)
    try:
        spec = json.loads((folder / EXPERTS_FILE).read_text(encoding="utf-8"))
        entries = [(e["model"], e["from_t"], e.get("guidance")) for e in spec["experts"]]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"'{folder / EXPERTS_FILE}' is not a list of experts ("
                              '{"experts": [{"model": PATH, "from_t": T[, "guidance": G]}, ...]}'
                              f"): {exc}") from None
    if not entries:
        raise CheckpointError(f"'{folder / EXPERTS_FILE}' names no experts")
    experts, guidance = [], []
    for model, start, scale in entries:
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise CheckpointError(f"from_t of expert '{model}' must be a whole number >= 0, got {start!r}")
        path = Path(model) if Path(model).is_absolute() else folder / model
        if is_experts_folder(path):
            raise CheckpointError(f"expert '{model}' is itself a folder of experts; list its experts instead")
        im = load(path, **kwargs)
        if not isinstance(im, ImageModel):
            raise CheckpointError(f"expert '{model}' is not an image diffusion model")
        experts.append((start, im))
        guidance.append(scale)
    try:
        return ExpertImageModel(experts, folder, guidance)
    except ConfigError as exc:
        raise CheckpointError(f"'{folder / EXPERTS_FILE}': {exc}") from None
