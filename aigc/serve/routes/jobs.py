"""``/v1/jobs``: image requests run in the background. ``POST`` queues one (``{type, request}``) and answers
``{id, status}`` at once; ``GET /v1/jobs/{id}`` reads it, ``/events`` streams its progress as server-sent
events (``queued`` with the position, ``progress`` with step/steps/ETA and a preview, then ``succeeded``
with the images, or ``failed`` / ``cancelled``), ``DELETE`` cancels it, ``/results/{name}`` downloads an
image. A key sees only its own jobs: another key's id is a 404."""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..http import SSE_HEADERS, sse
from ..jobs import FINISHED
from ..schemas import JobRequest
from ..service import Service, route_name
from .body import parse_body
from .images import images_response, submit_generation

router = APIRouter()
EVENTS_POLL_S = 0.2     # how often an event stream looks at its job (any replica may be running it)
KEEPALIVE_S = 15.0      # a comment line this often keeps proxies from closing a quiet stream


@router.post("/v1/jobs")
async def create_job(request: Request) -> Any:
    route_name(request, "jobs")
    body = await parse_body(request, JobRequest)
    job, _ = await submit_generation(request, body.request)
    return {"id": job.public_id, "object": "job", "status": job.status}


@router.get("/v1/jobs")
async def list_jobs(request: Request, limit: int = 20, after: str | None = None) -> Any:
    route_name(request, "jobs")
    svc: Service = request.app.state.service
    key = await svc.key(request)
    jobs = await run_in_threadpool(svc.jobs.list_jobs, key.id, limit, after)
    return {"object": "list", "data": [_view(j) for j in jobs]}


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> Any:
    route_name(request, "jobs")
    svc: Service = request.app.state.service
    key = await svc.key(request)
    job = await run_in_threadpool(svc.jobs.get, job_id, key.id)
    out = _view(job)
    if job.status == "queued":
        out["queue_position"] = await run_in_threadpool(svc.jobs.queue_position, job)
    return out


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(job_id: str, request: Request) -> Any:
    route_name(request, "jobs")
    svc: Service = request.app.state.service
    key = await svc.key(request)
    job = await run_in_threadpool(svc.jobs.cancel, job_id, key.id)
    return _view(job)


@router.get("/v1/jobs/{job_id}/results/{name}")
async def job_result(job_id: str, name: str, request: Request) -> Response:
    route_name(request, "jobs.results")
    svc: Service = request.app.state.service
    key = await svc.key(request)
    media_type, data = await run_in_threadpool(svc.jobs.result, job_id, key.id, name)
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"})


@router.get("/v1/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    route_name(request, "jobs.events")
    svc: Service = request.app.state.service
    key = await svc.key(request)
    job = await run_in_threadpool(svc.jobs.get, job_id, key.id)  # 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        nonlocal job
        last: Any = None
        quiet = 0.0
        while True:
            if job.status in FINISHED:
                payload = _view(job)
                if job.status == "succeeded":
                    payload["images"] = (await images_response(request, job, key))["data"]
                yield sse(payload, event=job.status)
                return
            if job.status == "queued":
                state: Any = ("queued", await run_in_threadpool(svc.jobs.queue_position, job))
                data = {"id": job.public_id, "status": "queued", "queue_position": state[1]}
            else:
                state = ("progress", json.dumps(job.progress, sort_keys=True))
                data = {"id": job.public_id, "status": "running", **(job.progress or {"step": 0})}
            if state != last:
                last, quiet = state, 0.0
                yield sse(data, event=state[0])
            elif quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield b": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(EVENTS_POLL_S)
            quiet += EVENTS_POLL_S
            job = await run_in_threadpool(svc.jobs.get, job.public_id, key.id)

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def _view(job: Any) -> dict[str, Any]:
    out = job.to_dict()
    out["request"] = {k: v for k, v in job.params.items() if k not in ("image", "mask")}
    return out
