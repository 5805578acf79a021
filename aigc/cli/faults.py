"""OS faults as one sentence: a full disk, a read-only or missing folder, no permission, an image too
large to open safely. The command line prints it and exits 2; anything else is a bug and keeps its
traceback."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

_SPACE = "free some space or choose another --out"
_ACCESS = "fix its permissions or choose another path"
# errno -> (what happened, with the path as {p}; the same without a path; what to do)
_FAULTS: dict[int, tuple[str, str, str]] = {
    errno.ENOSPC: ("no space left on device writing {p}", "no space left on device", _SPACE),
    errno.EDQUOT: ("disk quota exceeded writing {p}", "disk quota exceeded", _SPACE),
    errno.EROFS: ("cannot write {p}: its file system is read-only", "the file system is read-only",
                  "choose a writable --out"),
    errno.EACCES: ("permission denied for {p}", "permission denied", _ACCESS),
    errno.EPERM: ("operation not permitted on {p}", "operation not permitted", _ACCESS),
    errno.EISDIR: ("{p} is a folder, not a file", "a folder was given where a file was expected",
                   "give a file path"),
    errno.ENOTDIR: ("a part of {p} is a file, not a folder", "a file was given where a folder was expected",
                    "check the path"),
    errno.EEXIST: ("{p} already exists", "a file already exists", "remove it or choose another path"),
    errno.ENOENT: ("{p} does not exist", "a file or folder does not exist",
                   "check the path (an output's folder must exist)"),
    errno.EMFILE: ("too many open files (opening {p})", "too many open files", "raise the limit (ulimit -n)"),
    errno.EIO: ("input/output error on {p}", "input/output error", "check the disk"),
}


def fault_message(exc: BaseException) -> str | None:
    """One sentence for an OS fault (OSError, a safetensors write error, a Pillow decompression bomb);
    None for anything else."""
    if type(exc).__name__ == "SafetensorError" and "safetensors" in sys.modules:
        from ..checkpoint import safetensors_os_error

        exc = safetensors_os_error(exc) or exc
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(exc, (pil.DecompressionBombError, pil.DecompressionBombWarning)):
        path = _image_path(exc)
        what = f"refusing to open the image '{path}'" if path else "refusing to open an image"
        return f"{what}: {_clause(str(exc))}; use a smaller image"
    if not isinstance(exc, OSError):
        return None
    path = exc.filename
    path = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else None
    if exc.errno == errno.ENOENT and path:
        path = _first_missing(path)
    if exc.errno not in _FAULTS:
        if exc.strerror:
            return f"{_clause(exc.strerror)} ({path})" if path else _clause(exc.strerror)
        return _clause(str(exc)) or type(exc).__name__
    with_path, without, advice = _FAULTS[exc.errno]
    return f"{with_path.format(p=repr(path)) if path else without}; {advice}"


def _clause(text: str) -> str:
    """``text`` as part of one sentence: on one line, no final period, lower-case first letter."""
    text = " ".join(text.split()).rstrip(".")
    return text[:1].lower() + text[1:]


def _first_missing(path: str) -> str:
    """The outermost missing part of ``path`` (the folder to create, or the path itself)."""
    missing = Path(path)
    for parent in Path(path).parents:
        if parent.exists() or parent == parent.parent:
            break
        missing = parent
    return str(missing)


def _image_path(exc: BaseException) -> str | None:
    """The file Pillow was opening when it raised ``exc`` (its ``open`` keeps it in ``filename``)."""
    tb = exc.__traceback__
    found = None
    while tb is not None:
        frame = tb.tb_frame
        name = frame.f_locals.get("filename") if frame.f_globals.get("__name__", "").startswith("PIL") else None
        if isinstance(name, (str, bytes)) and name:
            found = os.fsdecode(name)
        tb = tb.tb_next
    return found
