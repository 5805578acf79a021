"""One running service: its models, database, limits, engines and metrics, and the request bookkeeping
every route shares (authenticate, admit against the quotas, record usage)."""
from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from . import ledger
from .db import Database
from .errors import AuthError, PermissionDenied
from .jobs import JobStore
from .keys import KeyRecord, authenticate, ensure_key
from .metrics import Metrics
from .models import ServedModel, lookup
from .settings import Engine, Limits

ANONYMOUS = "anonymous"   # the key row usage is recorded under with --insecure-no-auth
ADMIN = "admin"           # the key row of the admin secret from $AIGC_ADMIN_KEY / --admin-key-file


@dataclass
class Service:
    models: dict[str, ServedModel]
    db: Database
    limits: Limits = field(default_factory=Limits)
    engine: Engine = field(default_factory=Engine)
    insecure_no_auth: bool = False
    admin_secret: str | None = None
    replica: str = field(default_factory=lambda: f"{socket.gethostname()}-{secrets.token_hex(4)}")
    metrics: Metrics = field(default_factory=Metrics)
    runtime: dict[str, Any] = field(default_factory=dict)  # engines started at startup: batchers, worker
    _anonymous: KeyRecord | None = None

    def __post_init__(self) -> None:
        self.jobs = JobStore(self.db)
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self.metrics.queue.set_function(self.queue_depth)

    def queue_depth(self) -> float:
        row = self.db.query_one("SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued'")
        return float(row["n"]) if row else 0.0

    def job_finished(self, job: Any) -> None:
        """From this replica's worker thread: wake the requests waiting here for ``job``."""
        for loop, event in list(self._waiters.get(job.public_id, ())):
            loop.call_soon_threadsafe(event.set)

    @contextmanager
    def waiting_for(self, public_id: str) -> Iterator[asyncio.Event]:
        """An event set when this replica's worker ends the job (a job on another replica is polled for)."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        self._waiters.setdefault(public_id, []).append(entry)
        try:
            yield entry[1]
        finally:
            self._waiters[public_id].remove(entry)
            if not self._waiters[public_id]:
                del self._waiters[public_id]

    def wake_worker(self) -> None:
        """A job was queued here: this replica's worker looks at once instead of at its next poll."""
        worker = self.runtime.get("worker")
        if worker is not None:
            worker.notify()

    def prepare(self) -> None:
        """Rows the service needs in the database: the admin secret's key, the anonymous key."""
        if self.admin_secret:
            ensure_key(self.db, ADMIN, self.admin_secret, admin=True)
        if self.insecure_no_auth:
            self._anonymous = ensure_key(self.db, ANONYMOUS, None, admin=True)

    # -- per request -------------------------------------------------------------------------
    async def key(self, request: Request, model: str | None = None) -> KeyRecord:
        """The caller's key (Bearer token; 401 without one), allowed to use ``model`` (403)."""
        if self.insecure_no_auth:
            assert self._anonymous is not None
            return self._anonymous
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthError("You didn't provide an API key: send it as 'Authorization: Bearer KEY' "
                            "(create one with: aigc keys create --name NAME)")
        key = await run_in_threadpool(authenticate, self.db, secret.strip(), model)
        request.scope.setdefault("state", {})["key_name"] = key.name
        return key

    async def admin(self, request: Request) -> KeyRecord:
        key = await self.key(request)
        if not key.is_admin:
            raise PermissionDenied(f"the API key '{key.name}' is not an admin key")
        return key

    def model(self, request: Request, name: Any, endpoint: str) -> ServedModel:
        served = lookup(self.models, name, endpoint)
        request.scope.setdefault("state", {})["model"] = served.name
        return served

    async def admit(self, key: KeyRecord, endpoint: str, model: str, tokens: int = 0, images: int = 0) -> int:
        return await run_in_threadpool(ledger.admit, self.db, key, endpoint, model, tokens, images)

    async def finish(self, reservation: int, **usage: Any) -> None:
        await run_in_threadpool(lambda: ledger.finish(self.db, reservation, **usage))


def route_name(request: Request, name: str) -> None:
    """Label the request for the access log and the metrics."""
    request.scope.setdefault("state", {})["route"] = name


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Timer:
    """Compute seconds of one request, for the ledger."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

