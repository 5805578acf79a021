"""Images out: grids, and PNG (or JPEG) files that carry the parameters that made them.

Every file written here holds its generation parameters as JSON: a PNG in a
text chunk (key ``aigc``), a JPEG in its comment (COM) segment, so a picture
tells how to make it again (``read_png_parameters``). A text value longer than
200 characters (a long prompt) is stored as its first 200 characters + "…",
with ``<key>_sha256``, the SHA-256 of the full UTF-8 text, beside it. The JSON
is standard (no NaN or infinity; such a value is refused). Files are written
under a temporary name and renamed into place, never left half-written.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from torch import Tensor

from ..errors import ConfigError

PNG_KEY = "aigc"
TEXT_LIMIT = 200                       # characters of a text value kept in a file's parameters
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
JPEG_QUALITY = 95


def make_grid(images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> Tensor:
    """(N, C, H, W) uint8 -> one (C, H', W') uint8 grid, ``nrow`` images per row (default ~square)."""
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"make_grid takes (N, C, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value,
                      dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def upscale(image: Tensor, min_size: int = 256) -> Tensor:
    """(C, H, W) enlarged by the smallest whole factor that makes its longer side at least ``min_size``
    pixels, nearest-neighbour (every pixel becomes a k x k block); unchanged when already that big."""
    factor = max(1, math.ceil(min_size / max(image.shape[-2:])))
    if factor == 1:
        return image
    return image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def to_pil(image: Tensor) -> Image.Image:
    """(C, H, W) uint8 (C = 1 or 3) -> a PIL image."""
    array = image.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, "L" if array.shape[2] == 1 else "RGB")


def image_format(path: str | Path) -> str:
    """"PNG" or "JPEG" from the file name's extension; ConfigError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"cannot write '{path}': the file name must end in one of "
                          f"{', '.join(FORMATS)} (got {suffix or 'no extension'})")
    return FORMATS[suffix]


def encode_parameters(parameters: dict[str, Any]) -> str:
    """``parameters`` as the JSON stored in a file: long text values truncated beside their SHA-256;
    ConfigError for a value that is not a finite number (NaN, infinity) or not JSON."""
    out: dict[str, Any] = {}
    for key, value in parameters.items():
        if isinstance(value, str) and len(value) > TEXT_LIMIT:
            out[f"{key}_sha256"] = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
            value = value[:TEXT_LIMIT] + "…"
        out[key] = value
    try:
        return json.dumps(out, sort_keys=True, allow_nan=False)
    except ValueError:
        key, value = next(((k, v) for k, v in out.items() if isinstance(v, float) and not math.isfinite(v)),
                          ("?", "not finite"))
        raise ConfigError(f"the parameter '{key}' is {value}, not a finite number; it cannot be stored in "
                          "an image file") from None
    except TypeError as exc:
        raise ConfigError(f"image parameters must be JSON values ({exc})") from None


def save_image(image: Tensor, path: str | Path, parameters: dict[str, Any] | None = None) -> Path:
    """Write (C, H, W) uint8 as PNG or JPEG (quality 95; by the extension) with ``parameters`` as JSON
    (PNG: a text chunk; JPEG: its comment), atomically. Bad parameters or extensions fail before any write."""
    path = Path(path)
    fmt = image_format(path)
    text = encode_parameters(parameters) if parameters else None
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "PNG":
        options: dict[str, Any] = {"pnginfo": _png_info(text)}
    else:
        options = {"quality": JPEG_QUALITY, **({"comment": text} if text else {})}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        to_pil(image).save(tmp, format=fmt, **options)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def png_bytes(image: Tensor, parameters: dict[str, Any] | None = None) -> bytes:
    """(C, H, W) uint8 as the bytes of a PNG file holding ``parameters`` (as :func:`save_image` writes it)."""
    out = io.BytesIO()
    to_pil(image).save(out, format="PNG", pnginfo=_png_info(encode_parameters(parameters) if parameters else None))
    return out.getvalue()


def _png_info(text: str | None) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text(PNG_KEY, text)
    return info


def save_png(image: Tensor, path: str | Path, parameters: dict[str, Any] | None = None) -> Path:
    """:func:`save_image` (named for the usual case: a ``.png`` path)."""
    return save_image(image, path, parameters)


def read_png_parameters(path: str | Path) -> dict[str, Any]:
    """The generation parameters stored by :func:`save_image` in a PNG's text chunk or a JPEG's comment
    ({} when there are none). A text value that was longer than 200 characters reads back as its first
    200 + "…", and ``<key>_sha256`` holds the SHA-256 (hex) of the full text."""
    with Image.open(path) as im:
        text = im.text.get(PNG_KEY) if hasattr(im, "text") else None
        if text is None and im.format == "JPEG":
            comment = im.info.get("comment")
            text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment
    if not text:
        return {}
    try:
        out = json.loads(text)
    except json.JSONDecodeError:  # a JPEG comment written by something else
        return {}
    return out if isinstance(out, dict) else {}


def load_image(path: str | Path, size: int, channels: int) -> Tensor:
    """An image file as (C, size, size) uint8: converted to ``channels`` (1 or 3), resized on the
    short side and centre-cropped. Raises ValueError when the file is not a readable image."""
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            scale = size / min(im.size)
            w, h = max(size, round(im.size[0] * scale)), max(size, round(im.size[1] * scale))
            im = im.resize((w, h), Image.BICUBIC)
            left, top = (w - size) // 2, (h - size) // 2
            array = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read '{path}' as an image ({exc})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
