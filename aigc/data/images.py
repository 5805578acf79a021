"""Image data sets: embedded fashion-mnist and digits, or a folder of the user's images.

Every loader returns an :class:`ImageDataset` of uint8 images (N, C, H, W) and
optional integer labels. Splits are deterministic: fashion-mnist ships its own
60k/10k split; digits and folders send each image to the test split by a
stable hash of its index or relative path, so adding a file never reshuffles
the others. :class:`ImageBatches` turns a data set into the trainer's batch
source: a batch is a pure function of (seed, step), sharded for DDP.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, DataError
from .registry import FASHION_MNIST_DIR, require_package

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
BUILTIN = ("fashion-mnist", "digits")
DIGITS_TEST = 300          # of 1,797
FOLDER_TEST_FRACTION = 0.05
DEFAULT_FOLDER_SIZE = 32


@dataclass
class ImageDataset:
    images: Tensor                       # (N, C, H, W) uint8
    labels: Tensor | None                # (N,) int64, or None when unlabelled
    class_names: list[str] = field(default_factory=list)
    name: str = ""

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.labels is not None else 0

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"ImageDataset({self.name!r}, {n} images {c}x{h}x{w}, {self.num_classes} classes)"


# ---- value ranges ---------------------------------------------------------------------------------


def to_model_range(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (the range diffusion models work in)."""
    return images.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)


def from_model_range(x: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded and clamped."""
    return ((x.detach().to(torch.float32) + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


# ---- splits and resizing -------------------------------------------------------------------------


def hash_unit(key: str) -> float:
    """A stable number in [0, 1) for a string."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") / 2**64


def heldout_mask(keys: list[str], fraction: float) -> list[bool]:
    """Which items go to the test split: those whose key hashes below ``fraction``. With two or
    more items each split gets at least one, so a small folder still has a test image."""
    scores = [hash_unit(k) for k in keys]
    is_test = [s < fraction for s in scores]
    if len(keys) >= 2 and not any(is_test):
        is_test[scores.index(min(scores))] = True
    if len(keys) >= 2 and all(is_test):
        is_test[scores.index(max(scores))] = False
    return is_test


def _resize_square(images: Tensor, size: int) -> Tensor:
    """Resize uint8 (N, C, h, w) to (N, C, size, size): bilinear, antialiased when shrinking."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in images.split(4096):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")


def _check_size(image_size: int | None) -> None:
    if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")


# ---- fashion-mnist (Debian dataset-fashion-mnist, IDX files) --------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (LeCun's MNIST format) of unsigned bytes."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}; reinstall the package that ships it") from None
    if len(data) < 4 or data[0] or data[1] or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        raise DataError(f"{path} is truncated: {body.size} bytes for shape {dims}")
    return body.reshape(dims)


def _fashion_mnist(split: str) -> ImageDataset:
    prefix = "train" if split == "train" else "t10k"
    img_path = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    lab_path = FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    require_package("dataset-fashion-mnist", img_path, lab_path, dataset="fashion-mnist")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_path} and {lab_path} do not match: {images.shape} vs {labels.shape}")
    return ImageDataset(torch.from_numpy(images.copy()).unsqueeze(1),                 # (N, 1, 28, 28)
                        torch.from_numpy(labels.astype(np.int64)), list(FASHION_MNIST_CLASSES), "fashion-mnist")


# ---- digits (scikit-learn's bundled copy of the UCI optical digits) -------------------------------


def digits_file() -> Path:
    spec = importlib.util.find_spec("sklearn")  # found without importing scikit-learn (slow)
    if spec is None or not spec.origin:
        raise DataError("the digits data set ships with scikit-learn; install it with `pip install scikit-learn`")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataError(f"scikit-learn is installed but {path} is missing; reinstall it with "
                        "`pip install --force-reinstall scikit-learn`")
    return path


def _digits(split: str) -> ImageDataset:
    path = digits_file()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)                         # (1797, 65)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    pixels, labels = table[:, :64], table[:, 64]
    images = np.round(pixels * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)  # 0..16 -> 0..255
    order = sorted(range(len(table)), key=lambda i: hash_unit(f"digits:{i}"))
    test = sorted(order[:DIGITS_TEST])
    keep = test if split == "test" else sorted(order[DIGITS_TEST:])
    return ImageDataset(torch.from_numpy(images[keep]), torch.from_numpy(labels[keep]),
                        [str(d) for d in range(10)], "digits")


# ---- a folder of the user's images ----------------------------------------------------------------


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _images_under(folder: Path) -> list[Path]:
    found = []
    for p in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(folder).parts[:-1]):
            continue  # hidden folders (.git, .ipynb_checkpoints)
        if _is_image(p):
            found.append(p)
    return found


GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _cannot_read(path: Path, e: Exception) -> DataError:
    return DataError(f"cannot read the image {path}: {e}; remove or replace that file")


def _is_grey_file(path: Path) -> bool:
    """Whether an image file stores grey levels only (reads the header, not the pixels)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode == "P":
                pal = im.getpalette() or []
                return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))
            return im.mode in GREY_MODES
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _cannot_read(path, e) from None


def open_image(path: Path, size: int, mode: str) -> np.ndarray:
    """Decode one image as ``mode`` ("RGB" or "L"; transparency goes over white), resize its short
    side to ``size`` and crop the centre: (size, size, 3) or (size, size) uint8."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.seek(0)  # first frame of an animation
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            im = im.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _cannot_read(path, e) from None
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.array(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _folder(folder: Path, split: str, size: int) -> ImageDataset:
    loose = [p for p in sorted(folder.iterdir()) if _is_image(p)]
    class_dirs = [d for d in sorted(folder.iterdir())
                  if d.is_dir() and not d.name.startswith(".") and _images_under(d)]
    labelled = not loose and len(class_dirs) >= 2
    if labelled:
        files = [(p, c) for c, d in enumerate(class_dirs) for p in _images_under(d)]
        class_names = [d.name for d in class_dirs]
    else:
        files = [(p, -1) for p in _images_under(folder)]
        class_names = []
    if not files:
        raise DataError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}); "
                        "put some there, optionally in one sub-folder per class")
    is_test = heldout_mask([p.relative_to(folder).as_posix() for p, _ in files], FOLDER_TEST_FRACTION)
    # The colour mode looks at every file's header, so both splits get the same channels.
    grey = all(_is_grey_file(p) for p, _ in files)
    chosen = [f for f, t in zip(files, is_test) if t == (split == "test")]
    images = torch.zeros((len(chosen), 1 if grey else 3, size, size), dtype=torch.uint8)  # (N, C, S, S)
    for i, (p, _) in enumerate(chosen):
        a = torch.from_numpy(open_image(p, size, "L" if grey else "RGB"))
        images[i] = a[None] if grey else a.permute(2, 0, 1)
    labels = torch.tensor([c for _, c in chosen], dtype=torch.int64) if labelled else None
    return ImageDataset(images, labels, class_names, folder.name)


# ---- entry point ----------------------------------------------------------------------------------


def load_image_dataset(name_or_path: str | Path, split: str = "train", image_size: int | None = None) -> ImageDataset:
    """Load ``fashion-mnist``, ``digits`` or a folder of images (png/jpg/jpeg/bmp/gif/webp).

    A folder's sub-folders are classes (labels in sorted name order) when there
    are two or more of them and no images lie loose at its top; otherwise its
    images (searched recursively) are unlabelled. Folder images become RGB, or
    one grey channel when every image is grey, resized on the short side and
    centre-cropped to ``image_size`` (default 32). The built-in sets keep their
    native size (28, 8) unless ``image_size`` asks for another.
    """
    _check_split(split)
    _check_size(image_size)
    name = str(name_or_path)
    if name == "fashion-mnist":
        data = _fashion_mnist(split)
    elif name == "digits":
        data = _digits(split)
    else:
        path = Path(name).expanduser()
        if not path.is_dir():
            what = "a file, not a folder" if path.is_file() else "not an existing folder"
            raise DataError(f"{name!r} is neither a known image data set ({', '.join(BUILTIN)}) nor a folder "
                            f"of images ({what}); check the name or path")
        return _folder(path, split, image_size or DEFAULT_FOLDER_SIZE)
    if image_size is not None:
        data.images = _resize_square(data.images, image_size)
    return data


# ---- batches for the trainer ----------------------------------------------------------------------


class ImageBatches:
    """The trainer's batch source over an image data set.

    Images are drawn without replacement within each epoch, in an order fixed
    by (seed, epoch), so the global batch of a step depends on nothing but
    (seed, step): a resumed run or any processes x accumulation split sees the
    same images. ``batch`` returns ``{"x": (rows, C, H, W) float in [-1, 1],
    "y": (rows,) int64 or None}``.
    """

    def __init__(self, data: ImageDataset, batch_size: int, seed: int = 0, hflip: bool = False,
                 use_labels: bool = True) -> None:
        if len(data) == 0:
            raise DataError(f"the image data set {data.name!r} is empty")
        if batch_size <= 0:
            raise ConfigError(f"train.batch_size must be positive, got {batch_size}")
        self.images = data.images
        self.labels = data.labels if use_labels else None
        self.batch_size, self.seed, self.hflip = batch_size, seed, hflip
        self._perms: dict[int, Tensor] = {}

    def items(self, step: int) -> int:
        return self.batch_size

    def _perm(self, epoch: int) -> Tensor:
        perm = self._perms.get(epoch)
        if perm is None:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2 ** 64)
            perm = self._perms[epoch] = torch.randperm(len(self.images), generator=g)
        return perm

    def indices(self, step: int) -> Tensor:
        """Data-set indices of the whole global batch of ``step``, (batch_size,)."""
        n, start = len(self.images), step * self.batch_size
        end = start + self.batch_size
        parts = []
        for epoch in range(start // n, (end - 1) // n + 1):
            lo, hi = max(start, epoch * n) - epoch * n, min(end, (epoch + 1) * n) - epoch * n
            parts.append(self._perm(epoch)[lo:hi])
        return torch.cat(parts)

    def batch(self, step: int, part: int = 0, parts: int = 1) -> dict[str, Tensor | None]:
        if self.batch_size % parts:
            raise ConfigError(f"train.batch_size ({self.batch_size}) must be divisible by "
                              f"processes x grad_accum ({parts})")
        rows = self.batch_size // parts
        sl = slice(part * rows, (part + 1) * rows)
        idx = self.indices(step)[sl]
        x = to_model_range(self.images[idx])                                          # (rows, C, H, W)
        if self.hflip:
            g = torch.Generator().manual_seed((self.seed * 7_919 + step * 104_729 + 1) % 2 ** 64)
            flip = (torch.rand(self.batch_size, generator=g) < 0.5)[sl]
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = self.labels[idx] if self.labels is not None else None
        return {"x": x, "y": y}
