"""Text decoding for causal language models: a short loop and a chain of processors.

``generate_ids`` runs the model with a KV cache (prefill the prompts once, then
one token per step) and yields each step's tokens; ``generate_text`` adds the
tokenizer: batched prompts, stop strings, and streaming text pieces.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from ..config import check_float, check_int, check_seed
from ..errors import ConfigError
from ..nn.attention import padded_causal_mask
from ..tokenizers import Tokenizer
from . import processors as P


MAX_NEW_TOKENS = 100_000  # per prompt, per call


@dataclass
class GenerationConfig:
    """How to continue a prompt; validated when made (and by ``dataclasses.replace``), so a config
    that exists is a valid one. The command line, the Python API and the service build it once."""
    max_new_tokens: int = 200
    temperature: float = 1.0        # 0 means greedy; 1 samples the model's own distribution
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        self.stop = list(self.stop)
        self.validate()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def validate(self) -> None:
        check_int("max_new_tokens", self.max_new_tokens, 0, MAX_NEW_TOKENS)
        check_float("temperature (0 is greedy)", self.temperature, 0)
        if self.top_k is not None:
            check_int("top_k", self.top_k, 1)
        if self.top_p is not None:
            check_float("top_p", self.top_p, 0, 1, low_open=True)
        check_float("repetition_penalty", self.repetition_penalty, 0, low_open=True)
        if any(not isinstance(s, str) or s == "" for s in self.stop):
            raise ConfigError("stop strings must be non-empty strings")
        check_seed("seed", self.seed)

    def processors(self) -> list[P.Processor]:
        chain: list[P.Processor] = []
        if self.repetition_penalty != 1.0:
            chain.append(P.repetition_penalty(self.repetition_penalty))
        if not self.greedy:
            if self.temperature != 1.0:
                chain.append(P.temperature(self.temperature))
            if self.top_k is not None:
                chain.append(P.top_k(self.top_k))
            if self.top_p is not None and self.top_p < 1.0:
                chain.append(P.top_p(self.top_p))
        return chain


def fit_prompts(prompts: list[list[int]], context: int, bos_id: int) -> list[list[int]]:
    """Left-truncate prompts to ``context - 1`` tokens (warning), start empty ones with ``bos_id``."""
    out = []
    for ids in prompts:
        if not ids:
            ids = [bos_id]
        if len(ids) > context - 1:
            warnings.warn(f"prompt of {len(ids)} tokens exceeds the model's context of {context}; "
                          f"keeping its last {context - 1} tokens", stacklevel=3)
            ids = ids[-(context - 1):]
        out.append(ids)
    return out


@torch.inference_mode()
def generate_ids(model: nn.Module, prompts: list[list[int]], cfg: GenerationConfig,
                 generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Yield the (B,) next tokens of each step for left-padded ``prompts``.

    The caller decides when to stop (it simply stops iterating). When the
    context fills up the cache is rebuilt from the last 3/4 of the window.
    """
    context = model.config.block_size
    device = next(model.parameters()).device
    B = len(prompts)
    lengths = torch.tensor([len(p) for p in prompts])
    width = int(lengths.max())
    idx = torch.zeros(B, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        idx[i, width - len(p):] = torch.tensor(p)
    idx = idx.to(device)
    valid = (torch.arange(width) >= (width - lengths)[:, None]).to(device)  # (B, S) real tokens
    padded = bool((lengths != width).any())
    seen = torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=device)
    seen.scatter_(1, idx, valid)
    chain = cfg.processors()

    def prefill(tokens: Tensor, valid: Tensor) -> tuple[Tensor, object]:
        cache = model.new_cache(B)
        if not padded:
            return model(tokens, cache=cache, last_only=True)[:, -1], cache
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        return model(tokens, cache=cache, positions=positions, mask=padded_causal_mask(valid),
                     last_only=True)[:, -1], cache

    logits, cache = prefill(idx, valid)
    # Per step only the new token is kept (no growing tensors): the history is
    # assembled when the window fills up, and a padded batch's mask is a view
    # of a preallocated (B, context) "real token" buffer.
    history, new = idx, []
    rows = torch.arange(B, device=device)
    mask_buf = next_pos = None

    def start_mask(valid: Tensor) -> tuple[Tensor, Tensor]:
        buf = torch.ones(B, context, dtype=torch.bool, device=device)
        buf[:, :valid.size(1)] = valid
        return buf[:, None, None, :], valid.long().sum(1)  # mask (B, 1, 1, context), next positions

    if padded:
        mask_buf, next_pos = start_mask(valid)
    while True:
        for proc in chain:
            logits = proc(logits, seen)
        if cfg.greedy:
            token = logits.argmax(-1)
        else:
            token = P.draw(logits.float().softmax(-1), torch.rand(B, generator=generator, device=device))
        yield token
        if chain:
            seen[rows, token] = True
        new.append(token)
        if cache.length >= context:  # window full: keep the last 3/4 and rebuild the cache
            keep = context * 3 // 4
            valid = torch.cat([valid, valid.new_ones(B, len(new))], 1)[:, -keep:]
            history = torch.cat([history, torch.stack(new, 1)], 1)[:, -keep:]
            new = []
            padded = bool((~valid).any())
            logits, cache = prefill(history, valid)
            if padded:
                mask_buf, next_pos = start_mask(valid)
            continue
        if padded:
            logits = model(token[:, None], cache=cache, positions=next_pos[:, None],
                           mask=mask_buf[..., :cache.length + 1])[:, -1]
            next_pos += 1
        else:
            logits = model(token[:, None], cache=cache)[:, -1]


TextCallback = Callable[[int, str], bool | None]


def stream_text(model: nn.Module, tokenizer: Tokenizer, prompts: list[str],
                cfg: GenerationConfig) -> Iterator[tuple[int, str]]:
    """Yield (row, text piece) as the continuations of ``prompts`` are produced.

    The pieces of a row join to its final text: a tail that might still grow
    into a stop string is held back until it is clear, and the text is cut
    where a stop string begins.
    """
    was_training = model.training
    model.eval()
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.seed)
    ids = fit_prompts([tokenizer.encode(p) for p in prompts], model.config.block_size, tokenizer.eos_id)
    rows = [RowText(tokenizer, cfg) for _ in prompts]
    try:
        steps = generate_ids(model, ids, cfg, generator) if cfg.max_new_tokens > 0 else iter(())
        for n, tokens in enumerate(steps):
            for i, token in enumerate(tokens.tolist()):
                piece = rows[i].push(token)
                if piece:
                    yield i, piece
            if all(row.done for row in rows) or n + 1 >= cfg.max_new_tokens:
                break
        for i, row in enumerate(rows):
            piece = row.finish()
            if piece:
                yield i, piece
    finally:
        model.train(was_training)


class RowText:
    """The text of one continuation as its tokens arrive: streaming decoding, stop strings, eos.

    ``push(token)`` returns the text that is now final: a tail that might
    still grow into a stop string is held back until it is clear, and the text
    is cut where a stop string begins. ``done`` turns true at eos (with
    ``cfg.stop_at_eos``) or a stop string (``stopped`` says so). ``finish()``
    ends the row (flushing the decoder when it is not done) and returns the
    rest; the pieces join to ``text``.
    """

    def __init__(self, tokenizer: Tokenizer, cfg: GenerationConfig) -> None:
        self._decoder = tokenizer.stream_decoder()
        self._eos = tokenizer.eos_id if cfg.stop_at_eos else None
        self._stops = cfg.stop
        self.text = ""
        self._shown = 0  # characters already returned
        self.done = False
        self.stopped = False

    def push(self, token: int) -> str:
        if self.done:
            return ""
        if token == self._eos:
            self.done = self.stopped = True
            return self._take(len(self.text))
        self.text += self._decoder.push(token)
        cut = _stop_index(self.text, self._stops)
        if cut is not None:
            self.text, self.done, self.stopped = self.text[:cut], True, True
            return self._take(cut)
        return self._take(len(self.text) - _stop_prefix_len(self.text, self._stops))

    def finish(self) -> str:
        if not self.done:
            self.text += self._decoder.flush()
            cut = _stop_index(self.text, self._stops)
            if cut is not None:
                self.text, self.stopped = self.text[:cut], True
            self.done = True
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        piece = self.text[self._shown:upto]
        self._shown = max(self._shown, upto)
        return piece


def generate_text(model: nn.Module, tokenizer: Tokenizer, prompts: list[str], cfg: GenerationConfig,
                  on_text: TextCallback | None = None) -> list[str]:
    """Continue each prompt; returns the generated texts (without the prompts).

    ``on_text(row, piece)`` sees the text as it is produced; returning False
    from it cancels generation (what was produced so far is returned).
    """
    texts = ["" for _ in prompts]
    stream = stream_text(model, tokenizer, prompts, cfg)
    for row, piece in stream:
        texts[row] += piece
        if on_text is not None and on_text(row, piece) is False:
            stream.close()
            break
    return texts


def _stop_index(text: str, stops: list[str]) -> int | None:
    """Where the first stop string starts in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that begins some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
