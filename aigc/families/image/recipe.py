"""Train a diffusion model on images: config, presets and the wiring.

images -> ImageBatches -> UNet -> DiffusionObjective (Improved DDPM's hybrid
loss, learned Σ, label dropout for guidance) -> the generic trainer,
validated by the loss terms on a fixed held-out batch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...data.images import ImageBatches, ImageDataset, load_image_dataset, to_model_range
from ...diffusion import GaussianDiffusion
from ...diffusion.config import DiffusionConfig
from ...config import check_int
from ...errors import ConfigError
from ...models.unet import UNet, UNetConfig
from ...objectives.diffusion import DiffusionObjective
from ...train.config import TrainConfig
from ...train.trainer import Trainer
from ..runs import load_preset, preset_with, refuse_existing_run, saved_config, with_data
from . import FAMILY



MAX_IMAGE_SIZE = 1024  # pixels per side a run trains at (the data are resized to it in memory)


@dataclass
class ImageRunConfig:
    data: str = "fashion-mnist"
    image_size: int = 0              # 0: the data set's own size (28 for fashion-mnist, 8 for digits)
    class_cond: bool = False         # condition on the data set's classes (+ a null class for guidance)
    hflip: bool = False              # random horizontal flips
    val_images: int = 256            # held-out images scored at each validation
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        check_int("image_size (0: the data set's own)", self.image_size, 0, MAX_IMAGE_SIZE)
        check_int("val_images", self.val_images, 1, 1_000_000)
        self.diffusion.validate()
        self.train.validate()


def preset(name: str) -> ImageRunConfig:
    return load_preset(ImageRunConfig, FAMILY.name, name)


def build_config(preset_name: str, data: str | None, overrides: dict[str, Any]) -> ImageRunConfig:
    """A preset for ``data`` with overrides; a fixed Σ (diffusion.learn_sigma false) trains with the
    plain mse loss unless diffusion.loss says otherwise (the hybrid loss needs a learned Σ)."""
    overrides = dict(overrides)
    if str(overrides.get("diffusion.learn_sigma", "")).lower() in ("false", "0", "no", "off") \
            and "diffusion.loss" not in overrides:
        overrides["diffusion.loss"] = "mse"
    return preset_with(ImageRunConfig, FAMILY.name, preset_name, with_data(data, overrides))


def resume_config(out: Path, overrides: dict[str, str]) -> ImageRunConfig:
    return saved_config(ImageRunConfig, FAMILY.kind, "an image diffusion run", out, overrides)


class DiffusionValidation:
    """The loss terms on a fixed held-out batch at fixed timesteps and noise (comparable across steps);
    ``condition`` gives the model's condition for a slice of that batch (none here)."""

    def __init__(self, process: GaussianDiffusion, images: torch.Tensor, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.index = torch.randperm(len(images), generator=g)[:n]          # which held-out images
        self.x0 = to_model_range(images[self.index])
        self.t = torch.randint(0, process.num_timesteps, (len(self.index),), generator=g)
        self.noise = torch.randn(self.x0.shape, generator=g)
        self.process = process

    def condition(self, sl: slice, device: torch.device) -> Any:
        return None

    def __call__(self, model: torch.nn.Module, batch_size: int = 64) -> dict[str, float]:
        device = next(model.parameters()).device
        sums = {"val_loss": 0.0, "val_mse": 0.0, "val_vb": 0.0}
        for i in range(0, len(self.x0), batch_size):
            sl = slice(i, i + batch_size)
            x0, t, noise = self.x0[sl].to(device), self.t[sl].to(device), self.noise[sl].to(device)
            cond = self.condition(sl, device)
            terms = self.process.training_losses(lambda x, s: model(x, s, cond), x0, t, noise)
            for key in sums:
                sums[key] += terms[key.removeprefix("val_")].sum().item()
        return {k: v / len(self.x0) for k, v in sums.items()}


class ImageValidation(DiffusionValidation):
    """Validation of an unconditional or class-conditional UNet (labels of the held-out images)."""

    def __init__(self, process: GaussianDiffusion, data: ImageDataset, n: int, class_cond: bool) -> None:
        super().__init__(process, data.images, n)
        self.y = data.labels[self.index] if class_cond and data.labels is not None else None

    def condition(self, sl: slice, device: torch.device) -> Any:
        return self.y[sl].to(device) if self.y is not None else None


def model_config(cfg: ImageRunConfig, data: ImageDataset) -> UNetConfig:
    """The UNet config completed from the data: size, channels, classes, learned Σ."""
    m = cfg.model
    m.image_size, m.in_channels = data.image_size, data.channels
    m.learn_sigma = cfg.diffusion.learn_sigma
    if cfg.class_cond:
        if data.labels is None:
            raise ConfigError(f"--class-cond needs labelled images; '{cfg.data}' has none "
                              "(give a folder class sub-folders)")
        m.num_classes = len(data.class_names) or int(data.labels.max()) + 1
    else:
        m.num_classes = None
    m.validate()
    return m


def train(cfg: ImageRunConfig, out: Path, *, resume: bool = False, stop_at: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a diffusion model into run folder ``out``; returns the final metrics."""
    out = Path(out)
    refuse_existing_run(out, resume)
    size = cfg.image_size or None
    train_data = load_image_dataset(cfg.data, "train", size)
    test_data = load_image_dataset(cfg.data, "test", size)
    model_config(cfg, train_data)
    process = cfg.diffusion.process()
    torch.manual_seed(cfg.train.seed)
    model = UNet(cfg.model)
    source = ImageBatches(train_data, cfg.train.batch_size, cfg.train.seed, hflip=cfg.hflip,
                          use_labels=cfg.class_cond)
    objective = DiffusionObjective(process, cfg.diffusion.timestep_sampler_for(process.num_timesteps),
                                   cfg.diffusion.class_dropout if cfg.class_cond else 0.0,
                                   cfg.model.num_classes if cfg.class_cond else None)
    meta = {k: v for k, v in asdict(cfg).items() if k != "train"}
    meta["class_names"] = train_data.class_names if cfg.class_cond else []
    evaluate = ImageValidation(process, test_data, cfg.val_images, cfg.class_cond)
    trainer = Trainer(model, objective, source, cfg.train, out, kind=FAMILY.kind, meta=meta, evaluate=evaluate,
                      progress=progress, unit="images")
    result = trainer.run(resume=resume, stop_at=stop_at)
    return {"run": str(out), "params": model.num_params(), "train_images": len(train_data),
            "image_size": train_data.image_size, **result}
