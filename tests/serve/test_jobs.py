"""Durable jobs on both engines: ownership, cancel, batching, leases, exactly-once completion, the worker."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aigc.errors import ConfigError
from aigc.serve.db import open_db
from aigc.serve.errors import JobConflict, JobNotFound
from aigc.serve.jobs import MAX_ATTEMPTS, JobStore, JobWorker
from aigc.serve.keys import create_key

PNG = b"\x89PNG\r\n\x1a\n\x00binary\xff"


@pytest.fixture
def store(db):
    return JobStore(db)


@pytest.fixture
def keys(db):
    return create_key(db, "alice")[1].id, create_key(db, "bob")[1].id


def submit(store, key, model="m", batch_key="b", **params):
    return store.submit(key, "images.generations", model, params, batch_key)


def wait_for(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_submit_get_list(store, keys):
    alice, bob = keys
    jobs = [submit(store, alice, prompt=f"p{i}") for i in range(3)]
    job = store.get(jobs[0].public_id, alice)
    assert job == jobs[0] and job.params == {"prompt": "p0"} and job.status == "queued"
    view = job.to_dict()
    assert view["id"].startswith("job_") and len(view["id"]) == 28 and view["object"] == "job"
    assert isinstance(view["created_at"], int) and view["started_at"] is None and view["error"] is None
    assert [j.public_id for j in store.list_jobs(alice)] == [j.public_id for j in reversed(jobs)]
    assert [j.public_id for j in store.list_jobs(alice, limit=1, after=jobs[2].public_id)] == [jobs[1].public_id]
    assert store.list_jobs(bob) == [] and len(store.list_jobs(None)) == 3
    assert [store.queue_position(j) for j in jobs] == [0, 1, 2]
    assert store.get(jobs[1].public_id, None) == jobs[1]  # no key: the admin's view


def test_a_key_sees_only_its_own_jobs(store, keys):
    alice, bob = keys
    job = submit(store, alice)
    for call in (lambda: store.get(job.public_id, bob), lambda: store.cancel(job.public_id, bob),
                 lambda: store.result(job.public_id, bob, "0.png"),
                 lambda: store.list_jobs(bob, after=job.public_id),
                 lambda: store.get("job_nope", alice), lambda: store.get("../" + job.public_id, alice)):
        with pytest.raises(JobNotFound) as err:
            call()
        assert err.value.http_status == 404
    assert store.get(job.public_id, alice).status == "queued"


def test_cancel_queued_and_running(store, keys):
    alice, _ = keys
    queued = store.cancel(submit(store, alice).public_id, alice)
    assert queued.status == "cancelled" and queued.finished_at is not None
    assert store.cancel(queued.public_id, alice) == queued  # cancelling twice changes nothing
    submit(store, alice)
    [running] = store.claim("w1", ["m"])
    marked = store.cancel(running.public_id, alice)
    assert marked.status == "running" and marked.cancel_requested
    assert store.heartbeat(running, "w1", {"step": 1, "steps": 2}) is False
    assert store.get(running.public_id, alice).status == "cancelled"
    assert store.complete(running, "w1", [("0.png", "image/png", PNG)], {}) is False
    assert store.result_names(running) == []
    submit(store, alice)
    [done] = store.claim("w1", ["m"])
    assert store.complete(done, "w1", [], {"seeds": [1]})
    with pytest.raises(JobConflict) as err:
        store.cancel(done.public_id, alice)
    assert err.value.http_status == 409


def test_claim_batches_equal_batch_key_only(store, keys):
    alice, _ = keys
    a1, b, a2 = (submit(store, alice, batch_key=k) for k in ("x", "y", "x"))
    other = submit(store, alice, model="n", batch_key="x")
    batch = store.claim("w", ["m"], max_batch=4)
    assert [j.id for j in batch] == [a1.id, a2.id]
    assert all(j.status == "running" and j.worker == "w" and j.attempts == 1 and j.started_at for j in batch)
    assert store.queue_position(b) == 0
    assert [j.id for j in store.claim("w", ["m"], max_batch=4)] == [b.id]
    assert store.claim("w", ["m"]) == [] and store.claim("w", []) == []
    assert [j.id for j in store.claim("w", ["m", "n"])] == [other.id]


def test_a_dead_workers_job_is_taken_again_and_completed_once(store, keys):
    alice, bob = keys
    job = submit(store, alice)
    [first] = store.claim("w1", ["m"], lease_s=0.05)
    assert store.claim("w2", ["m"]) == []  # the lease still holds
    time.sleep(0.1)
    [second] = store.claim("w2", ["m"])
    assert second.id == job.id and second.attempts == 2 and second.worker == "w2"
    assert store.heartbeat(first, "w1") is False
    assert store.complete(first, "w1", [("0.png", "image/png", b"old")], {}) is False
    assert store.fail(first, "w1", "late") is False
    assert store.heartbeat(second, "w2", {"step": 3, "steps": 4})
    assert store.get(job.public_id, alice).progress == {"step": 3, "steps": 4}
    results = [("0.png", "image/png", PNG), ("1.png", "image/png", b"")]
    assert store.complete(second, "w2", results, {"seeds": [7, 8]})
    assert store.complete(second, "w2", results, {}) is False
    done = store.get(job.public_id, alice)
    assert done.status == "succeeded" and done.result == {"seeds": [7, 8]} and done.lease_until is None
    assert store.result_names(done) == ["0.png", "1.png"]
    assert store.result(job.public_id, alice, "0.png") == ("image/png", PNG)
    assert store.result(job.public_id, alice, "1.png") == ("image/png", b"")
    for name in ("../0.png", "../../aigc.db", "2.png", "", "0.png/"):
        with pytest.raises(JobNotFound):
            store.result(job.public_id, alice, name)
    with pytest.raises(JobNotFound):
        store.result(job.public_id, bob, "0.png")


def test_a_job_started_too_often_fails(store, keys):
    alice, _ = keys
    job = submit(store, alice)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        [claimed] = store.claim(f"w{attempt}", ["m"], lease_s=0.01)
        assert claimed.attempts == attempt
        time.sleep(0.03)
    assert store.claim("w", ["m"]) == []
    failed = store.get(job.public_id, alice)
    assert failed.status == "failed" and f"started {MAX_ATTEMPTS} times" in failed.to_dict()["error"]["message"]


def test_bad_result_names_are_refused(store, keys):
    submit(store, keys[0])
    [job] = store.claim("w", ["m"])
    with pytest.raises(ValueError):
        store.complete(job, "w", [("../x.png", "image/png", PNG)], {})
    assert store.get(job.public_id, None).status == "running"


def test_two_replicas_never_take_the_same_job(db_url, tmp_path):
    replicas = [open_db(db_url, tmp_path) for _ in range(2)]
    try:
        stores = [JobStore(db) for db in replicas]
        key = create_key(replicas[0], "shared")[1].id
        jobs = [stores[i % 2].submit(key, "images.generations", "m", {"i": i}, f"b{i % 3}") for i in range(30)]

        def drain(n):
            store, claimed, completed = stores[n % 2], [], 0
            while batch := store.claim(f"w{n}", ["m"], max_batch=3):
                claimed += [j.id for j in batch]
                result = [("0.png", "image/png", PNG)]
                completed += sum(store.complete(j, f"w{n}", result, {"w": n}) for j in batch)
            return claimed, completed

        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(drain, range(4)))
        claimed = [i for ids, _ in outcomes for i in ids]
        assert sorted(claimed) == sorted(j.id for j in jobs)  # every job, each by one worker
        assert sum(n for _, n in outcomes) == 30
        assert all(stores[1].get(j.public_id, key).status == "succeeded" for j in jobs)
        assert replicas[1].query_one("SELECT COUNT(*) AS n FROM job_results")["n"] == 30
    finally:
        for db in replicas:
            db.close()


class FakeRunner:
    """A runner whose jobs say what to do: params["mode"] is ok, hold (wait for ``release``), error or crash."""

    def __init__(self):
        self.release = threading.Event()
        self.answers = []  # what reporter.progress answered

    def __call__(self, jobs, reporter):
        mode = jobs[0].params["mode"]
        if mode == "error":
            raise ConfigError("the prompt is too long")
        if mode == "crash":
            raise RuntimeError("CUDA out of memory")
        step = 0
        while True:
            step += 1
            self.answers.append(reporter.progress(min(step, 9), 10, "iVBORw0KGgo="))
            if not self.answers[-1] or (mode == "ok" and step == 2) or self.release.wait(0.01):
                break
        return [([("0.png", "image/png", PNG + job.public_id.encode())], {"steps": step}) for job in jobs]


def start_worker(store, runner, worker_id="w", **kw):
    return JobWorker(store, worker_id, ["m"], runner, max_batch=4, poll_s=0.02, heartbeat_s=0.05, **kw).start()


def test_worker_runs_jobs_end_to_end(store, keys, caplog):
    alice, _ = keys
    runner = FakeRunner()
    worker = start_worker(store, runner)
    try:
        held = submit(store, alice, mode="hold")
        worker.notify()
        wait_for(lambda: (store.get(held.public_id, alice).progress or {}).get("step") == 9)
        progress = store.get(held.public_id, alice).progress
        assert progress["steps"] == 10 and progress["eta_s"] >= 0 and progress["preview"] == "iVBORw0KGgo="
        runner.release.set()
        wait_for(lambda: store.get(held.public_id, alice).status == "succeeded")
        assert store.result(held.public_id, alice, "0.png") == ("image/png", PNG + held.public_id.encode())
        runner.release.clear()
        failing = [submit(store, alice, mode=mode, batch_key=mode) for mode in ("ok", "error", "crash")]
        wait_for(lambda: all(store.get(j.public_id, alice).status in ("succeeded", "failed") for j in failing))
        ok, error, crash = (store.get(j.public_id, alice) for j in failing)
        assert ok.status == "succeeded" and ok.result == {"steps": 2}
        assert (error.status, error.error) == ("failed", "the prompt is too long")
        assert (crash.status, crash.error) == ("failed", "internal error")
        assert "CUDA out of memory" in caplog.text  # the traceback is logged, not shown to the client
    finally:
        assert worker.stop(timeout=5) == 0


def test_worker_stops_a_cancelled_batch(store, keys):
    alice, _ = keys
    runner = FakeRunner()
    worker = start_worker(store, runner)
    try:
        job = submit(store, alice, mode="hold")
        wait_for(lambda: store.get(job.public_id, alice).status == "running")
        store.cancel(job.public_id, alice)
        wait_for(lambda: runner.answers and runner.answers[-1] is False)
        assert store.get(job.public_id, alice).status == "cancelled" and store.result_names(job) == []
    finally:
        assert worker.stop(timeout=5) == 0


def test_graceful_stop_requeues_a_batch_that_does_not_finish(store, keys):
    alice, _ = keys
    runner = FakeRunner()
    old = start_worker(store, runner, worker_id="old")
    job = submit(store, alice, mode="hold")
    wait_for(lambda: store.get(job.public_id, alice).status == "running")
    assert old.stop(timeout=0.2) == 1
    requeued = store.get(job.public_id, alice)
    assert (requeued.status, requeued.worker, requeued.lease_until, requeued.attempts) == ("queued", None, None, 1)
    assert old.stop(timeout=5) == 0  # the old runner was told to stop (progress answered False) and has ended
    assert runner.answers[-1] is False
    assert store.get(job.public_id, alice).status == "queued" and store.result_names(job) == []  # refused
    runner.release.set()
    worker = start_worker(store, runner, worker_id="new")
    try:
        wait_for(lambda: store.get(job.public_id, alice).status == "succeeded")
        assert store.get(job.public_id, alice).attempts == 2
    finally:
        worker.stop(timeout=5)
