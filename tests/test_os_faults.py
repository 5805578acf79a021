"""OS faults (a full disk, a read-only folder, an image too large to open) end a command with one
sentence and exit status 2, leave no temporary files, and keep what was already written."""
import errno
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import SafetensorError

import aigc
from aigc import checkpoint as ckpt
from aigc.checkpoint.lock import RunLock
from aigc.cli import fault_message, main
from aigc.cli.translate import write_atomic

from .conftest import TINY


def _aigc(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run ``aigc ARGS`` in this process: (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["aigc", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    return code, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _temps(run: Path) -> list[Path]:
    return [p for p in run.rglob(".*") if ".tmp" in p.name or ".trash" in p.name]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_full_disk_during_a_save_keeps_the_earlier_checkpoint(tmp_path, corpus_file, monkeypatch, capsys):
    run = tmp_path / "run"
    stale = run / "checkpoints" / f".tmp-step-00000001-{_dead_pid()}"  # left by a run that died
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    os.symlink("checkpoints/step-00000001", run / f".latest.tmp-{_dead_pid()}")
    real = ckpt.save_file

    def save_file(tensors, path, *a, **k):
        if "step-00000004" in path:  # the second checkpoint finds the disk full
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(ckpt, "save_file", save_file)
    code, err = _aigc(monkeypatch, capsys, "train", "text", "--data", str(corpus_file), "--out", str(run),
                      "--max-steps", "4", "--train.eval_interval=2", *TINY)
    line = _one_error_line(err)
    assert code == 2
    assert line.startswith("error: no space left on device writing '") and ".tmp-step-00000004" in line
    assert "free some space" in line
    assert _temps(run) == []  # the failed write's folder and the dead writers' leftovers are gone
    assert (run / "latest").resolve().name == "step-00000002"
    assert aigc.load(run).generate("the", max_new_tokens=3)
    RunLock(run).acquire().release()  # the failed run let go of its lock


def test_read_only_folder_is_one_sentence(tmp_path, corpus_file, monkeypatch, capsys):
    run = tmp_path / "run"
    real = os.rename

    def rename(src, dst, *a, **k):
        if ".tmp-step-" in str(src):  # root ignores permission bits: play a read-only file system
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", rename)
    code, err = _aigc(monkeypatch, capsys, "train", "text", "--data", str(corpus_file), "--out", str(run),
                      "--max-steps", "2", *TINY)
    line = _one_error_line(err)
    assert code == 2 and "read-only" in line and "step-00000002" in line
    assert _temps(run) == [] and not (run / "latest").exists()


def test_failed_translation_output_leaves_no_temporary_file(tmp_path, monkeypatch):
    out = tmp_path / "out.txt"
    out.write_text("earlier\n")

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError) as info:
        write_atomic(out, "new\n")
    assert "no space left on device" in fault_message(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"] and out.read_text() == "earlier\n"


def test_decompression_bomb_is_one_sentence(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")  # the digits data set ships with scikit-learn
    run = tmp_path / "img"
    code, err = _aigc(monkeypatch, capsys, "train", "image", "--preset", "tiny", "--data", "digits", "--out",
                      str(run), "--max-steps", "1", "--val_images=4", "--diffusion.timesteps=50", "--no-progress")
    assert code == 0, err
    picture = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(picture)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)  # 64 pixels > 2 x 16: Pillow refuses the file
    code, err = _aigc(monkeypatch, capsys, "edit", "img2img", "--image", str(picture), "--model", str(run),
                      "--out", str(tmp_path / "out.png"), "--steps", "2")
    line = _one_error_line(err)
    assert code == 2 and str(picture) in line and "decompression bomb" in line
    assert not (tmp_path / "out.png").exists()


def test_fault_messages(tmp_path):
    missing = tmp_path / "no" / "such" / "out.txt"
    cases = [
        (OSError(errno.ENOSPC, "No space left on device", "RUN/x"),
         "no space left on device writing 'RUN/x'; free some space or choose another --out"),
        (OSError(errno.EACCES, "Permission denied", "/etc/x"), "permission denied for '/etc/x'"),
        (OSError(errno.EISDIR, "Is a directory", "d"), "'d' is a folder, not a file"),
        (OSError(errno.ENOENT, "No such file or directory", str(missing)), f"'{tmp_path / 'no'}' does not exist"),
        (SafetensorError('Error while serializing: I/O error: Read-only file system (os error 30) at path "m/.t"'),
         "cannot write 'm/.t': its file system is read-only"),
        (OSError("cannot identify image file 'x.png'"), "cannot identify image file 'x.png'"),
        (Image.DecompressionBombWarning("Image size (9 pixels) exceeds limit of 4 pixels."),
         "refusing to open an image: image size (9 pixels) exceeds limit of 4 pixels; use a smaller image"),
    ]
    for exc, expected in cases:
        message = fault_message(exc)
        assert message is not None and expected in message and "\n" not in message, (exc, message)
    assert fault_message(SafetensorError("invalid header")) is None
    assert fault_message(ValueError("a bug")) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bomb warning raised as an error is one too
        with pytest.raises(Image.DecompressionBombWarning) as info:
            warnings.warn("Image size (9 pixels) exceeds limit of 4 pixels.", Image.DecompressionBombWarning)
    assert fault_message(info.value).startswith("refusing to open an image")
