"""``POST /v1/completions`` and ``POST /v1/chat/completions``: OpenAI's shapes, streamed as OpenAI streams
them (``data: {chunk}`` events, ``finish_reason`` on each choice's last, a ``usage`` chunk with
``stream_options.include_usage``, then ``data: [DONE]``). Every choice is one row of the model's
continuous batch (:mod:`aigc.generate.continuous`), so concurrent requests share forward passes."""
from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ...errors import ConfigError
from ...generate.continuous import ContextTooLong, TextEvent
from ...generate.text import GenerationConfig
from ..chat import chat_prompt, chat_stops
from ..errors import GenerationFailed
from ..http import SSE_DONE, SSE_HEADERS, sse
from ..schemas import ChatRequest, CompletionRequest, _Sampling
from ..service import Service, Timer, route_name
from .body import parse_body

router = APIRouter()
COMPLETION_DEFAULT_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


@dataclass
class _Choice:
    index: int
    prompt: str
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    started: bool = False  # chat: leading spaces of the reply are dropped until text starts


@router.post("/v1/completions")
async def completions(request: Request) -> Any:
    route_name(request, "completions")
    body = await parse_body(request, CompletionRequest)
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts:
        raise ConfigError("prompt must be a string or a non-empty list of strings")
    return await _serve(request, body, prompts, body.stop or [], chat=False, endpoint="/v1/completions")


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    route_name(request, "chat.completions")
    body = await parse_body(request, ChatRequest)
    if body.max_completion_tokens is not None:
        if body.max_tokens is not None and body.max_tokens != body.max_completion_tokens:
            raise ConfigError("give max_tokens or max_completion_tokens, not both")
        body.max_tokens = body.max_completion_tokens
    prompt = chat_prompt(body.messages)
    return await _serve(request, body, [prompt], chat_stops(body.stop or []), chat=True,
                        endpoint="/v1/chat/completions")


async def _serve(request: Request, body: _Sampling, prompts: list[str], stops: list[str], chat: bool,
                 endpoint: str) -> Any:
    svc: Service = request.app.state.service
    served = svc.model(request, body.model, endpoint)
    key = await svc.key(request, served.name)
    limits = svc.limits
    if sum(len(p) for p in prompts) > limits.max_prompt_chars:
        raise ConfigError(f"the prompt has {sum(len(p) for p in prompts):,} characters; this service takes "
                          f"at most {limits.max_prompt_chars:,}")
    rows = len(prompts) * body.n
    if rows > limits.max_n:
        raise ConfigError(f"n = {body.n} for {len(prompts)} prompt(s) asks for {rows} completions; this service "
                          f"gives at most {limits.max_n} per request")
    batcher = svc.runtime["batchers"][served.name]
    prompt_tokens = [batcher.count_tokens(p) for p in prompts]
    if body.max_tokens is None:  # OpenAI: 16 for completions, the rest of the context for chat
        room = batcher.context - max(prompt_tokens)
        max_tokens = min(room, limits.max_tokens) if chat else COMPLETION_DEFAULT_TOKENS
    else:
        max_tokens = body.max_tokens
    if max_tokens > limits.max_tokens:
        raise ConfigError(f"max_tokens = {max_tokens} is over this service's limit of {limits.max_tokens}")
    configs = [_config(body, stops, max_tokens, i) for i in range(body.n)]
    for count in prompt_tokens:
        if count + max_tokens > batcher.context:
            raise ContextTooLong(batcher.context, count, max_tokens)
    reserved = sum(prompt_tokens) + rows * max_tokens
    reservation = await svc.admit(key, endpoint, served.name, tokens=reserved)
    choices = [_Choice(i * body.n + j, p) for i, p in enumerate(prompts) for j in range(body.n)]
    try:
        run = _Run(svc, served.name, batcher, choices, [configs[c.index % body.n] for c in choices],
                   sum(prompt_tokens), reservation, chat)
    except BaseException:  # e.g. the engine is shutting down
        await svc.finish(reservation, status="error")
        raise
    created, rid = int(time.time()), ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    if body.stream:
        return StreamingResponse(_stream(run, request, rid, created, served.name, chat, body.include_usage),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    await run.wait(request)
    return JSONResponse(_response(run, rid, created, served.name, chat, getattr(body, "echo", False)))


def _config(body: _Sampling, stops: list[str], max_tokens: int, i: int) -> GenerationConfig:
    seed = None if body.seed is None else (body.seed + i) % 2**64  # choice i of n: its own stream
    return GenerationConfig(max_new_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                            top_k=body.top_k, repetition_penalty=body.repetition_penalty, stop=stops,
                            seed=seed, stop_at_eos=not body.ignore_eos)


class _Run:
    """The choices of one request in the batcher, their events on an asyncio queue, and the usage."""

    def __init__(self, svc: Service, model: str, batcher: Any, choices: list[_Choice],
                 configs: list[GenerationConfig], prompt_tokens: int, reservation: int, chat: bool) -> None:
        self.svc, self.model, self.choices, self.chat = svc, model, choices, chat
        self.prompt_tokens, self.reservation = prompt_tokens, reservation
        self.timer = Timer()
        self.first_token_at: float | None = None
        # Events arrive from the engine thread; they are collected here and the event loop is woken once
        # for all that came since it last looked (one wake-up per decoding step, not per token).
        self._inbox: list[tuple[int, TextEvent]] = []
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._signalled = False
        loop = asyncio.get_running_loop()
        self.handles = []
        for k, (choice, cfg) in enumerate(zip(choices, configs)):
            def on_event(event: TextEvent, k: int = k) -> None:
                with self._lock:
                    self._inbox.append((k, event))
                    if self._signalled:
                        return
                    self._signalled = True
                loop.call_soon_threadsafe(self._ready.set)
            self.handles.append(batcher.submit(choice.prompt, cfg, on_event))
        self.open = len(choices)
        self.failed: str | None = None

    async def events(self) -> AsyncIterator[tuple[_Choice, str]]:
        """(choice, text) as produced — the pieces that arrived together joined per choice — then
        (choice, "") when a choice ends (its ``finish_reason`` set)."""
        while self.open:
            await self._ready.wait()
            with self._lock:
                batch, self._inbox = self._inbox, []
                self._signalled = False
                self._ready.clear()
            texts: dict[int, str] = {}
            ended: list[tuple[int, TextEvent]] = []
            for k, event in batch:
                if event.kind == "text":
                    texts[k] = texts.get(k, "") + event.text
                else:
                    ended.append((k, event))
            for k, piece in texts.items():
                choice = self.choices[k]
                if self.chat and not choice.started:
                    piece = piece.lstrip()
                    choice.started = bool(piece)
                if piece:
                    if self.first_token_at is None:
                        self.first_token_at = self.timer.seconds
                        self.svc.metrics.ttft.labels(self.model).observe(self.first_token_at)
                    choice.text += piece
                    yield choice, piece
            for k, event in ended:
                self.open -= 1
                choice = self.choices[k]
                choice.completion_tokens = event.completion_tokens
                if event.kind == "error":
                    self.failed = event.error or "generation failed"
                    choice.finish_reason = "error"
                else:
                    choice.finish_reason = event.finish_reason
                yield choice, ""

    async def wait(self, request: Request) -> None:
        try:
            async for _ in self.events():
                pass
        except BaseException:
            await self.close("cancelled")
            raise
        await self.close()

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    async def close(self, status: str | None = None) -> None:
        """Cancel what still runs and record the usage (once)."""
        if self.reservation is None:
            return
        for handle in self.handles:
            handle.cancel()
        reservation, self.reservation = self.reservation, None
        status = status or ("error" if self.failed else "ok")
        self.svc.metrics.count_tokens(self.model, self.prompt_tokens, self.completion_tokens)
        with anyio.CancelScope(shield=True):  # a client that went away still gets its usage recorded
            await self.svc.finish(reservation, prompt_tokens=self.prompt_tokens,
                                  completion_tokens=self.completion_tokens, compute_s=self.timer.seconds,
                                  status=status)
        if self.failed and status == "error":
            raise GenerationFailed(self.failed)


def _response(run: _Run, rid: str, created: int, model: str, chat: bool, echo: bool) -> dict[str, Any]:
    if chat:
        choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text, "refusal": None},
                    "logprobs": None, "finish_reason": c.finish_reason} for c in run.choices]
        obj = "chat.completion"
    else:
        choices = [{"index": c.index, "text": (c.prompt if echo else "") + c.text, "logprobs": None,
                    "finish_reason": c.finish_reason} for c in run.choices]
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": choices,
            "usage": run.usage(), "system_fingerprint": None}


async def _stream(run: _Run, request: Request, rid: str, created: int, model: str, chat: bool,
                  include_usage: bool) -> AsyncIterator[bytes]:
    obj = "chat.completion.chunk" if chat else "text_completion"
    extra = {"usage": None} if include_usage else {}

    def chunk(choice: dict[str, Any]) -> bytes:
        return sse({"id": rid, "object": obj, "created": created, "model": model, "system_fingerprint": None,
                    "choices": [choice], **extra})

    status = "cancelled"
    try:
        if chat:  # OpenAI opens each choice with its role
            for c in run.choices:
                yield chunk({"index": c.index, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None})
        async for choice, piece in run.events():
            if chat:
                delta = {"content": piece} if piece else {}
                yield chunk({"index": choice.index, "delta": delta, "logprobs": None,
                             "finish_reason": choice.finish_reason if not piece else None})
            else:
                yield chunk({"index": choice.index, "text": piece, "logprobs": None,
                             "finish_reason": choice.finish_reason if not piece else None})
        status = "error" if run.failed else "ok"
        if run.failed:
            yield sse({"error": {"message": run.failed, "type": "server_error", "param": None, "code": None}})
        if include_usage:
            yield sse({"id": rid, "object": obj, "created": created, "model": model, "system_fingerprint": None,
                       "choices": [], "usage": run.usage()})
        yield SSE_DONE
    finally:
        run.failed = None  # reported in the stream already
        await run.close(status)
