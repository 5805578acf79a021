"""Image requests as jobs: a request checked and normalised into a job's parameters (everything needed to
run it again after a crash, the seed included), and the runner a job worker calls with a batch of jobs.

Jobs of one model with the same settings (steps, sampler, guidance, scale) share one sampling batch; each
keeps its own seed's images (:class:`aigc.diffusion.samplers.RowGenerators`), so a request gives the same
images whether it ran alone or with others. Edits (inpainting, img2img) run one job at a time.
"""
from __future__ import annotations

import base64
import io
import json
import re
import secrets
import time
from typing import Any, Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..data.image_files import png_bytes
from ..data.images import from_model_range
from ..errors import ConfigError
from .jobs import Job, Reporter, Result
from .models import ServedModel
from .schemas import SEED_LIMIT
from .settings import Limits

SIZE_RE = re.compile(r"(\d{1,5})x(\d{1,5})")
PREVIEW_EVERY_S = 0.5  # how often a running job stores a preview of its first image
EDIT_STRENGTH = 0.6    # img2img's default strength (an edit without a mask)


class JobCancelled(Exception):
    """Raised inside the sampler when no job of its batch is wanted any more."""


def generation_params(served: ServedModel, limits: Limits, *, prompt: str, n: int, size: str | None,
                      response_format: str, steps: int | None, guidance: float | None, seed: int | None,
                      sampler: str | None, negative_prompt: str | None, label: str | int | None) -> dict[str, Any]:
    """A checked ``images.generations`` request as job parameters; ConfigError (400) on anything wrong."""
    model = served.model
    if n > limits.max_n:
        raise ConfigError(f"n = {n} is over this service's limit of {limits.max_n} images per request")
    if steps is not None and steps > limits.max_steps:
        raise ConfigError(f"steps = {steps} is over this service's limit of {limits.max_steps}")
    params: dict[str, Any] = {"n": n, "scale": _scale(model, size, limits), "response_format": response_format,
                              "seed": seed if seed is not None else secrets.randbelow(SEED_LIMIT),
                              **_condition(model, prompt, negative_prompt, label)}
    params["sampling"] = _sampling(model, steps, guidance, sampler, params["seed"])
    return params


def edit_params(served: ServedModel, limits: Limits, *, image: bytes, mask: bytes | None, strength: float | None,
                **common: Any) -> dict[str, Any]:
    """A checked ``images.edits`` request: the image (and mask) read and resized to the model's size."""
    params = generation_params(served, limits, **common)
    c, h, w = served.model.image_shape
    pixels = read_image(image, "image", c, h, w)
    params["image"] = base64.b64encode(png_bytes(pixels)).decode()
    if mask is not None:
        params["mask"] = base64.b64encode(png_bytes(read_mask(mask, pixels.shape[-2:], image))).decode()
        if strength is not None:
            raise ConfigError("strength is for edits without a mask (img2img); a mask inpaints")
    else:
        strength = EDIT_STRENGTH if strength is None else strength
        if not 0 < strength <= 1:
            raise ConfigError(f"strength must be in (0, 1], got {strength}")
        params["strength"] = strength
    return params


def batch_key(kind: str, params: dict[str, Any]) -> str:
    """Jobs with equal keys may be sampled together: same settings, different prompts, classes and seeds."""
    if kind != "images.generations":
        return f"solo-{secrets.token_hex(8)}"
    s = params["sampling"]
    return json.dumps({"steps": s["steps"], "sampler": s["sampler"], "guidance": s["guidance"],
                       "eta": s.get("eta"), "scale": params["scale"]}, sort_keys=True)


def run_batch(served: ServedModel, jobs: Sequence[Job], reporter: Reporter,
              on_images: Callable[[int], None] | None = None) -> list[tuple[list[Result], dict[str, Any]]]:
    """Sample every job of the batch in one go; one (results, metadata) per job, in order."""
    model = served.model
    first = jobs[0].params
    cfg = model.sampling(**first["sampling"])
    callback = _progress(reporter)
    counts = [j.params["n"] for j in jobs]
    total = sum(counts)
    start = time.perf_counter()
    with torch.inference_mode():
        if jobs[0].kind == "images.edits":
            images = _edit(model, first, cfg, callback)
        else:
            rows = [(j.params, k) for j in jobs for k in range(j.params["n"])]
            cond = _per_image(model, [p for p, _ in rows])
            images = model.generate(total, cfg, callback=callback,
                                    row_seeds=[(j.params["seed"], j.params["n"]) for j in jobs], **cond)
    seconds = time.perf_counter() - start
    if on_images is not None:
        on_images(total)
    out, at = [], 0
    for job, count in zip(jobs, counts):
        results = []
        for k in range(count):
            picture = _upscale(images[at + k], job.params["scale"])
            meta = {"model": served.name, "prompt": job.params.get("prompt"), "class": job.params.get("label"),
                    "seed": job.params["seed"], "index": k, **job.params["sampling"]}
            results.append((f"{k}.png", "image/png", png_bytes(picture, {k: v for k, v in meta.items()
                                                                          if v is not None})))
        at += count
        share = seconds * count / total
        out.append((results, {"images": count, "seed": job.params["seed"], "steps": cfg.steps,
                              "compute_s": round(share, 3), "batch": len(jobs)}))
    return out


def read_image(data: bytes, what: str, channels: int, height: int, width: int) -> Tensor:
    """An uploaded image (any format Pillow reads) as (C, H, W) uint8 at the model's size."""
    im = _open(data, what)
    if im.width != im.height:
        raise ConfigError(f"the {what} is {im.width}x{im.height}; give a square image")
    im = im.convert("L" if channels == 1 else "RGB").resize((width, height), Image.LANCZOS)
    array = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return array.view(height, width, channels).permute(2, 0, 1).contiguous()


def read_mask(data: bytes, shape: Sequence[int], image: bytes) -> Tensor:
    """OpenAI's convention: where the mask is transparent (alpha 0) the image is regenerated; a mask without
    alpha regenerates where it is black. Returns (1, H, W) uint8: 255 keep, 0 regenerate."""
    im = _open(data, "mask")
    original = _open(image, "image")
    if im.size != original.size:
        raise ConfigError(f"the mask is {im.width}x{im.height} but the image is "
                          f"{original.width}x{original.height}; they must be the same size")
    plane = im.getchannel("A") if "A" in im.getbands() else im.convert("L")
    h, w = shape
    plane = plane.resize((w, h), Image.NEAREST)
    keep = torch.frombuffer(bytearray(plane.tobytes()), dtype=torch.uint8).view(1, h, w) > 127
    return keep.to(torch.uint8) * 255


def _open(data: bytes, what: str) -> Image.Image:
    if not data:
        raise ConfigError(f"the {what} upload is empty")
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ConfigError(f"the {what} is not an image Pillow can read ({type(exc).__name__})") from None
    return im


def _scale(model: Any, size: str | None, limits: Limits) -> int:
    """``"WxH"`` -> the whole factor the model's images are upscaled by (1 for its own size)."""
    _, h, w = model.image_shape
    if size is None or size == "auto":
        return 1
    m = SIZE_RE.fullmatch(size)
    if not m or int(m[1]) != int(m[2]):
        raise ConfigError(f"size must be 'WxH' with W = H (this model makes {w}x{h}), got '{size}'")
    side = int(m[1])
    if side > limits.max_image_size or side % w or side < w:
        sizes = ", ".join(f"{w * k}x{h * k}" for k in range(1, limits.max_image_size // w + 1)[:6])
        raise ConfigError(f"size '{size}' is not offered: this model makes {w}x{h} images, upscaled by a "
                          f"whole factor up to {limits.max_image_size} pixels ({sizes}, ...)")
    return side // w


def _condition(model: Any, prompt: str, negative_prompt: str | None, label: str | int | None) -> dict[str, Any]:
    """What the images are conditioned on: a prompt (text-to-image) or a class (by the ``class`` field, or a
    prompt naming one); an unconditional model takes neither."""
    if model.text_conditional:
        if label is not None:
            raise ConfigError("this is a text-to-image model: give a prompt, not a class")
        return {"prompt": prompt, "negative_prompt": negative_prompt}
    if negative_prompt:
        raise ConfigError("negative_prompt is for text-to-image models")
    if model.num_classes:
        if label is None and prompt:
            label = prompt
        if label is None:
            return {"label": None}
        model.class_index(label)  # 400 for an unknown class
        return {"label": label}
    if prompt or label is not None:
        raise ConfigError("this model is unconditional: it takes no prompt and no class")
    return {}


def _sampling(model: Any, steps: int | None, guidance: float | None, sampler: str | None,
              seed: int) -> dict[str, Any]:
    options = {k: v for k, v in (("steps", steps), ("guidance", guidance), ("sampler", sampler)) if v is not None}
    cfg = model.sampling(seed=seed, **options)  # checks them against the model's schedule
    out = {"sampler": cfg.sampler, "steps": cfg.steps, "guidance": cfg.guidance, "seed": seed}
    if cfg.eta is not None:
        out["eta"] = cfg.eta
    return out


def _per_image(model: Any, params: list[dict[str, Any]]) -> dict[str, Any]:
    if model.text_conditional:
        return {"prompt": [p["prompt"] for p in params],
                "negative_prompt": [p.get("negative_prompt") or "" for p in params]}
    if model.num_classes:
        labels = [p.get("label") for p in params]
        return {"label": labels} if all(v is not None for v in labels) else {"label": None}
    return {}


def _edit(model: Any, params: dict[str, Any], cfg: Any, callback: Callable[[dict], None]) -> Tensor:
    image = _decode_png(params["image"])
    batch = image.unsqueeze(0).expand(params["n"], *image.shape).contiguous()
    if model.text_conditional:
        cond: dict[str, Any] = {"prompt": params["prompt"], "negative_prompt": params.get("negative_prompt") or ""}
    else:
        cond = {"label": params["label"]} if params.get("label") is not None else {}
    if "mask" in params:
        mask = _decode_png(params["mask"])[0].float() / 255.0
        return model.inpaint(batch, mask, cfg, callback=callback, **cond)
    return model.img2img(batch, cfg, strength=params["strength"], callback=callback, **cond)


def _decode_png(text: str) -> Tensor:
    im = Image.open(io.BytesIO(base64.b64decode(text)))
    c = 1 if im.mode == "L" else 3
    im = im.convert("L" if c == 1 else "RGB")
    array = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return array.view(im.height, im.width, c).permute(2, 0, 1).contiguous()


def _upscale(image: Tensor, factor: int) -> Tensor:
    return image if factor == 1 else image.repeat_interleave(factor, 1).repeat_interleave(factor, 2)


def _progress(reporter: Reporter) -> Callable[[dict], None]:
    last = [0.0]

    def callback(info: dict) -> None:
        step, steps = int(info["step"]), int(info["steps"])
        preview = None
        now = time.monotonic()
        if now - last[0] >= PREVIEW_EVERY_S or step == steps:
            last[0] = now
            x0 = info.get("pred_x0")
            if x0 is not None:
                preview = base64.b64encode(png_bytes(from_model_range(x0[0].clamp(-1, 1)))).decode()
        if not reporter.progress(step, steps, preview):
            raise JobCancelled()

    return callback
