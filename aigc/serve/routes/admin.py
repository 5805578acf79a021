"""The admin endpoints (an admin key only): keys and usage over HTTP, as ``aigc keys`` and ``aigc usage``
give them on the command line; and ``GET /v1/usage``, any key's own usage."""
from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ...errors import ConfigError
from ..keys import create_key, list_keys, revoke_key
from ..ledger import usage_report
from ..schemas import KeyRequest
from ..service import Service, route_name
from .body import parse_body

router = APIRouter()


def _date(text: str | None, field: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{field} must be a date YYYY-MM-DD, not '{text}'") from None


@router.post("/v1/admin/keys")
async def admin_create_key(request: Request) -> Any:
    route_name(request, "admin")
    svc: Service = request.app.state.service
    await svc.admin(request)
    body = await parse_body(request, KeyRequest)
    secret, key = await run_in_threadpool(
        lambda: create_key(svc.db, body.name, models=body.models, requests_per_minute=body.requests_per_minute,
                           tokens_per_day=body.tokens_per_day, images_per_day=body.images_per_day,
                           expires=_date(body.expires, "expires"), admin=body.admin))
    return {"key": secret, **key.to_dict()}


@router.get("/v1/admin/keys")
async def admin_list_keys(request: Request) -> Any:
    route_name(request, "admin")
    svc: Service = request.app.state.service
    await svc.admin(request)
    keys = await run_in_threadpool(list_keys, svc.db)
    return {"object": "list", "data": [k.to_dict() for k in keys]}


@router.delete("/v1/admin/keys/{name}")
async def admin_revoke_key(name: str, request: Request) -> Any:
    route_name(request, "admin")
    svc: Service = request.app.state.service
    await svc.admin(request)
    key = await run_in_threadpool(revoke_key, svc.db, name)
    return key.to_dict()


@router.get("/v1/admin/usage")
async def admin_usage(request: Request, key: str | None = None, since: str | None = None,
                      by: str = "model") -> Any:
    route_name(request, "admin")
    svc: Service = request.app.state.service
    await svc.admin(request)
    rows = await run_in_threadpool(usage_report, svc.db, key, _date(since, "since"), by)
    return {"object": "list", "data": rows}


@router.get("/v1/usage")
async def own_usage(request: Request, since: str | None = None, by: str = "model") -> Any:
    """The calling key's own usage (what the studio shows)."""
    route_name(request, "usage")
    svc: Service = request.app.state.service
    me = await svc.key(request)
    rows = await run_in_threadpool(usage_report, svc.db, me.name, _date(since, "since"), by)
    return {"object": "list", "key": me.name, "data": rows}
