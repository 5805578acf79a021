"""``aigc serve`` as separate processes: jobs survive ``kill -9`` and run exactly once after a restart; two
replicas on one PostgreSQL share quotas and jobs and never run a job twice; SIGTERM shuts down gracefully."""
from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from aigc.serve.db import open_db
from aigc.serve.keys import create_key

from .conftest import pg_url
from .servers import ChildServer, admin_secret, auth

FAST_LEASE = ("--limit", "job_lease_s=2", "--limit", "image_batch=1", "--limit", "shutdown_grace_s=5")
_names = itertools.count()


def _submit(url, key, n_jobs, steps):
    ids = []
    for i in range(n_jobs):
        r = httpx.post(url + "/v1/jobs", json={"request": {"model": "t2i", "prompt": f"a red ring {i}",
                                                           "steps": steps, "seed": i}}, headers=auth(key))
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    return ids


def _wait_all(url, key, ids, timeout=180):
    deadline = time.time() + timeout
    while True:
        states = {j: httpx.get(f"{url}/v1/jobs/{j}", headers=auth(key)).json()["status"] for j in ids}
        if all(s in ("succeeded", "failed", "cancelled") for s in states.values()):
            return states
        assert time.time() < deadline, states
        time.sleep(0.2)


def _job_rows(db, ids):
    marks = ", ".join("?" * len(ids))
    return db.query(f"SELECT j.public_id, j.status, j.attempts, j.worker, u.status AS usage_status, u.images "
                    f"FROM jobs j JOIN usage u ON u.id = j.usage_id WHERE j.public_id IN ({marks})", ids)


def test_kill_9_loses_no_job_and_runs_each_once(serve_runs, tmp_path):
    state = tmp_path / "state"
    secret = admin_secret()
    env = {"AIGC_ADMIN_KEY": secret}
    db_url = f"sqlite:///{state}/aigc.db"
    first = ChildServer([f"t2i={serve_runs['t2i']}"], db_url, state, env=env, extra=FAST_LEASE)
    try:
        ids = _submit(first.url, secret, 4, steps=150)
        deadline = time.time() + 60
        while httpx.get(f"{first.url}/v1/jobs/{ids[0]}", headers=auth(secret)).json()["status"] != "running":
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        first.kill()  # mid-job, three more queued
    second = ChildServer([f"t2i={serve_runs['t2i']}"], db_url, state, env=env, extra=FAST_LEASE)
    try:
        states = _wait_all(second.url, secret, ids)
        assert set(states.values()) == {"succeeded"}
        for job in ids:
            r = httpx.get(f"{second.url}/v1/jobs/{job}/results/0.png", headers=auth(secret))
            assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    finally:
        second.stop()
    with open_db(db_url) as db:
        rows = {r["public_id"]: r for r in _job_rows(db, ids)}
        assert rows[ids[0]]["attempts"] == 2  # the killed run, then the one that finished
        assert all(rows[j]["attempts"] == 1 for j in ids[1:])
        assert all(r["usage_status"] == "ok" and r["images"] == 1 for r in rows.values())  # metered once
        results = db.query("SELECT job_id, COUNT(*) AS n FROM job_results GROUP BY job_id")
        assert sorted(int(r["n"]) for r in results) == [1, 1, 1, 1]


@pytest.fixture
def pg_db_url(postgres_cluster):
    import psycopg

    sock, port = postgres_cluster
    name = f"replicas{os.getpid()}_{next(_names)}"
    with psycopg.connect(pg_url(sock, port, "postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_url(sock, port, name)


def test_two_replicas_share_one_postgresql(serve_runs, pg_db_url, tmp_path):
    secret = admin_secret()
    env = {"AIGC_ADMIN_KEY": secret}
    models = [f"t2i={serve_runs['t2i']}", f"text={serve_runs['text']}"]
    a = ChildServer(models, pg_db_url, tmp_path / "a", env=env, extra=FAST_LEASE)
    b = ChildServer(models, pg_db_url, tmp_path / "b", env=env, extra=FAST_LEASE)
    try:
        replicas = {httpx.get(s.url + "/health").json()["replica"] for s in (a, b)}
        assert len(replicas) == 2
        with open_db(pg_db_url) as db:
            limited, _ = create_key(db, "ten-across-replicas", requests_per_minute=10)
        body = {"model": "text", "prompt": "Q", "max_tokens": 2}
        with ThreadPoolExecutor(30) as pool:
            codes = list(pool.map(lambda i: httpx.post((a, b)[i % 2].url + "/v1/completions", json=body,
                                                       headers=auth(limited), timeout=60).status_code, range(30)))
        assert codes.count(200) == 10 and codes.count(429) == 20  # one quota, two replicas

        ids = _submit(a.url, secret, 8, steps=40)  # all queued on A
        states = _wait_all(b.url, secret, ids)  # and visible from B
        assert set(states.values()) == {"succeeded"}
        assert httpx.get(f"{b.url}/v1/jobs/{ids[0]}/results/0.png", headers=auth(secret)).status_code == 200
        with open_db(pg_db_url) as db:
            rows = _job_rows(db, ids)
        assert {r["worker"] for r in rows} == replicas  # B's worker took jobs queued on A
        assert all(r["attempts"] == 1 and r["usage_status"] == "ok" for r in rows)  # none ran twice
    finally:
        codes = [a.stop(), b.stop()]
    assert codes == [-15, -15]  # ended by SIGTERM, after a graceful shutdown:
    assert all("stopped gracefully" in s.log.read_text() for s in (a, b))


def test_refuses_a_public_address_without_keys(serve_runs, tmp_path):
    from ..conftest import run_cli

    res = run_cli("serve", "--model", str(serve_runs["text"]), "--host", "0.0.0.0", "--port", "0",
                  "--state-dir", str(tmp_path), env={**os.environ, "AIGC_ADMIN_KEY": ""})
    assert res.returncode == 2 and "not a loopback address" in res.stderr
    res = run_cli("serve", "--model", "nonexistent-run", "--port", "0", "--state-dir", str(tmp_path))
    assert res.returncode == 2 and "error:" in res.stderr
    res = run_cli("serve", "--model", str(serve_runs["text"]), "--limit", "max_n=lots", "--state-dir", str(tmp_path))
    assert res.returncode == 2 and "takes a number" in res.stderr
