"""The web studio (``GET /``) in a real headless browser: Debian's Chromium driven by Playwright.

It types a key, streams a completion from ``text``, runs an image job on ``t2i`` (progress, preview, images,
"copy as curl"), then checks the history and usage panels; and shows the API's error messages. Playwright
never downloads a browser here: it drives ``/usr/bin/chromium`` (``make setup`` installs it).
"""
from __future__ import annotations

import json
import os
import re
import time

import httpx
import pytest

from .servers import auth

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 30_000
STEPS = 150  # enough for the job to outlast a few heartbeats (every 0.5 s), which store its progress


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run 'make setup' (it installs Debian's chromium package, which "
                    "these tests drive; Playwright downloads no browser)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    try:
        yield page
        assert page.errors == [], page.errors
    finally:
        context.close()


def connect(page, server, key: str) -> None:
    page.goto(server.url + "/")
    page.fill("#api-key", key)
    page.click("#connect")


def curl_body(page) -> tuple[str, dict]:
    """The path and JSON body of the studio's last "copy as curl" command."""
    command = page.evaluate("window.studio.curl")
    path = re.search(r"https?://[^/\s]+(/\S*)", command)[1]
    return path, json.loads(re.search(r"-d '(.*)'$", command, re.S)[1].replace("'\\''", "'"))


def api_error(server, key: str, method: str, path: str, body: dict | None = None) -> str:
    res = httpx.request(method, server.url + path, headers=auth(key), json=body, timeout=30)
    assert res.status_code >= 400, res.text
    return res.json()["error"]["message"]


def test_studio_streams_text_runs_an_image_job_and_shows_history_and_usage(page, server, tmp_path):
    from playwright.sync_api import expect

    started = time.monotonic()
    connect(page, server, server.admin)
    expect(page.locator("#model option")).to_have_count(5)
    assert page.evaluate("localStorage.getItem('aigc.studio.key')") == server.admin

    # text: the completion streams in, piece by piece
    page.select_option("#model", "text")
    expect(page.locator("#prompt")).to_be_visible()
    expect(page.locator("#class")).to_be_hidden()
    expect(page.locator("#model-info")).to_contain_text("context 96")
    page.fill("#prompt", "The ")
    page.fill("#max-tokens", "60")
    page.fill("#seed", "3")
    page.evaluate("""() => {  // every length the output had, as the page drew it
        const out = document.querySelector('#output');
        window.lengths = [];
        new MutationObserver(() => window.lengths.push(out.textContent.length))
            .observe(out, {childList: true, characterData: true, subtree: true});
    }""")
    page.click("#generate")
    expect(page.locator("#output-meta")).to_contain_text("completion tokens")
    text = page.text_content("#output")
    lengths = [n for n in page.evaluate("window.lengths") if n]
    # the page appends each streamed chunk as it is read (chunks > 1); whether the browser also draws more
    # than one length depends on timing: a tiny model on a quiet machine can stream all 60 tokens within
    # one network read, so only growth (never shrinking, ending at the whole text) is required of the DOM
    assert text and page.evaluate("window.studio.chunks") > 1
    assert lengths and lengths == sorted(lengths) and lengths[-1] == len(text), lengths
    path, body = curl_body(page)
    assert path == "/v1/completions" and body["max_tokens"] == 60 and body["stream"] is True

    page.select_option("#mode", "chat")  # the same prompt as one user message: deltas stream in
    page.fill("#max-tokens", "20")
    page.click("#generate")
    expect(page.locator("#output-meta")).to_contain_text("completion tokens")
    path, body = curl_body(page)
    assert path == "/v1/chat/completions" and body["messages"] == [{"role": "user", "content": "The "}]
    assert page.text_content("#output") != text

    # t2i: a job with a progress bar, a preview, then the images and their parameters
    page.select_option("#model", "t2i")
    expect(page.locator("#negative-prompt")).to_be_visible()
    expect(page.locator("#max-tokens")).to_be_hidden()
    page.fill("#prompt", "a red circle")
    page.fill("#n", "2")
    page.fill("#steps", str(STEPS))
    page.fill("#seed", "7")
    page.click("#generate")
    expect(page.locator("#progress-box")).to_be_visible()
    page.wait_for_function("""() => [...document.querySelectorAll('#images img')]
        .filter(img => img.complete && img.naturalWidth > 0).length === 2""")
    assert page.eval_on_selector("#progress", "p => p.value") == 100
    progress = page.evaluate("window.studio.progress")
    assert progress[-1] == 100 and any(0 < p < 100 for p in progress), progress
    assert progress == sorted(progress)
    expect(page.locator("#progress-text")).to_contain_text(f"step {STEPS}/{STEPS}")
    srcs = page.eval_on_selector_all("#images img", "imgs => imgs.map(i => i.src)")
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    caption = page.text_content("#images figcaption")
    for part in ("a red circle", "seed 7", f"{STEPS} steps", "guidance"):
        assert part in caption, caption

    page.click("#copy-curl")
    expect(page.locator("#copy-status")).to_contain_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.evaluate("window.studio.curl")
    assert '"Authorization: Bearer $AIGC_KEY"' in copied and server.admin not in copied
    path, body = curl_body(page)
    assert path == "/v1/images/generations"
    assert body == {"model": "t2i", "n": 2, "steps": STEPS, "seed": 7, "size": "32x32", "prompt": "a red circle"}
    again = httpx.post(server.url + path, headers=auth(server.admin), json=body, timeout=60).json()
    assert [f"data:image/png;base64,{d['b64_json']}" for d in again["data"]] == srcs  # the same images

    # history: this key's jobs with thumbnails (blob: URLs of the key's downloads); usage: its models
    jobs = httpx.get(server.url + "/v1/jobs?limit=2", headers=auth(server.admin)).json()["data"]
    job = jobs[1]["id"]  # the studio's job (the curl command's came after it)
    page.click("#history-refresh")
    thumbs = page.locator(f'#history li[data-job="{job}"] img.thumb')
    expect(thumbs).to_have_count(2)
    page.wait_for_function(f"""() => [...document.querySelectorAll('#history li[data-job="{job}"] img')]
        .every(img => img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0)""")
    expect(page.locator(f'#history li[data-job="{job}"]')).to_contain_text("a red circle")
    usage = {row["model"]: row for row in
             httpx.get(server.url + "/v1/usage", headers=auth(server.admin)).json()["data"]}
    page.click("#usage-refresh")  # the table shown before may predate the curl request's images: wait for it
    expect(page.locator('#usage tr[data-model="t2i"] td').nth(5)).to_have_text(str(usage["t2i"]["images"]))
    cells = page.locator('#usage tr[data-model="text"] td').all_text_contents()
    assert cells[:2] == ["text", str(usage["text"]["requests"])]
    assert cells[4] == str(usage["text"]["completion_tokens"]) != "0"

    shot = tmp_path / "studio.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.is_hidden("#error")
    print(f"studio test: {time.monotonic() - started:.1f} s, {len(set(lengths))} output lengths, "
          f"progress {progress}, {page.evaluate('window.studio.previews')} preview(s)")


def test_studio_shows_the_apis_error_messages(page, server):
    from playwright.sync_api import expect

    connect(page, server, "aigc-not-a-key")
    expected = api_error(server, "aigc-not-a-key", "GET", "/v1/models")
    expect(page.locator("#error")).to_have_text(expected)
    expect(page.locator("#generate")).to_be_disabled()
    expect(page.locator("#model")).to_be_disabled()

    page.fill("#api-key", server.admin)
    page.click("#connect")
    expect(page.locator("#model option")).to_have_count(5)
    expect(page.locator("#error")).to_be_hidden()
    page.select_option("#model", "text")
    page.fill("#prompt", "The ")
    page.fill("#max-tokens", "500")  # over the context of 96 tokens
    page.click("#generate")
    expect(page.locator("#error")).to_be_visible()
    path, body = curl_body(page)
    expected = api_error(server, server.admin, "POST", path, body)
    assert "context" in expected
    expect(page.locator("#error")).to_have_text(expected)

    page.reload()  # the key stays in the browser's storage
    expect(page.locator("#api-key")).to_have_value(server.admin)
    expect(page.locator("#model option")).to_have_count(5)


def test_studio_translates_and_offers_the_classes_of_a_class_conditional_model(page, server):
    from playwright.sync_api import expect

    connect(page, server, server.admin)
    expect(page.locator("#model option")).to_have_count(5)
    page.select_option("#model", "mt")
    expect(page.locator("#prompt")).to_be_hidden()
    page.fill("#input", "the cat sees the dog")
    page.fill("#beam", "2")
    page.click("#generate")
    expect(page.locator("#output")).not_to_be_empty()
    path, body = curl_body(page)
    assert body == {"model": "mt", "input": "the cat sees the dog", "beam": 2}
    answer = httpx.post(server.url + path, headers=auth(server.admin), json=body, timeout=30).json()
    expect(page.locator("#output")).to_have_text(answer["data"][0]["translation"])

    page.select_option("#model", "image")
    card = httpx.get(server.url + "/v1/models/image", headers=auth(server.admin)).json()
    classes = card["parameters"]["classes"]
    assert page.eval_on_selector_all("#class option", "os => os.map(o => o.value)") == classes
    expect(page.locator("#prompt")).to_be_hidden()
    expect(page.locator("#negative-prompt")).to_be_hidden()
    assert page.eval_on_selector_all("#size option", "os => os.map(o => o.value)")[:2] == ["8x8", "16x16"]
    page.select_option("#class", classes[3])
    page.select_option("#size", "16x16")
    page.fill("#steps", "5")
    page.click("#generate")
    image = page.locator("#images img")
    expect(image).to_have_count(1)
    page.wait_for_function("document.querySelector('#images img').naturalWidth === 16")
    expect(page.locator("#images figcaption")).to_contain_text(f"class {classes[3]}")


def test_studio_transcribes_an_uploaded_recording(page, server, serve_runs):
    from playwright.sync_api import expect

    connect(page, server, server.admin)
    page.select_option("#model", "asr")
    expect(page.locator("#audio-file")).to_be_visible()
    expect(page.locator("#prompt")).to_be_hidden()
    page.click("#generate")
    expect(page.locator("#error")).to_contain_text("Choose an audio file")
    page.set_input_files("#audio-file", str(serve_runs["asr"].parent / "tones" / "u001.wav"))
    page.click("#generate")
    expect(page.locator("#output-meta")).to_contain_text("s of audio")
    assert "audio/transcriptions" in page.evaluate("window.studio.curl")
