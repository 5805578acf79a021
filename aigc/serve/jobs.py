"""Durable jobs: every image request is a row in ``jobs``, run by whichever worker claims it, exactly once.

A job is ``queued``, then ``running`` under one worker's lease, then ``succeeded``, ``failed`` or ``cancelled``.
The worker renews its lease with heartbeats; a job whose lease ran out (its worker died) is claimable again
and its ``attempts`` grows, until :data:`MAX_ATTEMPTS`. Every change a worker makes is guarded by
(status running, this worker, this attempt) under the row's lock, so a worker that lost its job can no
longer touch it: that guard makes completion exactly-once. PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``
(replicas sharing a database never take the same job); SQLite's ``BEGIN IMMEDIATE`` serialises claims.
Results are stored in ``job_results``, so any replica serves them and no file path is built from a request.

Cancelling a queued job ends it at once; a running one is marked, and ends at its worker's next heartbeat.
Cancelling a cancelled job returns it unchanged; a succeeded or failed one raises JobConflict (409).
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import AigcError
from .db import Database
from .errors import JobConflict, JobNotFound

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a job whose worker died this many times fails instead of being claimed again
PREVIEW_MAX = 65536  # characters of base64: a larger preview is left out of the stored progress
JOB_ID_RE = re.compile(r"job_[0-9a-f]{24}")
RESULT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}(\.[A-Za-z0-9]{1,8})?")
FINISHED = ("succeeded", "failed", "cancelled")
LEDGER_STATUS = {"succeeded": "ok", "failed": "error", "cancelled": "cancelled"}  # how a job's usage row ends
INTERNAL_ERROR = "internal error"

Result = tuple[str, str, bytes]  # (name, media type, data)


@dataclass(frozen=True)
class Job:
    """One job as stored; ``to_dict`` is the client's view."""

    id: int  # the row id (internal); clients see public_id
    public_id: str
    key_id: int
    kind: str
    model: str
    params: dict[str, Any]
    batch_key: str
    status: str
    cancel_requested: bool
    attempts: int
    worker: str | None
    lease_until: float | None
    progress: dict[str, Any] | None  # step, steps, eta_s, preview (base64 PNG, optional)
    result: dict[str, Any] | None
    error: str | None
    usage_id: int | None  # the ledger reservation the service finishes when the job ends
    created_at: float
    started_at: float | None
    finished_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.public_id, "object": "job", "kind": self.kind, "model": self.model,
                "status": self.status, "created_at": _unix(self.created_at), "started_at": _unix(self.started_at),
                "finished_at": _unix(self.finished_at), "progress": self.progress, "result": self.result,
                "error": {"message": self.error} if self.error is not None else None}


class JobStore:
    """The jobs of one database: what the API calls (submit, get, cancel, ...) and what workers call."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the API's side ------------------------------------------------------------------------
    def submit(self, key_id: int, kind: str, model: str, params: dict[str, Any], batch_key: str,
               usage_id: int | None = None) -> Job:
        """Queue a job; jobs of one model with equal ``batch_key`` may run in one batch."""
        job_id = self.db.insert(
            "INSERT INTO jobs (public_id, key_id, kind, model, params, batch_key, status, usage_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
            ("job_" + secrets.token_hex(12), key_id, kind, model, json.dumps(params, sort_keys=True), batch_key,
             usage_id, time.time()))
        return self._by_id(job_id)

    def get(self, public_id: str, key_id: int | None) -> Job:
        """The job, if ``key_id`` owns it (None: any key's); else JobNotFound (404)."""
        if not isinstance(public_id, str) or not JOB_ID_RE.fullmatch(public_id):
            raise JobNotFound(f"no job '{public_id}'")
        sql, params = "SELECT * FROM jobs WHERE public_id = ?", [public_id]
        if key_id is not None:
            sql, params = sql + " AND key_id = ?", params + [key_id]
        row = self.db.query_one(sql, params)
        if row is None:
            raise JobNotFound(f"no job '{public_id}'")
        return _job(row)

    def list_jobs(self, key_id: int | None, limit: int = 20, after: str | None = None) -> list[Job]:
        """Newest first; ``after`` (a job id) continues the list after that job."""
        where, params = [], []
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        if after is not None:
            last = self.get(after, key_id)
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [last.created_at, last.created_at, last.id]
        sql = ("SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY created_at DESC, id DESC LIMIT ?")
        return [_job(r) for r in self.db.query(sql, params + [max(1, min(int(limit), 100))])]

    def cancel(self, public_id: str, key_id: int | None) -> Job:
        """Cancel: a queued job at once, a running one at its worker's next heartbeat (see the module doc)."""
        job = self.get(public_id, key_id)
        with self.db.transaction():
            row = self.db.lock_row("jobs", job.id)
            assert row is not None
            if row["status"] == "queued":
                self._end(job.id, "cancelled")
            elif row["status"] == "running":
                self.db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job.id,))
            elif row["status"] != "cancelled":
                raise JobConflict(f"the job '{public_id}' has already {row['status']}")
        return self._by_id(job.id)

    def queue_position(self, job: Job) -> int:
        """How many queued jobs of the same model are ahead of this one (0: next)."""
        row = self.db.query_one("SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued' AND model = ? AND "
                                "(created_at < ? OR (created_at = ? AND id < ?))",
                                (job.model, job.created_at, job.created_at, job.id))
        assert row is not None
        return int(row["n"])

    def result(self, public_id: str, key_id: int | None, name: str) -> tuple[str, bytes]:
        """(media type, data) of one result of the key's job; JobNotFound (404) for any unknown name."""
        job = self.get(public_id, key_id)
        row = None
        if isinstance(name, str) and RESULT_NAME_RE.fullmatch(name):
            row = self.db.query_one("SELECT media_type, data FROM job_results WHERE job_id = ? AND name = ?",
                                    (job.id, name))
        if row is None:
            raise JobNotFound(f"the job '{public_id}' has no result '{name}'")
        return row["media_type"], bytes(row["data"])

    def result_names(self, job: Job) -> list[str]:
        return [r["name"] for r in self.db.query("SELECT name FROM job_results WHERE job_id = ? ORDER BY name",
                                                 (job.id,))]

    # -- the workers' side ---------------------------------------------------------------------
    def claim(self, worker: str, models: Sequence[str], max_batch: int = 1, lease_s: float = 30) -> list[Job]:
        """Take the oldest claimable job of ``models``, and up to ``max_batch - 1`` more of its model and
        batch key, all in one transaction; claimable: queued, or running with an expired lease."""
        if not models:
            return []
        now = time.time()
        lock = " FOR UPDATE SKIP LOCKED" if self.db.engine == "postgresql" else ""
        taken: list[Job] = []
        with self.db.transaction():
            while len(taken) < max_batch:
                if taken:
                    match, params = "model = ? AND batch_key = ?", [taken[0].model, taken[0].batch_key]
                else:
                    match, params = f"model IN ({', '.join('?' * len(models))})", list(models)
                row = self.db.query_one(
                    f"SELECT * FROM jobs WHERE {match} AND (status = 'queued' OR (status = 'running' AND "
                    f"lease_until < ?)) ORDER BY created_at, id LIMIT 1{lock}", params + [now])
                if row is None:
                    break
                if row["cancel_requested"]:  # its worker died before it noticed the cancel
                    self._end(row["id"], "cancelled")
                elif row["attempts"] >= MAX_ATTEMPTS:
                    self._end(row["id"], "failed", error=f"the job was started {row['attempts']} times and its "
                                                         "worker stopped each time; it is not retried")
                else:
                    self.db.execute("UPDATE jobs SET status = 'running', worker = ?, attempts = attempts + 1, "
                                    "lease_until = ?, started_at = ?, progress = NULL WHERE id = ?",
                                    (worker, now + lease_s, now, row["id"]))
                    taken.append(self._by_id(row["id"]))
        return taken

    def heartbeat(self, job: Job, worker: str, progress: dict[str, Any] | None = None,
                  lease_s: float = 30) -> bool:
        """Renew the lease (and store ``progress``); False once the job was cancelled or is no longer ours."""
        with self.db.transaction():
            if not self._hold(job, worker):
                return False
            self.db.execute("UPDATE jobs SET lease_until = ?, progress = COALESCE(?, progress) WHERE id = ?",
                            (time.time() + lease_s, json.dumps(progress) if progress is not None else None,
                             job.id))
            return True

    def complete(self, job: Job, worker: str, results: Sequence[Result], meta: dict[str, Any]) -> bool:
        """Store the results and mark the job succeeded, only if this attempt still runs it; else write nothing."""
        for name, media_type, data in results:
            if not RESULT_NAME_RE.fullmatch(name) or not isinstance(data, (bytes, bytearray)):
                raise ValueError(f"bad result {name!r} ({media_type}, {type(data).__name__})")
        with self.db.transaction():
            if not self._hold(job, worker):
                return False
            for name, media_type, data in results:
                self.db.execute("INSERT INTO job_results (job_id, name, media_type, data) VALUES (?, ?, ?, ?)",
                                (job.id, name, media_type, bytes(data)))
            self._end(job.id, "succeeded", result=meta)
            return True

    def fail(self, job: Job, worker: str, message: str) -> bool:
        """Mark the job failed with ``message``, only if this attempt still runs it."""
        with self.db.transaction():
            if not self._hold(job, worker):
                return False
            self._end(job.id, "failed", error=message)
            return True

    def requeue(self, worker: str) -> int:
        """Graceful shutdown: this worker's running jobs go back to the queue (or end, if cancelled)."""
        with self.db.transaction():
            for row in self.db.query("SELECT id FROM jobs WHERE worker = ? AND status = 'running' AND "
                                     "cancel_requested = 1", (worker,)):
                self._end(row["id"], "cancelled")
            return self.db.execute("UPDATE jobs SET status = 'queued', worker = NULL, lease_until = NULL, "
                                   "started_at = NULL, progress = NULL WHERE worker = ? AND status = 'running'",
                                   (worker,))

    # -- helpers -------------------------------------------------------------------------------
    def _by_id(self, job_id: int) -> Job:
        row = self.db.query_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        assert row is not None
        return _job(row)

    def _hold(self, job: Job, worker: str) -> bool:
        """Inside a transaction: lock the row; True if this worker's attempt still runs the job.

        A cancel requested meanwhile ends the job here (and answers False)."""
        row = self.db.lock_row("jobs", job.id)
        if row is None or row["status"] != "running" or row["worker"] != worker or row["attempts"] != job.attempts:
            return False
        if row["cancel_requested"]:
            self._end(job.id, "cancelled")
            return False
        return True

    def _end(self, job_id: int, status: str, error: str | None = None,
             result: dict[str, Any] | None = None) -> None:
        """Inside a transaction: end the job, and close its ledger reservation in the same commit (so the
        usage of a job is written exactly once, whichever replica ends it and however)."""
        self.db.execute("UPDATE jobs SET status = ?, error = ?, result = ?, lease_until = NULL, finished_at = ? "
                        "WHERE id = ?", (status, error, json.dumps(result) if result is not None else None,
                                         time.time(), job_id))
        used = result or {}
        self.db.execute("UPDATE usage SET images = ?, diffusion_steps = ?, compute_s = ?, status = ? "
                        "WHERE id = (SELECT usage_id FROM jobs WHERE id = ?) AND status = 'running'",
                        (int(used.get("images", 0)), int(used.get("steps", 0)), float(used.get("compute_s", 0.0)),
                         LEDGER_STATUS[status], job_id))


class Reporter:
    """What a runner calls every sampler step; the worker's heartbeats store it and watch for cancels."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = list(jobs)
        self._live = {job.id for job in jobs}
        self._pending: dict[str, Any] | None = None
        self._preview: str | None = None
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def progress(self, step: int, steps: int, preview_png_b64: str | None = None) -> bool:
        """Report sampler step ``step`` of ``steps``; False when no job of the batch is still wanted (stop)."""
        elapsed = time.monotonic() - self._started
        report: dict[str, Any] = {"step": step, "steps": steps,
                                  "eta_s": round(elapsed / step * (steps - step), 1) if step > 0 else None}
        with self._lock:
            if preview_png_b64 is not None and len(preview_png_b64) <= PREVIEW_MAX:
                self._preview = preview_png_b64
            if self._preview is not None:  # the latest preview rides on every report until a newer one
                report["preview"] = self._preview
            self._pending = report
            return bool(self._live)

    def wanted(self, job: Job) -> bool:
        """Whether the job is still this batch's (not cancelled, not lost)."""
        with self._lock:
            return job.id in self._live

    def _take(self) -> dict[str, Any] | None:
        with self._lock:
            report, self._pending = self._pending, None
            return report

    def _drop(self, job: Job | None = None) -> None:
        """The job (None: every job) is no longer wanted."""
        with self._lock:
            self._live = set() if job is None else self._live - {job.id}


Runner = Callable[[list[Job], Reporter], Sequence[tuple[Sequence[Result], dict[str, Any]]]]


class JobWorker:
    """A thread that claims batches of ``models`` and runs them with ``run_batch``.

    ``run_batch(jobs, reporter)`` returns one (results, metadata) per job, in order, and should call
    ``reporter.progress`` every step (it answers False when the batch should stop). While it runs, a
    second thread heartbeats every ``heartbeat_s``, storing the latest progress and renewing the leases."""

    def __init__(self, store: JobStore, worker_id: str, models: Sequence[str], run_batch: Runner,
                 max_batch: int = 1, poll_s: float = 0.2, lease_s: float = 30,
                 heartbeat_s: float = 0.5, on_finished: Callable[[Job], None] | None = None) -> None:
        """``on_finished(job)`` is called (from the worker thread) after each job of a batch has ended."""
        self.store, self.worker_id, self.models = store, worker_id, list(models)
        self.on_finished = on_finished
        self.run_batch, self.max_batch, self.poll_s, self.lease_s = run_batch, max_batch, poll_s, lease_s
        self.heartbeat_s = min(heartbeat_s, lease_s / 3)
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._reporter: Reporter | None = None
        self._thread = threading.Thread(target=self._loop, name=f"aigc-jobs-{worker_id}", daemon=True)

    def start(self) -> "JobWorker":
        self._thread.start()
        return self

    def notify(self) -> None:
        """Look for work now (the API calls it right after a submit)."""
        self._wake.set()

    def stop(self, graceful: bool = True, timeout: float = 30) -> int:
        """Stop claiming; let a running batch finish within ``timeout`` (graceful), else requeue its jobs.

        Returns how many jobs went back to the queue."""
        self._stopping.set()
        self._wake.set()
        if graceful:
            self._thread.join(timeout)
        if not self._thread.is_alive():
            return 0
        requeued = self.store.requeue(self.worker_id)
        reporter = self._reporter
        if reporter is not None:
            reporter._drop()  # the runner's next progress call answers False
        return requeued

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                jobs = self.store.claim(self.worker_id, self.models, self.max_batch, self.lease_s)
            except Exception:
                log.exception("worker %s could not claim jobs", self.worker_id)
                jobs = []
            if jobs and self._stopping.is_set():  # stop() came during the claim
                self.store.requeue(self.worker_id)
            elif jobs:
                self._run(jobs)
            else:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def _run(self, jobs: list[Job]) -> None:
        reporter = self._reporter = Reporter(jobs)
        done = threading.Event()
        beater = threading.Thread(target=self._beat, args=(reporter, done), daemon=True,
                                  name=f"aigc-jobs-{self.worker_id}-heartbeat")
        beater.start()
        outcomes, message = None, INTERNAL_ERROR
        try:
            outcomes = list(self.run_batch(jobs, reporter))
            if len(outcomes) != len(jobs):
                raise RuntimeError(f"the runner returned {len(outcomes)} outcomes for {len(jobs)} jobs")
        except Exception as exc:
            outcomes = None
            if isinstance(exc, AigcError):
                message = str(exc)
            else:
                log.exception("worker %s: a batch of %d %s job(s) failed", self.worker_id, len(jobs),
                              jobs[0].model)
        finally:
            done.set()
            beater.join()
            self._reporter = None
        for i, job in enumerate(jobs):
            self._finish(job, outcomes[i] if outcomes is not None else None, message)
            if self.on_finished is not None:
                try:
                    self.on_finished(job)
                except Exception:
                    log.exception("worker %s: on_finished failed for the job %s", self.worker_id, job.public_id)

    def _finish(self, job: Job, outcome: tuple[Sequence[Result], dict[str, Any]] | None, message: str) -> None:
        try:
            if outcome is None:
                self.store.fail(job, self.worker_id, message)
            else:
                self.store.complete(job, self.worker_id, outcome[0], outcome[1])
            return
        except Exception:
            log.exception("worker %s could not finish the job %s", self.worker_id, job.public_id)
        try:  # e.g. a bad result name: the job fails rather than waiting for its lease to run out
            self.store.fail(job, self.worker_id, INTERNAL_ERROR)
        except Exception:
            log.exception("worker %s could not fail the job %s", self.worker_id, job.public_id)

    def _beat(self, reporter: Reporter, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_s):
            progress = reporter._take()
            for job in reporter.jobs:
                if not reporter.wanted(job):
                    continue
                try:
                    if not self.store.heartbeat(job, self.worker_id, progress, self.lease_s):
                        reporter._drop(job)
                except Exception:
                    log.exception("worker %s: heartbeat of the job %s failed", self.worker_id, job.public_id)


def _job(row: dict[str, Any]) -> Job:
    def loads(text: str | None) -> Any:
        return json.loads(text) if text is not None else None

    return Job(id=int(row["id"]), public_id=row["public_id"], key_id=int(row["key_id"]), kind=row["kind"],
               model=row["model"], params=json.loads(row["params"]), batch_key=row["batch_key"],
               status=row["status"], cancel_requested=bool(row["cancel_requested"]), attempts=int(row["attempts"]),
               worker=row["worker"], lease_until=row["lease_until"], progress=loads(row["progress"]),
               result=loads(row["result"]), error=row["error"], usage_id=row["usage_id"],
               created_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"])


def _unix(ts: float | None) -> int | None:
    return int(ts) if ts is not None else None
