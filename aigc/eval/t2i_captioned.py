"""How good, and how faithful to its prompts, a text-to-image model trained on captioned images is.

For ``emoji`` (and a user's folder with a captions file), at each guidance scale:

* **FID / KID** (Heusel et al. 2017; Bińkowski et al. 2018) of images generated
  from the primary captions of real images, against the Inception statistics of
  those real images, at the model's size. On ``emoji`` the reference is the
  *whole* set (train + test, 1,899 emoji): 152 held-out images are too few for
  stable 2048-d statistics, and FID measures image quality, not memorisation.
  The ``n`` prompts are the captions of a fixed subset (seed 0) of the
  reference. A folder, where the model saw the train split, is measured against
  its test split (and the same generated images serve retrieval). ``n`` and
  ``n_ref`` are the sample counts.
* **Retrieval accuracy** (top-1 / top-5, image->text and text->image) of images
  generated from the held-out (test split) primary captions, under the small
  contrastive model of :mod:`aigc.eval.retrieval` trained on the train split
  only. The same numbers on the real held-out images are the ceiling (``real``),
  k / candidates the floor (``chance``).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.captioned import CaptionedImages, load_captioned_images
from ..diffusion import SamplingConfig
from ..errors import ConfigError, DataError
from ..models.contrastive import ContrastiveModel
from .fid import InceptionFeatures, fid_kid, reference_stats
from .image import batch_sampling
from .retrieval import cached_contrastive, real_image_retrieval, retrieval_accuracy
from .t2i_shapes import generate_for_prompts, save_figure

if TYPE_CHECKING:  # a type only: eval never imports the family layer
    from ..families.image.model import ImageModel

Features = Callable[..., np.ndarray]  # f(uint8 images (N, C, H, W), progress=bool) -> (N, D), like InceptionFeatures


def _fixed_subset(data: CaptionedImages, n: int) -> CaptionedImages:
    """The same n images of ``data`` every time (seed 0, whatever the sampling seed), in data order."""
    if n >= len(data):
        return data
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return data.subset(pick.tolist())


def _split_chance(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Retrieval metrics -> (accuracies with counts, chance levels under their plain names)."""
    chance = {k.removeprefix("chance_"): v for k, v in metrics.items() if k.startswith("chance_")}
    return {k: v for k, v in metrics.items() if not k.startswith("chance_")}, chance


def evaluate_captioned(im: ImageModel, sampling: SamplingConfig | None = None, *, n: int = 200,
                       guidance: Sequence[float] = (4.0,), batch_size: int = 50,
                       progress: bool = False, features: Features | None = None,
                       contrastive: ContrastiveModel | None = None, k: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """FID/KID of ``n`` images (from captions of the reference images) and retrieval accuracy of images
    from at most ``n`` held-out captions, at each guidance scale (which replaces the one in ``sampling``;
    see the module docstring).

    ``features`` stands in for the Inception (default: :class:`InceptionFeatures`) and ``contrastive`` for
    the cached contrastive model trained on the train split (default: :func:`cached_contrastive`)."""
    if not im.text_conditional:
        raise ConfigError(f"'{im.path}' is not a text-to-image model (train one with `aigc train t2i`)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"FID needs at least 2 generated images: give --n 2 or more, got {n!r}")
    if not guidance:
        raise ConfigError("give one or more guidance scales")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    sampling = im.sampling(sampling)
    configs = [replace(sampling, guidance=scale) for scale in guidance]  # every scale checked up front
    data = im.config.get("data")
    if not isinstance(data, str) or not data:
        raise ConfigError(f"'{im.path}' does not record the data it was trained on; cannot pick the reference")
    if data == "shapes":
        raise ConfigError("shapes models are measured by prompt adherence (evaluate_shapes_adherence)")
    size = im.image_shape[-1]
    ref_split = "all" if data == "emoji" else "test"
    pool = load_captioned_images(data, ref_split, size)     # DataError when the data is gone or unknown
    heldout = load_captioned_images(data, "test", size)
    if len(pool) < 2:
        raise DataError(f"the {ref_split} split of '{data}' has {len(pool)} image(s); FID needs at least 2 "
                        "(add captioned images)")
    fid_prompts = _fixed_subset(pool, n).primary_captions
    queries = _fixed_subset(heldout, n)
    same_prompts = fid_prompts == queries.primary_captions  # a folder: one set of images serves both
    features = features if features is not None else InceptionFeatures(progress=progress)
    ref = reference_stats(data, ref_split, features, image_size=size, captioned=True, progress=progress)
    train_size = None
    if contrastive is None:
        train = load_captioned_images(data, "train", size)
        train_size = len(train)
        contrastive = cached_contrastive(train, progress=progress)
    real, chance = _split_chance(real_image_retrieval(contrastive, queries, k))
    result: dict[str, Any] = {
        "data": data, "image_size": size, **sampling.params(), "guidance": list(guidance), "n": len(fid_prompts), "n_ref": ref.count,
        "fid_reference": ref_split,  # the split of real images the FID is taken against ("all" = train + test)
        "retrieval_split": "test", "retrieval_prompts": len(queries), "contrastive_train_images": train_size,
        "real": real, "chance": chance, "scores": []}
    bar = None
    if progress:
        from tqdm import tqdm
        per_scale = len(fid_prompts) + (0 if same_prompts else len(queries))
        bar = tqdm(total=per_scale * len(guidance), desc="generating", unit="img")
    on_batch = bar.update if bar is not None else None
    query_batch = -(-len(fid_prompts) // batch_size)  # seeds after the FID batches': no shared noise
    t0 = time.perf_counter()
    try:
        for cfg in configs:
            common = {"batch_size": batch_size, "on_batch": on_batch}
            images = generate_for_prompts(im, fid_prompts, cfg, **common)
            score: dict[str, Any] = {"guidance": cfg.guidance}
            score.update(fid_kid(features(images, progress=False), ref,
                                 kid_subset_size=min(1000, len(fid_prompts), ref.count)))
            if not same_prompts:
                images = generate_for_prompts(im, queries.primary_captions, batch_sampling(cfg, query_batch),
                                              **common)
            score.update(_split_chance(retrieval_accuracy(contrastive, images, queries.primary_captions, k=k))[0])
            result["scores"].append(score)
    finally:
        if bar is not None:
            bar.close()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def plot_captioned(result: dict[str, Any], path) -> None:
    """FID and top-1 retrieval (with the real-image ceiling and chance) against the guidance scale, as a
    PNG (written under a temporary name, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(result["scores"], key=lambda r: r["guidance"])
    scales = [r["guidance"] for r in rows]
    fig, (ax_fid, ax_ret) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    ax_fid.plot(scales, [r["fid"] for r in rows], "-o", color="black", ms=3)
    ax_fid.set_title(f"FID ({result['n']} generated vs {result['n_ref']} real)", fontsize=9)
    for key, colour in (("image_to_text@1", "tab:blue"), ("text_to_image@1", "tab:red")):
        ax_ret.plot(scales, [100 * r[key] for r in rows], "-o", color=colour, ms=3, label=key)
        ax_ret.axhline(100 * result["real"][key], color=colour, ls="--", lw=1, label=f"{key} (real)")
    ax_ret.axhline(100 * result["chance"]["image_to_text@1"], color="grey", ls=":", lw=1, label="chance")
    ax_ret.set_title(f"retrieval on {result['retrieval_prompts']} held-out prompts", fontsize=9)
    ax_ret.set_ylabel("accuracy (%)")
    ax_ret.legend(fontsize=7)
    for ax in (ax_fid, ax_ret):
        ax.set_xlabel("guidance scale")
    fig.tight_layout()
    save_figure(fig, path)
