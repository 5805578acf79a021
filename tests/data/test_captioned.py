"""Captioned image sets: the common type, caption picking, and a user's folder with captions."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from aigc.data.captioned import CaptionedImages, load_captioned_folder, load_captioned_images, pick_caption
from aigc.data.images import load_image_dataset
from aigc.errors import ConfigError, DataError

COLOURS = {"red.png": (255, 0, 0), "green.png": (0, 255, 0), "blue.png": (0, 0, 255),
           "sub/yellow.png": (255, 255, 0), "grey.png": (128, 128, 128), "cyan.png": (0, 255, 255)}


def make_folder(root: Path, captions_name: str | None, captions_text: str = "") -> Path:
    for name, rgb in COLOURS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 8), rgb).save(root / name)  # 2:1, so the loader must crop the centre
    if captions_name:
        (root / captions_name).write_text(captions_text, encoding="utf-8")
    return root


def jsonl(*rows: dict) -> str:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"


ALL_JSONL = jsonl(*({"file": n, "caption": f"a {n.split('/')[-1][:-4]} square"} for n in COLOURS))


def test_jsonl_folder_loads_captions_lists_and_text_key(tmp_path):
    text = jsonl({"file": "red.png", "caption": "a red square"},
                 {"file": "./green.png", "text": ["green", "a green square"]},
                 {"file": "sub/yellow.png", "caption": "yellow"},
                 {"file": "red.png", "caption": ["crimson", "a red square"]}) + "\n\n"
    folder = make_folder(tmp_path, "captions.jsonl", text)
    data = load_captioned_folder(folder, "all", image_size=8)
    assert isinstance(data, CaptionedImages) and len(data) == 3 and data.name == folder.name
    assert data.images.shape == (3, 3, 8, 8) and data.images.dtype == torch.uint8
    assert data.ids == ["red.png", "green.png", "sub/yellow.png"]          # captions-file order, normalised
    assert data.captions == [["a red square", "crimson"], ["green", "a green square"], ["yellow"]]
    assert data.primary_captions == ["a red square", "green", "yellow"]
    assert data.images[0, :, 4, 4].tolist() == [255, 0, 0] and data.images[2, :, 0, 0].tolist() == [255, 255, 0]
    assert data.meta == [] and "3 images" in repr(data)


def test_tsv_folder_with_header_extra_columns_and_repeats(tmp_path):
    text = "file\tcaption\nred.png\ta red square\tred\nblue.png\tblue\nred.png\tscarlet\n"
    data = load_captioned_folder(make_folder(tmp_path, "captions.tsv", text), "all", image_size=4)
    assert data.ids == ["red.png", "blue.png"]
    assert data.captions == [["a red square", "red", "scarlet"], ["blue"]]
    assert data.images.shape == (2, 3, 4, 4) and data.images[1, :, 2, 2].tolist() == [0, 0, 255]


def test_split_is_deterministic_disjoint_and_matches_the_plain_image_loader(tmp_path):
    folder = make_folder(tmp_path, "captions.jsonl", ALL_JSONL)
    train, test = load_captioned_folder(folder, "train", 8), load_captioned_folder(folder, "test", 8)
    assert len(train) >= 1 and len(test) >= 1 and not set(train.ids) & set(test.ids)
    assert sorted(train.ids + test.ids) == sorted(COLOURS)
    again = load_captioned_folder(folder, "test", 8)
    assert again.ids == test.ids and torch.equal(again.images, test.images)
    plain = load_image_dataset(folder, "test", image_size=8)   # same hash of the relative path
    assert sorted(map(tuple, plain.images.reshape(len(plain), -1).tolist())) == \
        sorted(map(tuple, test.images.reshape(len(test), -1).tolist()))


def test_transparent_image_goes_over_white(tmp_path):
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    im.paste((0, 0, 255, 255), (2, 2, 6, 6))
    im.save(tmp_path / "dot.png")
    (tmp_path / "captions.tsv").write_text("dot.png\ta blue dot\n", encoding="utf-8")
    data = load_captioned_folder(tmp_path, "all", image_size=8)
    assert data.images[0, :, 0, 0].tolist() == [255, 255, 255] and data.images[0, :, 4, 4].tolist() == [0, 0, 255]


def test_pick_caption_is_a_pure_function_that_uses_every_caption():
    caps = ["a", "b", "c"]
    picks = [pick_caption(caps, "red.png", step, seed=0) for step in range(300)]
    assert picks == [pick_caption(caps, "red.png", step, seed=0) for step in range(300)]
    assert set(picks) == set(caps) and min(picks.count(c) for c in caps) > 60
    assert picks != [pick_caption(caps, "red.png", step, seed=1) for step in range(300)]
    assert pick_caption(["only"], "x", 5) == "only"


def test_type_subset_conversion_and_validation():
    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    data = CaptionedImages(images, [["a"], ["b", "bb"], ["c"]], ["0", "1", "2"], "toy", [{"k": 0}, {"k": 1}, {"k": 2}])
    sub = data.subset([2, 0])
    assert sub.ids == ["2", "0"] and sub.captions == [["c"], ["a"]] and sub.meta == [{"k": 2}, {"k": 0}]
    assert data.caption(1, step=3) in ("b", "bb") and data.image_size == 4
    plain = data.as_image_dataset()
    assert plain.labels is None and plain.images is images
    with pytest.raises(ValueError):
        CaptionedImages(images, [["a"], ["b"]], ["0", "1", "2"])
    with pytest.raises(ValueError):
        CaptionedImages(images, [["a"], [], ["c"]], ["0", "1", "2"])
    with pytest.raises(ValueError):
        CaptionedImages(images.float(), [["a"], ["b"], ["c"]], ["0", "1", "2"])
    with pytest.raises(ValueError):
        CaptionedImages(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), [["a"], ["b"], ["c"]], ["0", "1", "2"])


@pytest.mark.parametrize("name, text, message", [
    (None, "", "no captions file"),
    ("captions.jsonl", jsonl({"file": "missing.png", "caption": "x"}), "no such image"),
    ("captions.jsonl", jsonl({"file": "red.png", "caption": "  "}), "empty"),
    ("captions.jsonl", jsonl({"file": "red.png", "caption": ["ok", ""]}), "empty"),
    ("captions.jsonl", jsonl({"file": "red.png", "caption": []}), "non-empty list"),
    ("captions.jsonl", jsonl({"file": "red.png"}), 'no "caption"'),
    ("captions.jsonl", jsonl({"caption": "x"}), '"file"'),
    ("captions.jsonl", '{"file": "red.png", "caption": \n', "line 1 is not JSON"),
    ("captions.jsonl", jsonl({"file": "../red.png", "caption": "x"}), "outside"),
    ("captions.jsonl", "\n\n", "names no images"),
    ("captions.tsv", "red.png\t\n", "empty"),
    ("captions.tsv", "red.png a red square\n", "no tab"),
    ("captions.tsv", "blue.png\tblue\nnope.png\tnothing\n", "line 2"),
])
def test_bad_captions_files(tmp_path, name, text, message):
    folder = make_folder(tmp_path, name, text)
    with pytest.raises(DataError, match=message):
        load_captioned_folder(folder, "all")


def test_unreadable_image_both_files_and_bad_arguments(tmp_path):
    folder = make_folder(tmp_path, "captions.tsv", "red.png\tred\nbroken.png\tbroken\n")
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read the image .*broken.png"):
        load_captioned_folder(folder, "all")
    (folder / "captions.jsonl").write_text(ALL_JSONL, encoding="utf-8")
    with pytest.raises(DataError, match="both"):
        load_captioned_folder(folder, "all")
    with pytest.raises(ConfigError):
        load_captioned_folder(folder, "validation")
    with pytest.raises(ConfigError):
        load_captioned_folder(folder, "all", image_size=0)
    with pytest.raises(DataError, match="not a folder"):
        load_captioned_folder(tmp_path / "nowhere")


def test_dispatcher_takes_folders_and_rejects_unknown_names(tmp_path):
    folder = make_folder(tmp_path, "captions.jsonl", ALL_JSONL)
    data = load_captioned_images(folder, "all", image_size=8)
    assert len(data) == len(COLOURS) and data.image_size == 8
    assert load_captioned_images(folder, "all").image_size == 32
    with pytest.raises(DataError, match="neither a captioned data set"):
        load_captioned_images("no-such-set")
