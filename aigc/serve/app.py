"""The ASGI application: routes, OpenAI-shaped errors, middleware, and the engines started with it
(a continuous text batch per language model, a job worker for the image models)."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import AigcError
from .errors import QuotaExceeded
from .http import AccessLog, BodyLimit, error_body, error_code, status_of
from .engines import start_engines, stop_engines
from .routes import admin, audio, images, jobs, misc, studio, text
from .service import Service

log = logging.getLogger("aigc.serve")


def create_app(service: Service) -> FastAPI:
    """The app for ``service``; its engines start and stop with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start_engines(service)
        try:
            yield
        finally:
            stop_engines(service)

    app = FastAPI(title="aigc", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.service = service
    for module in (misc, text, images, audio, jobs, admin, studio):
        app.include_router(module.router)
    app.add_exception_handler(AigcError, _aigc_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(BodyLimit, max_bytes=service.limits.max_body_bytes)
    app.add_middleware(AccessLog, metrics=service.metrics)
    return app


def _respond(exc: AigcError, status: int) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QuotaExceeded) else None
    return JSONResponse(error_body(status, str(exc), error_code(exc)), status_code=status, headers=headers)


async def _aigc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AigcError)
    return _respond(exc, status_of(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = {404: f"Unknown route {request.method} {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "bad request"}
    where = ".".join(str(p) for p in err["loc"] if p not in ("body", "query"))
    return JSONResponse(error_body(400, f"'{where}': {err['msg']}"), status_code=400)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = request.scope.get("state", {}).get("request_id", "?")
    log.exception("internal error in request %s", request_id)
    return JSONResponse(error_body(500, f"The server had an error while processing your request (request id "
                                        f"{request_id}); its log has the details."), status_code=500)


