"""The usage ledger and its quotas: admit a request (atomically, against the key's limits), finish it, report.

``admit`` runs in one transaction holding the key's row lock (PostgreSQL ``FOR UPDATE``; SQLite's
``BEGIN IMMEDIATE`` write lock), so concurrent requests of one key are counted one after another and a
limit of N admits exactly N. A running request counts its reserved tokens and images against the daily
quotas; once finished, its actual counts replace them.
"""
from __future__ import annotations

import math
import time
from datetime import date, datetime, timezone
from typing import Any

from ..errors import ConfigError
from .db import Database
from .errors import QuotaExceeded, RevokedKey
from .keys import KeyRecord, to_timestamp

WINDOW_S = 60.0  # the requests-per-minute window
STATUSES = ("ok", "error", "cancelled")  # how a request may finish ("running" until then)
GROUPS = {"model": "model", "day": "day"}

# tokens and images a request has used so far: its reservation while running, its actual counts after
_TOKENS = "CASE WHEN status = 'running' THEN reserved_tokens ELSE prompt_tokens + completion_tokens END"
_IMAGES = "CASE WHEN status = 'running' THEN reserved_images ELSE images END"


def admit(db: Database, key: KeyRecord, endpoint: str, model: str | None, tokens: int = 0, images: int = 0,
          now: float | None = None) -> int:
    """Reserve one request of ``key``; returns the reservation (usage row) id, or raises QuotaExceeded (429)."""
    if tokens < 0 or images < 0:
        raise ConfigError("a request cannot reserve a negative number of tokens or images")
    now = time.time() if now is None else now
    day_start = _day_start(now)
    with db.transaction():
        row = db.lock_row("api_keys", key.id)
        if row is None or row["revoked_at"] is not None:  # the stored limits win over the caller's copy
            raise RevokedKey(f"the API key '{key.name}' was revoked")
        rpm, tpd, ipd = row["requests_per_minute"], row["tokens_per_day"], row["images_per_day"]
        if rpm is not None:
            recent = db.query_one("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM usage "
                                  "WHERE key_id = ? AND created_at > ?", (key.id, now - WINDOW_S))
            assert recent is not None
            if int(recent["n"]) >= rpm:
                wait = float(recent["oldest"]) + WINDOW_S - now
                raise QuotaExceeded(f"the API key '{key.name}' is limited to {rpm} requests per minute",
                                    math.ceil(wait))
        if tpd is not None or ipd is not None:
            used = db.query_one(f"SELECT COALESCE(SUM({_TOKENS}), 0) AS tokens, COALESCE(SUM({_IMAGES}), 0) "
                                "AS images FROM usage WHERE key_id = ? AND created_at >= ?", (key.id, day_start))
            assert used is not None
            until_midnight = math.ceil(day_start + 86400 - now)
            if tpd is not None and int(used["tokens"]) + tokens > tpd:
                raise QuotaExceeded(f"the API key '{key.name}' has used {int(used['tokens'])} of its "
                                    f"{tpd} tokens today; this request needs {tokens}", until_midnight)
            if ipd is not None and int(used["images"]) + images > ipd:
                raise QuotaExceeded(f"the API key '{key.name}' has used {int(used['images'])} of its "
                                    f"{ipd} images today; this request needs {images}", until_midnight)
        return db.insert("INSERT INTO usage (key_id, model, endpoint, reserved_tokens, reserved_images, status, "
                         "created_at, day) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                         (key.id, model, endpoint, tokens, images, now, _day(now)))


def finish(db: Database, reservation_id: int, prompt_tokens: int = 0, completion_tokens: int = 0,
           images: int = 0, diffusion_steps: int = 0, compute_s: float = 0.0, status: str = "ok") -> None:
    """Record what a reserved request actually used, and how it ended."""
    if status not in STATUSES:
        raise ConfigError(f"unknown request status '{status}' (one of {', '.join(STATUSES)})")
    counts = (prompt_tokens, completion_tokens, images, diffusion_steps, compute_s)
    if any(c < 0 for c in counts):
        raise ConfigError("usage counts cannot be negative")
    changed = db.execute("UPDATE usage SET prompt_tokens = ?, completion_tokens = ?, images = ?, "
                         "diffusion_steps = ?, compute_s = ?, status = ? WHERE id = ? AND status = 'running'",
                         (*counts, status, reservation_id))
    if changed != 1:
        raise ConfigError(f"no running request with reservation id {reservation_id}")


def usage_report(db: Database, key_name: str | None = None, since: date | datetime | float | None = None,
                 by: str = "model") -> list[dict[str, Any]]:
    """Totals per key and model (``by="model"``) or per key and UTC day (``by="day"``), oldest key first."""
    if by not in GROUPS:
        raise ConfigError(f"unknown grouping '{by}' (use model or day)")
    where, params = [], []
    if key_name is not None:
        if not db.query_one("SELECT id FROM api_keys WHERE name = ?", (key_name,)):
            raise ConfigError(f"no key named '{key_name}'")
        where.append("k.name = ?")
        params.append(key_name)
    if since is not None:
        where.append("u.created_at >= ?")
        params.append(to_timestamp(since))
    group = GROUPS[by]
    rows = db.query(
        f"SELECT k.name AS key, u.{group} AS {group}, COUNT(*) AS requests, "
        "SUM(CASE WHEN u.status = 'error' THEN 1 ELSE 0 END) AS errors, "
        "SUM(CASE WHEN u.status = 'running' THEN 1 ELSE 0 END) AS running, "
        "SUM(u.prompt_tokens) AS prompt_tokens, SUM(u.completion_tokens) AS completion_tokens, "
        "SUM(u.images) AS images, SUM(u.diffusion_steps) AS diffusion_steps, SUM(u.compute_s) AS compute_s "
        "FROM usage u JOIN api_keys k ON k.id = u.key_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" GROUP BY k.id, k.name, u.{group} ORDER BY k.id, u.{group}", params)
    ints = ("requests", "errors", "running", "prompt_tokens", "completion_tokens", "images", "diffusion_steps")
    for r in rows:
        r.update({f: int(r[f] or 0) for f in ints})
        r["compute_s"] = round(float(r["compute_s"] or 0.0), 3)
    return rows


def _day_start(now: float) -> float:
    d = datetime.fromtimestamp(now, tz=timezone.utc)
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y-%m-%d")
