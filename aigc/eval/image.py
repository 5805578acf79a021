"""Measure a trained diffusion model as the field does: FID and KID against the data set's test split
(the TF-compatible Inception-v3), the accuracy of class-conditional samples under a classifier trained
on the real images, and the test-set NLL in bits/dim from the variational bound."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..config import MAX_SEED
from ..data.images import load_image_dataset, to_model_range
from ..diffusion import SamplingConfig
from ..errors import ConfigError
from .classify import cached_classifier, classifier_accuracy
from .fid import InceptionFeatures, fid_kid, reference_stats

if TYPE_CHECKING:  # a type only: eval never imports the family layer
    from ..families.image.model import ImageModel


def sample_for_eval(im: ImageModel, n: int, sampling: SamplingConfig, *, batch_size: int,
                    on_batch: Callable[[int], None] | None = None) -> tuple[torch.Tensor, Any]:
    """n samples in batches (batch b seeded by seed + b); a conditional model gets classes 0, 1, ...,
    K-1, 0, ... (equal shares), an unconditional one no guidance. Returns (images uint8 (n, C, H, W),
    labels (n,) or None)."""
    labels = torch.arange(n) % im.num_classes if im.num_classes else None
    out = []
    for b, start in enumerate(range(0, n, batch_size)):
        rows = min(batch_size, n - start)
        label = labels[start:start + rows].tolist() if labels is not None else None
        out.append(im.generate(rows, batch_sampling(sampling, b, guided=labels is not None), label=label))
        if on_batch is not None:
            on_batch(rows)
    return torch.cat(out), labels


def batch_sampling(sampling: SamplingConfig, batch: int, guided: bool = True) -> SamplingConfig:
    """The config of batch ``batch`` of an evaluation: seed + batch, modulo 2^64 (fresh when the seed is
    None), and no guidance where nothing conditions the model."""
    seed = None if sampling.seed is None else (sampling.seed + batch) % (MAX_SEED + 1)
    return replace(sampling, seed=seed, guidance=sampling.guidance if guided else 1.0)


def test_nll(im: ImageModel, n: int, batch_size: int = 100, seed: int = 0) -> dict[str, float]:
    """Mean bits/dim of the full variational bound (T network evaluations per image) on n test images."""
    data = load_image_dataset(im.config["data"], "test", im.image_shape[-1])
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    g = torch.Generator().manual_seed(seed)
    total, seen = 0.0, 0
    for start in range(0, len(pick), batch_size):
        idx = pick[start:start + batch_size]
        x0 = to_model_range(data.images[idx]).to(im.device)
        y = None
        if im.num_classes and data.labels is not None:  # the conditional likelihood p(x | y)
            y = data.labels[idx].to(im.device)
        out = im.process.calc_bpd_loop(lambda x, t: im.model(x, t, y), x0, generator=g)
        total += out["total_bpd"].sum().item()
        seen += len(idx)
    return {"nll_bits_per_dim": total / seen, "nll_images": seen, "nll_timesteps": im.process.num_timesteps}


def evaluate_image_model(im: ImageModel, sampling: SamplingConfig | None = None, *, n: int = 2000,
                         batch_size: int = 100, nll_images: int = 100, kid_subset_size: int = 1000,
                         ref_n: int | None = None, progress: bool = False) -> dict[str, Any]:
    """FID/KID of n samples (drawn as ``sampling`` says) against the test split (all of it, or a fixed
    subset of ``ref_n``), class accuracy (conditional models) and test NLL."""
    sampling = im.sampling(sampling)
    if n < 2:
        raise ConfigError(f"FID needs at least 2 samples, got --n {n}")
    if nll_images < 0:
        raise ConfigError(f"nll_images must not be negative, got {nll_images}")
    data_name = im.config["data"]
    size = im.image_shape[-1]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, desc="sampling", unit="img")
    t0 = time.perf_counter()
    images, labels = sample_for_eval(im, n, sampling, batch_size=batch_size,
                                     on_batch=bar.update if bar is not None else None)
    if bar is not None:
        bar.close()
    sample_s = time.perf_counter() - t0
    features = InceptionFeatures(progress=progress)
    ref = reference_stats(data_name, "test", features, image_size=size, count=ref_n, progress=progress)
    result: dict[str, Any] = {"data": data_name, **sampling.params(), "sampling_s": round(sample_s, 2)}
    result.update(fid_kid(features(images, progress=progress), ref,
                          kid_subset_size=min(kid_subset_size, n, ref.count)))
    if labels is not None:
        train = load_image_dataset(data_name, "train", size)
        classifier = cached_classifier(train, progress=progress)
        test = load_image_dataset(data_name, "test", size)
        result["classifier_test_accuracy"] = classifier_accuracy(classifier, test.images, test.labels)
        result["class_accuracy"] = classifier_accuracy(classifier, images, labels)
    if nll_images:
        result.update(test_nll(im, nll_images, batch_size))
    return result
