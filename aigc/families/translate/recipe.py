"""Train an encoder-decoder translator on a parallel corpus: config, presets and wiring.

corpus pairs -> one BPE over both sides -> token-count batches -> Seq2Seq ->
label-smoothed loss -> the generic trainer, validated by dev loss and dev BLEU.
The tokenizer's end-of-text id serves as start, end and padding token: the
source never contains it, the decoder is causal, and padded targets are ignored.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import checkpoint as ckpt
from ...checkpoint.loading import read_tokenizer
from ...data import load_parallel_corpus
from ...data.batching import TokenBatches
from ...errors import ConfigError, DataError
from ...eval.bleu import score_translations
from ...generate.seq2seq import DecodeConfig
from ...models.seq2seq import Seq2Seq, Seq2SeqConfig
from ...objectives.seq2seq import label_smoothed_loss
from ...tokenizers import Tokenizer, train_tokenizer
from ...train.config import TrainConfig
from ...train.trainer import Trainer
from ..runs import fit_vocab, load_preset, preset_with, refuse_existing_run, saved_config, with_data
from ..text.recipe import TokenizerConfig
from .model import translate_ids
from . import FAMILY



@dataclass
class TranslateRunConfig:
    data: str = "bible-en-es"
    src: str = "en"
    tgt: str = "es"
    dev_size: int = 1000
    test_size: int = 1000
    max_tokens: int = 4096          # tokens per optimizer step (source + target, padding included)
    label_smoothing: float = 0.1
    dev_bleu_sentences: int = 200   # dev sentences translated (greedy) for BLEU at each validation
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(kind="bpe", vocab_size=8000))
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if self.tokenizer.kind not in ("char", "bpe"):
            raise ConfigError(f"tokenizer.kind must be char or bpe, got '{self.tokenizer.kind}'")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_tokens <= 0 or self.dev_bleu_sentences < 0 or self.dev_size < 1 or self.test_size < 1:
            raise ConfigError("max_tokens, dev_size and test_size must be positive")
        self.train.validate()


def preset(name: str) -> TranslateRunConfig:
    return load_preset(TranslateRunConfig, FAMILY.name, name)


def build_config(preset_name: str, data: str | None, overrides: dict[str, str]) -> TranslateRunConfig:
    """A preset for ``data`` with overrides (the language pair as "src" and "tgt"; default en -> es)."""
    return preset_with(TranslateRunConfig, FAMILY.name, preset_name, with_data(data, overrides))


def resume_config(out: Path, overrides: dict[str, str]) -> TranslateRunConfig:
    return saved_config(TranslateRunConfig, FAMILY.kind, "a translation run", out, overrides)


def encode_pairs(tok: Tokenizer, pairs: list[tuple[str, str]], max_len: int) -> tuple[list, int]:
    """Token arrays of each pair, dropping pairs with a side longer than ``max_len`` tokens."""
    out, dropped = [], 0
    for s, t in pairs:
        a, b = tok.encode_to_array(s), tok.encode_to_array(t)
        if 0 < len(a) <= max_len and len(b) < max_len:
            out.append((a, b))
        else:
            dropped += 1
    return out, dropped


class TranslationValidation:
    """Dev loss (plain cross-entropy) over fixed batches, and dev BLEU of greedy translations."""

    def __init__(self, tok: Tokenizer, dev: list[tuple[str, str]], dev_ids: list, cfg: TranslateRunConfig) -> None:
        eos = tok.eos_id
        self.tok, self.eos = tok, eos
        source = TokenBatches(dev_ids, cfg.max_tokens, seed=0, pad_id=eos, bos_id=eos, eos_id=eos)
        self.batches = [source.batch(i) for i in range(min(cfg.train.eval_batches, len(source.batches)))]
        n = min(cfg.dev_bleu_sentences, len(dev_ids))
        self.bleu_src = [list(map(int, a)) for a, _ in dev_ids[:n]]
        self.bleu_ref = [tok.decode(list(map(int, b))) for _, b in dev_ids[:n]]
        self.loss = label_smoothed_loss(0.0)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        losses = [self.loss(model, tuple(t.to(device) for t in b)).item() for b in self.batches]
        scores = {"val_loss": sum(losses) / len(losses)}
        if self.bleu_src:
            hyps = translate_ids(model, self.bleu_src, bos_id=self.eos, eos_id=self.eos, cfg=DecodeConfig(beam=1))
            scores["dev_bleu"] = score_translations([self.tok.decode(h.tokens) for h in hyps], self.bleu_ref).bleu
        return scores


def train(cfg: TranslateRunConfig, out: Path, *, resume: bool = False, stop_at: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a translator into run folder ``out``; returns the final metrics."""
    out = Path(out)
    refuse_existing_run(out, resume)
    corpus = load_parallel_corpus(cfg.data, src=cfg.src, tgt=cfg.tgt, dev_size=cfg.dev_size, test_size=cfg.test_size)
    if resume:
        tok = read_tokenizer(ckpt.resolve(out, prefer=("latest",)))
    else:
        sides = "\n".join(s for pair in corpus.train for s in pair)
        tok = train_tokenizer(cfg.tokenizer.kind, sides, cfg.tokenizer.vocab_size)
    limit = cfg.model.max_len - 1
    train_ids, dropped = encode_pairs(tok, corpus.train, limit)
    dev_ids, _ = encode_pairs(tok, corpus.dev, limit)
    if not train_ids or not dev_ids:
        raise DataError(f"'{cfg.data}' leaves no training or dev pairs within {limit} tokens")
    fit_vocab(cfg.model, tok.vocab_size)
    cfg.model.pad_id = tok.eos_id
    torch.manual_seed(cfg.train.seed)
    model = Seq2Seq(cfg.model)
    eos = tok.eos_id
    source = TokenBatches(train_ids, cfg.max_tokens, cfg.train.seed, pad_id=eos, bos_id=eos, eos_id=eos)
    meta = {k: v for k, v in asdict(cfg).items() if k != "train"}
    trainer = Trainer(model, label_smoothed_loss(cfg.label_smoothing), source, cfg.train, out, kind=FAMILY.kind,
                      meta=meta, files={"tokenizer.json": json.dumps(tok.to_dict())},
                      evaluate=TranslationValidation(tok, corpus.dev, dev_ids, cfg), progress=progress)
    result = trainer.run(resume=resume, stop_at=stop_at)
    return {"run": str(out), "params": model.num_params(), "train_pairs": len(train_ids),
            "dropped_long_pairs": dropped, "batches_per_epoch": len(source.batches),
            "avg_tokens_per_batch": float(np.mean(source.tokens)), **result}
