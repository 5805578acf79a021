"""The service's HTTP behaviour beyond the happy paths: bad input answered with OpenAI's error object and
the right status, ownership of jobs, limits, the ledger, batching, health, metrics."""
from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from aigc.serve.keys import create_key

from .servers import auth


def post(server, path, body=None, key=None, **kwargs):
    headers = auth(key or server.admin)
    return httpx.post(server.url + path, json=body, headers=headers, timeout=60, **kwargs)


def error_of(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in r.text
    return err["message"]


@pytest.mark.parametrize("body, status, message", [
    ({"model": "text", "prompt": "x", "logprobs": 3}, 400, "Unrecognized request argument supplied: logprobs"),
    ({"prompt": "x"}, 400, "'model' is a required property"),
    ({"model": "text", "prompt": "x", "n": 10**6}, 400, "at most 16"),
    ({"model": "text", "prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"model": "text", "prompt": "x" * 40_000}, 400, "32,000"),
    ({"model": "text", "prompt": [1, 2]}, 400, "prompt"),
    ({"model": "text", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4 stop"),
    ({"model": "missing", "prompt": "x"}, 404, "does not exist"),
])
def test_bad_completion_requests(server, body, status, message):
    assert message in error_of(post(server, "/v1/completions", body), status)


@pytest.mark.parametrize("body, message", [
    ({"model": "t2i", "prompt": "a", "n": 10**6}, "limit of 16"),
    ({"model": "t2i", "prompt": "a", "steps": -3}, "'steps'"),
    ({"model": "t2i", "prompt": "a", "steps": 10**6}, "limit of 250"),
    ({"model": "t2i", "prompt": "a", "size": "33x33"}, "not offered"),
    ({"model": "t2i", "prompt": "a", "sampler": "magic"}, "unknown sampler"),
    ({"model": "image", "prompt": "eleven"}, "unknown class"),
    ({"model": "t2i", "prompt": "a", "class": "3"}, "not a class"),
    ({"model": "text", "prompt": "a"}, "not served at /v1/images/generations"),
])
def test_bad_image_requests(server, body, message):
    assert message in error_of(post(server, "/v1/images/generations", body), 400)


def test_bad_json_and_bodies(server):
    r = httpx.post(server.url + "/v1/completions", content=b"{bad", headers=auth(server.admin))
    assert "not valid JSON" in error_of(r, 400)
    r = httpx.post(server.url + "/v1/completions", content=b"[1]", headers=auth(server.admin))
    assert "JSON object" in error_of(r, 400)
    big = b'{"model": "text", "prompt": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    assert "limit" in error_of(httpx.post(server.url + "/v1/completions", content=big,
                                          headers=auth(server.admin), timeout=60), 413)
    assert "Unknown route" in error_of(httpx.get(server.url + "/v2/nothing"), 404)


def _png(size, mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_uploads(server):
    def edit(files, data=None):
        return httpx.post(server.url + "/v1/images/edits", files=files, data={"model": "t2i", "prompt": "a",
                          "steps": "2", **(data or {})}, headers=auth(server.admin), timeout=60)

    assert "not an image" in error_of(edit({"image": ("a.png", b"GIF89a-not-really")}), 400)
    assert "same size" in error_of(edit({"image": ("a.png", _png((32, 32))),
                                         "mask": ("m.png", _png((16, 16), "RGBA"))}), 400)
    assert "square" in error_of(edit({"image": ("a.png", _png((32, 20)))}), 400)
    assert "needs an 'image' file" in error_of(edit({"mask": ("m.png", _png((32, 32), "RGBA"))}), 400)
    assert "strength" in error_of(edit({"image": ("a.png", _png((32, 32)))}, {"strength": "7"}), 400)
    r = httpx.post(server.url + "/v1/images/edits", json={"model": "t2i"}, headers=auth(server.admin))
    assert "multipart" in error_of(r, 400)


def test_keys_no_revoked_expired(server):
    db = server.service.db
    assert "didn't provide an API key" in error_of(httpx.get(server.url + "/v1/models"), 401)
    assert error_of(httpx.get(server.url + "/v1/models", headers=auth("aigc-unknown")), 401) == "unknown API key"
    secret, key = create_key(db, "soon-expired", expires=time.time() + 3600)
    db.execute("UPDATE api_keys SET expires_at = ? WHERE id = ?", (time.time() - 1, key.id))
    assert "expired" in error_of(httpx.get(server.url + "/v1/models", headers=auth(secret)), 401)


def test_jobs_are_private_and_results_cannot_escape(server):
    db = server.service.db
    mine, _ = create_key(db, "job-owner")
    other, _ = create_key(db, "job-other")
    r = post(server, "/v1/jobs", {"request": {"model": "image", "prompt": "4", "steps": 3}}, key=mine)
    assert r.status_code == 200 and r.json()["status"] == "queued"
    job = r.json()["id"]
    deadline = time.time() + 60
    while httpx.get(f"{server.url}/v1/jobs/{job}", headers=auth(mine)).json()["status"] != "succeeded":
        assert time.time() < deadline
        time.sleep(0.1)
    assert httpx.get(f"{server.url}/v1/jobs/{job}/results/0.png", headers=auth(mine)).status_code == 200
    for path in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/results/0.png", f"/v1/jobs/{job}/events"):
        assert "no job" in error_of(httpx.get(server.url + path, headers=auth(other)), 404)
    assert error_of(httpx.delete(f"{server.url}/v1/jobs/{job}", headers=auth(other)), 404)
    for name in ("..%2F..%2Faigc.db", "../0.png", "%2E%2E", "0.png%00"):
        r = httpx.get(f"{server.url}/v1/jobs/{job}/results/{name}", headers=auth(mine))
        assert r.status_code == 404, (name, r.status_code)
    listed = httpx.get(server.url + "/v1/jobs", headers=auth(other)).json()["data"]
    assert listed == []
    assert "already succeeded" in error_of(httpx.delete(f"{server.url}/v1/jobs/{job}", headers=auth(mine)), 409)


def test_job_events_stream_progress_then_result(server):
    r = post(server, "/v1/jobs", {"request": {"model": "t2i", "prompt": "a ring", "steps": 150, "seed": 3}})
    job = r.json()["id"]
    names, previews = [], 0
    with httpx.stream("GET", f"{server.url}/v1/jobs/{job}/events", headers=auth(server.admin), timeout=120) as s:
        for line in s.iter_lines():
            if line.startswith("event: "):
                names.append(line[len("event: "):])
            elif line.startswith("data: ") and names[-1] == "progress":
                previews += "preview" in json.loads(line[len("data: "):])
    assert names[-1] == "succeeded" and set(names) <= {"queued", "progress", "succeeded"}
    assert "progress" in names and previews >= 1


def test_cancel_a_queued_job(server):
    first = post(server, "/v1/jobs", {"request": {"model": "t2i", "prompt": "x", "steps": 200}}).json()["id"]
    second = post(server, "/v1/jobs", {"request": {"model": "t2i", "prompt": "y", "steps": 200,
                                                   "sampler": "ddim"}}).json()["id"]
    for job in (second, first):
        r = httpx.delete(f"{server.url}/v1/jobs/{job}", headers=auth(server.admin))
        assert r.status_code == 200 and r.json()["status"] in ("cancelled", "running")
    deadline = time.time() + 60
    while {httpx.get(f"{server.url}/v1/jobs/{j}", headers=auth(server.admin)).json()["status"]
           for j in (first, second)} != {"cancelled"}:
        assert time.time() < deadline
        time.sleep(0.1)


def test_quota_is_atomic_and_usage_matches_the_ledger(server):
    db = server.service.db
    secret, _ = create_key(db, "ten-per-minute", requests_per_minute=10)
    body = {"model": "text", "prompt": "Q", "max_tokens": 3, "seed": 1}
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: post(server, "/v1/completions", body, key=secret), range(50)))
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 10 and codes.count(429) == 40
    assert all(int(r.headers["retry-after"]) >= 1 for r in results if r.status_code == 429)
    usage = httpx.get(server.url + "/v1/usage", headers=auth(secret)).json()["data"]
    assert usage[0]["requests"] == 10
    reported = sum(r.json()["usage"]["completion_tokens"] for r in results if r.status_code == 200)
    assert usage[0]["completion_tokens"] == reported


def test_concurrent_streams_share_forward_passes(server):
    batcher = server.service.runtime["batchers"]["text"]
    before = batcher.stats()["multi_row_steps"]
    body = {"model": "text", "prompt": "Q: ", "max_tokens": 40, "seed": 2, "temperature": 0.9}
    with ThreadPoolExecutor(6) as pool:
        texts = list(pool.map(lambda i: post(server, "/v1/completions", {**body, "seed": i}).json(), range(6)))
    assert batcher.stats()["multi_row_steps"] > before
    alone = post(server, "/v1/completions", {**body, "seed": 3}).json()
    assert alone["choices"][0]["text"] == texts[3]["choices"][0]["text"]  # batching changes no stream


def test_admin_over_http(server):
    r = post(server, "/v1/admin/keys", {"name": "made-over-http", "tokens_per_day": 100})
    assert r.status_code == 200 and r.json()["key"].startswith("aigc-")
    user = r.json()["key"]
    assert "not an admin key" in error_of(httpx.get(server.url + "/v1/admin/keys", headers=auth(user)), 403)
    names = [k["name"] for k in httpx.get(server.url + "/v1/admin/keys", headers=auth(server.admin)).json()["data"]]
    assert "made-over-http" in names and all("key_hash" not in k for k in names)
    assert httpx.delete(server.url + "/v1/admin/keys/made-over-http", headers=auth(server.admin)).json()["state"] \
        == "revoked"
    rows = httpx.get(server.url + "/v1/admin/usage?by=day", headers=auth(server.admin)).json()["data"]
    assert rows and "day" in rows[0]


def test_health_metrics_and_studio(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    post(server, "/v1/completions", {"model": "text", "prompt": "x", "max_tokens": 2})
    text = httpx.get(server.url + "/metrics").text
    for name in ("aigc_requests_total", "aigc_request_seconds_bucket", "aigc_job_queue_depth",
                 "aigc_completion_tokens_total", "aigc_tokens_per_second", "aigc_images_per_second"):
        assert name in text
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert httpx.get(server.url + "/studio/..%2Fapp.py").status_code == 404
