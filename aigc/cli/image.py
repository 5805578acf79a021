"""Commands for image diffusion: generate image, edit inpaint|img2img, eval image (``aigc train image``
comes from the registry)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from ..diffusion.sampling import SamplingConfig
from ..errors import ConfigError, DataError
from .common import JSON_HELP, app, emit_json, eval_app, generate_app
from .options import SAMPLING, with_options

edit_app = typer.Typer(no_args_is_help=True, help="Edit images with a trained diffusion model.")
app.add_typer(edit_app, name="edit")


class _Progress:
    """A tqdm bar driven by the samplers' per-step callback, opened at the first step (so bad input
    fails before any bar appears)."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def __call__(self, info: dict) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc=self.desc, total=info["steps"], unit="step", dynamic_ncols=True, leave=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _label(value: Optional[str]) -> Optional[str]:
    return None if value is None else value.strip()


def _prompt_params(prompt: Optional[str], negative_prompt: Optional[str]) -> dict[str, str]:
    """The prompts for a PNG's parameters (left out for class-conditional models)."""
    out = {"prompt": prompt} if prompt is not None else {}
    return {**out, "negative_prompt": negative_prompt} if negative_prompt is not None else out


def _save(images, out: Optional[Path], out_dir: Optional[Path], params: dict[str, Any], nrow: Optional[int]) -> list[str]:
    from ..data.image_files import make_grid, save_png

    written = []
    if out is not None:
        written.append(str(save_png(make_grid(images, nrow=nrow), out, {**params, "grid": True})))
    if out_dir is not None:
        for i, image in enumerate(images):
            written.append(str(save_png(image, out_dir / f"{i:04d}.png", {**params, "index": i})))
    return written


# ---- generate ----------------------------------------------------------------------
@generate_app.command("image")
@with_options(SAMPLING)
def generate_image_cmd(
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    n: int = typer.Option(16, help="Images to generate."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class index or name (conditional models)."),
    prompt: Optional[str] = typer.Option(None, help="What to draw (text-to-image models; \"\" = unconditional)."),
    negative_prompt: Optional[str] = typer.Option(None, help="What guidance steers away from (text-to-image)."),
    out: Optional[Path] = typer.Option(None, help="Write a grid PNG here."),
    out_dir: Optional[Path] = typer.Option(None, help="Also write one PNG per image into this folder."),
    nrow: Optional[int] = typer.Option(None, help="Images per grid row."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    sampling: SamplingConfig = None,
) -> None:
    """Sample new images. Every PNG carries its generation parameters in a text chunk."""
    from ..api import ImageModel, load_kind

    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if out is None and out_dir is None:
        raise ConfigError("say where to write the images: --out grid.png and/or --out-dir folder")
    im = load_kind(model, ImageModel)
    bar = _Progress("sampling", progress)
    t0 = time.perf_counter()
    try:
        images = im.generate(n, sampling, label=_label(class_), callback=bar, prompt=prompt,
                             negative_prompt=negative_prompt)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    params = {"model": str(im.path), **sampling.params(), "class": _label(class_), "n": n,
              **_prompt_params(prompt, negative_prompt)}
    written = _save(images, out, out_dir, params, nrow)
    if as_json:
        emit_json({**params, "files": written, "seconds": round(seconds, 3)})
    else:
        print(f"{n} images in {seconds:.1f} s -> {', '.join(written)}")


# ---- edit --------------------------------------------------------------------------
def _read_image(path: Path, im) -> Any:
    from ..data.image_files import load_image

    if not path.is_file():
        raise DataError(f"'{path}' is not a file")
    channels, size, _ = im.image_shape
    try:
        return load_image(path, size, channels)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _read_mask(path: Path, size: int) -> Any:
    """A mask image: white (>= 128) = keep the pixel, black = fill it in. Must be the model's size."""
    import numpy as np
    import torch
    from PIL import Image

    if not path.is_file():
        raise DataError(f"'{path}' is not a file")
    try:
        with Image.open(path) as m:
            mask = np.asarray(m.convert("L"), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read the mask '{path}' as an image ({exc})") from None
    if mask.shape != (size, size):
        raise ConfigError(f"the mask '{path}' is {mask.shape[1]}x{mask.shape[0]}, but the model's images are "
                          f"{size}x{size}; give a mask of that size (white = keep, black = fill)")
    return torch.from_numpy((mask >= 128).astype(np.float32))


def _write_edit(image, out: Path, params: dict[str, Any], as_json: bool) -> None:
    """Save an edited image (C, H, W) with its parameters; report it."""
    from ..data.image_files import save_png

    save_png(image, out, params)
    if as_json:
        emit_json({**params, "files": [str(out)]})
    else:
        print(f"{params['edit']} -> {out}")


@edit_app.command("inpaint")
@with_options(SAMPLING)
def inpaint_cmd(
    image: Path = typer.Option(..., help="The image to complete (resized and cropped to the model's size)."),
    mask: Path = typer.Option(..., help="A mask of the model's size: white = keep, black = fill in."),
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    out: Path = typer.Option(..., help="Output PNG."),
    jump_length: int = typer.Option(10, help="RePaint: steps to jump back."),
    jump_n_sample: int = typer.Option(1, help="RePaint: passes over each jump (1 = no resampling; more needs "
                                              "--sampler ddpm or ddim)."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class index or name (conditional models)."),
    prompt: Optional[str] = typer.Option(None, help="What to draw (text-to-image models)."),
    negative_prompt: Optional[str] = typer.Option(None, help="What guidance steers away from (text-to-image)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    sampling: SamplingConfig = None,
) -> None:
    """Fill in the masked part of an image (RePaint)."""
    from ..api import ImageModel, load_kind

    im = load_kind(model, ImageModel)
    picture = _read_image(image, im)
    keep = _read_mask(mask, im.image_shape[1])
    result = im.inpaint(picture, keep, sampling, label=_label(class_), jump_length=jump_length,
                        jump_n_sample=jump_n_sample, prompt=prompt, negative_prompt=negative_prompt)
    params = {"model": str(im.path), "edit": "inpaint", "image": str(image), "mask": str(mask),
              **sampling.params(), "jump_length": jump_length, "jump_n_sample": jump_n_sample,
              "class": _label(class_), **_prompt_params(prompt, negative_prompt)}
    _write_edit(result[0], out, params, as_json)


@edit_app.command("img2img")
@with_options(SAMPLING)
def img2img_cmd(
    image: Path = typer.Option(..., help="The starting image (resized and cropped to the model's size)."),
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    out: Path = typer.Option(..., help="Output PNG."),
    strength: float = typer.Option(0.6, help="How much to change: (0, 1]; 1 ignores the image."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class index or name (conditional models)."),
    prompt: Optional[str] = typer.Option(None, help="What to draw (text-to-image models)."),
    negative_prompt: Optional[str] = typer.Option(None, help="What guidance steers away from (text-to-image)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    sampling: SamplingConfig = None,
) -> None:
    """Re-imagine an image (SDEdit): noise it to --strength, then denoise it (about strength x --steps of
    the schedule are run)."""
    from ..api import ImageModel, load_kind

    im = load_kind(model, ImageModel)
    picture = _read_image(image, im)
    result = im.img2img(picture, sampling, strength=strength, label=_label(class_), prompt=prompt,
                        negative_prompt=negative_prompt)
    params = {"model": str(im.path), "edit": "img2img", "image": str(image), "strength": strength,
              **sampling.params(), "class": _label(class_), **_prompt_params(prompt, negative_prompt)}
    _write_edit(result[0], out, params, as_json)


# ---- eval --------------------------------------------------------------------------
@eval_app.command("image")
@with_options(SAMPLING)
def eval_image_cmd(
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    n: int = typer.Option(2000, help="Samples for FID/KID (reported beside the scores)."),
    batch_size: int = typer.Option(100, help="Images sampled per batch."),
    nll_images: int = typer.Option(100, help="Test images for the NLL in bits/dim (T evaluations each; 0 skips)."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights when the run kept them."),
    ref_n: Optional[int] = typer.Option(None, help="Reference images from the test split (default: all)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    sampling: SamplingConfig = None,
) -> None:
    """FID and KID against the test split, class accuracy of conditional samples, test NLL (bits/dim)."""
    from ..api import ImageModel, load_kind
    from ..eval.image import evaluate_image_model

    if batch_size < 1 or (ref_n is not None and ref_n < 2):
        raise ConfigError("--batch-size must be at least 1 and --ref-n at least 2")
    im = load_kind(model, ImageModel, ema=ema)
    im.sampling(sampling)  # bad options fail before minutes of sampling
    result = evaluate_image_model(im, sampling, n=n, batch_size=batch_size, nll_images=nll_images, ref_n=ref_n,
                                  progress=progress)
    result["model"], result["ema"] = str(im.path), ema
    if as_json:
        emit_json(result)
        return
    line = (f"FID {result['fid']:.2f}, KID {result['kid'] * 1e3:.2f}e-3 ± {result['kid_std'] * 1e3:.2f}e-3 "
            f"({result['n']} samples, {sampling.sampler} {sampling.steps} steps, against {result['n_ref']} "
            "test images)")
    if "class_accuracy" in result:
        line += (f"; class accuracy {100 * result['class_accuracy']:.1f} % (classifier: "
                 f"{100 * result['classifier_test_accuracy']:.1f} % on real test images)")
    if "nll_bits_per_dim" in result:
        line += f"; test NLL {result['nll_bits_per_dim']:.3f} bits/dim ({result['nll_images']} images)"
    print(line)
