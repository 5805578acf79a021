"""The asr family end to end on a folder of synthetic "tone speech" (no espeak-ng needed): train through the
CLI, transcribe files (text and timing per file, --input lists, --json), eval asr (WER, CER, real-time
factor), the Python facade, and bad audio refused with a clear message and exit status 2."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

import aigc
from aigc.audio import write_audio
from aigc.errors import AigcError, DataError
from aigc.families.asr.model import SpeechRecognizer, Vocabulary
from aigc.families.asr.recipe import SpeechBatches, encode_utterances, preset
from aigc.families.asr.data import Utterances
from aigc.tokenizers import train_tokenizer

from ..conftest import run_cli, run_main

SR = 16_000
TONES = {"a": 300.0, "b": 550.0, "c": 800.0, "d": 1200.0, "e": 1700.0}
WORDS = ("ab", "cd", "e", "bad", "dec")


def render(text: str, rng: random.Random) -> torch.Tensor:
    """Each letter a tone of 0.1-0.14 s, each space 0.06-0.1 s of silence, a little noise throughout."""
    parts = [torch.zeros(int(0.05 * SR))]
    for ch in text:
        n = int(rng.uniform(0.06, 0.1 if ch == " " else 0.14) * SR)
        t = torch.arange(n) / SR
        parts.append(torch.zeros(n) if ch == " " else 0.4 * torch.sin(2 * math.pi * TONES[ch] * t))
    parts.append(torch.zeros(int(0.05 * SR)))
    wave = torch.cat(parts)
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    return wave + 0.003 * torch.randn(wave.shape, generator=g)


def tone_folder(folder: Path, n: int = 48, seed: int = 0) -> Path:
    """``n`` clips with transcripts.tsv; the folder's own hash puts ~5 % in its test split."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        write_audio(folder / f"u{i:03d}.wav", render(text, rng), SR)
        lines.append(f"u{i:03d}.wav\t{text.upper()}")   # normalised to lower case on reading
    (folder / "transcripts.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


TINY = ["--preset", "tiny", "--n_valid=4", "--batch-frames", "3000", "--train.eval_interval=10",
        "--train.eval_batches=1", "--train.warmup_steps=2", "--val_wer_utterances=4", "--no-progress"]


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    return tone_folder(tmp_path_factory.mktemp("tones") / "data")


@pytest.fixture(scope="module")
def asr_run(tmp_path_factory, tones) -> Path:
    out = tmp_path_factory.mktemp("asrruns") / "tiny"
    res = run_cli("train", "asr", "--data", str(tones), "--out", str(out), "--max-steps", "20", "--json", *TINY)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["step"] == 20 and result["train_utterances"] > 30 and "val_wer" in result
    return out


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_train_help_comes_from_the_registry():
    res = run_cli("train", "asr", "--help")
    assert res.returncode == 0 and "--ctc-weight" in res.stdout and "--batch-frames" in res.stdout


def test_saved_run_records_its_kind_tokenizer_and_features(asr_run):
    model = aigc.load(asr_run)
    assert isinstance(model, SpeechRecognizer)
    cfg = model.config
    assert cfg["kind"] == "asr" and cfg["features"]["n_mels"] == cfg["model"]["n_mels"] == 40
    assert cfg["model"]["blank_id"] == 0 and cfg["model"]["vocab_size"] == model.tokenizer.vocab_size + 1
    assert model.vocab.bos_id != 0


def test_transcribe_files_and_lists_with_timing(asr_run, tones, tmp_path):
    files = [str(tones / "u000.wav"), str(tones / "u001.wav")]
    res = run_cli("transcribe", "--model", str(asr_run), *files, "--method", "greedy-ctc")
    assert res.returncode == 0, res.stderr
    assert [line.split("\t")[0] for line in res.stdout.splitlines()] == files
    assert "real-time factor" in res.stderr
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tones / 'u002.wav'}\n# a comment\n\n{tones / 'u003.wav'}\n")
    res = run_cli("transcribe", "--model", str(asr_run), files[0], "--input", str(listing), "--json", "--beam", "2")
    assert res.returncode == 0, res.stderr
    out = _last_json(res.stdout)
    assert [f["file"] for f in out["files"]] == [files[0], str(tones / "u002.wav"), str(tones / "u003.wav")]
    for f in out["files"]:
        assert isinstance(f["text"], str) and f["audio_s"] > 0 and f["elapsed_s"] > 0 and f["rtf"] > 0
    assert out["method"] == "joint" and out["beam"] == 2 and out["rtf"] > 0


def test_bad_audio_exits_2_with_a_clear_message_and_no_output(asr_run, tones, tmp_path, monkeypatch, capsys):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    short = tmp_path / "short.wav"
    write_audio(short, torch.zeros(300), SR)
    cut = tmp_path / "cut.wav"
    cut.write_bytes((tones / "u000.wav").read_bytes()[:30])
    cases = {text: "not a readable audio file", empty: "empty", short: "too short", cut: "",
             tmp_path / "missing.wav": "no such audio file"}
    for path, message in cases.items():  # in this process: the CLI's own handling, without start-up costs
        code, out, err = run_main(monkeypatch, capsys, "transcribe", "--model", str(asr_run),
                                  str(tones / "u000.wav"), str(path))
        assert code == 2, (path, err)
        assert err.startswith("error: ") and message in err and "Traceback" not in err
        assert out == ""  # every file is checked before any is transcribed
    res = run_cli("transcribe", "--model", str(asr_run))
    assert res.returncode == 2 and "nothing to transcribe" in res.stderr


def test_eval_asr_reports_wer_cer_and_rtf(asr_run, monkeypatch, capsys):
    res = run_cli("eval", "asr", "--model", str(asr_run), "--json", "--limit", "3", "--method", "greedy-ctc")
    assert res.returncode == 0, res.stderr
    out = _last_json(res.stdout)
    assert out["split"] == "test" and 1 <= out["utterances"] <= 3
    assert out["wer"] >= 0 and out["cer"] >= 0 and out["rtf"] > 0 and out["reference_words"] > 0
    for split, message in (("dev", "test or test-voices"), ("test-voices", "test-voices")):
        code, _, err = run_main(monkeypatch, capsys, "eval", "asr", "--model", str(asr_run), "--split", split)
        assert code == 2 and message in err and "Traceback" not in err


def test_python_api_takes_paths_tensors_and_lists(asr_run, tones):
    asr = aigc.load(asr_run)
    wave = render("ab cd", random.Random(1))
    one = asr.transcribe(wave, method="greedy-ctc")
    assert isinstance(one, str)
    both = asr.transcribe([str(tones / "u000.wav"), wave], method="greedy-ctc")
    assert isinstance(both, list) and len(both) == 2 and both[1] == one
    # samples at another rate are resampled; (channels, N) is mixed down
    down = torch.nn.functional.avg_pool1d(wave[None, None], 2)[0, 0]
    assert isinstance(asr.transcribe(down, sample_rate=8000, method="greedy-ctc"), str)
    assert asr.transcribe(torch.stack([wave, wave]), method="greedy-ctc") == one
    timed = asr.transcribe_verbose(wave, method="greedy-ctc")
    assert timed.text == one and timed.audio_s == pytest.approx(wave.numel() / SR) and timed.rtf > 0
    with pytest.raises(DataError, match="no samples"):
        asr.transcribe(torch.zeros(0))
    with pytest.raises(DataError, match="not finite"):
        asr.transcribe(torch.full((SR,), float("nan")))
    with pytest.raises(DataError, match="cannot transcribe"):
        asr.transcribe(123)
    with pytest.raises(AigcError, match="unknown transcription option"):
        asr.transcribe(wave, beams=3)


def test_batches_are_bucketed_by_length_and_augmented_only_in_training(tones):
    from aigc.data.speech import load_speech
    s = load_speech(str(tones), "train")
    cfg = preset("tiny")
    vocab = Vocabulary(train_tokenizer("char", "\n".join(s.texts)))
    cfg.model.vocab_size, cfg.model.n_mels = vocab.size, cfg.features.n_mels
    enc, dropped = encode_utterances(Utterances(s.waves, s.texts, s.voices), vocab, cfg.features, cfg.model)
    assert dropped == 0
    plain = SpeechBatches(enc, 3000, 0, cfg.features, vocab)
    aug = SpeechBatches(enc, 3000, 0, cfg.features, vocab, cfg.specaugment)
    for step in range(len(plain.batches)):
        feats, lengths, tgt_in, tgt_out = plain.batch(step)
        assert feats.size(0) * feats.size(2) <= 3000 and int(lengths.max()) == feats.size(2)
        assert (tgt_in[:, 0] == vocab.bos_id).all() and int(tgt_out.max()) < vocab.size
        assert plain.items(step) == int(lengths.sum())
        again = plain.batch(step)[0]
        assert torch.equal(feats, again)                       # a batch is a pure function of the step
        masked = aug.batch(step)[0]
        assert masked.shape == feats.shape and not torch.equal(masked, feats)
        assert torch.equal(masked, aug.batch(step)[0])         # the augmentation too
    spans = sorted(int(enc.frames[b].max() - enc.frames[b].min()) for b in plain.batches)
    assert spans[len(spans) // 2] < int(enc.frames.max() - enc.frames.min())   # similar lengths travel together


def test_tiny_recogniser_learns_tone_speech(tmp_path):
    """200 steps (~25 s on one core) take greedy CTC to a low error rate on the folder's held-out clips."""
    from aigc.eval.wer import error_rates
    from aigc.families.asr import recipe
    from aigc.families.asr.data import load_split

    data = tone_folder(tmp_path / "data", n=120)
    cfg = recipe.build_config("tiny", str(data), {"n_valid": "8", "batch_frames": "3000", "train.max_steps": "200",
                                                  "train.eval_interval": "200", "train.warmup_steps": "20"})
    result = recipe.train(cfg, tmp_path / "run", progress=False)
    assert result["step"] == 200
    asr = aigc.load(tmp_path / "run")
    test = load_split(asr.config, "test")
    hyps = asr.transcribe(list(test.waves), method="greedy-ctc")
    assert error_rates(hyps, test.texts).cer <= 0.15, list(zip(hyps, test.texts))
