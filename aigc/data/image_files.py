"""Images out: grids, and PNGs that carry the parameters that made them.

Every PNG written here holds its generation parameters as a JSON text chunk
(key ``aigc``), so a picture tells how to make it again
(``read_png_parameters``). Files are written under a temporary name and
renamed into place, never left half-written.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from torch import Tensor

PNG_KEY = "aigc"


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


def to_pil(image: Tensor) -> Image.Image:
    """(C, H, W) uint8 (C = 1 or 3) -> a PIL image."""
    array = image.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, "L" if array.shape[2] == 1 else "RGB")


def save_png(image: Tensor, path: str | Path, parameters: dict[str, Any] | None = None) -> Path:
    """Write (C, H, W) uint8 as a PNG with ``parameters`` in a JSON text chunk, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text(PNG_KEY, json.dumps(parameters, sort_keys=True))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        to_pil(image).save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_png_parameters(path: str | Path) -> dict[str, Any]:
    """The generation parameters stored in a PNG by :func:`save_png` ({} when there are none)."""
    with Image.open(path) as im:
        text = im.text.get(PNG_KEY) if hasattr(im, "text") else None
    return json.loads(text) if text else {}


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
