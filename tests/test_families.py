"""Every registered family round-trips: train (tiny, through its declared recipe) -> save -> aigc.load ->
generate. A family added to the registry without an entry here fails ``test_every_family_is_covered``."""
from __future__ import annotations

import dataclasses
import random

import pytest
import torch

import aigc
from aigc.families import FAMILIES
from aigc.families.registry import Registry

from .conftest import make_text

TRAIN = {"train.max_steps": "2", "train.eval_interval": "2", "train.warmup_steps": "1", "train.batch_size": "4",
         "train.eval_batches": "1"}


def _text_data(tmp):
    path = tmp / "corpus.txt"
    path.write_text(make_text(), encoding="utf-8")
    return str(path), {"model.n_layer": "1", "model.n_embd": "32", "model.block_size": "32"}


def _translate_data(tmp):
    rng = random.Random(0)
    words = "cat dog sun moon star hill river fox".split()
    lines = [" ".join(rng.choice(words) for _ in range(4)) for _ in range(120)]
    path = tmp / "pairs.tsv"
    path.write_text("".join(f"{s}\t{s.upper()}\n" for s in lines), encoding="utf-8")
    return str(path), {"model.max_len": "24", "max_tokens": "200", "dev_bleu_sentences": "2", "dev_size": "8",
                       "test_size": "8", "tokenizer.vocab_size": "300"}


def _image_data(tmp):
    return "digits", {"val_images": "4", "class_cond": "true"}


def _t2i_data(tmp):
    return "shapes", {"val_images": "2", "train_images": "8", "image_size": "16"}


def _asr_data(tmp):
    import math

    from aigc.audio import write_audio
    folder = tmp / "speech"
    folder.mkdir()
    rng = random.Random(0)
    lines = []
    for i in range(24):
        text = " ".join(rng.choice(("ab", "ba", "a", "b")) for _ in range(2))
        t = torch.arange(int(0.1 * 16000)) / 16000
        tone = {ch: 0.3 * torch.sin(2 * math.pi * f * t) for ch, f in (("a", 400.0), ("b", 900.0))}
        wave = torch.cat([tone[ch] if ch != " " else torch.zeros(800) for ch in text])
        write_audio(folder / f"{i}.wav", wave, 16000)
        lines.append(f"{i}.wav\t{text}")
    (folder / "transcripts.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(folder), {"n_valid": "4", "batch_frames": "1000", "val_wer_utterances": "2"}


def _transcribe(m):
    return m.transcribe(torch.zeros(16000).uniform_(-0.1, 0.1), method="joint", beam=2)


CASES = {  # family -> (data and overrides, one generation call on the loaded model)
    "text": (_text_data, lambda m: m.generate("the", max_new_tokens=4, seed=0)),
    "translate": (_translate_data, lambda m: m.translate("cat dog sun moon", beam=1)),
    "image": (_image_data, lambda m: m.generate(2, steps=2, label=1, guidance=2.0)),
    "t2i": (_t2i_data, lambda m: m.generate(2, steps=2, prompt="a red circle", guidance=2.0)),
    "asr": (_asr_data, _transcribe),
}


def test_every_family_is_covered():
    assert sorted(CASES) == sorted(FAMILIES.names())


def test_declarations_resolve_and_are_consistent():
    for family in FAMILIES:
        config_cls = family.ref("run_config")
        assert dataclasses.is_dataclass(config_cls)
        recipe = family.ref("recipe")
        for fn in ("build_config", "resume_config", "train"):
            assert callable(getattr(recipe, fn)), f"{family.name}'s recipe has no {fn}"
        assert callable(family.ref("loader")) and isinstance(family.ref("facade"), type)
        assert family.ref("cli").__name__ == family.cli
        fields = {f.name for f in dataclasses.fields(config_cls)}
        for flag in family.train_flags:
            assert flag.key.split(".")[0] in fields, f"{family.name} flag {flag.name} sets unknown {flag.key}"
        if family.folder_loader:
            assert callable(family.ref("folder_loader"))


def test_registry_refuses_two_families_with_one_name():
    text = FAMILIES.get("text")
    with pytest.raises(ValueError, match="name"):
        Registry((text, text))
    with pytest.raises(KeyError, match="no model family"):
        FAMILIES.get("video")


@pytest.mark.parametrize("name", list(CASES))
def test_train_save_load_generate(name, tmp_path):
    family = FAMILIES.get(name)
    make_data, generate = CASES[name]
    data, overrides = make_data(tmp_path)
    recipe = family.ref("recipe")
    cfg = recipe.build_config("tiny", data, {**TRAIN, **overrides})
    result = recipe.train(cfg, tmp_path / "run", progress=False)
    assert result["step"] == 2
    model = aigc.load(tmp_path / "run")
    assert isinstance(model, family.ref("facade"))
    assert model.config["kind"] == family.kind
    out = generate(model)
    if isinstance(out, torch.Tensor):
        assert out.dtype == torch.uint8 and out.shape[0] == 2
    else:
        assert isinstance(out, str)
    assert "run in" in family.summary({**result, "run": tmp_path / "run"})
