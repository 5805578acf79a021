"""Image data sets: digits, fashion-mnist, user folders, value ranges and batches."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aigc.data.images import (FASHION_MNIST_CLASSES, ImageBatches, ImageDataset, digits_file, from_model_range,
                              load_image_dataset, to_model_range)
from aigc.data.registry import FASHION_MNIST_DIR
from aigc.errors import ConfigError, DataError

# --- digits ----------------------------------------------------------------------------------------


def test_digits_split_sizes_and_partition():
    train, test = load_image_dataset("digits", "train"), load_image_dataset("digits", "test")
    assert len(train) == 1497 and len(test) == 300
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) == set(range(10))
    assert train.class_names == [str(d) for d in range(10)] and train.num_classes == 10
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    # train + test is exactly the file's rows (0..16 scaled to 0..255), each row once
    table = np.loadtxt(gzip.open(digits_file()), delimiter=",", dtype=np.int64)
    full = np.concatenate([np.round(table[:, :64] * 255 / 16), table[:, 64:]], axis=1)
    ours = np.concatenate([torch.cat([train.images, test.images]).reshape(-1, 64).numpy(),
                           torch.cat([train.labels, test.labels])[:, None].numpy()], axis=1)
    assert sorted(map(tuple, full.astype(np.int64))) == sorted(map(tuple, ours.astype(np.int64)))


def test_digits_is_deterministic_and_resizes():
    a, b = load_image_dataset("digits", "test"), load_image_dataset("digits", "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    big = load_image_dataset("digits", "test", image_size=16)
    assert big.images.shape == (300, 1, 16, 16) and torch.equal(big.labels, a.labels)


def test_bad_split_size_and_name():
    with pytest.raises(ConfigError, match="split"):
        load_image_dataset("digits", "val")
    with pytest.raises(ConfigError, match="image_size"):
        load_image_dataset("digits", image_size=0)
    with pytest.raises(DataError, match="neither a known image data set"):
        load_image_dataset("no-such-dataset-or-folder")


# --- fashion-mnist ---------------------------------------------------------------------------------


def test_fashion_mnist():
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("needs `apt-get install dataset-fashion-mnist`")
    train, test = load_image_dataset("fashion-mnist", "train"), load_image_dataset("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert len(train.labels) == 60000 and len(test.labels) == 10000
    assert test.labels.min() == 0 and test.labels.max() == 9
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.class_names == FASHION_MNIST_CLASSES and test.class_names[9] == "Ankle boot"


def test_fashion_mnist_missing_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr("aigc.data.images.FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_image_dataset("fashion-mnist")


# --- user folders ----------------------------------------------------------------------------------


def _png(path: Path, size=(20, 14), colour=(200, 30, 30), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(path)


def test_folder_with_class_subfolders(tmp_path):
    for i in range(12):
        _png(tmp_path / "dogs" / f"d{i}.png", (20 + i, 14), (200, 30, i))
        _png(tmp_path / "cats" / f"c{i}.jpg", (14, 30), (10, 200, i))
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    train = load_image_dataset(tmp_path, "train", image_size=16)
    test = load_image_dataset(str(tmp_path), "test", image_size=16)
    assert train.class_names == ["cats", "dogs"] and train.images.shape[1:] == (3, 16, 16)
    assert len(train) + len(test) == 24 and len(test) >= 1 and len(train) >= 20
    assert set(torch.cat([train.labels, test.labels]).tolist()) == {0, 1}
    cats = train.images[train.labels == 0]
    assert (cats[:, 1] > 150).all() and (cats[:, 0] < 60).all()  # colours survive, labels match folders
    again = load_image_dataset(tmp_path, "test", image_size=16)
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_folder_unlabelled_grey_and_default_size(tmp_path):
    for i in range(5):
        _png(tmp_path / f"g{i}.png", (40, 40), (i * 40, 0, 0), mode="L")
    data = load_image_dataset(tmp_path)
    assert data.labels is None and data.class_names == [] and data.images.shape[1:] == (1, 32, 32)
    assert len(data) == 4 and len(load_image_dataset(tmp_path, "test")) == 1  # >= 1 test image


def test_folder_transparency_goes_over_white(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    _png(tmp_path / "red.png", (8, 8))
    both = torch.cat([load_image_dataset(tmp_path, s, image_size=8).images for s in ("train", "test")])
    assert both.shape[1] == 3 and any(bool((img == 255).all()) for img in both)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no images"):
        load_image_dataset(tmp_path)
    _png(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_image_dataset(tmp_path)


# --- ranges and batches ----------------------------------------------------------------------------


def test_model_range_round_trip():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = to_model_range(u)
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert torch.equal(from_model_range(x), u)
    assert torch.equal(from_model_range(torch.tensor([-3.0, 2.0, 0.0])), torch.tensor([0, 255, 128], dtype=torch.uint8))


def _toy(n=10, labels=True) -> ImageDataset:
    images = (torch.arange(n * 12) * 2).to(torch.uint8).reshape(n, 1, 3, 4)  # no two rows or flips alike
    return ImageDataset(images, torch.arange(n) % 3 if labels else None, ["a", "b", "c"], "toy")


def test_batches_are_pure_functions_of_step_and_shard():
    data = _toy()
    a, b = ImageBatches(data, 4, seed=3), ImageBatches(data, 4, seed=3)
    for step in (0, 7, 2, 7):
        whole = a.batch(step)
        assert whole["x"].shape == (4, 1, 3, 4) and whole["y"].dtype == torch.int64
        assert torch.equal(whole["x"], b.batch(step)["x"])
        halves = [a.batch(step, p, 2) for p in range(2)]
        assert torch.equal(torch.cat([h["x"] for h in halves]), whole["x"])
        assert torch.equal(torch.cat([h["y"] for h in halves]), whole["y"])
    assert not torch.equal(ImageBatches(data, 4, seed=4).batch(0)["x"], a.batch(0)["x"])
    with pytest.raises(ConfigError, match="divisible"):
        a.batch(0, 0, 3)
    assert a.items(5) == 4


def test_batches_cover_each_epoch_once():
    data = _toy(10)
    src = ImageBatches(data, 4, seed=0)
    first_epoch = torch.cat([src.indices(s) for s in range(5)])[:10]  # 20 draws span two epochs exactly
    assert sorted(first_epoch.tolist()) == list(range(10))
    x = src.batch(1)["x"]
    assert x.min() >= -1 and x.max() <= 1


def test_batches_flip_and_unlabelled():
    data = _toy(8, labels=False)
    src = ImageBatches(data, 8, seed=0, hflip=True)
    out = src.batch(0)
    assert out["y"] is None
    plain = ImageBatches(data, 8, seed=0).batch(0)["x"]
    flipped = out["x"] != plain
    assert torch.equal(out["x"], ImageBatches(data, 8, seed=0, hflip=True).batch(0)["x"])
    rows = [torch.equal(o, p) or torch.equal(o, p.flip(-1)) for o, p in zip(out["x"], plain)]
    assert all(rows) and flipped.any()
    assert ImageBatches(_toy(), 2, use_labels=False).batch(0)["y"] is None
