"""``/health``, ``/metrics``, ``/v1/models`` and ``POST /v1/translations``."""
from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from ...errors import ConfigError
from ..errors import NotFound
from ..schemas import TranslationRequest
from ..service import Service, Timer, route_name
from .body import parse_body

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> Any:
    route_name(request, "health")
    svc: Service = request.app.state.service
    try:
        await run_in_threadpool(svc.db.query_one, "SELECT 1 AS ok")
        database = "ok"
    except Exception as exc:  # the service is up but cannot reach its database
        database = f"unavailable: {type(exc).__name__}"
    ok = database == "ok" and not svc.runtime.get("stopping")
    return JSONResponse({"status": "ok" if ok else "unavailable", "database": database, "replica": svc.replica,
                         "models": sorted(svc.models)}, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    route_name(request, "metrics")
    svc: Service = request.app.state.service
    for name, batcher in svc.runtime.get("batchers", {}).items():
        svc.metrics.batch_rows.labels(name).set(batcher.stats()["running"])
    body = await run_in_threadpool(svc.metrics.render)  # the queue-depth gauge reads the database
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def list_models(request: Request) -> Any:
    route_name(request, "models")
    svc: Service = request.app.state.service
    key = await svc.key(request)
    cards = [m.card() for m in svc.models.values() if key.allows(m.name)]
    return {"object": "list", "data": cards}


@router.get("/v1/models/{name:path}")
async def get_model(name: str, request: Request) -> Any:
    route_name(request, "models")
    svc: Service = request.app.state.service
    key = await svc.key(request)
    if name not in svc.models or not key.allows(name):
        raise NotFound(f"The model '{name}' does not exist")
    return svc.models[name].card()


@router.post("/v1/translations")
async def translations(request: Request) -> Any:
    """Ours: ``{model, input: str | [str], beam, length_penalty}`` -> ``{object: "translation", data: [...]}``."""
    route_name(request, "translations")
    svc: Service = request.app.state.service
    body = await parse_body(request, TranslationRequest)
    served = svc.model(request, body.model, "/v1/translations")
    key = await svc.key(request, served.name)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    limits = svc.limits
    if not texts or len(texts) > limits.max_translation_inputs:
        raise ConfigError(f"input must hold 1 to {limits.max_translation_inputs} sentences, got {len(texts)}")
    if sum(len(t) for t in texts) > limits.max_prompt_chars:
        raise ConfigError(f"the input has more than {limits.max_prompt_chars:,} characters")
    if body.beam > limits.max_beam:
        raise ConfigError(f"beam = {body.beam} is over this service's limit of {limits.max_beam}")
    translator = served.model
    tok = translator.tokenizer
    prompt_tokens = sum(len(tok.encode(t)) for t in texts)
    reservation = await svc.admit(key, "/v1/translations", served.name,
                                  tokens=prompt_tokens + len(texts) * translator.model.config.max_len)
    timer = Timer()
    lock = svc.runtime["locks"][served.name]  # one decode per model at a time: it uses every core

    def run() -> list[str]:
        with lock:
            return translator.translate(texts, beam=body.beam, length_penalty=body.length_penalty)

    status, outputs = "error", []
    try:
        outputs = await asyncio.shield(run_in_threadpool(run))
        status = "ok"
    finally:
        completion = sum(len(tok.encode(o)) for o in outputs)
        svc.metrics.count_tokens(served.name, prompt_tokens, completion)
        await svc.finish(reservation, prompt_tokens=prompt_tokens, completion_tokens=completion,
                         compute_s=timer.seconds, status=status)
    data = [{"index": i, "translation": o} for i, o in enumerate(outputs)]
    return {"object": "translation", "model": served.name, "source_language": translator.src_lang,
            "target_language": translator.tgt_lang, "data": data,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion}}
