"""FID/KID and retrieval evaluation of text-to-image models trained on captioned images (emoji, a folder):
the reference and its sample counts, retrieval against chance and the real-image ceiling, bad input.

A pixel-statistics stand-in replaces the Inception (as tests/eval/test_fid.py does) and a contrastive model
trained for a few steps replaces the cached one; the t2i model is trained for two steps."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aigc
from aigc.data.captioned import load_captioned_folder
from aigc.data.images import FOLDER_TEST_FRACTION, hash_unit
from aigc.data.registry import EMOJI_FONT
from aigc.diffusion import SamplingConfig, sampling_config
from aigc.errors import ConfigError, DataError
from aigc.eval import fid
from aigc.eval import t2i_captioned as E
from aigc.eval.retrieval import ContrastiveTrainConfig, train_contrastive
from aigc.eval.t2i_shapes import generate_for_prompts
from aigc.families.image.model import ImageModel
from aigc.families.t2i.recipe import build_config, train as train_t2i
from aigc.models.contrastive import ContrastiveConfig

COLOURS = {"red": (220, 20, 20), "green": (20, 160, 40), "blue": (30, 60, 220), "yellow": (240, 210, 0),
           "purple": (150, 40, 200), "cyan": (0, 190, 220), "orange": (250, 125, 0), "black": (0, 0, 0)}
PLACES = ("top left", "bottom right")
CFG = ContrastiveConfig(channels=(8, 16), embed_dim=16, text_tower="own", text_d_model=16, text_layers=1,
                        text_heads=2, text_max_len=32, text_hidden=0)
STEPS = ContrastiveTrainConfig(steps=3, batch_size=8, warmup_steps=1)
FAST = {"train.max_steps": "2", "val_images": "2", "train.eval_interval": "2", "train.warmup_steps": "1",
        "train.batch_size": "8"}


class PixelFeatures:
    """Stands in for the Inception: 12 cheap features from channel means and spreads over 2x2 blocks."""

    def __init__(self):
        self.images = 0

    def __call__(self, images, progress=None):
        self.images += images.shape[0]
        x = torch.as_tensor(images).double() / 255                                  # (N, 3, H, W)
        blocks = torch.nn.functional.avg_pool2d(x, x.shape[-1] // 2)                  # (N, 3, 2, 2)
        return torch.cat([blocks.flatten(1), x.std(dim=(2, 3))], 1).numpy() + 1e-3 * np.arange(15)


def make_captioned_folder(folder: Path, n_train: int = 10, n_test: int = 4) -> Path:
    """Coloured squares on white with captions.jsonl; file names picked so the folder's test split (a hash
    of the name) holds n_test images."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds = [(c, p) for p in PLACES for c in COLOURS]
    rows, counts, i = [], {"train": 0, "test": 0}, 0
    while counts["train"] < n_train or counts["test"] < n_test:
        name = f"{i:03d}.png"
        split = "test" if hash_unit(name) < FOLDER_TEST_FRACTION else "train"
        i += 1
        if counts[split] >= (n_test if split == "test" else n_train):
            continue
        colour, place = kinds[len(rows) % len(kinds)]
        img = np.full((32, 32, 3), 255, dtype=np.uint8)
        y, x = (4, 4) if place == "top left" else (16, 16)
        img[y:y + 12, x:x + 12] = COLOURS[colour]
        Image.fromarray(img).save(folder / name)
        rows.append({"file": name, "caption": [f"a {colour} square at the {place}", colour]})
        counts[split] += 1
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return folder


def train_tiny_t2i(folder: Path, out: Path) -> Path:
    train_t2i(build_config("tiny", str(folder), FAST), out, progress=False)
    return out


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i_captioned")
    folder = make_captioned_folder(root / "squares")
    im = aigc.load(train_tiny_t2i(folder, root / "run"))
    contrastive = train_contrastive(load_captioned_folder(folder, "train"), CFG, seed=0, train_cfg=STEPS)
    return im, folder, contrastive


@pytest.fixture()
def fid_cache(tmp_path, monkeypatch):
    """Reference statistics of the stand-in features go to a temporary cache, never the user's."""
    monkeypatch.setattr(fid, "cache_root", lambda: tmp_path)
    return tmp_path / "fid"


def _with_data(im: ImageModel, data) -> ImageModel:
    """The same model as if it had been trained on ``data``."""
    return ImageModel(im.model, im.process, {**im.config, "data": data}, im.path, im.tokenize)


def _check_retrieval(block: dict, n: int, candidates: int) -> None:
    assert block["n_images"] == n and block["n_candidates"] == candidates
    for key in ("image_to_text@1", "image_to_text@5", "text_to_image@1", "text_to_image@5"):
        assert 0.0 <= block[key] <= 1.0, (key, block[key])


def test_folder_model_fid_against_its_test_split_and_retrieval(folder_model, fid_cache):
    im, folder, contrastive = folder_model
    feats = PixelFeatures()
    out = E.evaluate_captioned(im, SamplingConfig(steps=2), n=3, guidance=(1.0, 3.0), batch_size=2,
                               features=feats, contrastive=contrastive)
    assert out["data"] == str(folder) and out["fid_reference"] == "test" and out["image_size"] == 32
    assert out["n"] == 3 and out["n_ref"] == 4 and out["retrieval_prompts"] == 3  # n prompts of 4 held out
    assert out["contrastive_train_images"] is None                                # a model was given
    assert [s["guidance"] for s in out["scores"]] == [1.0, 3.0]
    # the reference (4 real images) once, then 3 generated images per scale, reused for retrieval
    assert feats.images == 4 + 2 * 3 and len(list(fid_cache.glob("squares-*-captioned-test-32px-n4-*.npz"))) == 1
    assert out["chance"] == {"image_to_text@1": 1 / 3, "image_to_text@5": 1.0, "text_to_image@1": 1 / 3,
                             "text_to_image@5": 1.0}
    _check_retrieval(out["real"], 3, 3)
    for score in out["scores"]:
        assert math.isfinite(score["fid"]) and score["fid"] > 0 and math.isfinite(score["kid"])
        assert score["n"] == 3 and score["n_ref"] == 4
        _check_retrieval(score, 3, 3)
        assert score["image_to_text@5"] == 1.0  # 5 of 3 candidates: always a hit
    json.dumps(out)                            # JSON-able as it is


def test_emoji_model_uses_every_real_emoji_as_reference_and_held_out_prompts(folder_model, fid_cache, monkeypatch):
    if not EMOJI_FONT.is_file():
        pytest.skip("needs the Debian package fonts-noto-color-emoji")
    from aigc.data.emoji import load_emoji

    im, _, contrastive = folder_model
    emoji = _with_data(im, "emoji")
    asked, seeds = [], []

    def recording(model, prompts, sampling, **kw):
        asked.append(list(prompts))
        seeds.append(sampling.seed)
        return generate_for_prompts(model, prompts, sampling, **kw)

    monkeypatch.setattr(E, "generate_for_prompts", recording)
    feats = PixelFeatures()
    out = E.evaluate_captioned(emoji, SamplingConfig(steps=1, seed=5), n=4, batch_size=4, features=feats,
                               contrastive=contrastive)
    every, held_out = load_emoji("all"), load_emoji("test")
    assert out["n"] == 4 and out["n_ref"] == len(every) and out["fid_reference"] == "all"
    assert out["retrieval_prompts"] == 4 and feats.images == len(every) + 4
    assert [r.name.split("-")[0] for r in fid_cache.glob("*.npz")] == ["emoji"]
    fid_prompts, queries = asked                 # FID: captions of real emoji; retrieval: held-out ones only
    assert set(fid_prompts) <= set(every.primary_captions) and set(queries) <= set(held_out.primary_captions)
    assert seeds == [5, 6]                       # the retrieval batches do not reuse the FID batches' noise
    _check_retrieval(out["real"], 4, 4)
    _check_retrieval(out["scores"][0], 4, 4)
    assert out["chance"]["image_to_text@1"] == 0.25 and out["chance"]["image_to_text@5"] == 1.0


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n": 1}, ConfigError, "at least 2"),
    ({"n": 4, "guidance": ()}, ConfigError, "guidance"),
    ({"n": 4, "guidance": (0.0,)}, ConfigError, "guidance"),
    ({"n": 4, "batch_size": 0}, ConfigError, "batch_size"),
    ({"n": 4, "steps": 0}, ConfigError, "steps"),
])
def test_bad_requests_are_config_errors(folder_model, kwargs, error, match):
    im, _, contrastive = folder_model
    sampling = {k: kwargs.pop(k) for k in ("steps",) if k in kwargs}
    with pytest.raises(error, match=match):
        E.evaluate_captioned(im, sampling_config(**sampling), features=PixelFeatures(), contrastive=contrastive,
                             **kwargs)


def test_missing_or_unsuitable_data_is_refused(folder_model, tmp_path):
    im, _, contrastive = folder_model
    moved = _with_data(im, str(tmp_path / "gone"))
    with pytest.raises(DataError, match="neither a captioned data set"):
        E.evaluate_captioned(moved, n=2, features=PixelFeatures(), contrastive=contrastive)
    for data, match in (("shapes", "prompt adherence"), (None, "does not record")):
        other = _with_data(im, data)
        with pytest.raises(ConfigError, match=match):
            E.evaluate_captioned(other, n=2, features=PixelFeatures(), contrastive=contrastive)
    tiny = make_captioned_folder(tmp_path / "one", n_train=3, n_test=1)
    single = _with_data(im, str(tiny))
    with pytest.raises(DataError, match="FID needs at least 2"):
        E.evaluate_captioned(single, n=2, features=PixelFeatures(), contrastive=contrastive)


def test_reference_stats_of_captioned_folders_and_emoji(tmp_path):
    folder = make_captioned_folder(tmp_path / "sq", n_train=4, n_test=2)
    Image.new("RGB", (32, 32), "white").save(folder / "uncaptioned.png")  # not in captions.jsonl
    feats = PixelFeatures()
    ref = fid.reference_stats(folder, "test", feats, tmp_path / "c", captioned=True)
    assert ref.count == 2 and ref.key.startswith("sq-") and "-captioned-test-32px-n2" in ref.key
    captioned = fid.reference_stats(folder, "train", feats, tmp_path / "c", captioned=True)
    plain = fid.reference_stats(folder, "train", feats, tmp_path / "c")  # every image file of the folder
    assert captioned.count == 4 and plain.count == 5 and "captioned" not in plain.key
    if EMOJI_FONT.is_file():
        from aigc.data.emoji import load_emoji

        emoji = fid.reference_stats("emoji", "test", feats, tmp_path / "c")
        assert emoji.count == len(load_emoji("test")) and emoji.key.startswith("emoji-")
        assert emoji.key.endswith("-test-32px-n%d-incv3tf" % emoji.count)
