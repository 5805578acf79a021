"""How well a text-to-image model follows its prompts.

``shapes``: images generated from the captions of held-out scenes are read back
by the programmatic checker (:mod:`aigc.eval.shapes_check`: colour
segmentation and shape fitting), GenEval-style — accuracy per attribute
(colour, shape, size, relative position, object count) and overall (every
requested thing right), separately on seen colour–shape combinations and on
combinations never shown in training, at each guidance scale asked for. The
checker's score on the real rendered scenes is reported beside it as the ceiling.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ..data.shapes import load_shapes
from ..diffusion import SamplingConfig
from ..errors import ConfigError
from .image import batch_sampling
from .shapes_check import score_batch

if TYPE_CHECKING:  # a type only: eval never imports the family layer
    from ..families.image.model import ImageModel

SHAPES_SPLITS = {"seen": "test_seen", "heldout": "test_heldout"}


def generate_for_prompts(im: ImageModel, prompts: Sequence[str], sampling: SamplingConfig, *, batch_size: int,
                         negative_prompt: str | None = None,
                         on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """One image per prompt, (N, C, H, W) uint8, in batches (batch b uses seed + b)."""
    out = []
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        chunk = list(prompts[start:start + batch_size])
        out.append(im.generate(len(chunk), batch_sampling(sampling, b), prompt=chunk,
                               negative_prompt=negative_prompt))
        if on_batch is not None:
            on_batch(len(chunk))
    return torch.cat(out)


def evaluate_shapes_adherence(im: ImageModel, sampling: SamplingConfig | None = None, *, n: int = 200,
                              guidance: Sequence[float] = (4.0,), batch_size: int = 50, start: int = 0,
                              progress: bool = False) -> dict[str, Any]:
    """Prompt adherence on ``n`` seen and ``n`` held-out ``shapes`` prompts at each guidance scale (which
    replaces the one in ``sampling``): the test scenes ``start .. start+n-1`` of each split (tune settings
    on one range, report another)."""
    if not im.text_conditional:
        raise ConfigError(f"'{im.path}' is not a text-to-image model")
    if n < 1 or not guidance:
        raise ConfigError("give at least one prompt (--n) and one guidance scale")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ConfigError(f"the first test scene (--start) must be a whole number >= 0, got {start!r}")
    sampling = im.sampling(sampling)
    configs = [replace(sampling, guidance=scale) for scale in guidance]  # every scale checked up front
    size = im.image_shape[-1]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=2 * n * len(guidance), desc="generating", unit="img")
    result: dict[str, Any] = {"data": "shapes", "n": n, "start": start, **sampling.params(),
                              "guidance": list(guidance), "real": {}, "scores": []}
    t0 = time.perf_counter()
    try:
        for name, split in SHAPES_SPLITS.items():
            truth = load_shapes(split, n=n, image_size=size, start=start)
            specs = [scene.spec for scene in truth.scenes]
            result["real"][name] = score_batch(truth.images, specs, name).as_dict()
            for cfg in configs:
                images = generate_for_prompts(im, truth.captions, cfg, batch_size=batch_size,
                                              on_batch=bar.update if bar is not None else None)
                result["scores"].append({"guidance": cfg.guidance,
                                         **score_batch(images.numpy(), specs, name).as_dict()})
    finally:
        if bar is not None:
            bar.close()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def plot_adherence(result: dict[str, Any], path) -> None:
    """Overall and per-attribute accuracy against the guidance scale, seen vs held-out, as a PNG
    (written under a temporary name, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, style in (("seen", "-"), ("heldout", "--")):
        rows = sorted((r for r in result["scores"] if r["split"] == name), key=lambda r: r["guidance"])
        scales = [r["guidance"] for r in rows]
        for key, colour in (("overall", "black"), ("colour", "tab:red"), ("shape", "tab:blue"),
                            ("relation", "tab:green")):
            values = [r[key] for r in rows]
            if rows and all(v is not None for v in values):
                ax.plot(scales, [100 * v for v in values], style, color=colour, marker="o", ms=3,
                        label=f"{key} ({name})")
    ax.set_xlabel("guidance scale")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"shapes prompt adherence ({result['n']} prompts per split)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path) -> None:
    """Write a matplotlib figure as a PNG under a temporary name, then rename it into place; close it."""
    import os
    from pathlib import Path

    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
