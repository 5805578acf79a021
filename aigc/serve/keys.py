"""API keys: create (the secret is shown once and only its SHA-256 is stored), authenticate, list, revoke."""
from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from typing import Any, Sequence

from ..errors import ConfigError
from .db import Database, IntegrityError
from .errors import ExpiredKey, ModelNotAllowed, RevokedKey, UnknownKey

SECRET_PREFIX = "aigc-"
PREFIX_CHARS = 12  # how much of the secret is kept for display ("aigc-" and 7 more)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class KeyRecord:
    """One key as stored: never the secret, only its display prefix."""

    id: int
    name: str
    prefix: str
    models: tuple[str, ...] | None  # None: every model
    requests_per_minute: int | None
    tokens_per_day: int | None
    images_per_day: int | None
    expires_at: float | None  # UNIX seconds
    revoked_at: float | None
    created_at: float
    is_admin: bool

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def state(self, now: float | None = None) -> str:
        """"active", "revoked" or "expired"."""
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["models"] = list(self.models) if self.models is not None else None
        for field in ("expires_at", "revoked_at", "created_at"):
            out[field] = _iso(out[field])
        out["state"] = self.state()
        return out


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(db: Database, name: str, models: Sequence[str] | None = None,
               requests_per_minute: int | None = None, tokens_per_day: int | None = None,
               images_per_day: int | None = None, expires: date | datetime | float | None = None,
               admin: bool = False) -> tuple[str, KeyRecord]:
    """A new key named ``name``; returns (the secret, to show once, and its record).

    ``expires``: a date means 00:00 UTC that day; a naive datetime is taken as UTC."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError(f"bad key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    model_list = _models(models)
    limits = {"requests_per_minute": requests_per_minute, "tokens_per_day": tokens_per_day,
              "images_per_day": images_per_day}
    for field, value in limits.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{field.replace('_', '-')} must be a positive whole number, not {value!r}")
    now = time.time()
    expires_at = to_timestamp(expires)
    if expires_at is not None and expires_at <= now:
        raise ConfigError(f"the expiry date {_iso(expires_at)} is already past")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    try:
        with db.transaction():
            if db.query_one("SELECT id FROM api_keys WHERE name = ?", (name,)):
                raise ConfigError(f"a key named '{name}' already exists")
            key_id = db.insert(
                "INSERT INTO api_keys (name, key_hash, prefix, models, requests_per_minute, tokens_per_day, "
                "images_per_day, expires_at, revoked_at, created_at, is_admin) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (name, hash_secret(secret), secret[:PREFIX_CHARS],
                 json.dumps(model_list) if model_list is not None else None,
                 requests_per_minute, tokens_per_day, images_per_day, expires_at, now, int(bool(admin))))
    except IntegrityError as exc:  # a concurrent create of the same name
        raise ConfigError(f"a key named '{name}' already exists") from exc
    record = get_key(db, name)
    assert record is not None and record.id == key_id
    return secret, record


def ensure_key(db: Database, name: str, secret: str | None, admin: bool = False) -> KeyRecord:
    """The key row ``name`` for a secret the operator holds (``$AIGC_ADMIN_KEY``), made or updated to it and
    active; ``secret`` None keeps a row no one can use (the anonymous key of ``--insecure-no-auth``)."""
    if secret is not None and (not secret.startswith(SECRET_PREFIX) or len(secret) < len(SECRET_PREFIX) + 16):
        raise ConfigError(f"an admin secret must start with '{SECRET_PREFIX}' and have at least 16 more "
                          "characters (make one with: python -c \"import secrets; print('aigc-' + "
                          "secrets.token_urlsafe(32))\")")
    stored = secret if secret is not None else SECRET_PREFIX + secrets.token_urlsafe(32)
    with db.transaction():
        row = db.query_one("SELECT id, key_hash FROM api_keys WHERE name = ?", (name,))
        if row is None:
            db.insert("INSERT INTO api_keys (name, key_hash, prefix, created_at, is_admin) VALUES (?, ?, ?, ?, ?)",
                      (name, hash_secret(stored), stored[:PREFIX_CHARS], time.time(), int(admin)))
        elif secret is not None:
            db.execute("UPDATE api_keys SET key_hash = ?, prefix = ?, is_admin = ?, revoked_at = NULL, "
                       "expires_at = NULL WHERE id = ?", (hash_secret(stored), stored[:PREFIX_CHARS],
                                                          int(admin), row["id"]))
    record = get_key(db, name)
    assert record is not None
    return record


def authenticate(db: Database, secret: str, model: str | None = None, now: float | None = None) -> KeyRecord:
    """The key this secret belongs to; raises UnknownKey / RevokedKey / ExpiredKey (401), ModelNotAllowed (403)."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise UnknownKey("unknown API key")
    row = db.query_one("SELECT * FROM api_keys WHERE key_hash = ?", (hash_secret(secret),))
    if row is None:
        raise UnknownKey("unknown API key")
    key = _record(row)
    state = key.state(now)
    if state == "revoked":
        raise RevokedKey(f"the API key '{key.name}' was revoked")
    if state == "expired":
        raise ExpiredKey(f"the API key '{key.name}' expired on {_iso(key.expires_at)}")
    if model is not None and not key.allows(model):
        raise ModelNotAllowed(f"the API key '{key.name}' may not use the model '{model}'")
    return key


def get_key(db: Database, name: str) -> KeyRecord | None:
    row = db.query_one("SELECT * FROM api_keys WHERE name = ?", (name,))
    return _record(row) if row else None


def list_keys(db: Database) -> list[KeyRecord]:
    return [_record(r) for r in db.query("SELECT * FROM api_keys ORDER BY created_at, id")]


def revoke_key(db: Database, name: str) -> KeyRecord:
    """Revoke the key (it stays listed, and its usage stays in the ledger); revoking twice changes nothing."""
    with db.transaction():
        if get_key(db, name) is None:
            raise ConfigError(f"no key named '{name}'")
        db.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (time.time(), name))
    record = get_key(db, name)
    assert record is not None
    return record


def to_timestamp(value: date | datetime | float | int | None) -> float | None:
    """A date (00:00 UTC), datetime (naive = UTC) or UNIX seconds -> UNIX seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"expected a date or a time, not {value!r}")


def _models(models: Sequence[str] | None) -> list[str] | None:
    if models is None:
        return None
    if isinstance(models, str):
        models = [models]
    names = [m.strip() for m in models if m.strip()]
    if not names:
        raise ConfigError("the model list is empty (leave it out to allow every model)")
    return sorted(set(names))


def _record(row: dict[str, Any]) -> KeyRecord:
    models = json.loads(row["models"]) if row["models"] is not None else None
    return KeyRecord(id=int(row["id"]), name=row["name"], prefix=row["prefix"],
                     models=tuple(models) if models is not None else None,
                     requests_per_minute=row["requests_per_minute"], tokens_per_day=row["tokens_per_day"],
                     images_per_day=row["images_per_day"], expires_at=row["expires_at"],
                     revoked_at=row["revoked_at"], created_at=row["created_at"], is_admin=bool(row["is_admin"]))


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
