"""Captioned image sets for text-to-image: the common type, and a folder of the user's images.

:class:`CaptionedImages` is what every captioned source returns — the embedded
``emoji`` set (:mod:`aigc.data.emoji`), the ``shapes`` scene generator, and a
user's folder:

* ``images``   uint8 RGB (N, 3, H, W), the layout of :mod:`aigc.data.images`;
* ``captions`` one non-empty list of non-empty strings per image, the primary
  caption first (for emoji the English name, then aliases, then Chinese);
* ``ids``      one stable string key per image (an emoji's code points, a file's
  path relative to its folder, a scene's number): the train/test split hashes
  it, so held-out images never enter training, whatever else changes;
* ``meta``     optional JSON-able dict per image (the emoji itself, a scene's
  objects, ...), empty when unused.

A trainer picks one caption per (item, step) with :func:`pick_caption`, a pure
function of (seed, step, id), so a resumed run sees the same captions.

A user's folder holds images plus ``captions.jsonl`` — one
``{"file": "cat.png", "caption": "a cat"}`` per line (``"text"`` works for
``"caption"``, and either may be a list of captions) — or ``captions.tsv`` —
``file<TAB>caption`` per line, further tab-separated columns being more
captions, an optional ``file<TAB>caption`` header. Paths are relative to the
folder; a file named on several lines gets all their captions. Only images
named in the captions file are loaded. They are resized on the short side and
centre-cropped like :func:`aigc.data.images.load_image_dataset` does, and split
by the same hash of the relative path, so a folder's test images are the same
whether it is loaded with or without its captions.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from .images import DEFAULT_FOLDER_SIZE, FOLDER_TEST_FRACTION, ImageDataset, hash_unit, heldout_mask, open_image

if TYPE_CHECKING:
    from .shapes import SceneMix

CAPTION_FILES = ("captions.jsonl", "captions.tsv")
SPLITS = ("train", "test", "all")


@dataclass
class CaptionedImages:
    """Images with one or more captions each (see the module docstring for the fields)."""

    images: Tensor                       # (N, 3, H, W) uint8 RGB
    captions: list[list[str]]            # (N,) lists, primary caption first
    ids: list[str]                       # (N,) stable keys; the split hashes them
    name: str = ""
    meta: list[dict] = field(default_factory=list)  # (N,) or empty

    def __post_init__(self) -> None:
        n = self.images.shape[0] if self.images.ndim == 4 else -1
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.captions) != n or len(self.ids) != n or (self.meta and len(self.meta) != n):
            raise ValueError(f"{n} images but {len(self.captions)} caption lists, {len(self.ids)} ids, "
                             f"{len(self.meta)} meta entries")
        if any(not caps or not all(isinstance(c, str) and c.strip() for c in caps) for caps in self.captions):
            raise ValueError("every image needs at least one non-empty caption")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def primary_captions(self) -> list[str]:
        """The first caption of each image (e.g. for evaluation prompts)."""
        return [caps[0] for caps in self.captions]

    def caption(self, index: int, step: int = 0, seed: int = 0) -> str:
        """The caption of image ``index`` at training ``step`` (see :func:`pick_caption`)."""
        return pick_caption(self.captions[index], self.ids[index], step, seed)

    def subset(self, indices: list[int]) -> CaptionedImages:
        idx = list(indices)
        return CaptionedImages(self.images[idx], [self.captions[i] for i in idx], [self.ids[i] for i in idx],
                               self.name, [self.meta[i] for i in idx] if self.meta else [])

    def as_image_dataset(self) -> ImageDataset:
        """The images alone, unlabelled (what FID/KID and unconditional training take)."""
        return ImageDataset(self.images, None, [], self.name)

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        k = sum(len(caps) for caps in self.captions)
        return f"CaptionedImages({self.name!r}, {n} images {c}x{h}x{w}, {k} captions)"


def pick_caption(captions: list[str], key: str, step: int, seed: int = 0) -> str:
    """One of an item's captions, chosen by a stable hash of (seed, step, key): uniform over the
    list in the long run, and the same choice every time for the same arguments."""
    return captions[int(hash_unit(f"{seed}:{step}:{key}") * len(captions))]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


Table = dict[str, tuple[int, list[str]]]  # normalised relative file -> (first line number, captions)


def _add(table: Table, file: str, caps: list, line: int, where: str) -> None:
    """Append captions for ``file`` (its path normalised, so ``./a.png`` is ``a.png``)."""
    for c in caps:
        if not isinstance(c, str) or not c.strip():
            raise DataError(f"{where}: a caption of {file!r} is empty or not a string; "
                            "write a caption or remove it")
    _, merged = table.setdefault(Path(os.path.normpath(file)).as_posix(), (line, []))
    merged.extend(c.strip() for c in caps if c.strip() not in merged)


def _read_jsonl(path: Path) -> Table:
    table: Table = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where} is not JSON ({e.msg}); write one "
                            '{"file": ..., "caption": ...} object per line') from None
        if not isinstance(row, dict) or not isinstance(row.get("file"), str) or not row["file"].strip():
            raise DataError(f'{where} needs a "file" string naming an image in {path.parent}')
        caps = row.get("caption", row.get("text"))
        if caps is None:
            raise DataError(f'{where} has no "caption" (or "text") for {row["file"]!r}')
        caps = [caps] if isinstance(caps, str) else caps
        if not isinstance(caps, list) or not caps:
            raise DataError(f'{where}: "caption" must be a string or a non-empty list of strings')
        _add(table, row["file"].strip(), caps, n, where)
    return table


def _read_tsv(path: Path) -> Table:
    table: Table = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        file, *caps = line.split("\t")
        if n == 1 and file.strip().lower() == "file" and [c.strip().lower() for c in caps] in (["caption"], ["text"]):
            continue  # header row
        if not caps:
            raise DataError(f"{where} has no tab; write `file<TAB>caption`")
        if not file.strip():
            raise DataError(f"{where} has an empty file name")
        _add(table, file.strip(), caps, n, where)
    return table


def read_captions(folder: Path) -> tuple[Path, Table]:
    """The captions file of a folder and its {relative file: (line, [captions])} in file order."""
    found = [folder / name for name in CAPTION_FILES if (folder / name).is_file()]
    if not found:
        raise DataError(f"{folder} has no captions file; add captions.jsonl "
                        '({"file": "a.png", "caption": "..."} per line) or captions.tsv (file<TAB>caption per line)')
    if len(found) > 1:
        raise DataError(f"{folder} has both captions.jsonl and captions.tsv; keep only one")
    path = found[0]
    try:
        table = _read_jsonl(path) if path.suffix == ".jsonl" else _read_tsv(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason}); save it as UTF-8") from None
    if not table:
        raise DataError(f"{path} names no images; add a line per image")
    return path, table


def _resolve(folder: Path, captions_file: Path, file: str, line: int) -> Path:
    rel = Path(file)
    path = (folder / rel).resolve()
    where = f"{captions_file} line {line}"
    if rel.is_absolute() or not path.is_relative_to(folder.resolve()):
        raise DataError(f"{where} names {file!r}, which is outside {folder}; use paths relative to it")
    if not path.is_file():
        raise DataError(f"{where} names {file!r}, but there is no such image in {folder}; "
                        "fix the name or add the image")
    return path


def load_captioned_folder(folder: str | Path, split: str = "train",
                          image_size: int = DEFAULT_FOLDER_SIZE) -> CaptionedImages:
    """A folder of images with ``captions.jsonl`` or ``captions.tsv`` (see the module docstring)."""
    check_split(split)
    if not isinstance(image_size, int) or image_size <= 0:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{str(folder)!r} is not a folder; give a folder of images with a captions file")
    captions_file, table = read_captions(folder)
    # Every name is checked, whatever the split, so a typo shows up at once.
    paths = {f: _resolve(folder, captions_file, f, line) for f, (line, _) in table.items()}
    ids = list(table)  # normalised relative paths
    is_test = heldout_mask(ids, FOLDER_TEST_FRACTION)
    chosen = [i for i, t in enumerate(is_test) if split == "all" or t == (split == "test")]
    images = torch.zeros((len(chosen), 3, image_size, image_size), dtype=torch.uint8)  # (N, 3, S, S)
    for row, i in enumerate(chosen):
        images[row] = torch.from_numpy(open_image(paths[ids[i]], image_size, "RGB")).permute(2, 0, 1)
    return CaptionedImages(images, [table[ids[i]][1] for i in chosen], [ids[i] for i in chosen], folder.name)


def load_shapes_captioned(split: str = "train", image_size: int = 32, n: int | None = None,
                          seed: int = 0, mix: SceneMix | None = None) -> CaptionedImages:
    """The ``shapes`` scenes of a split (``train``; ``test`` = ``test_seen``; ``test_heldout``) as
    CaptionedImages; ``meta`` holds each scene (``Scene.to_dict``) for the prompt-adherence checker.
    ``mix`` (object counts and relation rates) shapes the train split; None: the default."""
    from .shapes import DEFAULT_MIX, load_shapes

    name = {"test": "test_seen"}.get(split, split)
    arrays = load_shapes(name, n=n, seed=seed, image_size=image_size, mix=mix or DEFAULT_MIX)
    return CaptionedImages(torch.from_numpy(arrays.images), [[c] for c in arrays.captions],
                           [f"{name}:{i}" for i in range(len(arrays.captions))], "shapes",
                           [s.to_dict() for s in arrays.scenes])


def load_captioned_images(name_or_path: str | Path, split: str = "train",
                          image_size: int | None = None) -> CaptionedImages:
    """``emoji``, ``shapes`` (the embedded sets) or a folder with a captions file, at ``image_size``
    (default 32)."""
    size = image_size if image_size is not None else DEFAULT_FOLDER_SIZE
    if str(name_or_path) == "emoji":
        from .emoji import load_emoji  # emoji.py imports this module
        return load_emoji(split, size)
    if str(name_or_path) == "shapes":
        return load_shapes_captioned(split, size)
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise DataError(f"{str(name_or_path)!r} is neither a captioned data set (emoji, shapes) nor a folder of "
                        "images with captions.jsonl or captions.tsv; check the name or path")
    return load_captioned_folder(path, split, size)
