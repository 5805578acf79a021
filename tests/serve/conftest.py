"""Fixtures of the service tests: a throwaway PostgreSQL cluster and one database URL per test and engine.

The cluster (PostgreSQL's own initdb / pg_ctl, installed by ``make setup``) listens only on a Unix socket
in its temporary folder; when the tests run as root it runs as the unprivileged user ``nobody``. It is
stopped and its folder removed at the end of the session.
"""
from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ENGINES = ["sqlite", "postgresql"]
PG_USER = "aigc"
PG_PORT = 54329  # only names the socket file, in a folder of our own: no TCP port is opened
_counter = itertools.count()


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL's binaries (/usr/lib/postgresql/*/bin/initdb) are missing: run 'make setup' "
                    "(it installs the Debian package postgresql)", pytrace=False)
    return Path(found[-1]).parent


def _as_owner(cmd: list[str]) -> list[str]:
    """Run as ``nobody`` when we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres_cluster():
    """A running PostgreSQL; yields (socket folder, port). Always stopped and removed afterwards."""
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="aigc-pg-"))  # short: a socket path must stay under 108 bytes
    data, sock, log = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
        shutil.chown(sock, "nobody")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    started = False
    try:
        subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust",
                                  "--no-sync", "-E", "UTF8"]),
                       check=True, capture_output=True, timeout=120, env=env, cwd=root)
        options = (f"-k {sock} -p {PG_PORT} -c listen_addresses='' -c max_connections=200 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        res = subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                                        "-t", "60", "-o", options, "start"]),
                             capture_output=True, text=True, timeout=90, env=env, cwd=root)
        started = True
        if res.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"PostgreSQL did not start: {res.stderr.strip()}\n{tail}", pytrace=False)
        yield sock, PG_PORT
    finally:
        if started:
            subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, timeout=60, env=env, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def pg_url(sock: Path, port: int, dbname: str) -> str:
    return f"postgresql://{PG_USER}@/{dbname}?host={sock}&port={port}"


@pytest.fixture(params=ENGINES)
def db_url(request, tmp_path) -> str:
    """A fresh, empty database of each engine: ``sqlite:////...`` or ``postgresql://...`` (its own database)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/aigc.db"
    import psycopg

    sock, port = request.getfixturevalue("postgres_cluster")
    name = f"t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_url(sock, port, "postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_url(sock, port, name)


@pytest.fixture
def db(db_url, tmp_path):
    from aigc.serve.db import open_db

    database = open_db(db_url, tmp_path)
    yield database
    database.close()


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory):
    """Tiny trained runs of every family (text, image, t2i, mt), shared by the service tests."""
    from .servers import train_runs

    return train_runs(tmp_path_factory.mktemp("serve-runs"))


@pytest.fixture(scope="session")
def served_models(serve_runs):
    """The runs loaded once, as ``aigc serve --model`` would (names: text, image, t2i, mt, asr)."""
    import aigc
    from aigc.serve.models import load_models

    return load_models([f"{name}={path}" for name, path in serve_runs.items()], aigc.load)


@pytest.fixture(scope="module")
def server(served_models, tmp_path_factory):
    """One in-process service on SQLite with an admin secret; yields it (``.url``, ``.admin``, ``.service``)."""
    from aigc.serve.db import open_db
    from aigc.serve.service import Service

    from .servers import InProcessServer, admin_secret

    state = tmp_path_factory.mktemp("serve-state")
    secret = admin_secret()
    db = open_db(None, state)
    running = InProcessServer(Service(served_models, db, admin_secret=secret))
    running.admin = secret
    yield running
    running.stop()
    db.close()
