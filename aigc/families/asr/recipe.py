"""Train a speech recogniser: config, presets and wiring.

utterances (speech | spoken-digits | a folder) -> normalised transcripts -> char (or byte-level BPE)
tokenizer, ids shifted by one so that 0 is the CTC blank -> length-bucketed batches of log-mel features
(SpecAugment in training only) -> ASRModel -> JointCTCAttentionLoss (λ = ctc_weight) -> the generic
trainer, validated by loss and by greedy (attention or CTC) WER/CER on held-out utterances.

Presets (parameters with the char tokenizer, 286 ids): tiny 0.84 M (d_model 96, 4 encoder / 2 decoder
layers, 40 mels; for tests), small 6.1 M (d_model 192, 8 / 3 layers, 80 mels), base 15.7 M (d_model 256,
12 / 4 layers, 80 mels); small and base are sized for real runs on a couple of CPU cores.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ... import checkpoint as ckpt
from ...audio import FeatureConfig, SpecAugmentConfig, frames, spec_augment
from ...checkpoint.loading import read_tokenizer
from ...config import check_float, check_int
from ...data.batching import IGNORE, pack_by_tokens
from ...errors import ConfigError, DataError
from ...eval.wer import error_rates
from ...generate.asr import TranscribeConfig, decode_batch
from ...models.asr import ASRConfig, ASRModel, subsampled_lengths
from ...objectives.ctc import JointCTCAttentionLoss
from ...tokenizers import Tokenizer, train_tokenizer
from ...train.config import TrainConfig
from ...train.trainer import Trainer
from ..runs import fit_vocab, load_preset, preset_with, refuse_existing_run, saved_config, with_data
from ..text.recipe import TokenizerConfig
from . import FAMILY
from .data import Utterances, load_split
from .model import BLANK, Vocabulary, features_of


@dataclass
class ASRRunConfig:
    data: str = "speech"
    n_train: int = 4000             # training utterances (synthesised for speech / spoken-digits; folder: at most)
    n_valid: int = 200              # validation utterances
    n_test: int = 500               # clips of test and test-voices (speech, spoken-digits)
    data_seed: int = 0              # seed of the synthesised data (the model's is train.seed)
    batch_frames: int = 20000       # feature frames per optimizer step (rows x longest, padding included)
    ctc_weight: float = 0.3         # λ of the joint CTC/attention loss
    label_smoothing: float = 0.1    # on the attention branch
    val_wer_utterances: int = 100   # validation utterances decoded for val_wer / val_cer...
    val_method: str = "beam"        # ...by this method, beam 1: "beam" (attention greedy) or "greedy-ctc"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    specaugment: SpecAugmentConfig = field(default_factory=lambda: SpecAugmentConfig(freq_width=15, time_width=25,
                                                                                     time_ratio=0.2))
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ASRConfig = field(default_factory=ASRConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if self.tokenizer.kind not in ("char", "bpe"):
            raise ConfigError(f"tokenizer.kind must be char or bpe, got '{self.tokenizer.kind}'")
        if self.tokenizer.kind == "char" and self.tokenizer.vocab_size is not None:
            raise ConfigError("tokenizer.vocab_size applies to bpe only; leave it unset for char")
        check_int("n_train", self.n_train, 0, 10_000_000)
        check_int("n_valid", self.n_valid, 1, 1_000_000)
        check_int("n_test", self.n_test, 1, 1_000_000)
        check_int("data_seed", self.data_seed, 0, 2**31 - 1)
        check_int("batch_frames", self.batch_frames, 7, 1 << 30)
        check_int("val_wer_utterances", self.val_wer_utterances, 0, 1_000_000)
        check_float("ctc_weight", self.ctc_weight, 0.0, 1.0)
        if self.val_method not in ("beam", "greedy-ctc"):
            raise ConfigError(f"val_method must be beam or greedy-ctc, got '{self.val_method}'")
        check_float("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        if self.data in ("speech", "spoken-digits") and self.n_train < 1:
            raise ConfigError(f"n_train must be at least 1 for '{self.data}'")
        self.train.validate()


def preset(name: str) -> ASRRunConfig:
    return load_preset(ASRRunConfig, FAMILY.name, name)


def build_config(preset_name: str, data: str | None, overrides: dict[str, str]) -> ASRRunConfig:
    """A preset for ``data`` (speech, spoken-digits or a folder) with ``--section.key=value`` overrides."""
    return preset_with(ASRRunConfig, FAMILY.name, preset_name, with_data(data, overrides))


def resume_config(out: Path, overrides: dict[str, str]) -> ASRRunConfig:
    return saved_config(ASRRunConfig, FAMILY.kind, "a speech recognition run", out, overrides)


# ---- batches -------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """Utterances ready to batch: samples, their feature frames and their target ids (shifted, no bos/eos)."""
    waves: list[Tensor]
    frames: np.ndarray
    targets: list[np.ndarray]
    texts: list[str]


def encode_utterances(u: Utterances, vocab: Vocabulary, feat: FeatureConfig, model: ASRConfig) -> tuple[Encoded, int]:
    """Keep the utterances the model can learn: within ``max_frames`` and ``max_target_len``, with at least
    as many encoder frames as tokens (else CTC has no alignment); returns them and how many were dropped."""
    waves, lens, targets, texts, dropped = [], [], [], [], 0
    for wave, text in zip(u.waves, u.texts):
        n = int(frames(int(wave.numel()), feat)) if wave.numel() > feat.n_fft // 2 else 0
        ids = vocab.encode(text)
        if 7 <= n <= model.max_frames and 0 < len(ids) < model.max_target_len and subsampled_lengths(n) >= len(ids):
            waves.append(wave)
            lens.append(n)
            targets.append(ids)
            texts.append(text)
        else:
            dropped += 1
    return Encoded(waves, np.array(lens, dtype=np.int64), targets, texts), dropped


def collate_speech(waves: list[Tensor], targets: list[np.ndarray], feat: FeatureConfig, bos: int, eos: int,
                   augment: SpecAugmentConfig | None = None, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> feats (B, n_mels, T) (zero padded), lengths (B,), tgt_in [bos]+y (B, U+1) padded with the blank,
    tgt_out y+[eos] (B, U+1) padded with IGNORE: JointCTCAttentionLoss's batch."""
    feats = [features_of(w, feat) for w in waves]                       # (n_mels, T_i)
    lengths = torch.tensor([f.size(1) for f in feats])
    x = torch.zeros(len(feats), feat.n_mels, int(lengths.max()))
    for i, f in enumerate(feats):
        x[i, :, :f.size(1)] = f
    if augment is not None:
        x = spec_augment(x, augment, generator=generator, lengths=lengths)
    U = max(len(t) for t in targets) + 1
    tgt_in = torch.full((len(targets), U), BLANK, dtype=torch.long)
    tgt_out = torch.full((len(targets), U), IGNORE, dtype=torch.long)
    for i, t in enumerate(targets):
        tgt_in[i, 0] = bos
        tgt_in[i, 1:len(t) + 1] = torch.as_tensor(t)
        tgt_out[i, :len(t)] = torch.as_tensor(t)
        tgt_out[i, len(t)] = eos
    return x, lengths, tgt_in, tgt_out


class SpeechBatches:
    """The trainer's batch source: utterances sorted by length and packed into batches of at most
    ``batch_frames`` padded feature frames, the batch order reshuffled every epoch from the seed (a batch
    is a pure function of the step). Features are computed per batch; SpecAugment (when given) is drawn
    from a generator seeded by (seed, step, part)."""

    def __init__(self, data: Encoded, batch_frames: int, seed: int, feat: FeatureConfig, vocab: Vocabulary,
                 augment: SpecAugmentConfig | None = None) -> None:
        if not data.waves:
            raise DataError("no utterances to train on")
        longest = int(data.frames.max())
        if batch_frames < longest:
            raise ConfigError(f"batch_frames ({batch_frames}) is smaller than the longest utterance "
                              f"({longest} frames); raise --batch-frames")
        self.data, self.seed, self.feat, self.vocab, self.augment = data, seed, feat, vocab, augment
        self.batches = pack_by_tokens(data.frames, np.zeros_like(data.frames), batch_frames, seed)
        self.frames = [int(data.frames[b].sum()) for b in self.batches]

    def _index(self, step: int) -> int:
        epoch, pos = divmod(step, len(self.batches))
        return int(np.random.default_rng((self.seed, epoch)).permutation(len(self.batches))[pos])

    def items(self, step: int) -> int:
        return self.frames[self._index(step)]

    def batch(self, step: int, part: int = 0, parts: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        members = self.batches[self._index(step)]
        if len(members) < parts:
            raise ConfigError(f"a batch of {len(members)} utterances cannot be split {parts} ways; raise "
                              "batch_frames or use fewer processes / less accumulation")
        rows = members[part::parts]
        g = None
        if self.augment is not None:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + step * 7_919 + part) % (2**63 - 1))
        return collate_speech([self.data.waves[i] for i in rows], [self.data.targets[i] for i in rows], self.feat,
                              self.vocab.bos_id, self.vocab.eos_id, self.augment, g)


class ASRValidation:
    """Validation loss (no label smoothing) over fixed batches, and WER/CER of greedy decoding (attention,
    or CTC: ``cfg.val_method``)."""

    def __init__(self, valid: Encoded, cfg: ASRRunConfig, vocab: Vocabulary) -> None:
        source = SpeechBatches(valid, max(cfg.batch_frames, int(valid.frames.max())), 0, cfg.features, vocab)
        self.batches = [source.batch(i) for i in range(min(cfg.train.eval_batches, len(source.batches)))]
        n = min(cfg.val_wer_utterances, len(valid.waves))
        order = np.argsort(valid.frames[:n], kind="stable")
        self.wer_batches = [collate_speech([valid.waves[i] for i in order[s:s + 16]],
                                           [valid.targets[i] for i in order[s:s + 16]], cfg.features,
                                           vocab.bos_id, vocab.eos_id)[:2] for s in range(0, n, 16)]
        self.refs = [valid.texts[i] for i in order]
        self.loss = JointCTCAttentionLoss(cfg.ctc_weight, 0.0)
        self.vocab, self.decoding = vocab, TranscribeConfig(method=cfg.val_method, beam=1)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        terms = [self.loss.terms(model, tuple(t.to(device) for t in b)) for b in self.batches]
        scores = {"val_loss": float(np.mean([t.loss.item() for t in terms])),
                  "val_ctc": float(np.mean([t.ctc.item() for t in terms])),
                  "val_att": float(np.mean([t.att.item() for t in terms]))}
        if self.wer_batches:
            hyps = []
            for feats, lengths in self.wer_batches:
                out = decode_batch(model, feats.to(device), lengths.to(device), self.decoding,
                                   bos_id=self.vocab.bos_id, eos_id=self.vocab.eos_id)
                hyps += [self.vocab.decode(t.tokens) for t in out]
            rates = error_rates(hyps, self.refs)
            scores["val_wer"], scores["val_cer"] = rates.wer, rates.cer
        return scores


# ---- training ------------------------------------------------------------------------------------------


def make_tokenizer(cfg: ASRRunConfig, texts: list[str]) -> Tokenizer:
    return train_tokenizer(cfg.tokenizer.kind, "\n".join(texts), cfg.tokenizer.vocab_size)


def train(cfg: ASRRunConfig, out: Path, *, resume: bool = False, stop_at: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a speech recogniser into run folder ``out``; returns the final metrics."""
    out = Path(out)
    refuse_existing_run(out, resume)
    train_u = load_split(cfg, "train", progress=progress)
    valid_u = load_split(cfg, "valid", progress=progress)
    if not len(train_u) or not len(valid_u):
        raise DataError(f"'{cfg.data}' gives no training or validation utterances")
    tok = read_tokenizer(ckpt.resolve(out, prefer=("latest",))) if resume else make_tokenizer(cfg, train_u.texts)
    vocab = Vocabulary(tok)
    fit_vocab(cfg.model, vocab.size)
    cfg.model.blank_id = BLANK
    cfg.model.n_mels = cfg.features.n_mels
    train_e, dropped = encode_utterances(train_u, vocab, cfg.features, cfg.model)
    valid_e, _ = encode_utterances(valid_u, vocab, cfg.features, cfg.model)
    if not train_e.waves or not valid_e.waves:
        raise DataError(f"'{cfg.data}' leaves no utterances within model.max_frames={cfg.model.max_frames} frames "
                        f"and model.max_target_len={cfg.model.max_target_len} tokens")
    torch.manual_seed(cfg.train.seed)
    model = ASRModel(cfg.model)
    source = SpeechBatches(train_e, cfg.batch_frames, cfg.train.seed, cfg.features, vocab, cfg.specaugment)
    meta = {k: v for k, v in asdict(cfg).items() if k != "train"}
    trainer = Trainer(model, JointCTCAttentionLoss(cfg.ctc_weight, cfg.label_smoothing), source, cfg.train, out,
                      kind=FAMILY.kind, meta=meta, files={"tokenizer.json": json.dumps(tok.to_dict())},
                      evaluate=ASRValidation(valid_e, cfg, vocab), progress=progress, unit="frames")
    result = trainer.run(resume=resume, stop_at=stop_at)
    hours = float(train_e.frames.sum()) * cfg.features.hop / cfg.features.sample_rate / 3600
    return {"run": str(out), "params": model.num_params(), "train_utterances": len(train_e.waves),
            "train_hours": round(hours, 3), "dropped_utterances": dropped, "batches_per_epoch": len(source.batches),
            "avg_frames_per_batch": float(np.mean(source.frames)), **result}
