"""Commands for image diffusion: generate image, edit inpaint|img2img, eval image (``aigc train image``
comes from the registry)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ..diffusion.sampling import SamplingConfig
from ..errors import ConfigError, DataError
from .common import JSON_HELP, app, emit_json, eval_app, generate_app
from .options import SAMPLING, with_options

edit_app = typer.Typer(no_args_is_help=True, help="Edit images with a trained diffusion model.")
app.add_typer(edit_app, name="edit")


MAX_IMAGES = 100_000   # --n of generate image
MAX_GRID = 256         # images in one grid (--out); more are written with --out-dir only
OUT_HELP = ("An existing folder gets FOLDER/{name}.png. The extension picks the format: .png, or .jpg/.jpeg "
            "(JPEG quality 95, the parameters in its comment).")


class _Progress:
    """A tqdm bar driven by the samplers' per-step callback, opened at the first step (so bad input
    fails before any bar appears) over the steps left from there (img2img starts part-way)."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def __call__(self, info: dict) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc=self.desc, total=info["steps"] - info["step"], unit="step", dynamic_ncols=True,
                            leave=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _with_progress(desc: str, progress: bool, run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``run(*args, callback=..., **kwargs)`` under a progress bar over the sampler's steps."""
    bar = _Progress(desc, progress)
    try:
        return run(*args, callback=bar, **kwargs)
    finally:
        bar.close()


def _label(value: Optional[str]) -> Optional[str]:
    return None if value is None else value.strip()


def _prompt_params(prompt: Optional[str], negative_prompt: Optional[str]) -> dict[str, str]:
    """The prompts for a PNG's parameters (left out for class-conditional models)."""
    out = {"prompt": prompt} if prompt is not None else {}
    return {**out, "negative_prompt": negative_prompt} if negative_prompt is not None else out


def _out_file(out: Optional[Path], name: str) -> Optional[Path]:
    """--out as the file to write: an existing folder gets FOLDER/name.png; an extension other than
    .png/.jpg/.jpeg is refused before anything runs."""
    from ..data.image_files import image_format

    if out is None:
        return None
    if out.is_dir():
        out = out / f"{name}.png"
    image_format(out)
    return out


def chunk_seed(seed: Optional[int], chunk: int) -> Optional[int]:
    """The seed of chunk ``chunk`` of generate image: chunk 0 takes ``seed`` itself (so a run of one chunk
    is the run it always was); chunk k > 0 the first 8 bytes of sha256("SEED/k") (a seed torch takes), so
    runs with nearby seeds share no images. None (a fresh seed) stays None."""
    import hashlib

    from ..config import MAX_SEED

    if seed is None or chunk == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{chunk}".encode()).digest()[:8], "big") % (MAX_SEED + 1)


# ---- generate ----------------------------------------------------------------------
@generate_app.command("image")
@with_options(SAMPLING)
def generate_image_cmd(
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    n: int = typer.Option(16, min=1, max=MAX_IMAGES, help=f"Images to generate (at most {MAX_IMAGES:,})."),
    batch_size: int = typer.Option(64, min=1, help="Images sampled at once; more are sampled in chunks of this "
                                   "many, each written to --out-dir as it is done. Chunk 0 is seeded by --seed "
                                   "(so n <= batch size gives the images it always did), chunk k by a hash of "
                                   "(seed, k): the same seed and batch size give the same images."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class index or name (conditional models)."),
    prompt: Optional[str] = typer.Option(None, help="What to draw (text-to-image models; \"\" = unconditional)."),
    negative_prompt: Optional[str] = typer.Option(None, help="What guidance steers away from (text-to-image)."),
    out: Optional[Path] = typer.Option(None, help=f"Write a grid of the images here (at most {MAX_GRID} images), "
                                       "enlarged by a whole factor (nearest-neighbour) to at least 256 px across. "
                                       + OUT_HELP.format(name="grid")),
    out_dir: Optional[Path] = typer.Option(None, help="Write one PNG per image (0000.png, ...) into this folder, "
                                           "at the model's own size (they are data, not previews)."),
    nrow: Optional[int] = typer.Option(None, min=1, max=MAX_GRID, help="Images per grid row."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    sampling: SamplingConfig = None,
) -> None:
    """Sample new images. Every file carries its generation parameters (a PNG's text chunk, a JPEG's
    comment): see read_png_parameters."""
    from dataclasses import replace

    import torch

    from ..api import ImageModel, load_kind
    from ..data.image_files import encode_parameters, make_grid, save_image, upscale

    if out is None and out_dir is None:
        raise ConfigError("say where to write the images: --out grid.png and/or --out-dir folder")
    grid_file = _out_file(out, "grid")
    if grid_file is not None and n > MAX_GRID:
        raise ConfigError(f"a grid of {n:,} images is too large to view; --out takes at most {MAX_GRID} images "
                          "(write them one by one with --out-dir)")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out-dir '{out_dir}' is a file, not a folder")
    im = load_kind(model, ImageModel)
    sampling = im.sampling(sampling)  # bad options fail before any sampling
    params = {"model": str(im.path), **sampling.params(), "class": _label(class_), "n": n,
              **_prompt_params(prompt, negative_prompt), **({"batch_size": batch_size} if n > batch_size else {})}
    encode_parameters(params)
    width = max(4, len(str(n - 1)))  # file names sort in order
    files, kept = [], []
    images_bar = None
    if progress and n > batch_size:
        from tqdm import tqdm

        images_bar = tqdm(desc="images", total=n, unit="img", dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for chunk, start in enumerate(range(0, n, batch_size)):
            images = _with_progress("sampling", progress, im.generate, min(batch_size, n - start),
                                    replace(sampling, seed=chunk_seed(sampling.seed, chunk)), label=_label(class_),
                                    prompt=prompt, negative_prompt=negative_prompt)
            for j, image in enumerate(images if out_dir is not None else ()):
                path = out_dir / f"{start + j:0{width}d}.png"
                files.append(str(save_image(image, path, {**params, "index": start + j})))
            if grid_file is not None:
                kept.append(images)
            if images_bar is not None:
                images_bar.update(len(images))
    finally:
        if images_bar is not None:
            images_bar.close()
    if grid_file is not None:
        grid = upscale(make_grid(torch.cat(kept), nrow=nrow))
        files.insert(0, str(save_image(grid, grid_file, {**params, "grid": True})))
    seconds = time.perf_counter() - t0
    if as_json:
        emit_json({**params, "files": files, "seconds": round(seconds, 3)})
        return
    where = [f"{n} images to {out_dir}{os.sep}"] if out_dir is not None else []
    if grid_file is not None:
        where.append(f"the grid {grid_file}" if where else f"a grid of {n} images to {grid_file}")
    print(f"wrote {' and '.join(where)} ({seconds:.1f} s)")


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
    from ..data.image_files import save_image

    save_image(image, out, params)
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
    out: Path = typer.Option(..., help="The output image. " + OUT_HELP.format(name="inpaint")),
    jump_length: int = typer.Option(10, help="RePaint: steps to jump back."),
    jump_n_sample: int = typer.Option(1, help="RePaint: passes over each jump (1 = no resampling; more needs "
                                              "--sampler ddpm or ddim)."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class index or name (conditional models)."),
    prompt: Optional[str] = typer.Option(None, help="What to draw (text-to-image models)."),
    negative_prompt: Optional[str] = typer.Option(None, help="What guidance steers away from (text-to-image)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    sampling: SamplingConfig = None,
) -> None:
    """Fill in the masked part of an image (RePaint)."""
    from ..api import ImageModel, load_kind
    from ..data.image_files import encode_parameters

    out = _out_file(out, "inpaint")
    im = load_kind(model, ImageModel)
    picture = _read_image(image, im)
    keep = _read_mask(mask, im.image_shape[1])
    params = {"model": str(im.path), "edit": "inpaint", "image": str(image), "mask": str(mask),
              **sampling.params(), "jump_length": jump_length, "jump_n_sample": jump_n_sample,
              "class": _label(class_), **_prompt_params(prompt, negative_prompt)}
    encode_parameters(params)
    result = _with_progress("inpaint", progress, im.inpaint, picture, keep, sampling, label=_label(class_),
                            jump_length=jump_length, jump_n_sample=jump_n_sample, prompt=prompt,
                            negative_prompt=negative_prompt)
    _write_edit(result[0], out, params, as_json)


@edit_app.command("img2img")
@with_options(SAMPLING)
def img2img_cmd(
    image: Path = typer.Option(..., help="The starting image (resized and cropped to the model's size)."),
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    out: Path = typer.Option(..., help="The output image. " + OUT_HELP.format(name="img2img")),
    strength: float = typer.Option(0.6, help="How much to change: (0, 1]; 1 ignores the image."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class index or name (conditional models)."),
    prompt: Optional[str] = typer.Option(None, help="What to draw (text-to-image models)."),
    negative_prompt: Optional[str] = typer.Option(None, help="What guidance steers away from (text-to-image)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    sampling: SamplingConfig = None,
) -> None:
    """Re-imagine an image (SDEdit): noise it to --strength, then denoise it (about strength x --steps of
    the schedule are run)."""
    from ..api import ImageModel, load_kind
    from ..data.image_files import encode_parameters

    out = _out_file(out, "img2img")
    im = load_kind(model, ImageModel)
    picture = _read_image(image, im)
    params = {"model": str(im.path), "edit": "img2img", "image": str(image), "strength": strength,
              **sampling.params(), "class": _label(class_), **_prompt_params(prompt, negative_prompt)}
    encode_parameters(params)
    result = _with_progress("img2img", progress, im.img2img, picture, sampling, strength=strength,
                            label=_label(class_), prompt=prompt, negative_prompt=negative_prompt)
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
    if im.text_conditional:
        raise ConfigError(f"'{model}' is a text-to-image model; evaluate it with 'aigc eval t2i --model {model}'")
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
