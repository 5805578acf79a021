"""``POST /v1/images/generations`` and ``POST /v1/images/edits`` (multipart: image, optional mask): each
request is a durable job (see :mod:`aigc.serve.jobs`) that the endpoint waits on."""
from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ...errors import ConfigError
from ..errors import GenerationFailed, JobConflict
from ..imaging import batch_key, edit_params, generation_params
from ..jobs import FINISHED, Job
from ..keys import KeyRecord
from ..schemas import ImageRequest
from ..service import Service, route_name
from .body import parse_body, validate

router = APIRouter()
WAIT_POLL_S = 0.5  # how often a waiting request looks at a job this replica does not run


@router.post("/v1/images/generations")
async def generations(request: Request) -> Any:
    route_name(request, "images.generations")
    body = await parse_body(request, ImageRequest)
    job, key = await submit_generation(request, body)
    return await _respond(request, job, key)


@router.post("/v1/images/edits")
async def edits(request: Request) -> Any:
    route_name(request, "images.edits")
    svc: Service = request.app.state.service
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ConfigError("images/edits takes multipart/form-data with an 'image' file (and an optional 'mask')")
    try:
        form = await request.form(max_files=2, max_fields=32)
    except Exception as exc:  # not multipart, or a malformed one
        raise ConfigError(f"images/edits takes multipart/form-data with an 'image' file ({exc})") from None
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            files[name] = await value.read()
        else:
            fields[name] = value
    if "image" not in files:
        raise ConfigError("images/edits needs an 'image' file" + (" (it was sent as text)" if "image" in fields else ""))
    unknown = sorted(set(files) - {"image", "mask", "image[]"})
    if unknown:
        raise ConfigError(f"Unrecognized file supplied: {unknown[0]}")
    strength = _number(fields.pop("strength", None), "strength")
    body = validate(ImageRequest, _typed(fields))
    served = svc.model(request, body.model, "/v1/images/edits")
    key = await svc.key(request, served.name)
    params = edit_params(served, svc.limits, image=files["image"], mask=files.get("mask"), strength=strength,
                         **_common(body))
    job = await _submit(svc, key, "images.edits", served.name, params)
    return await _respond(request, job, key)


async def submit_generation(request: Request, body: ImageRequest) -> tuple[Job, KeyRecord]:
    """Check a generation request, reserve its images in the ledger and queue its job (also /v1/jobs)."""
    svc: Service = request.app.state.service
    served = svc.model(request, body.model, "/v1/images/generations")
    key = await svc.key(request, served.name)
    params = generation_params(served, svc.limits, **_common(body))
    return await _submit(svc, key, "images.generations", served.name, params), key


async def _submit(svc: Service, key: KeyRecord, kind: str, model: str, params: dict[str, Any]) -> Job:
    endpoint = "/v1/" + kind.replace(".", "/")
    reservation = await svc.admit(key, endpoint, model, images=params["n"])
    try:
        job = await run_in_threadpool(svc.jobs.submit, key.id, kind, model, params, batch_key(kind, params),
                                      reservation)
    except BaseException:
        await svc.finish(reservation, status="error")
        raise
    svc.wake_worker()
    return job


async def _respond(request: Request, job: Job, key: KeyRecord) -> dict[str, Any]:
    svc: Service = request.app.state.service
    with svc.waiting_for(job.public_id) as finished:
        job = await run_in_threadpool(svc.jobs.get, job.public_id, key.id)  # it may have ended already
        while job.status not in FINISHED:
            try:  # woken by this replica's worker; a job another replica runs is polled for
                await asyncio.wait_for(finished.wait(), WAIT_POLL_S)
            except asyncio.TimeoutError:
                pass
            job = await run_in_threadpool(svc.jobs.get, job.public_id, key.id)
    if job.status == "failed":
        raise GenerationFailed(f"the image job {job.public_id} failed: {job.error}")
    if job.status == "cancelled":
        raise JobConflict(f"the image job {job.public_id} was cancelled")
    return await images_response(request, job, key)


async def images_response(request: Request, job: Job, key: KeyRecord) -> dict[str, Any]:
    """OpenAI's images response for a finished job (``url``: this service's result download, which takes
    the same key)."""
    svc: Service = request.app.state.service
    names = await run_in_threadpool(svc.jobs.result_names, job)
    data = []
    for name in names:
        if job.params.get("response_format") == "url":
            data.append({"url": str(request.base_url).rstrip("/") + f"/v1/jobs/{job.public_id}/results/{name}",
                         "revised_prompt": None})
        else:
            _, png = await run_in_threadpool(svc.jobs.result, job.public_id, key.id, name)
            data.append({"b64_json": base64.b64encode(png).decode(), "revised_prompt": None})
    meta = job.result or {}
    return {"created": job.created_at and int(job.created_at), "data": data, "job": job.public_id,
            "seed": job.params.get("seed"),
            "usage": {"images": meta.get("images", len(names)), "steps": meta.get("steps"),
                      "compute_s": meta.get("compute_s")}}


def _common(body: ImageRequest) -> dict[str, Any]:
    return {"prompt": body.prompt, "n": body.n, "size": body.size, "response_format": body.response_format,
            "steps": body.steps, "guidance": body.guidance, "seed": body.seed, "sampler": body.sampler,
            "negative_prompt": body.negative_prompt, "label": body.class_}


def _typed(fields: dict[str, str]) -> dict[str, Any]:
    """Multipart fields are text: the numeric ones as numbers (a bad one stays text and fails validation)."""
    out: dict[str, Any] = dict(fields)
    for name in ("n", "steps", "seed"):
        if name in out and out[name].strip().lstrip("-").isdigit():
            out[name] = int(out[name])
    if "guidance" in out:
        out["guidance"] = _number(out["guidance"], "guidance")
    return out


def _number(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"'{name}' must be a number, not '{text}'") from None
