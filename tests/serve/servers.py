"""Running the service in tests: tiny trained runs of every family, an in-process server on a loopback port
(uvicorn in a thread), and ``aigc serve`` as a child process (for kill -9 and replicas)."""
from __future__ import annotations

import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from ..cli.test_asr_cli import TINY as ASR
from ..cli.test_asr_cli import tone_folder
from ..conftest import ROOT, run_cli

TEXT = ["--data", "fortunes", "--preset", "tiny", "--model.n_layer=1", "--model.n_embd=32", "--model.block_size=96",
        "--train.batch_size=8", "--train.warmup_steps=2", "--train.eval_batches=2", "--no-progress"]
IMAGE = ["--class-cond", "--preset", "tiny", "--data", "digits", "--no-progress", "--train.eval_interval=10",
         "--diffusion.timesteps=100"]
T2I = ["--data", "shapes", "--preset", "tiny", "--no-progress", "--train_images=64", "--val_images=8",
       "--train.eval_interval=10"]
MT = ["--preset", "tiny", "--model.max_len=40", "--max-tokens", "400", "--dev_bleu_sentences=8",
      "--train.eval_interval=10", "--train.eval_batches=2", "--no-progress"]
WORDS = {"the": "el", "cat": "gato", "dog": "perro", "sees": "ve", "big": "grande", "fish": "pez"}


def train_runs(root: Path) -> dict[str, Path]:
    """text, image (class-conditional digits, 8x8), t2i (shapes, 32x32), mt and asr (tone speech) runs, a few
    steps each."""
    rng = random.Random(0)
    lines = []
    for _ in range(300):
        en = [rng.choice(list(WORDS)) for _ in range(rng.randint(2, 6))]
        lines.append(" ".join(en) + "\t" + " ".join(WORDS[w] for w in en))
    tsv = root / "pairs.tsv"
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tones = tone_folder(root / "tones", n=24)
    plan = {"text": ("text", TEXT, 20), "image": ("image", IMAGE, 6), "t2i": ("t2i", T2I, 4),
            "mt": ("translate", ["--data", str(tsv), *MT], 10), "asr": ("asr", ["--data", str(tones), *ASR], 4)}
    out = {}
    for name, (family, args, steps) in plan.items():
        out[name] = root / name
        res = run_cli("train", family, "--out", str(out[name]), "--max-steps", str(steps), *args)
        assert res.returncode == 0, res.stderr[-2000:]
    return out


def admin_secret() -> str:
    return "aigc-" + secrets.token_urlsafe(24)


class InProcessServer:
    """``create_app(service)`` under uvicorn in a daemon thread, on 127.0.0.1 and a free port."""

    def __init__(self, service) -> None:
        import uvicorn

        from aigc.serve.app import create_app

        self.service = service
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(service), log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


class ChildServer:
    """``python -m aigc serve ...`` on 127.0.0.1 and a free port; ``kill()`` is kill -9, ``stop()`` SIGTERM."""

    def __init__(self, models: list[str], db_url: str, state_dir: Path, env: dict | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        args = [sys.executable, "-m", "aigc", "serve", "--port", "0", "--db", db_url, "--state-dir", str(state_dir),
                *extra]
        for m in models:
            args += ["--model", m]
        self.log = state_dir / f"server-{time.time_ns()}.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(self.log, "w"),
                                     text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
        line = self.proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not found:
            self.proc.kill()
            raise RuntimeError(f"aigc serve did not start: {line!r}\n{self.log.read_text()[-3000:]}")
        self.url = f"http://127.0.0.1:{found[1]}"
        wait_healthy(self.url)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; the exit status (uvicorn ends by re-raising the signal: -15)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy")


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


__all__ = ["train_runs", "InProcessServer", "ChildServer", "admin_secret", "auth", "wait_healthy"]
