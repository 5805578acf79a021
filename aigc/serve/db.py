"""One database layer over two engines: SQLite (the default, a file in the state folder) and PostgreSQL.

SQL is written once, with ``?`` placeholders (turned into ``%s`` for psycopg in :func:`_pg_sql`). Any
thread may use a :class:`Database`: each statement or transaction borrows a connection from a small pool,
so two threads never share one at the same time. The schema is versioned (``aigc/serve/migrations.py``)
and brought up to date on open, under a lock that makes concurrent opens safe.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

SQLITE_TIMEOUT_S = 30.0  # how long a writer waits for another's lock before failing
POOL_IDLE = 8  # idle connections kept for reuse


class IntegrityError(Exception):
    """A UNIQUE or other constraint refused the statement (either engine)."""


def default_state_dir() -> Path:
    """``$AIGC_STATE``, else ``~/.local/state/aigc``: where the SQLite database lives by default."""
    env = os.environ.get("AIGC_STATE")
    return Path(env).expanduser() if env else Path.home() / ".local" / "state" / "aigc"


def open_db(url: str | None, state_dir: Path | None = None, migrate: bool = True) -> "Database":
    """``None`` -> SQLite at ``state_dir/aigc.db``; ``sqlite:///path``; ``postgresql://...`` (psycopg 3)."""
    if url is None or url == "":
        path = Path(state_dir if state_dir is not None else default_state_dir()) / "aigc.db"
        db: Database = _SQLite(path)
    elif url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
        if not rest:
            raise ConfigError(f"database URL '{url}' names no file (use sqlite:///path/to/aigc.db)")
        db = _SQLite(Path(rest).expanduser())  # sqlite:///rel/path or sqlite:////abs/path
    elif url.startswith(("postgresql://", "postgres://")):
        db = _Postgres(url)
    else:
        raise ConfigError(f"unsupported database URL '{redact(url)}' (use sqlite:///PATH or postgresql://...)")
    if migrate:
        from .migrations import migrate as run_migrations

        try:
            run_migrations(db)
        except BaseException:
            db.close()
            raise
    return db


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Database:
    """The uniform API: ``execute``, ``query``, ``query_one``, ``insert``, ``transaction``, ``lock_row``."""

    engine: str = ""
    location: str = ""  # the file or the redacted URL, for messages

    def __init__(self) -> None:
        self._local = threading.local()  # .conn: the connection of this thread's open transaction
        self._idle: list[Any] = []
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- the engine-specific parts ------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _run(self, conn: Any, sql: str, params: Sequence[Any]) -> Any:
        """Execute one statement on ``conn``; returns the cursor."""
        raise NotImplementedError

    def _begin(self, conn: Any) -> None:
        raise NotImplementedError

    def lock_row(self, table: str, row_id: int) -> dict[str, Any] | None:
        """Inside a transaction: the row, locked against other writers until commit (None if absent)."""
        raise NotImplementedError

    # -- connections ---------------------------------------------------------------------------
    def _borrow(self) -> Any:
        with self._lock:
            if self._closed:
                raise ConfigError("the database is closed")
            if self._idle:
                return self._idle.pop()
        conn = self._connect()
        with self._lock:
            self._all.append(conn)
        return conn

    def _give_back(self, conn: Any, broken: bool = False) -> None:
        with self._lock:
            if broken or self._closed or len(self._idle) >= POOL_IDLE:
                if conn in self._all:
                    self._all.remove(conn)
                _quiet_close(conn)
            else:
                self._idle.append(conn)

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        held = getattr(self._local, "conn", None)
        if held is not None:  # inside this thread's transaction
            yield held
            return
        conn = self._borrow()
        broken = False
        try:
            yield conn
        except BaseException:
            broken = not self._healthy(conn)
            raise
        finally:
            self._give_back(conn, broken)

    def _healthy(self, conn: Any) -> bool:
        return True

    # -- the uniform API -----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator["Database"]:
        """One transaction for every statement this thread runs inside the block; nested blocks join it.

        SQLite takes the write lock at once (``BEGIN IMMEDIATE``), so transactions run one at a time."""
        if getattr(self._local, "conn", None) is not None:
            yield self
            return
        conn = self._borrow()
        broken = False
        try:
            self._begin(conn)
            self._local.conn = conn
            try:
                yield self
            except BaseException:
                self._local.conn = None
                try:
                    self._run(conn, "ROLLBACK", ())
                except Exception:
                    broken = True
                raise
            self._local.conn = None
            self._run(conn, "COMMIT", ())
        except BaseException:
            broken = broken or not self._healthy(conn)
            raise
        finally:
            self._local.conn = None
            self._give_back(conn, broken)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        with self._connection() as conn:
            return self._run(conn, sql, params).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a SELECT, each a dict by column name."""
        with self._connection() as conn:
            cur = self._run(conn, sql, params)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an INSERT and return the new row's ``id`` (the statement gets ``RETURNING id``)."""
        row = self.query_one(sql + " RETURNING id", params)
        assert row is not None
        return int(row["id"])

    def close(self) -> None:
        """Close every connection; the object is unusable afterwards."""
        with self._lock:
            self._closed = True
            conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            _quiet_close(conn)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SQLite(Database):
    engine = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.location = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the state folder {path.parent}: {exc.strerror or exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        try:  # autocommit mode: transactions are begun and ended explicitly
            conn = sqlite3.connect(self.path, timeout=SQLITE_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(SQLITE_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the database {self.path}: {exc}") from exc
        return conn

    def _run(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        try:
            return conn.execute(sql, tuple(params))
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc

    def _begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def lock_row(self, table: str, row_id: int) -> dict[str, Any] | None:
        # BEGIN IMMEDIATE already holds the database's write lock
        return self.query_one(f"SELECT * FROM {table} WHERE id = ?", (row_id,))


class _Postgres(Database):
    engine = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - psycopg is a dependency
            raise ConfigError("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from exc
        self._psycopg = psycopg
        self.url = url
        self.location = redact(url)

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot connect to the database {self.location}: {reason}") from exc
        except Exception as exc:  # a malformed URL
            raise ConfigError(f"bad database URL {self.location}: {exc}") from exc

    def _run(self, conn: Any, sql: str, params: Sequence[Any]) -> Any:
        try:
            return conn.execute(_pg_sql(sql), tuple(params))
        except self._psycopg.errors.IntegrityError as exc:
            raise IntegrityError(str(exc).strip()) from exc

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN")

    def _healthy(self, conn: Any) -> bool:
        from psycopg.pq import TransactionStatus

        return not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE

    def lock_row(self, table: str, row_id: int) -> dict[str, Any] | None:
        return self.query_one(f"SELECT * FROM {table} WHERE id = ? FOR UPDATE", (row_id,))

    def advisory_lock(self, key: int) -> None:
        """Inside a transaction: wait for, and hold until commit, the cluster-wide lock ``key``."""
        self.execute("SELECT pg_advisory_xact_lock(?)", (key,))


def _pg_sql(sql: str) -> str:
    """The one place the dialects differ in placeholders: ``?`` -> ``%s`` (a literal ``%`` -> ``%%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _quiet_close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        pass
