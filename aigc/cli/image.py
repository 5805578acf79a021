"""Commands for image diffusion: train image, generate image, edit inpaint|img2img, eval image."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ConfigError, DataError
from .common import EXTRA, JSON_HELP, app, emit_json, eval_app, generate_app, parse_overrides, train_app

edit_app = typer.Typer(no_args_is_help=True, help="Edit images with a trained diffusion model.")
app.add_typer(edit_app, name="edit")

SAMPLER_HELP = "ddpm | ddim | dpm++ | dpm++sde (its stochastic form)"


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
    from ..generate.images import make_grid, save_png

    written = []
    if out is not None:
        written.append(str(save_png(make_grid(images, nrow=nrow), out, {**params, "grid": True})))
    if out_dir is not None:
        for i, image in enumerate(images):
            written.append(str(save_png(image, out_dir / f"{i:04d}.png", {**params, "index": i})))
    return written


# ---- train -------------------------------------------------------------------------
@train_app.command("image", context_settings=EXTRA)
def train_image_cmd(
    ctx: typer.Context,
    data: str = typer.Option("fashion-mnist", help="fashion-mnist | digits | a folder of images "
                                                    "(class sub-folders give labels)."),
    preset: str = typer.Option("small", help="tiny | small | base"),
    out: Path = typer.Option(..., help="Run folder for checkpoints, metrics.jsonl and loss.png."),
    class_cond: bool = typer.Option(False, "--class-cond", help="Condition on the classes (+ guidance)."),
    learn_sigma: Optional[bool] = typer.Option(None, "--learn-sigma/--fixed-sigma",
                                               help="Learned-range Σ with the hybrid loss (preset default: on)."),
    schedule: Optional[str] = typer.Option(None, help="Noise schedule: cosine | linear."),
    image_size: Optional[int] = typer.Option(None, help="Resize images to this size (folders default to 32)."),
    max_steps: Optional[int] = typer.Option(None, help="Optimizer steps (overrides the preset)."),
    max_minutes: Optional[float] = typer.Option(None, help="Wall-clock budget; the LR schedule is fitted to it."),
    seed: Optional[int] = typer.Option(None, help="One seed decides data order, init, noise and timesteps."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    stop_at: Optional[int] = typer.Option(None, help="Checkpoint and stop at this step (resume later)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Train a diffusion model (Improved DDPM) on images. Extra --section.key=value options override
    the preset, e.g. --model.model_channels=64 --diffusion.timesteps=4000 --train.lr=2e-4."""
    from ..recipes import image as recipe

    overrides = parse_overrides(ctx.args, {"model", "train", "diffusion", "val_images", "hflip"})
    for key, value in (("train.max_steps", max_steps), ("train.max_minutes", max_minutes), ("train.seed", seed),
                       ("diffusion.schedule", schedule), ("image_size", image_size)):
        if value is not None:
            overrides[key] = str(value)
    if class_cond:
        overrides["class_cond"] = "true"
    if learn_sigma is not None:
        overrides["diffusion.learn_sigma"] = str(learn_sigma)
        if not learn_sigma and not any(k == "diffusion.loss" for k in overrides):
            overrides["diffusion.loss"] = "mse"
    if resume:
        cfg = recipe.resume_config(out, overrides)
    else:
        cfg = recipe.build_config(preset, data, overrides)
    result = recipe.train_image(cfg, out, resume=resume, stop_at=stop_at, progress=progress)
    if result.get("rank", 0) != 0:
        return
    if as_json:
        emit_json(result)
    else:
        print(f"trained {result['params']:,} parameters for {result['step']} steps "
              f"({result['elapsed_s'] / 60:.1f} min); best val loss {result['best']:.4f}; run in {out}")


# ---- generate ----------------------------------------------------------------------
@generate_app.command("image")
def generate_image_cmd(
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    n: int = typer.Option(16, help="Images to generate."),
    sampler: str = typer.Option("dpm++sde", help=SAMPLER_HELP),
    steps: int = typer.Option(20, help="Network evaluations."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class index or name (conditional models)."),
    prompt: Optional[str] = typer.Option(None, help="What to draw (text-to-image models; \"\" = unconditional)."),
    negative_prompt: Optional[str] = typer.Option(None, help="What guidance steers away from (text-to-image)."),
    guidance: float = typer.Option(1.0, help="Classifier-free guidance scale (1 = none)."),
    eta: float = typer.Option(0.0, help="DDIM η (0 = deterministic)."),
    seed: int = typer.Option(0, help="Same seed, same images."),
    out: Optional[Path] = typer.Option(None, help="Write a grid PNG here."),
    out_dir: Optional[Path] = typer.Option(None, help="Also write one PNG per image into this folder."),
    nrow: Optional[int] = typer.Option(None, help="Images per grid row."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
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
        images = im.generate(n, sampler=sampler, steps=steps, label=_label(class_), guidance=guidance, seed=seed,
                             callback=bar, eta=eta, prompt=prompt, negative_prompt=negative_prompt)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    params = {"model": str(im.path), "sampler": sampler, "steps": steps, "class": _label(class_),
              "guidance": guidance, "seed": seed, "n": n, **({"eta": eta} if sampler == "ddim" else {}),
              **_prompt_params(prompt, negative_prompt)}
    written = _save(images, out, out_dir, params, nrow)
    if as_json:
        emit_json({**params, "files": written, "seconds": round(seconds, 3)})
    else:
        print(f"{n} images in {seconds:.1f} s -> {', '.join(written)}")


# ---- edit --------------------------------------------------------------------------
def _read_image(path: Path, im) -> Any:
    from ..generate.images import load_image

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
    from ..generate.images import save_png

    save_png(image, out, params)
    if as_json:
        emit_json({**params, "files": [str(out)]})
    else:
        print(f"{params['edit']} -> {out}")


@edit_app.command("inpaint")
def inpaint_cmd(
    image: Path = typer.Option(..., help="The image to complete (resized and cropped to the model's size)."),
    mask: Path = typer.Option(..., help="A mask of the model's size: white = keep, black = fill in."),
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    out: Path = typer.Option(..., help="Output PNG."),
    sampler: str = typer.Option("ddpm", help=SAMPLER_HELP),
    steps: int = typer.Option(50, help="Network evaluations per pass."),
    jump_length: int = typer.Option(10, help="RePaint: steps to jump back."),
    jump_n_sample: int = typer.Option(1, help="RePaint: passes over each jump (1 = no resampling)."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class index or name (conditional models)."),
    prompt: Optional[str] = typer.Option(None, help="What to draw (text-to-image models)."),
    negative_prompt: Optional[str] = typer.Option(None, help="What guidance steers away from (text-to-image)."),
    guidance: float = typer.Option(1.0, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, help="Same seed, same result."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Fill in the masked part of an image (RePaint)."""
    from ..api import ImageModel, load_kind

    im = load_kind(model, ImageModel)
    picture = _read_image(image, im)
    keep = _read_mask(mask, im.image_shape[1])
    result = im.inpaint(picture, keep, sampler=sampler, steps=steps, label=_label(class_), guidance=guidance,
                        jump_length=jump_length, jump_n_sample=jump_n_sample, seed=seed, prompt=prompt,
                        negative_prompt=negative_prompt)
    params = {"model": str(im.path), "edit": "inpaint", "image": str(image), "mask": str(mask), "sampler": sampler,
              "steps": steps, "jump_length": jump_length, "jump_n_sample": jump_n_sample,
              "class": _label(class_), "guidance": guidance, "seed": seed, **_prompt_params(prompt, negative_prompt)}
    _write_edit(result[0], out, params, as_json)


@edit_app.command("img2img")
def img2img_cmd(
    image: Path = typer.Option(..., help="The starting image (resized and cropped to the model's size)."),
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    out: Path = typer.Option(..., help="Output PNG."),
    strength: float = typer.Option(0.6, help="How much to change: (0, 1]; 1 ignores the image."),
    sampler: str = typer.Option("ddim", help=SAMPLER_HELP),
    steps: int = typer.Option(50, help="Steps of the full schedule (about strength x steps are run)."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class index or name (conditional models)."),
    prompt: Optional[str] = typer.Option(None, help="What to draw (text-to-image models)."),
    negative_prompt: Optional[str] = typer.Option(None, help="What guidance steers away from (text-to-image)."),
    guidance: float = typer.Option(1.0, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, help="Same seed, same result."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Re-imagine an image (SDEdit): noise it to --strength, then denoise it."""
    from ..api import ImageModel, load_kind

    im = load_kind(model, ImageModel)
    picture = _read_image(image, im)
    result = im.img2img(picture, strength=strength, sampler=sampler, steps=steps, label=_label(class_),
                        guidance=guidance, seed=seed, prompt=prompt, negative_prompt=negative_prompt)
    params = {"model": str(im.path), "edit": "img2img", "image": str(image), "strength": strength,
              "sampler": sampler, "steps": steps, "class": _label(class_), "guidance": guidance, "seed": seed,
              **_prompt_params(prompt, negative_prompt)}
    _write_edit(result[0], out, params, as_json)


# ---- eval --------------------------------------------------------------------------
@eval_app.command("image")
def eval_image_cmd(
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    n: int = typer.Option(2000, help="Samples for FID/KID (reported beside the scores)."),
    sampler: str = typer.Option("dpm++sde", help=SAMPLER_HELP),
    steps: int = typer.Option(20, help="Network evaluations per sample."),
    guidance: float = typer.Option(1.0, help="Classifier-free guidance scale (conditional models)."),
    seed: int = typer.Option(0, help="Seed of the samples."),
    batch_size: int = typer.Option(100, help="Images sampled per batch."),
    nll_images: int = typer.Option(100, help="Test images for the NLL in bits/dim (T evaluations each; 0 skips)."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights when the run kept them."),
    ref_n: Optional[int] = typer.Option(None, help="Reference images from the test split (default: all)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """FID and KID against the test split, class accuracy of conditional samples, test NLL (bits/dim)."""
    from ..api import ImageModel, load_kind
    from ..pipelines.image_eval import evaluate_image_model

    if batch_size < 1 or (ref_n is not None and ref_n < 2):
        raise ConfigError("--batch-size must be at least 1 and --ref-n at least 2")
    im = load_kind(model, ImageModel, ema=ema)
    im.check_request(sampler, steps)  # bad options fail before minutes of sampling
    result = evaluate_image_model(im, n=n, sampler=sampler, steps=steps, guidance=guidance, seed=seed,
                                  batch_size=batch_size, nll_images=nll_images, ref_n=ref_n, progress=progress)
    result["model"], result["ema"] = str(im.path), ema
    if as_json:
        emit_json(result)
        return
    line = (f"FID {result['fid']:.2f}, KID {result['kid'] * 1e3:.2f}e-3 ± {result['kid_std'] * 1e3:.2f}e-3 "
            f"({result['n']} samples, {sampler} {steps} steps, against {result['n_ref']} test images)")
    if "class_accuracy" in result:
        line += (f"; class accuracy {100 * result['class_accuracy']:.1f} % (classifier: "
                 f"{100 * result['classifier_test_accuracy']:.1f} % on real test images)")
    if "nll_bits_per_dim" in result:
        line += f"; test NLL {result['nll_bits_per_dim']:.3f} bits/dim ({result['nll_images']} images)"
    print(line)
