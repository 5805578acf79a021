"""The on-disk cache for data decoded from installed packages (never downloaded).

``$AIGC_CACHE`` or ``~/.cache/aigc`` holds one sub-folder per user (``emoji``,
``fid``, ...). Arrays go in ``.npz`` files without pickles, written to a temp
file and renamed into place, so a crash never leaves a half-written entry and
readers never see one.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    """``$AIGC_CACHE`` or ``~/.cache/aigc``."""
    return Path(os.environ.get("AIGC_CACHE") or "~/.cache/aigc").expanduser()


def cache_key(fields: dict) -> str:
    """A short stable digest of a JSON-able description of what is cached."""
    text = json.dumps(fields, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:24]


def file_stamp(path: Path) -> dict:
    """What identifies one version of an installed file: its path, size and mtime."""
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None when it is missing or unreadable (then rebuild it)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Write arrays atomically (temp file in the same folder + rename). A cache that cannot be
    written only costs time, so failure is a warning, not an error; returns whether it worked."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True
    except OSError as e:
        warnings.warn(f"could not write the cache file {path}: {e}; set AIGC_CACHE to a writable folder "
                      "to keep decoded data between runs", stacklevel=3)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return False
