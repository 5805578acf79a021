"""Retrieval accuracy of images against their prompts under a small contrastive model (CLIP-style).

For text-to-image on ``emoji``: generate an image from each held-out caption,
then ask :class:`~aigc.models.contrastive.ContrastiveModel` — trained on the
training split only — whether the image matches its own prompt better than the
other prompts (image->text top-k) and whether the prompt finds its image among
the other images (text->image top-k). The same numbers on the real held-out
images (:func:`real_image_retrieval`) are the ceiling to quote beside them, and
chance (k / candidates) the floor.

Ties count fractionally, as if broken at random: a true candidate tied with t
others and beaten by g gets credit ``clip((k - g) / (t + 1), 0, 1)``, so a
model that scores everything alike sits exactly at chance.

Training (:func:`train_contrastive`) runs through the shared
:class:`~aigc.train.trainer.Trainer`, in a throwaway run folder. It samples one
caption per image per step (all captions are positives; captions in CJK script
are left out by default, see :func:`training_captions`), shifts images by a few
pixels (white fill) and never flips them: mirrored emoji change meaning (arrows,
"left-facing", letters in "CL button", flags). Colour is left alone too; it is
what distinguishes "red heart" from "blue heart". :func:`cached_contrastive`
trains once per (data, config, seed) and keeps the trainable weights as
safetensors with the configs (and tokenizer) as JSON metadata under
``$AIGC_CACHE/contrastive``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..data.cache import cache_key, cache_root, file_stamp
from ..data.captioned import CaptionedImages, pick_caption
from ..data.images import to_model_range
from ..errors import CheckpointError, ConfigError, DataError
from ..models.contrastive import ContrastiveConfig, ContrastiveModel, contrastive_loss, positives
from ..models.minilm import MiniLM, minilm_folder
from ..tokenizers import Tokenizer, tokenizer_from_dict, train_tokenizer
from ..train.config import TrainConfig
from ..train.trainer import Trainer

FORMAT = "aigc-contrastive/1"
CJK = re.compile("[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
TIE_EPS = 1e-6  # scores this close count as tied

StepCallback = Callable[[int, float, ContrastiveModel], None]


@dataclass
class ContrastiveTrainConfig:
    steps: int = 300               # about 2.5 min of one CPU core on the emoji train split
    batch_size: int = 256          # clamped to the data size
    lr: float = 2e-3               # AdamW peak, linear warmup then cosine to 0
    weight_decay: float = 0.05     # on weight matrices and conv kernels only
    warmup_steps: int = 20
    shift: int = 2                 # random translation of up to +-shift pixels (white fill); 0: none
    cjk_captions: bool = False     # also train on captions in CJK script (see training_captions)

    def validate(self) -> None:
        for name in ("steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ConfigError(f"contrastive training {name} must be a positive integer, "
                                  f"got {getattr(self, name)!r}")
        for name in ("warmup_steps", "shift"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"contrastive training {name} must be 0 or more, got {getattr(self, name)!r}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"contrastive training needs lr > 0 and weight_decay >= 0, "
                              f"got {self.lr} and {self.weight_decay}")

    @classmethod
    def from_dict(cls, d: dict) -> ContrastiveTrainConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown contrastive training field(s): {', '.join(unknown)}")
        return cls(**d)


# ---- training -------------------------------------------------------------------------------------


def shift_images(x: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image (B, 3, S, S) in [-1, 1] by up to +-shift pixels, filling with white (1.0)."""
    if shift == 0:
        return x
    return _shift(x, shift, torch.randint(0, 2 * shift + 1, (x.shape[0], 2), generator=generator).tolist())


def _shift(x: Tensor, shift: int, off: list[list[int]]) -> Tensor:
    """``shift_images`` with the offsets given: (dy, dx) in [0, 2 shift] per image."""
    _, _, H, W = x.shape
    padded = torch.nn.functional.pad(x, (shift, shift, shift, shift), value=1.0)  # (B, 3, H+2s, W+2s)
    return torch.stack([padded[b, :, dy:dy + H, dx:dx + W] for b, (dy, dx) in enumerate(off)])


def has_cjk(text: str) -> bool:
    """Whether a caption holds Chinese, Japanese or Korean script (ideographs, kana, hangul, full-width forms)."""
    return CJK.search(text) is not None


def training_captions(train: CaptionedImages, tc: ContrastiveTrainConfig) -> list[list[str]]:
    """The captions each image is trained with: all of them, or (default) those without CJK script,
    keeping an image's CJK captions only when it has no other. MiniLM is an English model and the
    Chinese emoji names are a third of the captions (the only alternative name of 789 of 1,747 training
    emoji): on emoji, leaving them out reached in 200 steps the held-out accuracy that 400 steps with
    them gave (top-1 24 %), and 26-28 % after 300-400 steps. A model trained so still scores prompts
    written in Chinese by the English caption of the same image."""
    if tc.cjk_captions:
        return [list(caps) for caps in train.captions]
    return [[c for c in caps if not has_cjk(c)] or list(caps) for caps in train.captions]


def build_tokenizer(captions: Sequence[Sequence[str]], cfg: ContrastiveConfig) -> Tokenizer | None:
    """The own tower's char/BPE tokenizer, trained on the training captions (None for minilm)."""
    if cfg.text_tower != "own":
        return None
    text = "\n".join(c for caps in captions for c in caps)
    vocab = cfg.text_bpe_vocab if cfg.text_tokenizer == "bpe" else None
    return train_tokenizer(cfg.text_tokenizer, text, vocab)


def _check_train(train: CaptionedImages, cfg: ContrastiveConfig) -> None:
    if not isinstance(train, CaptionedImages):
        raise DataError(f"train_contrastive takes CaptionedImages, got {type(train).__name__}")
    if len(train) < 2:
        raise DataError(f"a contrastive model needs at least 2 captioned images to contrast, got {len(train)}")
    if train.image_size != cfg.image_size or train.images.shape[-2] != cfg.image_size:
        raise DataError(f"the images are {tuple(train.images.shape[-2:])} but contrastive.image_size is "
                        f"{cfg.image_size}; load the data at that size or change the config")


class _CaptionBatches:
    """The batch source: each step's images (shuffled epochs of ``B``; a remainder is left out), random
    shifts and one caption per image, all drawn up front from one generator in the order a step-by-step
    loop draws them (permutation, then that step's shifts), so a batch is a pure function of the step."""

    def __init__(self, train: CaptionedImages, captions: list[list[str]], tc: ContrastiveTrainConfig, seed: int,
                 feats: Tensor | None, row_of: dict[str, int]) -> None:
        g = torch.Generator().manual_seed(seed)
        n = len(train)
        B = min(tc.batch_size, n)
        per_epoch = n // B
        self.images, self.captions, self.shift = train.images, captions, tc.shift
        self.feats, self.row_of = feats, row_of
        self.idx: list[list[int]] = []
        self.off: list[list[list[int]] | None] = []
        self.texts: list[list[str]] = []
        perm = torch.randperm(n, generator=g)
        for step in range(tc.steps):
            if step and step % per_epoch == 0:
                perm = torch.randperm(n, generator=g)
            idx = perm[(step % per_epoch) * B:(step % per_epoch + 1) * B].tolist()
            self.idx.append(idx)
            self.off.append(torch.randint(0, 2 * tc.shift + 1, (B, 2), generator=g).tolist() if tc.shift else None)
            self.texts.append([pick_caption(captions[i], train.ids[i], step, seed) for i in idx])

    def batch(self, step: int, part: int, parts: int) -> tuple[Tensor, Tensor | list[str], Tensor]:
        """(images (B, 3, S, S) in [-1, 1], frozen text features (B, 384) or the captions, positives (B, B))."""
        if parts != 1:
            raise ConfigError("a contrastive model trains in one process without gradient accumulation: "
                              "its loss contrasts the whole batch")
        idx, texts, off = self.idx[step], self.texts[step], self.off[step]
        x = to_model_range(self.images[idx])
        x = _shift(x, self.shift, off) if off is not None else x
        txt = self.feats[[self.row_of[t] for t in texts]] if self.feats is not None else texts
        return x, txt, positives([self.captions[i] for i in idx], texts)

    def items(self, step: int) -> int:
        return len(self.idx[step])


def train_contrastive(train: CaptionedImages, cfg: ContrastiveConfig | None = None, seed: int = 0,
                      progress: bool = False, *, train_cfg: ContrastiveTrainConfig | None = None,
                      minilm: MiniLM | None = None, callback: StepCallback | None = None) -> ContrastiveModel:
    """Train a :class:`ContrastiveModel` on captioned images (symmetric InfoNCE, AdamW) through the
    :class:`~aigc.train.trainer.Trainer`, on the CPU, in a temporary run folder; the same seed gives the
    same weights. ``callback(step, loss, model)`` runs after every step (evaluation, cancellation)."""
    cfg = cfg or ContrastiveConfig(image_size=train.image_size)
    tc = train_cfg or ContrastiveTrainConfig()
    cfg.validate()
    tc.validate()
    _check_train(train, cfg)
    torch.manual_seed(seed)
    captions = training_captions(train, tc)
    model = ContrastiveModel(cfg, build_tokenizer(captions, cfg), minilm)
    feats, row_of = None, {}
    if model.minilm is not None:  # the frozen backbone sees each caption once, not once per step
        texts = sorted({c for caps in captions for c in caps})
        row_of = {t: i for i, t in enumerate(texts)}
        feats = model.frozen_text_features(texts)                      # (K, 384)
    source = _CaptionBatches(train, captions, tc, seed, feats, row_of)
    # Dropout draws on one stream of torch's global RNG continued from the model's initialisation, not on
    # the Trainer's per-step seeds: the weights stay those of the step-by-step loop (nothing here resumes).
    rng = [torch.get_rng_state()]

    def objective(m: ContrastiveModel, batch: tuple[Tensor, Tensor | list[str], Tensor]) -> Tensor:
        x, txt, pos = batch
        torch.set_rng_state(rng[0])
        img = m.encode_images(x)                                                        # (B, D)
        emb = m.project_text(txt) if isinstance(txt, Tensor) else m.encode_texts(txt)  # (B, D)
        loss = contrastive_loss(img, emb, m.scale(), pos)
        rng[0] = torch.get_rng_state()
        return loss

    # linear warmup to lr, then cosine to 0; AdamW's default betas, decay on dim >= 2 only (not on biases,
    # norms or logit_scale), no clipping
    run = TrainConfig(batch_size=min(tc.batch_size, len(train)), lr=tc.lr, min_lr=0.0, schedule="cosine",
                      warmup_steps=tc.warmup_steps, max_steps=tc.steps, weight_decay=tc.weight_decay,
                      beta1=0.9, beta2=0.999, grad_clip=0.0, eval_interval=tc.steps, log_interval=tc.steps,
                      seed=seed, device="cpu", precision="fp32", threads=None)
    with tempfile.TemporaryDirectory(prefix="aigc-contrastive-") as run_dir:
        with Trainer(model, objective, source, run, Path(run_dir), kind="contrastive", unit="pairs",
                     meta={"contrastive": cfg.to_dict(), "data": train.name}, progress=progress,
                     on_step=callback, save_frozen=False) as trainer:  # the MiniLM backbone (90 MB) is not saved
            trainer.fit()
    return model.eval()


# ---- metrics --------------------------------------------------------------------------------------


def _check_k(k: Sequence[int] | int) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, int) else tuple(k)
    if not ks or any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in ks):
        raise ConfigError(f"k must be positive integers (e.g. (1, 5)), got {k!r}")
    return ks


def topk_credit(scores: Tensor, true: Tensor, valid: Tensor, k: int) -> Tensor:
    """Per query (Q,), the chance that the true candidate is in the top k under random tie-breaking.

    ``scores`` (Q, C), ``true`` (Q,) the true candidate's column, ``valid`` (Q, C) the candidates that
    compete (the true one included)."""
    s_true = scores.gather(1, true[:, None])                               # (Q, 1)
    better = ((scores > s_true + TIE_EPS) & valid).sum(1)                  # (Q,)
    tied = ((scores - s_true).abs() <= TIE_EPS) & valid
    tied = tied.sum(1) - 1                                                 # others tied with the true one
    return ((k - better).float() / (tied + 1).float()).clamp(0.0, 1.0)


def retrieval_from_embeddings(image_emb: Tensor, text_emb: Tensor, target: Tensor,
                              k: Sequence[int] | int = (1, 5)) -> dict[str, float]:
    """Top-k retrieval from embeddings: ``image_emb`` (N, D), candidate ``text_emb`` (M, D), ``target`` (N,)
    the index of each image's own text. Scores are dot products (cosines for unit vectors).

    image->text: image i ranks the M texts. text->image: text ``target[i]`` ranks the N images, where
    other images of the same text are left out (neither hits nor competitors)."""
    ks = _check_k(k)
    if image_emb.dim() != 2 or text_emb.dim() != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise DataError(f"embeddings must be (N, D) and (M, D) with the same D, got {tuple(image_emb.shape)} "
                        f"and {tuple(text_emb.shape)}")
    N, M = image_emb.shape[0], text_emb.shape[0]
    target = torch.as_tensor(target, dtype=torch.long)
    if N == 0 or M == 0 or target.shape != (N,):
        raise DataError(f"need at least one image and one text, and one target per image: {N} images, "
                        f"{M} texts, targets {tuple(target.shape)}")
    if int(target.min()) < 0 or int(target.max()) >= M:
        raise DataError(f"targets must index the {M} texts, got values {int(target.min())}..{int(target.max())}")
    image_emb, text_emb = image_emb.float(), text_emb.float()
    i2t = image_emb @ text_emb.T                                           # (N, M)
    t2i = text_emb[target] @ image_emb.T                                   # (N, N): query i = text of image i
    valid_t2i = (target[None, :] != target[:, None]) | torch.eye(N, dtype=torch.bool)
    diag = torch.arange(N)
    out: dict[str, float] = {"n_images": N, "n_candidates": M}
    gallery = valid_t2i.sum(1).double()                                    # (N,) images each text ranks
    for kk in ks:
        out[f"image_to_text@{kk}"] = float(topk_credit(i2t, target, torch.ones_like(i2t, dtype=torch.bool), kk).mean())
        out[f"text_to_image@{kk}"] = float(topk_credit(t2i, diag, valid_t2i, kk).mean())
        out[f"chance_image_to_text@{kk}"] = min(kk, M) / M
        out[f"chance_text_to_image@{kk}"] = float((gallery.clamp(max=kk) / gallery).mean())
    return out


def _check_images(model: ContrastiveModel, images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise DataError(f"images must be a uint8 RGB tensor (N, 3, H, W), got {got}")
    size = model.config.image_size
    if tuple(images.shape[-2:]) != (size, size):
        raise DataError(f"the contrastive model was trained on {size}x{size} images, got "
                        f"{tuple(images.shape[-2:])}; resize the images to {size}x{size}")


@torch.inference_mode()
def embed_images(model: ContrastiveModel, images: Tensor, batch_size: int = 512) -> Tensor:
    """uint8 images (N, 3, S, S) -> unit embeddings (N, D), in eval mode."""
    _check_images(model, images)
    was = model.training
    model.eval()
    out = [model.encode_images(to_model_range(images[s:s + batch_size]).to(model.device))
           for s in range(0, images.shape[0], batch_size)]
    model.train(was)
    return torch.cat(out).cpu()


@torch.inference_mode()
def embed_texts(model: ContrastiveModel, texts: Sequence[str], batch_size: int = 256) -> Tensor:
    """Prompts -> unit embeddings (N, D), in eval mode."""
    was = model.training
    model.eval()
    out = [model.encode_texts(list(texts[s:s + batch_size])) for s in range(0, len(texts), batch_size)]
    model.train(was)
    return torch.cat(out).cpu()


def retrieval_accuracy(model: ContrastiveModel, images: Tensor, prompts: Sequence[str],
                       candidates: Sequence[str] | None = None, k: Sequence[int] | int = (1, 5)) -> dict[str, float]:
    """Top-k retrieval of uint8 ``images`` (N, 3, S, S) against their ``prompts`` (N strings).

    image->text: is ``prompts[i]`` among the k best of the ``candidates`` (default: the distinct prompts;
    given ones must include every prompt) for image i. text->image: is image i among the k best images for
    ``prompts[i]`` (other images of the same prompt left out). Also gives chance levels, ``n_images`` and
    ``n_candidates``. Several images per prompt (n samples each) are fine."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not all(isinstance(p, str) for p in prompts):
        raise DataError("prompts must be a list of strings, one per image")
    _check_images(model, images)
    if len(prompts) != images.shape[0] or not len(prompts):
        raise DataError(f"need one prompt per image and at least one image: {images.shape[0]} images, "
                        f"{len(prompts)} prompts")
    if candidates is None:
        candidates = list(dict.fromkeys(prompts))
    else:
        if isinstance(candidates, str) or not all(isinstance(c, str) for c in candidates):
            raise DataError("candidates must be a list of strings")
        candidates = list(dict.fromkeys(candidates))
        missing = [p for p in prompts if p not in set(candidates)]
        if missing:
            raise DataError(f"{len(missing)} prompt(s) are not among the candidates, e.g. {missing[0]!r}; "
                            "the candidates must include every prompt")
    index = {c: i for i, c in enumerate(candidates)}
    target = torch.tensor([index[p] for p in prompts], dtype=torch.long)
    return retrieval_from_embeddings(embed_images(model, images), embed_texts(model, candidates), target, k)


def real_image_retrieval(model: ContrastiveModel, data: CaptionedImages,
                         k: Sequence[int] | int = (1, 5)) -> dict[str, float]:
    """Retrieval of real images against their primary captions: for held-out data, the ceiling beside
    which generated-image numbers are read."""
    return retrieval_accuracy(model, data.images, data.primary_captions, k=k)


# ---- saving and the cache -------------------------------------------------------------------------


def save_contrastive(model: ContrastiveModel, path: str | Path, train_cfg: ContrastiveTrainConfig | None = None,
                     info: dict | None = None) -> None:
    """Trainable weights as safetensors; config, tokenizer, training config and ``info`` in its JSON
    metadata. Written to a temp file in the same folder and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict()),
            "tokenizer": json.dumps(model.tokenizer.to_dict()) if model.tokenizer is not None else "",
            "train": json.dumps(asdict(train_cfg)) if train_cfg is not None else "",
            "info": json.dumps(info or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_contrastive(path: str | Path, minilm: MiniLM | None = None) -> ContrastiveModel:
    """A model written by :func:`save_contrastive`, in eval mode (nothing is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no contrastive model at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a contrastive model ({FORMAT}); format is {meta.get('format')!r}")
        cfg = ContrastiveConfig.from_dict(json.loads(meta["config"]))
        tok = tokenizer_from_dict(json.loads(meta["tokenizer"])) if meta.get("tokenizer") else None
        model = ContrastiveModel(cfg, tok, minilm)
        model.load_trainable_state_dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError, ConfigError, DataError) as e:
        raise CheckpointError(f"{path} is not a readable contrastive model ({e}); delete it to retrain") from e
    return model.eval()


def data_digest(data: CaptionedImages) -> str:
    """A digest of the ids, captions and pixels: what a cached model was trained on."""
    h = hashlib.sha256()
    h.update(json.dumps([data.ids, data.captions], ensure_ascii=True).encode("ascii"))
    h.update(str(tuple(data.images.shape)).encode())
    h.update(data.images.contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def cached_contrastive(train: CaptionedImages, cfg: ContrastiveConfig | None = None, seed: int = 0,
                       progress: bool = False, *, train_cfg: ContrastiveTrainConfig | None = None,
                       cache_dir: str | Path | None = None, minilm: MiniLM | None = None) -> ContrastiveModel:
    """:func:`train_contrastive` once per (data, configs, seed, MiniLM weights); later calls load the file
    from ``cache_dir`` (default ``$AIGC_CACHE/contrastive``). An unreadable entry is retrained."""
    cfg = cfg or ContrastiveConfig(image_size=train.image_size)
    tc = train_cfg or ContrastiveTrainConfig()
    cfg.validate()
    tc.validate()
    _check_train(train, cfg)
    fields_ = {"format": FORMAT, "data": data_digest(train), "config": cfg.to_dict(), "train": asdict(tc),
               "seed": seed}
    if cfg.text_tower == "minilm":
        fields_["minilm"] = file_stamp(minilm_folder() / "model.safetensors")
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "contrastive"
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (train.name or "images"))
    file = folder / f"{name}-{cfg.image_size}px-n{len(train)}-{cache_key(fields_)}.safetensors"
    if file.is_file():
        try:
            return load_contrastive(file, minilm)
        except CheckpointError:
            pass  # unreadable or foreign entry: retrain and overwrite
    model = train_contrastive(train, cfg, seed, progress, train_cfg=tc, minilm=minilm)
    try:
        save_contrastive(model, file, tc, {"data": fields_["data"], "seed": seed, "n": len(train)})
    except OSError as e:
        warnings.warn(f"could not write the contrastive cache {file}: {e}; set AIGC_CACHE to a writable "
                      "folder to keep the model between runs", stacklevel=2)
    return model
