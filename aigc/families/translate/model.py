"""A trained encoder-decoder translator behind translate()."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch

from ...checkpoint.loading import build_model, read_tokenizer
from ...config import with_options
from ...errors import ConfigError, DataError
from ...generate.seq2seq import DecodeConfig, Hypothesis, beam_search, greedy_decode
from ...models.seq2seq import Seq2Seq, Seq2SeqConfig
from ...tokenizers import Tokenizer


def encode_sources(tokenizer: Tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Token ids of each source sentence; empty or over-long lines are refused with their line number."""
    out = []
    for n, text in enumerate(texts, 1):
        if not text.strip():
            raise DataError(f"line {n} is empty; give one non-empty sentence per line")
        ids = tokenizer.encode(text.strip())
        if len(ids) > max_len:
            raise DataError(f"line {n} has {len(ids)} tokens, more than this model reads ({max_len}); "
                            "split it into shorter sentences")
        out.append(ids)
    return out


def translate_ids(model: Seq2Seq, sources: list[list[int]], *, bos_id: int, eos_id: int, cfg: DecodeConfig,
                  batch_size: int = 32, on_batch: Callable[[int], None] | None = None,
                  workers: int = 1) -> list[Hypothesis]:
    """Decode sources in length-sorted batches (less padding); results in input order.

    ``workers`` > 1 decodes that many batches at once, in threads that share the model, with torch's
    intra-op threads divided among them (restored afterwards): a beam-search step is dozens of small
    operations that one thread runs about as fast as two, so whole batches side by side use the cores
    better than each operation split across them. The results are the same as with one worker."""
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list[Hypothesis | None] = [None] * len(sources)
    pad = model.config.pad_id
    chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

    def decode(chunk: list[int]) -> None:
        width = max(len(sources[i]) for i in chunk)
        src = torch.full((len(chunk), width), pad, dtype=torch.long)
        for r, i in enumerate(chunk):
            src[r, :len(sources[i])] = torch.tensor(sources[i])
        src = src.to(device)
        with torch.inference_mode():  # thread-local: each worker enters it itself
            if cfg.beam == 1:
                hyps = greedy_decode(model, src, bos_id=bos_id, eos_id=eos_id, cfg=cfg)
            else:
                hyps = beam_search(model, src, bos_id=bos_id, eos_id=eos_id, cfg=cfg)
        for i, h in zip(chunk, hyps):
            results[i] = h
        if on_batch is not None:
            on_batch(len(chunk))

    workers = min(workers, len(chunks))
    if workers <= 1:
        for chunk in chunks:
            decode(chunk)
        return results  # type: ignore[return-value]
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(decode, chunks):  # re-raises a worker's exception
                pass
    finally:
        torch.set_num_threads(threads)
    return results  # type: ignore[return-value]


class Translator:
    """A trained translation model, its tokenizer and its language pair."""

    def __init__(self, model: Seq2Seq, tokenizer: Tokenizer, config: dict[str, Any], path: Path) -> None:
        self.model, self.tokenizer, self.config, self.path = model.eval(), tokenizer, config, path
        self.src_lang, self.tgt_lang = config.get("src", "src"), config.get("tgt", "tgt")

    def check_pair(self, src: str | None, tgt: str | None) -> None:
        if (src or self.src_lang) != self.src_lang or (tgt or self.tgt_lang) != self.tgt_lang:
            raise ConfigError(f"this model translates {self.src_lang}->{self.tgt_lang}, not "
                              f"{src or self.src_lang}->{tgt or self.tgt_lang}")

    def translate(self, texts: str | list[str], decoding: DecodeConfig | None = None, *, batch_size: int = 32,
                  on_batch: Callable[[int], None] | None = None, workers: int = 1,
                  **options: Any) -> str | list[str]:
        """Translate one sentence or a list of sentences, decoded as ``decoding`` says (keyword
        ``options`` such as ``beam=1`` replace its fields); ``workers`` batches are decoded at once
        (see :func:`translate_ids`)."""
        cfg = decode_config(decoding, **options)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if cfg.beam > self.model.config.vocab_size:
            raise ConfigError(f"beam {cfg.beam} is wider than the model's vocabulary of "
                              f"{self.model.config.vocab_size} tokens")
        single = isinstance(texts, str)
        lines = [texts] if single else list(texts)
        sources = encode_sources(self.tokenizer, lines, self.model.config.max_len - 1)
        eos = self.tokenizer.eos_id
        hyps = translate_ids(self.model, sources, bos_id=eos, eos_id=eos, cfg=cfg, batch_size=batch_size,
                             on_batch=on_batch, workers=workers)
        out = [self.tokenizer.decode(h.tokens) for h in hyps]
        return out[0] if single else out


def decode_config(base: DecodeConfig | None = None, **options: Any) -> DecodeConfig:
    """``base`` (default: the defaults) with keyword ``options`` replaced; an unknown option is an error."""
    return with_options(DecodeConfig, base, "decoding", options)


def load_translator(folder: Path, config: dict[str, Any], ema: bool = True,
                    device: str | torch.device = "cpu") -> Translator:
    model = build_model(folder, config, Seq2Seq, Seq2SeqConfig, ema)
    return Translator(model.to(device), read_tokenizer(folder), config, folder)


__all__ = ["Translator", "load_translator", "translate_ids", "encode_sources", "decode_config"]
