"""``aigc serve``: load the models, open the database, check the address is safe to listen on, and run
uvicorn until SIGINT/SIGTERM (then shut down gracefully: see :func:`aigc.serve.engines.stop_engines`)."""
from __future__ import annotations

import dataclasses
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from ..config import from_dict
from ..errors import ConfigError
from .db import default_state_dir, open_db
from .service import Service, is_loopback
from .settings import Engine, Limits


def parse_limits(items: list[str]) -> tuple[Limits, Engine]:
    """``["max_n=8", "text_batch=32"]`` -> the two settings objects (unknown names and bad values: errors)."""
    groups: dict[type, dict[str, Any]] = {Limits: {}, Engine: {}}
    for item in items:
        name, eq, text = item.partition("=")
        target = next((cls for cls in groups if name in {f.name for f in dataclasses.fields(cls)}), None)
        if not eq or target is None:
            known = [f.name for cls in groups for f in dataclasses.fields(cls)]
            raise ConfigError(f"--limit takes NAME=VALUE with NAME one of {', '.join(known)}; got '{item}'")
        kind = {f.name: f.type for f in dataclasses.fields(target)}[name]
        try:
            groups[target][name] = float(text) if "float" in str(kind) else int(text)
        except ValueError:
            raise ConfigError(f"--limit {name} takes a number, not '{text}'") from None
    return from_dict(Limits, groups[Limits], "limits"), from_dict(Engine, groups[Engine], "engine")


def serve(specs: list[str], *, host: str, port: int, db_url: str | None, state_dir: Path | None,
          insecure_no_auth: bool, admin_secret: str | None, limits: list[str]) -> None:
    import uvicorn

    from .. import load
    from .app import create_app
    from .models import load_models

    limit_values, engine = parse_limits(limits)
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {port}")
    db = open_db(db_url, state_dir if state_dir is not None else default_state_dir())
    try:
        if not is_loopback(host) and not insecure_no_auth and not admin_secret and not _has_keys(db):
            raise ConfigError(f"refusing to listen on {host}, which is not a loopback address, with no API keys: "
                              "create one (aigc keys create --name NAME), set $AIGC_ADMIN_KEY, or pass "
                              "--insecure-no-auth to serve anyone who can connect")
        models = load_models(specs, load)
        service = Service(models, db, limit_values, engine, insecure_no_auth=insecure_no_auth,
                          admin_secret=admin_secret)
        sock = _bind(host, port)
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        print(f"aigc serve: {len(models)} model(s) ({', '.join(models)}) on http://{shown}:{bound[1]} "
              f"(studio at /), database {db.location}", flush=True)
        if insecure_no_auth:
            print("warning: --insecure-no-auth: no API key is asked for", file=sys.stderr, flush=True)
        config = uvicorn.Config(create_app(service), log_level="warning", access_log=False,
                                timeout_graceful_shutdown=int(engine.shutdown_grace_s) or None, lifespan="on")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        db.close()


def _has_keys(db: Any) -> bool:
    return db.query_one("SELECT id FROM api_keys WHERE revoked_at IS NULL LIMIT 1") is not None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
