"""The service's admin commands: ``aigc keys create|list|revoke`` and ``aigc usage``.

The database is ``--db URL`` (or ``$AIGC_DB``), else SQLite at ``STATE_DIR/aigc.db`` where the state
folder is ``--state-dir``, ``$AIGC_STATE`` or ``~/.local/state/aigc``.
"""
from __future__ import annotations

import csv
import sys
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Iterator, Optional

import typer

from ..errors import ConfigError
from .common import JSON_HELP, app, emit_json

keys_app = typer.Typer(no_args_is_help=True, help="API keys of the service: create, list, revoke.")
app.add_typer(keys_app, name="keys")

DB_OPTION = typer.Option(None, "--db", envvar="AIGC_DB",
                         help="Database URL: sqlite:///PATH or postgresql://... (default: SQLite in the state folder).")
STATE_OPTION = typer.Option(None, "--state-dir", envvar="AIGC_STATE",
                            help="State folder holding the default SQLite database (default ~/.local/state/aigc).")


@contextmanager
def _database(url: Optional[str], state_dir: Optional[Path]) -> Iterator["object"]:
    from ..serve.db import default_state_dir, open_db

    db = open_db(url, state_dir if state_dir is not None else default_state_dir())
    try:
        yield db
    finally:
        db.close()


def _date(text: Optional[str], option: str) -> Optional[date]:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} must be a date YYYY-MM-DD, not '{text}'") from None


@keys_app.command("create")
def keys_create_cmd(
    name: str = typer.Option(..., "--name", help="A unique name for the key (letters, digits, . _ -)."),
    models: Optional[str] = typer.Option(None, help="Comma-separated models the key may use (default: all)."),
    requests_per_minute: Optional[int] = typer.Option(None, help="Requests allowed per minute."),
    tokens_per_day: Optional[int] = typer.Option(None, help="Tokens (prompt + completion) allowed per UTC day."),
    images_per_day: Optional[int] = typer.Option(None, help="Images allowed per UTC day."),
    expires: Optional[str] = typer.Option(None, help="YYYY-MM-DD: the key stops working at 00:00 UTC that day."),
    admin: bool = typer.Option(False, "--admin", help="The key may use the admin endpoints."),
    db_url: Optional[str] = DB_OPTION,
    state_dir: Optional[Path] = STATE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Create an API key and print its secret: it is shown this once and stored only as a hash."""
    from ..serve.keys import create_key

    model_list = [m for m in models.split(",")] if models is not None else None
    with _database(db_url, state_dir) as db:
        secret, key = create_key(db, name, models=model_list, requests_per_minute=requests_per_minute,
                                 tokens_per_day=tokens_per_day, images_per_day=images_per_day,
                                 expires=_date(expires, "--expires"), admin=admin)
    if as_json:
        emit_json({"key": secret, "name": key.name})
    else:
        print(f"created key '{key.name}' (shown once, store it now):\n{secret}")


@keys_app.command("list")
def keys_list_cmd(
    db_url: Optional[str] = DB_OPTION,
    state_dir: Optional[Path] = STATE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the keys: name, display prefix, state, limits (never a secret)."""
    from ..serve.keys import list_keys

    with _database(db_url, state_dir) as db:
        rows = [k.to_dict() for k in list_keys(db)]
    if as_json:
        emit_json({"keys": rows})
        return
    if not rows:
        print("no keys (create one with: aigc keys create --name NAME)")
        return
    print(f"{'name':<20} {'prefix':<13} {'state':<8} {'rpm':>6} {'tokens/day':>11} {'images/day':>11}  "
          f"{'models':<20} expires")
    for r in rows:
        cells = [_dash(r["requests_per_minute"]), _dash(r["tokens_per_day"]), _dash(r["images_per_day"])]
        models = ",".join(r["models"]) if r["models"] is not None else "all"
        tag = " (admin)" if r["is_admin"] else ""
        print(f"{r['name']:<20} {r['prefix']:<13} {r['state']:<8} {cells[0]:>6} {cells[1]:>11} {cells[2]:>11}  "
              f"{models:<20} {_dash(r['expires_at'])}{tag}")


@keys_app.command("revoke")
def keys_revoke_cmd(
    name: str = typer.Argument(..., help="The key's name."),
    db_url: Optional[str] = DB_OPTION,
    state_dir: Optional[Path] = STATE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Revoke a key at once; it stays listed, with its usage."""
    from ..serve.keys import revoke_key

    with _database(db_url, state_dir) as db:
        key = revoke_key(db, name)
    if as_json:
        emit_json({"revoked": key.name})
    else:
        print(f"revoked key '{key.name}'")


@app.command("usage")
def usage_cmd(
    key: Optional[str] = typer.Option(None, "--key", help="Only this key (by name)."),
    since: Optional[str] = typer.Option(None, help="YYYY-MM-DD: only requests from 00:00 UTC that day on."),
    by: str = typer.Option("model", help="Group by model or day (UTC), per key."),
    db_url: Optional[str] = DB_OPTION,
    state_dir: Optional[Path] = STATE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV with a header row."),
) -> None:
    """The service's usage ledger: requests, tokens, images, diffusion steps and compute time."""
    from ..serve.ledger import usage_report

    if as_json and as_csv:
        raise ConfigError("choose one of --json and --csv")
    with _database(db_url, state_dir) as db:
        rows = usage_report(db, key_name=key, since=_date(since, "--since"), by=by)
    if as_json:
        emit_json({"by": by, "usage": rows})
        return
    fields = ["key", by, "requests", "errors", "running", "prompt_tokens", "completion_tokens", "images",
              "diffusion_steps", "compute_s"]
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    if not rows:
        print("no usage recorded")
        return
    print(f"{'key':<20} {by:<16} {'requests':>8} {'errors':>6} {'prompt':>9} {'completion':>10} "
          f"{'images':>7} {'steps':>8} {'compute s':>10}")
    for r in rows:
        print(f"{r['key']:<20} {str(r[by] or '-'):<16} {r['requests']:>8} {r['errors']:>6} {r['prompt_tokens']:>9} "
              f"{r['completion_tokens']:>10} {r['images']:>7} {r['diffusion_steps']:>8} {r['compute_s']:>10.1f}")


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _limit_help() -> str:
    from dataclasses import fields

    from ..serve.settings import Engine, Limits

    names = [f"{f.name} ({f.default})" for cls in (Limits, Engine) for f in fields(cls)]
    return "NAME=VALUE, repeatable: " + ", ".join(names) + "."


@app.command("serve")
def serve_cmd(
    model: list[str] = typer.Option(..., "--model", help="A run folder, checkpoint, experts folder or zoo:NAME to "
                                    "serve, as RUN or NAME=RUN; repeat for more models."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, help="Port to listen on (0: any free port, printed at start)."),
    db_url: Optional[str] = DB_OPTION,
    state_dir: Optional[Path] = STATE_OPTION,
    insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth",
                                          help="Serve without API keys (anyone who can connect may use it)."),
    admin_key_file: Optional[Path] = typer.Option(None, help="A file holding the admin secret (else "
                                                  "$AIGC_ADMIN_KEY, if set)."),
    limit: list[str] = typer.Option([], "--limit", help=_limit_help()),
) -> None:
    """Serve models over an OpenAI-compatible HTTP API, with the web studio at /."""
    import os

    from ..serve.launch import serve

    admin_secret = os.environ.get("AIGC_ADMIN_KEY") or None
    if admin_key_file is not None:
        admin_secret = admin_key_file.read_text(encoding="utf-8").strip()
    serve(model, host=host, port=port, db_url=db_url, state_dir=state_dir, insecure_no_auth=insecure_no_auth,
          admin_secret=admin_secret, limits=limit)
