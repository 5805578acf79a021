"""Continuous batching: concurrent text requests to one model share its decoding steps.

A :class:`ContinuousBatcher` owns one engine thread. Requests join the
running batch at its next step: each newcomer's prompt is prefilled on its
own, then its keys/values are merged into the batch cache right-aligned, so
every row writes its next token at the same cache column; rows carry their
own positions and a "real key" mask (the padded path of ``generate_ids``).
Each step runs one forward pass for all rows and samples each row with its
own processors and generator, so a request's stream does not depend on its
neighbours. Finished rows leave the batch at once.

Cache layout, per row r::

    columns  0 ........ start_r ........ W-1 | W (next write) .. capacity-1
             invalid    prompt + generated   | free

With ``prompt + max_new_tokens <= block_size`` a row's live span never
exceeds the context; when ``W`` reaches the capacity (2 x block_size) every
row is shifted left by the leading span that is invalid for all of them.
"""
from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn.attention import KVCache
from ..tokenizers import Tokenizer
from . import processors as P
from .text import GenerationConfig, RowText

log = logging.getLogger(__name__)


class ContextTooLong(ConfigError):
    """A prompt plus its completion does not fit the model's context."""

    def __init__(self, context: int, prompt_tokens: int, max_new_tokens: int) -> None:
        self.context, self.prompt_tokens, self.max_new_tokens = context, prompt_tokens, max_new_tokens
        super().__init__(
            f"This model's maximum context length is {context} tokens, however you requested "
            f"{prompt_tokens + max_new_tokens} tokens ({prompt_tokens} in the prompt, {max_new_tokens} for "
            f"the completion). Please reduce the length of the prompt or the completion.")


@dataclass(frozen=True)
class TextEvent:
    """What a request's ``on_event`` receives: "text" pieces, then one "done" or "error"."""
    kind: str                       # "text" | "done" | "error"
    text: str = ""                  # the piece (kind "text")
    finish_reason: str | None = None  # "stop" (eos or a stop string) | "length" | "cancelled" (kind "done")
    prompt_tokens: int = 0
    completion_tokens: int = 0      # tokens sampled, eos included (kind "done")
    error: str | None = None        # kind "error"


class TextRequest:
    """A submitted request; ``cancel()`` is safe from any thread."""

    def __init__(self, ids: list[int], cfg: GenerationConfig, on_event: Callable[[TextEvent], None],
                 wake: Callable[[], None]) -> None:
        self.ids, self.cfg, self.on_event = ids, cfg, on_event
        self.cancelled = False
        self._wake = wake

    @property
    def prompt_tokens(self) -> int:
        return len(self.ids)

    def cancel(self) -> None:
        """Leave the batch at its next step; a "done" event with finish_reason "cancelled" follows."""
        self.cancelled = True
        self._wake()


class _Row:
    """Engine-side state of one running request."""

    def __init__(self, req: TextRequest, tokenizer: Tokenizer, device: torch.device, vocab: int) -> None:
        cfg = req.cfg
        self.req, self.text = req, RowText(tokenizer, cfg)
        self.chain, self.greedy = cfg.processors(), cfg.greedy
        self.generator = torch.Generator(device=device)
        if cfg.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(cfg.seed)
        self.seen = None  # (1, V) presence mask of the ids so far, for the processors
        if self.chain:
            self.seen = torch.zeros(1, vocab, dtype=torch.bool, device=device)
            self.seen[0, torch.tensor(req.ids, device=device)] = True
        self.n = 0           # tokens sampled
        self.finished = False

    @property
    def settings(self) -> tuple:
        """Rows with equal settings have their logits processed and sampled as one batch."""
        cfg = self.req.cfg
        return cfg.greedy, cfg.temperature, cfg.top_k, cfg.top_p, cfg.repetition_penalty


def sample_rows(rows: list[_Row], logits: Tensor) -> Tensor:
    """(B, V) logits -> (B,) next tokens, each row with its own settings and generator (one uniform per
    sampled row and step, as ``generate_ids`` draws them); rows of equal settings are processed together."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.settings, []).append(i)
    tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
    for idx in groups.values():
        first = rows[idx[0]]
        part = logits if len(idx) == len(rows) else logits[idx]
        if first.chain:
            seen = torch.cat([rows[i].seen for i in idx])
            for proc in first.chain:
                part = proc(part, seen)
        if first.greedy:
            chosen = part.argmax(-1)
        else:
            uniforms = torch.cat([torch.rand(1, generator=rows[i].generator, device=logits.device) for i in idx])
            chosen = P.draw(part.float().softmax(-1), uniforms)
        tokens[idx] = chosen
    if any(row.seen is not None for row in rows):
        for row, token in zip(rows, tokens.tolist()):
            if row.seen is not None:
                row.seen[0, token] = True
    return tokens


class ContinuousBatcher:
    """Serve text requests to ``model`` (a GPT; put in eval mode) from one engine thread.

    ``submit`` returns at once; the request's events come from the engine
    thread, so ``on_event`` must be cheap (hand the event to another thread or
    loop). At most ``max_batch`` requests decode together; the rest wait.
    """

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, max_batch: int = 16) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        self.model, self.tokenizer, self.max_batch = model.eval(), tokenizer, max_batch
        self.device = next(model.parameters()).device
        self.capacity = 2 * self.context  # cache columns
        self._cond = threading.Condition()
        self._waiting: collections.deque[TextRequest] = collections.deque()
        self._closing = False
        self._stats = dict(steps=0, multi_row_steps=0, tokens=0, requests=0)
        self._reset()
        self._thread = threading.Thread(target=self._run, name="aigc-text-batcher", daemon=True)
        self._thread.start()

    @property
    def context(self) -> int:
        """The model's context window in tokens (prompt + completion)."""
        return self.model.config.block_size

    def _prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt) or [self.tokenizer.eos_id]

    def count_tokens(self, prompt: str) -> int:
        """Tokens ``prompt`` takes in the context (an empty prompt is one eos token)."""
        return len(self._prompt_ids(prompt))

    def submit(self, prompt: str, cfg: GenerationConfig,
               on_event: Callable[[TextEvent], None]) -> TextRequest:
        """Queue ``prompt``; raises :class:`ContextTooLong` when prompt + ``cfg.max_new_tokens`` exceed
        the context (never truncates), RuntimeError after ``close()``."""
        ids = self._prompt_ids(prompt)
        if len(ids) + cfg.max_new_tokens > self.context:
            raise ContextTooLong(self.context, len(ids), cfg.max_new_tokens)
        req = TextRequest(ids, cfg, on_event, self._wake)
        with self._cond:
            if self._closing:
                raise RuntimeError("the text batcher is closed")
            self._waiting.append(req)
            self._stats["requests"] += 1
            self._cond.notify()
        return req

    def stats(self) -> dict[str, int]:
        """running, waiting, requests (submitted), steps (decoding forward passes), multi_row_steps
        (those with more than one row) and tokens (sampled)."""
        with self._cond:
            return dict(running=len(self._rows), waiting=len(self._waiting), **self._stats)

    def close(self) -> None:
        """Stop the engine; every request not finished yet gets a "done" event ("cancelled")."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # ---- engine thread ---------------------------------------------------------------------------

    def _reset(self) -> None:
        """Empty batch. The cache (L, max_batch, H, capacity, D) and key mask (max_batch, capacity) are
        allocated once; the B running rows are their first B slots (``_cache.k`` / ``_valid`` are views),
        so a row joins or leaves by copying one slot, never the whole cache. Also next positions (B,) and
        last tokens (B,)."""
        self._rows: list[_Row] = []
        if not hasattr(self, "_store"):
            self._store = self.model.new_cache(self.max_batch, self.capacity)
            self._valid_store = torch.zeros(self.max_batch, self.capacity, dtype=torch.bool, device=self.device)
        self._cache: KVCache = self.model.new_cache(0, 1)
        self._cache.max_len = self.capacity
        self._pos = torch.zeros(0, dtype=torch.long, device=self.device)
        self._last = torch.zeros(0, dtype=torch.long, device=self.device)
        self._resize(0)

    def _resize(self, rows: int) -> None:
        """Point the cache and mask at the first ``rows`` slots."""
        self._cache.k, self._cache.v = self._store.k[:, :rows], self._store.v[:, :rows]
        self._valid = self._valid_store[:rows]

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._waiting or self._rows or self._closing):
                        self._cond.wait()
                    if self._closing:
                        break
                    dropped = [r for r in self._waiting if r.cancelled]
                    for req in dropped:
                        self._waiting.remove(req)
                    room = self.max_batch - len(self._rows)
                    new = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                for req in dropped:
                    self._end(req, "cancelled", 0)
                for req in new:
                    self._admit(req)
                try:
                    for row in self._rows:
                        if row.req.cancelled and not row.finished:
                            self._finish(row, "cancelled")
                    self._retire()
                    if self._rows:
                        self._step()
                except Exception as exc:  # fail the batch, keep serving
                    self._fail_all(exc)
            with self._cond:
                waiting, self._waiting = list(self._waiting), collections.deque()
            for req in waiting:
                self._end(req, "cancelled", 0)
            for row in self._rows:
                if not row.finished:
                    self._finish(row, "cancelled")
            self._reset()

    def _admit(self, req: TextRequest) -> None:
        """Prefill ``req``'s prompt on its own, take its first token and merge it into the batch."""
        if req.cfg.max_new_tokens == 0:
            self._end(req, "length", 0)
            return
        try:
            row = _Row(req, self.tokenizer, self.device, self.model.config.vocab_size)
            P = len(req.ids)
            cache = self.model.new_cache(1, P)
            ids = torch.tensor([req.ids], device=self.device)
            token = sample_rows([row], self.model(ids, cache=cache, last_only=True)[:, -1])
            self._take(row, int(token))
        except Exception as exc:  # this request fails, the batch goes on
            log.exception("prefill failed")
            self._error(req, exc)
            return
        if row.finished:
            return
        try:
            self._merge(cache, P)
        except Exception as exc:  # the batch may be half-merged: fail it all
            self._rows.append(row)
            self._fail_all(exc)
            return
        self._rows.append(row)
        self._pos = torch.cat([self._pos, self._pos.new_tensor([P])])
        self._last = torch.cat([self._last, token])

    def _merge(self, part: KVCache, P: int) -> None:
        """Put a batch-1 cache of ``P`` positions into the next free slot, ending at the write column."""
        cache, W, B = self._cache, self._cache.length, len(self._rows)
        if P > W:  # shift the running rows right so the newcomer fits before the write column
            d = P - W
            for t in (cache.k, cache.v):
                t[:, :, :, d:P] = t[:, :, :, :W].clone()
            self._valid[:, d:P] = self._valid[:, :W].clone()
            self._valid[:, :d] = False
            W = cache.length = P
        for store, new in ((self._store.k, part.k), (self._store.v, part.v)):
            store[:, B, :, :W - P] = 0  # finite in the masked columns
            store[:, B, :, W - P:W] = new[:, 0]
        self._valid_store[B] = False
        self._valid_store[B, W - P:W] = True
        self._resize(B + 1)

    def _step(self) -> None:
        """One decoding forward pass for every row, then one token each."""
        cache = self._cache
        if cache.length >= self.capacity:
            self._compact()
        W = cache.length
        self._valid[:, W] = True
        logits = self.model(self._last[:, None], cache=cache, positions=self._pos[:, None],
                            mask=self._valid[:, None, None, :W + 1])[:, -1]  # (B, V)
        self._pos += 1
        self._last = sample_rows(self._rows, logits)
        self._stats["steps"] += 1
        self._stats["multi_row_steps"] += len(self._rows) > 1
        for row, token in zip(self._rows, self._last.tolist()):
            self._take(row, token)
        self._retire()

    def _compact(self) -> None:
        """Shift every row left by the leading columns that no row uses."""
        cache, W = self._cache, self._cache.length
        s = int(self._valid[:, :W].any(0).long().argmax())  # first column some row uses
        for t in (cache.k, cache.v):
            t[:, :, :, :W - s] = t[:, :, :, s:W].clone()
        self._valid[:, :W - s] = self._valid[:, s:W].clone()
        self._valid[:, W - s:] = False
        cache.length = W - s

    def _take(self, row: _Row, token: int) -> None:
        """Feed one sampled token to ``row``: emit its text, end it at a stop or its token budget."""
        row.n += 1
        self._stats["tokens"] += 1
        piece = row.text.push(token)
        if piece:
            self._emit(row.req, TextEvent("text", piece))
        if row.text.done:
            self._finish(row, "stop")
        elif row.n >= row.req.cfg.max_new_tokens:
            self._finish(row, "length")

    def _finish(self, row: _Row, reason: str) -> None:
        row.finished = True
        if reason != "cancelled":
            piece = row.text.finish()
            if piece:
                self._emit(row.req, TextEvent("text", piece))
            reason = "stop" if row.text.stopped else reason
        self._end(row.req, reason, row.n)

    def _retire(self) -> None:
        """Drop finished rows from the batch (and reset it when none is left)."""
        keep = [i for i, row in enumerate(self._rows) if not row.finished]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset()
            return
        n, W = len(keep), self._cache.length
        holes = [i for i in range(n) if self._rows[i].finished]
        movers = [j for j in range(n, len(self._rows)) if not self._rows[j].finished]
        for h, j in zip(holes, movers):  # the last running rows move into the freed slots
            for store in (self._store.k, self._store.v):
                store[:, h, :, :W] = store[:, j, :, :W]
            self._valid_store[h] = self._valid_store[j]
            self._pos[h], self._last[h], self._rows[h] = self._pos[j], self._last[j], self._rows[j]
        self._rows, self._pos, self._last = self._rows[:n], self._pos[:n].clone(), self._last[:n].clone()
        self._resize(n)

    def _fail_all(self, exc: Exception) -> None:
        log.exception("text batch failed")
        for row in self._rows:
            if not row.finished:
                row.finished = True
                self._error(row.req, exc)
        self._reset()

    def _end(self, req: TextRequest, reason: str, n: int) -> None:
        self._emit(req, TextEvent("done", finish_reason=reason, prompt_tokens=req.prompt_tokens,
                                  completion_tokens=n))

    def _error(self, req: TextRequest, exc: Exception) -> None:
        self._emit(req, TextEvent("error", prompt_tokens=req.prompt_tokens,
                                  error=str(exc) or type(exc).__name__))

    @staticmethod
    def _emit(req: TextRequest, event: TextEvent) -> None:
        """Call ``on_event``; one that raises cancels its request (the engine goes on)."""
        try:
            req.on_event(event)
        except Exception:
            log.exception("on_event raised; cancelling the request")
            req.cancelled = True
