"""The model zoo: small trained checkpoints shipped in the repository, loaded as ``aigc.load("zoo:NAME")``
or ``--model zoo:NAME``.

The zoo is a folder (``zoo/`` at the repository root, beside the ``aigc`` package; the environment
variable ``AIGC_ZOO`` names another) holding one folder per model and ``MANIFEST.json``::

    {"format": "aigc-zoo", "version": 1,
     "models": {"fortunes-small": {"family": "text", "description": "..."}, ...},
     "files": {"fortunes-small/config.json": {"sha256": "...", "size": 1234}, ...}}

``files`` lists every file of the zoo, by its path relative to it. Before a model is loaded, each of
its files but the model card is hashed and compared with the manifest, and a file the manifest does not
list is refused too (it could change what the loader reads, e.g. an added ``ema.safetensors``), so a
corrupt or tampered copy is a :class:`CheckpointError`, never a silently different model. The weights are
stored as float16 and upcast to the model's float32 when loaded. ``scripts/build_zoo.py`` builds a
zoo folder from a trained run and writes the manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

PREFIX = "zoo:"
MANIFEST = "MANIFEST.json"
FORMAT = "aigc-zoo"
VERSION = 1
ENV = "AIGC_ZOO"
DOC_SUFFIXES = (".md",)


def is_ref(path: Any) -> bool:
    """Whether ``path`` (a str or Path, as the CLI passes it) names a zoo model: ``zoo:NAME``."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(PREFIX)


def zoo_root() -> Path:
    """The zoo folder: ``$AIGC_ZOO`` when set, else ``zoo/`` beside the ``aigc`` package."""
    env = os.environ.get(ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "zoo"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(root: Path | None = None) -> dict[str, Any]:
    """The zoo's manifest, checked to be one."""
    root = zoo_root() if root is None else Path(root)
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"no model zoo at '{root}' (no {MANIFEST}); set {ENV} to the zoo folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"the zoo manifest '{path}' is corrupt ({exc})") from None
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or not isinstance(manifest.get("models"), dict) or not isinstance(manifest.get("files"), dict)):
        raise CheckpointError(f"'{path}' is not a model zoo manifest (format '{FORMAT}')")
    if manifest.get("version", 0) > VERSION:
        raise CheckpointError(f"the zoo manifest '{path}' has version {manifest['version']}; this aigc reads up "
                              f"to {VERSION}: upgrade aigc")
    return manifest


def names(root: Path | None = None) -> list[str]:
    """The zoo's model names."""
    return sorted(read_manifest(root)["models"])


def model_files(manifest: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """The manifest's entries of model ``name``: path relative to the zoo -> {"sha256", "size"}."""
    return {p: e for p, e in manifest["files"].items() if p.startswith(f"{name}/")}


def _is_doc(path: str) -> bool:
    """Documentation (the model card): hashed in the manifest, but loading neither reads nor checks it."""
    return path.endswith(DOC_SUFFIXES)


def verify(root: Path, name: str, manifest: dict[str, Any]) -> None:
    """Check every file of model ``name`` that loading may read against the manifest (size, then sha256),
    and that its folder holds no such file the manifest does not list. The model card is left out: an
    edited card does not stop the model loading (the test suite checks the shipped cards' hashes)."""
    folder = root / name
    listed = {p: e for p, e in model_files(manifest, name).items() if not _is_doc(p)}
    if not listed:
        raise CheckpointError(f"the zoo manifest lists no files for '{name}'")
    for rel, entry in sorted(listed.items()):
        path = root / rel
        if not path.is_file():
            raise CheckpointError(f"zoo model '{name}' is incomplete: '{path}' is missing")
        try:
            size, digest = int(entry["size"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"the zoo manifest's entry for '{rel}' is corrupt") from None
        if path.stat().st_size != size or sha256_file(path) != digest:
            raise CheckpointError(f"zoo model '{name}': '{path}' does not match its sha256 in {root / MANIFEST} "
                                  "(the file is corrupt or was changed); restore it (git checkout) or rebuild "
                                  "the zoo with scripts/build_zoo.py")
    present = {p.relative_to(root).as_posix() for p in folder.rglob("*")
               if (p.is_file() or p.is_symlink()) and not _is_doc(p.name)}
    extra = sorted(present - set(listed))
    if extra:
        raise CheckpointError(f"zoo model '{name}' holds files its manifest does not list ({', '.join(extra[:3])}); "
                              "remove them or rebuild the zoo with scripts/build_zoo.py")


def resolve(ref: str | os.PathLike, root: Path | None = None) -> Path:
    """The verified folder of ``zoo:NAME``: an unknown name, or a file that does not match the manifest, is
    a :class:`CheckpointError`."""
    root = zoo_root() if root is None else Path(root)
    name = os.fspath(ref)[len(PREFIX):]
    manifest = read_manifest(root)
    known = sorted(manifest["models"])
    if name not in known or "/" in name or "\\" in name or name in (".", ".."):
        raise CheckpointError(f"no model '{name}' in the zoo ({root}); it has "
                              f"{', '.join(PREFIX + n for n in known) or 'no models'}")
    folder = root / name
    if not folder.is_dir():
        raise CheckpointError(f"zoo model '{name}' is listed in {root / MANIFEST} but '{folder}' is missing")
    verify(root, name, manifest)
    return folder
