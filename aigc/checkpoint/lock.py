"""One writer per run folder: an exclusive, non-blocking ``flock`` on ``RUN/.lock``.

    with RunLock(run_dir):          # or lock = RunLock(run_dir).acquire(); ...; lock.release()
        train_into(run_dir)

The file holds the holder's PID, for the message a second writer gets. The OS drops the lock when
the holder's file descriptor closes, so a killed run leaves no stale lock even though the file
stays (it is never deleted: unlinking a lock file lets two processes lock two different files).
Where ``fcntl`` is missing (Windows), locking is skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on a run folder (created, with its parents, when missing)."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock, or raise ConfigError naming the process that holds it."""
        if self._fd is not None or fcntl is None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (PID {holder})" if holder.isdigit() else ""
            raise ConfigError(f"'{self.run_dir}' is being trained by another process{who}; "
                              "wait for it or choose another --out") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # a full disk: the lock holds all the same, only the PID is missing
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (idempotent); the file stays."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
