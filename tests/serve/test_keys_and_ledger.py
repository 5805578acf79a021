"""The service's database on both engines: migrations, API keys, the usage ledger and atomic quotas."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aigc.errors import ConfigError
from aigc.serve.db import open_db
from aigc.serve.errors import ExpiredKey, ModelNotAllowed, QuotaExceeded, RevokedKey, UnknownKey
from aigc.serve.keys import authenticate, create_key, list_keys, revoke_key
from aigc.serve.ledger import admit, finish, usage_report
from aigc.serve.migrations import MIGRATIONS

from ..conftest import run_cli, run_main


def test_migrations_apply_once(db_url, tmp_path):
    for _ in range(2):
        db = open_db(db_url, tmp_path)
        assert [r["version"] for r in db.query("SELECT version FROM schema_version ORDER BY version")] == \
            list(range(1, len(MIGRATIONS) + 1))
        db.close()


def test_a_key_is_stored_as_a_hash_and_checked(db, db_url, tmp_path):
    secret, record = create_key(db, "shop", models=["a"])
    assert secret.startswith("aigc-") and record.name == "shop"
    assert authenticate(db, secret, "a").name == "shop"
    with pytest.raises(ModelNotAllowed):
        authenticate(db, secret, "b")
    with pytest.raises(UnknownKey):
        authenticate(db, secret + "x")
    with pytest.raises(ConfigError):
        create_key(db, "shop")
    rows = db.query("SELECT * FROM api_keys")
    assert secret not in json.dumps(rows, default=str)
    if db_url.startswith("sqlite"):
        assert secret.encode() not in (tmp_path / "aigc.db").read_bytes()
    revoke_key(db, "shop")
    with pytest.raises(RevokedKey):
        authenticate(db, secret, "a")
    old, _ = create_key(db, "old", expires=time.time() + 1)
    with pytest.raises(ExpiredKey):
        authenticate(db, old, now=time.time() + 10)
    assert sorted(k.name for k in list_keys(db)) == ["old", "shop"]


def test_quotas_are_atomic_under_concurrency(db):
    _, key = create_key(db, "ten", requests_per_minute=10)

    def one(_):
        try:
            return admit(db, key, "/v1/completions", "m")
        except QuotaExceeded as exc:
            assert exc.http_status == 429 and exc.retry_after > 0
            return None

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    admitted = [r for r in results if r is not None]
    assert len(admitted) == 10
    assert db.query_one("SELECT COUNT(*) AS n FROM usage")["n"] == 10
    for rid in admitted:
        finish(db, rid, prompt_tokens=3, completion_tokens=5)
    report = usage_report(db, by="model")
    assert sum(r["requests"] for r in report) == 10 and sum(r["completion_tokens"] for r in report) == 50


def test_keys_cli(tmp_path, monkeypatch, capsys):
    state = ["--state-dir", str(tmp_path)]
    code, out, err = run_main(monkeypatch, capsys, "keys", "create", "--name", "studio", "--json", *state)
    assert code == 0, err
    created = json.loads(out.strip().splitlines()[-1])
    assert created["name"] == "studio" and created["key"].startswith("aigc-")
    code, out, _ = run_main(monkeypatch, capsys, "keys", "list", "--json", *state)
    assert code == 0 and created["key"] not in out and "studio" in out
    for bad in (["keys", "create", "--name", "studio", *state], ["keys", "list", "--db", "mysql://x"]):
        code, _, err = run_main(monkeypatch, capsys, *bad)
        assert code == 2 and err.startswith("error:") and "Traceback" not in err
    assert run_main(monkeypatch, capsys, "keys", "revoke", "studio", *state)[0] == 0
    assert run_main(monkeypatch, capsys, "usage", "--json", *state)[0] == 0
    res = run_cli("keys", "list", *state)  # and once as a real process
    assert res.returncode == 0 and "studio" in res.stdout
