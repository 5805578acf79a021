"""Checkpoints: folders of safetensors + JSON, written atomically.

Layout of a run folder::

    RUN/checkpoints/step-00000500/   config.json, model.safetensors, [ema.safetensors],
                                     optimizer.safetensors, trainer_state.json, extra files
    RUN/latest -> checkpoints/step-…  (symlink, replaced atomically)
    RUN/best   -> checkpoints/step-…

A checkpoint folder is written under a temporary name and renamed into place,
and pointers are swapped with ``os.replace``, so a crash at any moment leaves
every pointer on a complete checkpoint. A failed write (a full disk, a
read-only folder) removes its temporary files before the error goes on; a
successful save removes those of earlier writers that died. ``RunLock``
(``checkpoint/lock.py``) keeps one writer per run folder. Nothing is ever
unpickled.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..errors import CheckpointError

FORMAT = "aigc-checkpoint"
VERSION = 1
POINTERS = ("latest", "best")
# the temporary names our writers use in a run folder, ending in the writer's PID
_TEMP = re.compile(r"^\.(?:(?:tmp|trash)-(?:step-\d+|averaged)|(?:latest|best|metrics\.jsonl|loss\.png)\.tmp)-(\d+)$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def safetensors_os_error(exc: Exception, path: Path | str | None = None) -> OSError | None:
    """The OSError inside a safetensors write error ("I/O error: No space left on device (os error 28)
    at path ...") naming ``path`` (or the path in the message); None when it is not an OS error."""
    code = re.search(r"\(os error (\d+)\)", str(exc))
    if code is None:
        return None
    named = re.search(r'at path "([^"]*)"', str(exc))
    path = path if path is not None else named[1] if named else None
    return OSError(int(code[1]), os.strerror(int(code[1])), *([str(path)] if path is not None else []))


def _save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    """``save_file`` + fsync; a failed write is an OSError naming ``path``."""
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    except SafetensorError as exc:
        raise (safetensors_os_error(exc, path) or exc) from None
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename (the file is removed on failure)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_bytes(tmp, (json.dumps(obj, indent=2) + "\n").encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(run_dir: Path) -> None:
    """Remove the temporary files and folders (``.tmp-step-N-PID``, ``.trash-…-PID``, ``.latest.tmp-PID``,
    …) that writers no longer running left in ``RUN`` and ``RUN/checkpoints``."""
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            m = _TEMP.match(child.name)
            if m is None or (int(m[1]) != os.getpid() and _alive(int(m[1]))):
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def save_checkpoint(run_dir: Path, step: int, *, kind: str, meta: dict[str, Any],
                    tensors: dict[str, dict[str, Tensor]], files: dict[str, str] | None = None,
                    pointers: tuple[str, ...] = ("latest",)) -> Path:
    """Write ``RUN/checkpoints/step-N`` atomically and point ``pointers`` at it.

    ``tensors`` maps a file stem ("model", "ema", "optimizer") to its tensors;
    ``meta`` goes into ``config.json``; ``files`` are extra text files (e.g. the
    tokenizer and the trainer state).
    """
    run_dir = Path(run_dir)
    config = {"format": FORMAT, "version": VERSION, "kind": kind, "step": step, **meta}
    final = write_folder(run_dir / "checkpoints" / f"step-{step:08d}", config, tensors, files)
    for name in pointers:
        set_pointer(run_dir, name, final)
    remove_stale_temps(run_dir)
    return final


def write_folder(final: Path, config: dict[str, Any], tensors: dict[str, dict[str, Tensor]],
                 files: dict[str, str] | None = None) -> Path:
    """Write a checkpoint folder under a temporary name, then rename it into place. On any failure the
    temporary folder is removed (and a checkpoint being replaced is put back) before the error goes on."""
    final = Path(final)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_bytes(tmp / "config.json", (json.dumps(config, indent=2) + "\n").encode())
        for stem, tdict in tensors.items():
            _save_tensors(tdict, tmp / f"{stem}.safetensors")
        for name, text in (files or {}).items():
            _write_bytes(tmp / name, text.encode())
        _fsync_dir(tmp)
        if final.exists():  # written again (a resumed run, a new average): swap it out
            trash = root / f".trash-{final.name}-{os.getpid()}"
            os.rename(final, trash)
            try:
                os.rename(tmp, final)
            except BaseException:
                os.rename(trash, final)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    return final


def set_pointer(run_dir: Path, name: str, target: Path) -> None:
    """Atomically make ``RUN/name`` a relative symlink to checkpoint ``target``."""
    link = Path(run_dir) / name
    tmp = link.with_name(f".{name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(os.path.relpath(target, run_dir), tmp)
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(Path(run_dir))


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete checkpoint folders, oldest first."""
    root = Path(run_dir) / "checkpoints"
    return sorted(p for p in root.glob("step-*") if p.is_dir()) if root.is_dir() else []


def prune(run_dir: Path, keep_last: int = 1) -> None:
    """Delete checkpoints that no pointer refers to and that are not among the
    ``keep_last`` newest, and leftovers of interrupted writes."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return
    keep = {(Path(run_dir) / p).resolve() for p in POINTERS if (Path(run_dir) / p).exists()}
    keep |= {p.resolve() for p in step_checkpoints(run_dir)[-keep_last:]}
    for child in root.iterdir():
        if child.resolve() not in keep:
            shutil.rmtree(child, ignore_errors=True)


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / "latest").exists()


def resolve(path: Path | str, prefer: tuple[str, ...] = ("best", "latest")) -> Path:
    """A checkpoint folder from a checkpoint folder or a run folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"'{path}' does not exist; pass a run folder made by 'aigc train' or a checkpoint folder")
    if (path / "config.json").is_file():
        return path
    for name in prefer:
        if (path / name).exists():
            return (path / name).resolve()
    raise CheckpointError(f"'{path}' holds no checkpoint (no config.json, no latest/ or best/); "
                          "train a model into it first")


def read_config(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's config.json, checked to be one of ours."""
    try:
        config = json.loads((Path(ckpt) / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint '{ckpt}' has no config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint '{ckpt}' has a corrupt config.json") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"'{ckpt}' is not an aigc checkpoint (its config.json lacks format '{FORMAT}')")
    if config.get("version", 0) > VERSION:
        raise CheckpointError(f"checkpoint '{ckpt}' has format version {config['version']}; "
                              f"this aigc reads up to {VERSION}: upgrade aigc")
    return config


def read_tensors(ckpt: Path, stem: str) -> dict[str, Tensor]:
    path = Path(ckpt) / f"{stem}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{ckpt}' has no {path.name}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint file '{path}' is corrupt ({exc})") from None


def read_text(ckpt: Path, name: str) -> str:
    path = Path(ckpt) / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{ckpt}' has no {name}")
    return path.read_text(encoding="utf-8")
