"""Shared fixtures: a small synthetic corpus and a tiny trained run."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aigc.models.gpt import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]

WORDS = ("the cat sat on a mat while dog ran far and fast over hill by river under sun "
         "moon star light dark quick brown fox jumps lazy good bad old new").split()


def make_text(n_paragraphs: int = 60, seed: int = 0) -> str:
    rng = random.Random(seed)
    paras = []
    for _ in range(n_paragraphs):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))).capitalize() + "."
                     for _ in range(rng.randint(2, 5))]
        paras.append(" ".join(sentences))
    return "\n\n".join(paras) + "\n"


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


def tiny_gpt(pos: str = "learned", vocab: int = 50, block: int = 32, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=2, n_head=2, n_embd=32, pos=pos)).eval()


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m aigc ...`` and capture its output."""
    return subprocess.run([sys.executable, "-m", "aigc", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``aigc ...`` in this process (no interpreter start-up; stand-ins apply): (exit status, stdout, stderr)."""
    import warnings

    from aigc.cli import main

    monkeypatch.setattr(sys, "argv", ["aigc", *args])
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() redirects warnings
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


TINY = ["--preset", "tiny", "--model.n_layer=1", "--model.n_embd=32", "--model.block_size=32",
        "--train.batch_size=8", "--train.warmup_steps=2", "--train.eval_batches=2", "--no-progress"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, corpus_file) -> Path:
    """A tiny model trained for a few steps through the CLI (shared by read-only tests)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    res = run_cli("train", "text", "--data", str(corpus_file), "--out", str(out), "--max-steps", "30", *TINY,
                  "--train.eval_interval=15")
    assert res.returncode == 0, res.stderr
    return out
