"""One writer per run folder: a second process is refused with the holder's PID, and a killed holder
leaves no stale lock."""
import subprocess
import sys

import pytest

from aigc.checkpoint.lock import RunLock
from aigc.errors import ConfigError

from .conftest import ROOT, TINY, run_cli

HOLDER = ("import sys, time\n"
          "from aigc.checkpoint.lock import RunLock\n"
          "lock = RunLock(sys.argv[1]).acquire()\n"
          "print('locked', flush=True)\n"
          "time.sleep(300)\n")


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_second_writer_is_refused_until_the_holder_dies(tmp_path, corpus_file):
    run = tmp_path / "runs" / "run"  # the lock creates the folder and its parents
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(run)
        train = ["train", "text", "--data", str(corpus_file), "--out", str(run), "--max-steps", "2", *TINY]
        res = run_cli(*train)
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
        assert f"PID {holder.pid}" in res.stderr and "another process" in res.stderr
        assert "Traceback" not in res.stderr
        assert _snapshot(run) == before  # nothing written

        holder.kill()  # the OS drops the flock with the process: no stale lock
        holder.wait(timeout=30)
        res = run_cli(*train)
        assert res.returncode == 0, res.stderr
        assert (run / "latest").is_dir()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()


def test_lock_in_one_process(tmp_path):
    run = tmp_path / "run"
    with RunLock(run) as lock:
        assert lock.held and (run / ".lock").read_text().strip().isdigit()
        with pytest.raises(ConfigError, match="being trained by another process"):
            RunLock(run).acquire()  # a second descriptor conflicts even within one process
    assert not lock.held
    again = RunLock(run).acquire()  # released: free again
    again.release()
    again.release()  # idempotent
