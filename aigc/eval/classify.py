"""Accuracy of class-conditional samples under a classifier trained on the real images.

A generator asked for class k should make images that a good classifier of
the real data calls k. ``cached_classifier`` trains the small CNN of
``aigc.models.classifier`` once per (data set, image size) and keeps its weights
as safetensors (config in the metadata) under ``$AIGC_CACHE/classifier``.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..data.cache import cache_root
from ..data.images import ImageDataset, to_model_range
from ..errors import DataError
from ..models.classifier import Classifier, ClassifierConfig


def train_classifier(dataset: ImageDataset, epochs: int = 3, seed: int = 0, batch_size: int = 128,
                     lr: float = 2e-3, cfg: ClassifierConfig | None = None, progress: bool = False) -> Classifier:
    """Train a :class:`Classifier` on a labelled data set with Adam (cosine-decayed learning rate);
    the same seed gives the same weights."""
    if dataset.labels is None or dataset.num_classes < 2:
        raise DataError(f"the data set {dataset.name!r} has no class labels (or only one class); "
                        "a classifier needs at least two labelled classes")
    cfg = cfg or ClassifierConfig(in_channels=dataset.channels, image_size=dataset.image_size,
                                  num_classes=dataset.num_classes)
    torch.manual_seed(seed)
    model = Classifier(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(dataset)
    steps_per_epoch = math.ceil(n / batch_size)
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    g = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="classifier", unit="step")
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            loss = F.cross_entropy(model(to_model_range(dataset.images[idx])), dataset.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
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
