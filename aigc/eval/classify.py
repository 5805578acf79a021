"""Accuracy of class-conditional samples under a classifier trained on the real images.

A generator asked for class k should make images that a good classifier of
the real data calls k. ``train_classifier`` trains the small CNN of
``aigc.models.classifier`` through the shared :class:`~aigc.train.trainer.Trainer`
(in a throwaway run folder); ``cached_classifier`` does so once per (data set,
image size) and keeps its weights as safetensors (config in the metadata) under
``$AIGC_CACHE/classifier``.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..data.cache import cache_root
from ..data.images import ImageDataset, to_model_range
from ..errors import ConfigError, DataError
from ..models.classifier import Classifier, ClassifierConfig
from ..train.config import TrainConfig
from ..train.trainer import Trainer


class _EpochBatches:
    """The batch source: every step's image indices, drawn up front as epochs of random permutations
    from one generator (the stream a step-by-step loop draws), so a batch is a pure function of the
    step. The last batch of an epoch is short when ``batch_size`` does not divide N."""

    def __init__(self, dataset: ImageDataset, epochs: int, batch_size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        n = len(dataset)
        self.images, self.labels = dataset.images, dataset.labels
        self.steps: list[Tensor] = []
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g)
            self.steps += [perm[s:s + batch_size] for s in range(0, n, batch_size)]

    def batch(self, step: int, part: int, parts: int) -> tuple[Tensor, Tensor]:
        if parts != 1:
            raise ConfigError("the classifier trains in one process without gradient accumulation")
        idx = self.steps[step]
        return to_model_range(self.images[idx]), self.labels[idx]  # (B, C, H, W) in [-1, 1], (B,)

    def items(self, step: int) -> int:
        return len(self.steps[step])


def train_classifier(dataset: ImageDataset, epochs: int = 3, seed: int = 0, batch_size: int = 128,
                     lr: float = 2e-3, cfg: ClassifierConfig | None = None, progress: bool = False) -> Classifier:
    """Train a :class:`Classifier` on a labelled data set with Adam (cosine-decayed learning rate) through
    the :class:`~aigc.train.trainer.Trainer`, on the CPU, in a temporary run folder; the same seed gives
    the same weights."""
    if dataset.labels is None or dataset.num_classes < 2:
        raise DataError(f"the data set {dataset.name!r} has no class labels (or only one class); "
                        "a classifier needs at least two labelled classes")
    if batch_size < 1 or not lr > 0:
        raise ConfigError(f"the classifier needs batch_size >= 1 and lr > 0, got {batch_size} and {lr}")
    cfg = cfg or ClassifierConfig(in_channels=dataset.channels, image_size=dataset.image_size,
                                  num_classes=dataset.num_classes)
    torch.manual_seed(seed)
    model = Classifier(cfg)
    source = _EpochBatches(dataset, epochs, batch_size, seed)
    total = len(source.steps)
    if total == 0:  # epochs <= 0: the untrained model, as before
        return model.eval()
    # Dropout draws on one stream of torch's global RNG continued from the model's initialisation, not on
    # the Trainer's per-step seeds: the weights stay those of the step-by-step loop (nothing here resumes).
    rng = [torch.get_rng_state()]

    def objective(m: Classifier, batch: tuple[Tensor, Tensor]) -> Tensor:
        torch.set_rng_state(rng[0])
        loss = F.cross_entropy(m(batch[0]), batch[1])
        rng[0] = torch.get_rng_state()
        return loss

    # Adam == AdamW without weight decay; lr * 0.5 (1 + cos(pi s / total)), no warmup, no clipping
    tc = TrainConfig(batch_size=batch_size, lr=lr, min_lr=0.0, schedule="cosine", warmup_steps=0,
                     max_steps=total, weight_decay=0.0, beta1=0.9, beta2=0.999, grad_clip=0.0,
                     eval_interval=total, log_interval=total, seed=seed, device="cpu", precision="fp32",
                     threads=None)
    with tempfile.TemporaryDirectory(prefix="aigc-classifier-") as run_dir:
        with Trainer(model, objective, source, tc, Path(run_dir), kind="classifier", unit="images",
                     meta={"classifier": asdict(cfg), "data": dataset.name}, progress=progress) as trainer:
            trainer.fit()
    return model.eval()


@torch.inference_mode()
def predict(model: Classifier, images: Tensor, batch_size: int = 512) -> Tensor:
    """Class ids (N,) for uint8 images (N, C, H, W)."""
    was_training = model.training
    model.eval()
    out = [model(to_model_range(images[s:s + batch_size])).argmax(dim=1) for s in range(0, images.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def classifier_accuracy(model: Classifier, images: Tensor, labels: Tensor) -> float:
    """Fraction of uint8 images (N, C, H, W) that the classifier assigns to ``labels`` (N,)."""
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"need as many labels as images (and at least one): {images.shape[0]} vs {labels.shape[0]}")
    return float((predict(model, images) == labels.to(torch.long)).float().mean())


def cached_classifier(dataset: ImageDataset, epochs: int = 3, seed: int = 0, cache_dir: str | Path | None = None,
                      progress: bool = False) -> Classifier:
    """``train_classifier`` once per (data set, image size, size of the set, epochs, seed); later calls load
    the weights from ``cache_dir`` (default ``$AIGC_CACHE/classifier`` or ``~/.cache/aigc/classifier``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.name or "images")
    key = f"{name}-{dataset.image_size}px-{dataset.channels}ch-n{len(dataset)}-e{epochs}-s{seed}"
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "classifier"
    file = folder / f"{key}.safetensors"
    if file.is_file():
        try:
            with safe_open(str(file), framework="pt") as f:
                meta = f.metadata() or {}
            model = Classifier(ClassifierConfig(**json.loads(meta["config"])))
            model.load_state_dict(load_file(str(file)))
            return model.eval()
        except (OSError, ValueError, KeyError, RuntimeError, TypeError):
            pass  # unreadable or foreign cache entry: retrain and overwrite
    model = train_classifier(dataset, epochs=epochs, seed=seed, progress=progress)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".tmp{os.getpid()}")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"config": json.dumps(asdict(model.config))})
    os.replace(tmp, file)
    return model
