"""Checkpoints written by an earlier version (tests/fixtures/, see make_fixtures.py) still load and
compute the same numbers: the raw network output to 1e-6 and the generated images exactly."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import aigc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _load(name: str):
    folder = FIXTURES / name
    ref = load_file(str(folder / "reference.safetensors"))
    runs = json.loads((folder / "reference.json").read_text())["generate"]
    return aigc.load(folder), ref, runs


def test_class_conditional_unet_output_is_unchanged():
    im, ref, _ = _load("unet-class")
    with torch.no_grad():
        out = im.model(ref["x"], ref["t"], ref["y"])
    assert out.shape == ref["out"].shape == (3, 2, 8, 8)  # learned Σ: 2·C channels
    assert torch.allclose(out, ref["out"], atol=1e-6, rtol=0)


def test_text_to_image_output_is_unchanged():
    im, ref, _ = _load("t2i-own")
    with torch.no_grad():
        cond = im.model.encode(ref["ids"], ref["mask"])
        out = im.model(ref["x"], ref["t"], (ref["ids"], ref["mask"]))
    assert torch.allclose(cond.tokens, ref["tokens"], atol=1e-6, rtol=0)
    assert torch.allclose(cond.pooled, ref["pooled"], atol=1e-6, rtol=0)
    assert out.shape == ref["out"].shape == (2, 6, 16, 16)
    assert torch.allclose(out, ref["out"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["unet-class", "t2i-own"])
def test_generated_images_are_unchanged(name):
    im, ref, runs = _load(name)
    for run, kw in runs.items():
        images = im.generate(**kw)
        expected = ref[f"image_{run}"]
        assert images.dtype == torch.uint8 and images.shape == expected.shape, run
        assert torch.equal(images, expected), f"{name} {run}: {int((images != expected).sum())} values differ"
