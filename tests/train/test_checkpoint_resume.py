import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import aigc
from aigc import checkpoint as ckpt
from aigc.errors import CheckpointError
from aigc.families.text.recipe import build_config, train as train_text
from aigc.train.optim import lr_at

from ..conftest import ROOT, tiny_gpt

OVERRIDES = {"model.n_layer": "1", "model.n_embd": "32", "model.block_size": "32", "model.dropout": "0.1",
             "train.batch_size": "8", "train.warmup_steps": "3", "train.eval_batches": "2",
             "train.eval_interval": "4", "train.ema_decay": "0.9", "train.grad_accum": "2"}


def _weights(run, stem="model"):
    return ckpt.read_tensors(ckpt.resolve(run, prefer=("latest",)), stem)


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, corpus_file):
    cfg = build_config("tiny", str(corpus_file), {**OVERRIDES, "train.max_steps": "12"})
    train_text(cfg, tmp_path / "straight", progress=False)
    cfg = build_config("tiny", str(corpus_file), {**OVERRIDES, "train.max_steps": "12"})
    first = train_text(cfg, tmp_path / "split", stop_at=6, progress=False)
    assert first["step"] == 6
    cfg = build_config("tiny", str(corpus_file), {**OVERRIDES, "train.max_steps": "12"})
    second = train_text(cfg, tmp_path / "split", resume=True, progress=False)
    assert second["step"] == 12
    for stem in ("model", "ema", "optimizer"):
        a, b = _weights(tmp_path / "straight", stem), _weights(tmp_path / "split", stem)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{stem}:{k} differs after resume"
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == sorted({r["step"] for r in rows if "loss" in r})


def test_checkpoint_round_trip_and_pointers(tmp_path, corpus_file):
    cfg = build_config("tiny", str(corpus_file), {**OVERRIDES, "train.max_steps": "8"})
    train_text(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert (run / "latest").is_symlink() and (run / "best").is_symlink()
    assert (run / "loss.png").stat().st_size > 1000
    assert len(list((run / "checkpoints").iterdir())) <= 2  # only what latest and best point to
    lm = aigc.load(run, ema=False)
    saved = _weights(run)
    for k, v in lm.model.state_dict().items():
        if k in saved:
            assert torch.equal(v, saved[k])
    config = json.loads((run / "latest" / "config.json").read_text())
    assert config["format"] == "aigc-checkpoint" and config["model"]["n_embd"] == 32


def test_corrupt_and_foreign_checkpoints_are_clear_errors(tmp_path, trained_run):
    with pytest.raises(CheckpointError, match="does not exist"):
        aigc.load(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        aigc.load(empty)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(CheckpointError, match="not an aigc checkpoint"):
        aigc.load(foreign)
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-rL", str(trained_run / "latest"), str(broken)], check=True)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        aigc.load(broken, ema=False)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt config"):
        aigc.load(broken)


def test_killing_training_at_any_moment_leaves_a_loadable_checkpoint(tmp_path, corpus_file):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "aigc", "train", "text", "--out", str(run), "--no-progress",
            "--max-steps", "100000", "--train.eval_interval=1", "--train.eval_batches=1"]
    first = ["--data", str(corpus_file), "--preset", "tiny", "--model.block_size=32", "--model.n_layer=1",
             "--model.n_embd=32", "--train.batch_size=4", "--train.ema_decay=0.9"]

    def saved_step() -> int:
        try:
            return json.loads((run / "latest" / "config.json").read_text())["step"]
        except (FileNotFoundError, json.JSONDecodeError):
            return 0

    # Each round waits for training to get past its last checkpoint, then kills it
    # a random moment later: mid-step, mid-validation or mid-save.
    rng = random.Random(0)
    for _ in range(5):
        before = saved_step()
        proc = subprocess.Popen(args + (["--resume"] if before else first), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while saved_step() <= before and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert saved_step() > before, "training made no progress before it was killed"
        lm = aigc.load(run)  # best
        assert lm.generate("the", max_new_tokens=3, temperature=0) is not None
        for name in ("latest", "best"):
            folder = ckpt.resolve(run / name)
            ckpt.read_config(folder)
            ckpt.read_tensors(folder, "model")
            ckpt.read_tensors(folder, "optimizer")
    assert saved_step() >= 5


def test_learning_rate_schedules():
    kw = dict(lr=1.0, min_lr=0.1, warmup=10, total=110)
    assert lr_at(0, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(9, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_at(60, schedule="cosine", **kw) == pytest.approx(0.55)
    assert lr_at(110, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(39, schedule="inverse_sqrt", **kw) == pytest.approx(0.5)
    assert lr_at(50, schedule="constant", **kw) == 1.0


def test_atomic_pointer_swap_keeps_old_target_until_replaced(tmp_path):
    model = tiny_gpt()
    from aigc.checkpoint.state import unique_state
    a = ckpt.save_checkpoint(tmp_path, 1, kind="gpt", meta={}, tensors={"model": unique_state(model)})
    b = ckpt.save_checkpoint(tmp_path, 2, kind="gpt", meta={}, tensors={"model": unique_state(model)},
                             pointers=("best",))
    assert (tmp_path / "latest").resolve() == a and (tmp_path / "best").resolve() == b
    ckpt.prune(tmp_path)
    assert a.exists() and b.exists()
    ckpt.set_pointer(tmp_path, "latest", b)
    ckpt.prune(tmp_path)
    assert not a.exists() and b.exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    assert os.path.islink(tmp_path / "latest")


def test_average_window_checkpoints_the_final_stretch(tmp_path, corpus_file):
    overrides = {**OVERRIDES, "train.max_steps": "40", "train.eval_interval": "25", "train.keep_last": "4",
                 "train.average_window": "0.2"}
    train_text(build_config("tiny", str(corpus_file), overrides), tmp_path / "run", progress=False)
    steps = [int(p.name.split("-")[1]) for p in ckpt.step_checkpoints(tmp_path / "run")]
    assert steps == [34, 36, 38, 40]  # every 2 steps over the last 8 (plus the eval checkpoint at 25, pruned)
    with pytest.raises(Exception, match="average_window"):
        build_config("tiny", str(corpus_file), {**overrides, "train.average_window": "1.5"})
