"""The shipped model zoo (``zoo/``): hashes, size, and that each model loads as ``zoo:NAME`` and generates;
tampered copies and unknown names are refused; ``scripts/build_zoo.py`` rebuilds a zoo from a run."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import aigc
from aigc.checkpoint import zoo
from aigc.errors import CheckpointError

from .conftest import ROOT, run_cli

ZOO = ROOT / "zoo"
MODELS = ("fortunes-small", "en-es-small", "fashion-small", "shapes-experts")
MAX_BYTES = 64 * 10**6


@pytest.fixture(autouse=True)
def _default_zoo(monkeypatch):
    monkeypatch.delenv(zoo.ENV, raising=False)


def _manifest() -> dict:
    return json.loads((ZOO / zoo.MANIFEST).read_text(encoding="utf-8"))


def test_manifest_lists_every_file_with_its_hash_and_size():
    manifest = _manifest()
    assert manifest["format"] == zoo.FORMAT and sorted(manifest["models"]) == sorted(MODELS)
    on_disk = {p.relative_to(ZOO).as_posix() for p in ZOO.rglob("*") if p.is_file()} - {zoo.MANIFEST}
    assert on_disk == set(manifest["files"])
    for rel, entry in manifest["files"].items():
        path = ZOO / rel
        assert path.stat().st_size == entry["size"], rel
        assert zoo.sha256_file(path) == entry["sha256"], rel
    total = sum(e["size"] for e in manifest["files"].values())
    assert total == manifest["total_bytes"] and total <= MAX_BYTES


def test_zoo_folders_hold_fp16_weights_cards_and_no_training_state():
    weights = sorted(ZOO.rglob("*.safetensors"))
    assert weights and all(p.name == "model.safetensors" for p in weights)  # no optimizer / ema copies
    for p in weights:
        with safe_open(str(p), framework="pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        assert "F16" in dtypes and "F32" not in dtypes and "F64" not in dtypes, (p, dtypes)
    for name in MODELS:
        card = (ZOO / name / "MODEL_CARD.md").read_text(encoding="utf-8")
        assert "TODO" not in card and "aigc eval" in card and "aigc train" in card
    assert not list(ZOO.rglob("trainer_state.json")) and not list(ZOO.rglob("optimizer*"))
    experts = json.loads((ZOO / "shapes-experts" / "experts.json").read_text(encoding="utf-8"))["experts"]
    assert [e["from_t"] for e in experts] == [0, 850]
    assert all(not Path(e["model"]).is_absolute() and (ZOO / "shapes-experts" / e["model"]).is_dir()
               for e in experts)


def _float32(model) -> bool:
    return all(p.dtype == torch.float32 for p in model.model.parameters())


def test_text_model_loads_and_generates():
    lm = aigc.load("zoo:fortunes-small")
    assert isinstance(lm, aigc.TextModel) and _float32(lm)
    text = lm.generate("Q: What is", max_new_tokens=24, seed=0)
    assert isinstance(text, str) and len(text) > 10 and text == lm.generate("Q: What is", max_new_tokens=24, seed=0)


def test_translator_loads_and_translates():
    tr = aigc.load("zoo:en-es-small")
    assert isinstance(tr, aigc.Translator) and _float32(tr)
    out = tr.translate("In the beginning God created the heaven and the earth.", beam=1)
    assert isinstance(out, str) and out.strip()


def test_class_conditional_image_model_loads_and_generates():
    im = aigc.load("zoo:fashion-small")
    assert isinstance(im, aigc.ImageModel) and _float32(im) and im.class_names
    images = im.generate(1, label="Sneaker", steps=4, guidance=2.0, seed=0)
    assert images.dtype == torch.uint8 and tuple(images.shape) == (1, *im.image_shape)
    assert images.float().std() > 0


def test_text_to_image_experts_load_and_generate():
    from aigc.api import ExpertImageModel

    im = aigc.load("zoo:shapes-experts")
    assert isinstance(im, ExpertImageModel) and len(im.experts) == 2 and im.text_conditional
    assert all(_float32(e) for _, e in im.experts)
    images = im.generate(1, prompt="a red circle left of a green square", steps=4, guidance=2.0, seed=0)
    assert images.dtype == torch.uint8 and tuple(images.shape) == (1, *im.image_shape)


def test_cli_takes_a_zoo_model():
    res = run_cli("generate", "text", "--model", "zoo:fortunes-small", "Q: ", "--max-new-tokens", "8",
                  "--seed", "0", timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()


def test_service_loads_zoo_models_by_name():
    from aigc.serve.models import load_models

    served = load_models(["zoo:fortunes-small", "fashion=zoo:fashion-small"], aigc.load)
    assert sorted(served) == ["fashion", "fortunes-small"]
    assert served["fortunes-small"].family.name == "text" and served["fashion"].family.name == "image"


def test_unknown_name_lists_the_zoo():
    with pytest.raises(CheckpointError, match=r"no model 'nope'.*zoo:fortunes-small.*zoo:shapes-experts"):
        aigc.load("zoo:nope")
    for bad in ("zoo:", "zoo:../zoo", "zoo:fortunes-small/.."):
        with pytest.raises(CheckpointError, match="no model"):
            aigc.load(bad)


def _copy_zoo(tmp_path: Path, monkeypatch, name: str = "fortunes-small") -> Path:
    """A zoo in tmp_path holding the real zoo's manifest and one model, pointed at by AIGC_ZOO."""
    copy = tmp_path / "zoo"
    copy.mkdir()
    shutil.copy(ZOO / zoo.MANIFEST, copy / zoo.MANIFEST)
    shutil.copytree(ZOO / name, copy / name)
    monkeypatch.setenv(zoo.ENV, str(copy))
    return copy


def test_intact_copy_loads_from_aigc_zoo(tmp_path, monkeypatch):
    copy = _copy_zoo(tmp_path, monkeypatch)
    lm = aigc.load("zoo:fortunes-small")
    assert lm.path == copy / "fortunes-small"


@pytest.mark.parametrize("target", ["model.safetensors", "config.json", "tokenizer.json"])
def test_a_flipped_byte_is_refused(tmp_path, monkeypatch, target):
    copy = _copy_zoo(tmp_path, monkeypatch)
    path = copy / "fortunes-small" / target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{target}' does not match its sha256"):
        aigc.load("zoo:fortunes-small")


def test_missing_and_unlisted_files_are_refused(tmp_path, monkeypatch):
    copy = _copy_zoo(tmp_path, monkeypatch)
    folder = copy / "fortunes-small"
    shutil.copy(folder / "model.safetensors", folder / "ema.safetensors")  # would be loaded first
    with pytest.raises(CheckpointError, match="does not list.*ema.safetensors"):
        aigc.load("zoo:fortunes-small")
    (folder / "ema.safetensors").unlink()
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete.*tokenizer.json"):
        aigc.load("zoo:fortunes-small")
    # a model the manifest lists whose folder is gone (the copy holds one model only)
    with pytest.raises(CheckpointError, match="en-es-small.*missing"):
        aigc.load("zoo:en-es-small")


def test_an_edited_model_card_does_not_stop_loading(tmp_path, monkeypatch):
    copy = _copy_zoo(tmp_path, monkeypatch)
    with open(copy / "fortunes-small" / "MODEL_CARD.md", "a", encoding="utf-8") as f:
        f.write("\nmy notes\n")
    assert aigc.load("zoo:fortunes-small").generate("A", max_new_tokens=3, seed=0)


def test_no_zoo_and_corrupt_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.ENV, str(tmp_path / "none"))
    with pytest.raises(CheckpointError, match="no model zoo"):
        aigc.load("zoo:fortunes-small")
    copy = _copy_zoo(tmp_path, monkeypatch)
    (copy / zoo.MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="manifest.*corrupt"):
        aigc.load("zoo:fortunes-small")


def _build_zoo_module():
    spec = importlib.util.spec_from_file_location("build_zoo", ROOT / "scripts" / "build_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_zoo_converts_a_run(tmp_path, monkeypatch, trained_run):
    build_zoo = _build_zoo_module()
    out = tmp_path / "zoo"
    build_zoo.main(["add", "tiny", str(trained_run), "--zoo", str(out), "--description", "test"])
    folder = out / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == ["MODEL_CARD.md", "config.json", "model.safetensors",
                                                        "tokenizer.json"]
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable) == {"F16"}
    manifest = zoo.read_manifest(out)
    assert manifest["models"]["tiny"]["description"] == "test" and len(manifest["files"]) == 4
    monkeypatch.setenv(zoo.ENV, str(out))
    original, shipped = aigc.load(trained_run), aigc.load("zoo:tiny")
    assert _float32(shipped)
    ids = torch.arange(16).remainder(original.tokenizer.vocab_size).unsqueeze(0)
    with torch.no_grad():
        a, b = original.model(ids)[0], shipped.model(ids)[0]
    assert torch.allclose(a, b, atol=5e-2, rtol=0) and not torch.equal(a, b)
    # a rebuild keeps a hand-written card and rewrites the manifest
    (folder / "MODEL_CARD.md").write_text("# tiny\nhand-written\n", encoding="utf-8")
    build_zoo.main(["manifest", "--zoo", str(out)])
    build_zoo.main(["add", "tiny", str(trained_run), "--zoo", str(out)])
    assert (folder / "MODEL_CARD.md").read_text(encoding="utf-8") == "# tiny\nhand-written\n"
    assert aigc.load("zoo:tiny").generate("the", max_new_tokens=5, seed=0)
