"""HTTP plumbing shared by the routes: OpenAI's error object, server-sent events, the body-size limit
and the access log (one JSON line per request)."""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import AigcError
from .errors import AuthError, ModelNotFound, PayloadTooLarge, PermissionDenied, QuotaExceeded, ServeError

access_log = logging.getLogger("aigc.serve.access")

ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
               404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
               413: "invalid_request_error", 429: "rate_limit_exceeded", 500: "server_error",
               503: "server_error"}


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_code(exc: AigcError) -> str | None:
    if isinstance(exc, AuthError):
        return "invalid_api_key"
    if isinstance(exc, ModelNotFound):
        return "model_not_found"
    if isinstance(exc, QuotaExceeded):
        return "rate_limit_exceeded"
    if isinstance(exc, PermissionDenied):
        return "permission_denied"
    if isinstance(exc, PayloadTooLarge):
        return "request_too_large"
    return None


def status_of(exc: AigcError) -> int:
    """Service errors carry their status; any other user-facing error is a bad request."""
    return exc.http_status if isinstance(exc, ServeError) else 400


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: an optional ``event:`` line, one ``data:`` line (JSON unless already text)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), allow_nan=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode("utf-8")


SSE_DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` (declared or streamed) is answered 413 before a route
    reads it whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, error_body(413, self._message(), "request_too_large"))
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(self._message())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge:
            if not started:
                await _send_json(send, 413, error_body(413, self._message(), "request_too_large"))

    def _message(self) -> str:
        return f"the request body is over this service's limit of {self.max_bytes:,} bytes"


class AccessLog:
    """ASGI middleware: one JSON line per request (time, id, method, path, status, milliseconds, key, model),
    and the request's latency into the metrics."""

    def __init__(self, app: ASGIApp, metrics: Any) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - start
            state = scope.get("state", {})
            route = state.get("route") or "other"
            self.metrics.observe_request(route, status, seconds)
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "id": request_id, "method": scope.get("method"),
                "path": scope.get("path"), "status": status, "ms": round(seconds * 1000, 1),
                "key": state.get("key_name"), "model": state.get("model")}))


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
