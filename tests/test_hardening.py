"""Bad numbers, tampered checkpoints and resume: each refused with one sentence (exit status 2 from the
CLI), before anything is allocated or written; resume with a new budget extends the run."""
from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import aigc
from aigc.checkpoint import loading
from aigc.config import MAX_SEED, apply_overrides, check_float
from aigc.diffusion import SamplingConfig
from aigc.errors import CheckpointError, ConfigError
from aigc.families.image.recipe import build_config as image_config
from aigc.families.text.recipe import build_config as text_config
from aigc.families.text.recipe import train as train_text
from aigc.generate.seq2seq import DecodeConfig
from aigc.generate.text import GenerationConfig

from .conftest import TINY, run_cli


def _refused(res, *words: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w in lines[0], lines[0]


# ---- numbers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: SamplingConfig(guidance=math.nan), lambda: SamplingConfig(guidance=math.inf),
    lambda: SamplingConfig(sampler="ddim", eta=math.nan), lambda: SamplingConfig(steps=10 ** 9),
    lambda: SamplingConfig(seed=MAX_SEED + 1), lambda: SamplingConfig(seed=-1),
    lambda: GenerationConfig(temperature=math.nan), lambda: GenerationConfig(repetition_penalty=math.nan),
    lambda: GenerationConfig(top_p=math.inf), lambda: GenerationConfig(max_new_tokens=10 ** 9),
    lambda: GenerationConfig(seed=MAX_SEED + 1), lambda: DecodeConfig(length_penalty=math.nan),
    lambda: DecodeConfig(beam=10 ** 6), lambda: DecodeConfig(max_len_a=math.inf),
])
def test_non_finite_and_absurd_numbers_are_refused(make):
    with pytest.raises(ConfigError):
        make()


def test_the_largest_seed_is_taken():
    assert SamplingConfig(seed=MAX_SEED).generator().initial_seed() == MAX_SEED
    assert GenerationConfig(seed=MAX_SEED).seed == MAX_SEED


def test_overrides_and_presets_refuse_nan():
    cfg = text_config("tiny", None, {})
    for text in ("nan", "inf", "-inf"):
        with pytest.raises(ConfigError, match="finite"):
            apply_overrides(cfg, {"train.lr": text})
    cfg.train.lr = math.nan
    with pytest.raises(ConfigError, match="finite"):
        cfg.train.validate()
    with pytest.raises(ConfigError, match="finite number >= 0"):
        check_float("x", -1.0, 0)


def test_cli_refuses_bad_numbers(trained_run, tmp_path):
    _refused(run_cli("generate", "text", "--model", str(trained_run), "--temperature", "nan", "a"), "temperature")
    _refused(run_cli("generate", "text", "--model", str(trained_run), "--repetition-penalty", "nan", "a"),
             "repetition_penalty")
    _refused(run_cli("generate", "text", "--model", str(trained_run), "--seed", str(MAX_SEED + 1), "a"), "seed")
    out = tmp_path / "run"
    _refused(run_cli("train", "text", "--out", str(out), "--train.lr=nan", *TINY), "finite")
    assert not out.exists()


def test_the_preset_picks_the_data_when_none_is_given():
    assert image_config("tiny", None, {}).data == "digits"
    assert image_config("small", None, {}).data == "fashion-mnist"
    assert image_config("tiny", "fashion-mnist", {}).data == "fashion-mnist"


# ---- checkpoints checked before allocation ---------------------------------------------------------

def _copy(trained_run: Path, tmp_path: Path) -> Path:
    src = (trained_run / "best").resolve()
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def _edit_model_config(folder: Path, **fields) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"].update(fields)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("fields", [{"n_layer": 100_000}, {"n_embd": 10 ** 9}, {"vocab_size": 7}])
def test_a_config_that_does_not_fit_its_weights_is_refused_before_building(trained_run, tmp_path, fields):
    folder = _copy(trained_run, tmp_path)
    _edit_model_config(folder, **fields)
    t0 = time.perf_counter()
    with pytest.raises((CheckpointError, ConfigError)):
        aigc.load(folder)
    assert time.perf_counter() - t0 < 30
    _refused(run_cli("generate", "text", "--model", str(folder), "a"))


def test_a_model_larger_than_free_memory_is_refused_with_the_figure(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "available_memory", lambda: 1000)
    with pytest.raises(CheckpointError, match="GiB of memory free"):
        aigc.load(trained_run)


def test_half_precision_weights_are_converted_with_a_warning_and_integers_refused(trained_run, tmp_path):
    folder = _copy(trained_run, tmp_path)
    for stem in ("model", "ema"):
        path = folder / f"{stem}.safetensors"
        if path.exists():
            save_file({k: v.half() for k, v in load_file(str(path)).items()}, str(path))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        lm = aigc.load(folder)
    assert any("converted to float32" in str(w.message) for w in seen)
    assert next(lm.model.parameters()).dtype == torch.float32
    for stem in ("model", "ema"):
        path = folder / f"{stem}.safetensors"
        if path.exists():
            save_file({k: v.to(torch.int16) for k, v in load_file(str(path)).items()}, str(path))
    with pytest.raises(CheckpointError, match="not as floating-point"):
        aigc.load(folder)


# ---- resume means continue ----------------------------------------------------------------------------

OVER = {"model.n_layer": "1", "model.n_embd": "32", "model.block_size": "32", "train.batch_size": "8",
        "train.warmup_steps": "0", "train.eval_batches": "1", "train.schedule": "constant"}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str((run / "latest").resolve() / "model.safetensors"))


def test_resume_with_more_steps_extends_a_finished_run_bit_exactly(corpus_file, tmp_path):
    straight = tmp_path / "straight"
    train_text(text_config("tiny", str(corpus_file), {**OVER, "train.max_steps": "8", "train.eval_interval": "4"}),
               straight, progress=False)
    extended = tmp_path / "extended"
    short = text_config("tiny", str(corpus_file), {**OVER, "train.max_steps": "4", "train.eval_interval": "4"})
    assert train_text(short, extended, progress=False)["step"] == 4
    from aigc.families.text.recipe import resume_config
    with pytest.raises(ConfigError, match="already trained 4 steps"):
        train_text(resume_config(extended, {}), extended, resume=True, progress=False)
    result = train_text(resume_config(extended, {"train.max_steps": "8"}), extended, resume=True, progress=False)
    assert result["step"] == 8
    a, b = _weights(straight), _weights(extended)
    assert all(torch.equal(a[k], b[k]) for k in a)  # constant schedule: the same plan, the same weights


def test_resume_refuses_what_it_cannot_honour(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, symlinks=True)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    _refused(run_cli("train", "text", "--out", str(run), "--resume", "--no-progress"), "--max-steps")
    _refused(run_cli("train", "text", "--out", str(run), "--resume", "--data", "bible-en", "--max-steps", "40"),
             "--data cannot change")
    _refused(run_cli("train", "text", "--out", str(run), "--resume", "--preset", "tiny", "--max-steps", "40"),
             "--preset")
    _refused(run_cli("train", "text", "--out", str(run), "--resume", "--model.n_layr=2"), "unknown option")
    _refused(run_cli("train", "text", "--out", str(run), "--resume", "--model.n_layer=2"), "cannot change")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    res = run_cli("train", "text", "--out", str(run), "--resume", "--max-steps", "34", "--no-progress", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["step"] == 34
