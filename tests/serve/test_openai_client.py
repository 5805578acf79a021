"""The official ``openai`` client against the service, unchanged but for ``base_url``."""
from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from aigc.serve.keys import create_key, revoke_key

from .servers import auth


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.admin, max_retries=0, timeout=60)


def test_models_list_every_family(client):
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"text", "image", "t2i", "mt", "asr"}
    assert models["text"].owned_by == "aigc"
    assert client.models.retrieve("t2i").id == "t2i"


def test_completion_and_its_usage(client, server):
    out = client.completions.create(model="text", prompt="Q: ", max_tokens=12, temperature=0.8, seed=3)
    assert out.object == "text_completion" and len(out.choices) == 1
    assert out.choices[0].finish_reason in ("length", "stop")
    assert out.usage.prompt_tokens == 3 and out.usage.completion_tokens <= 12
    again = client.completions.create(model="text", prompt="Q: ", max_tokens=12, temperature=0.8, seed=3)
    assert again.choices[0].text == out.choices[0].text  # a seed gives the same text


def test_n_choices_get_their_own_streams(client):
    out = client.completions.create(model="text", prompt="A", max_tokens=20, n=3, seed=5,
                                    extra_body={"top_k": 20, "repetition_penalty": 1.1})
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert len({c.text for c in out.choices}) > 1


def test_chat_stream_with_usage_chunk(client):
    stream = client.chat.completions.create(
        model="text", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=15, stream=True, stream_options={"include_usage": True}, seed=1)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("length", "stop")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = client.chat.completions.create(
        model="text", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=15, seed=1)
    assert plain.choices[0].message.content == text
    assert plain.usage.completion_tokens == chunks[-1].usage.completion_tokens


def test_sse_framing_is_exactly_openais(server):
    body = {"model": "text", "prompt": "x", "max_tokens": 4, "stream": True, "seed": 0}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, headers=auth(server.admin)) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") and "\n" not in e for e in events[:-2])


def test_images_generate_b64_and_url(client, server):
    out = client.images.generate(model="t2i", prompt="a red circle", n=2, size="64x64",
                                 extra_body={"steps": 3, "seed": 7, "guidance": 2})
    assert len(out.data) == 2
    im = Image.open(io.BytesIO(base64.b64decode(out.data[0].b64_json)))
    assert im.size == (64, 64)
    url = client.images.generate(model="image", prompt="3", response_format="url",
                                 extra_body={"steps": 3}).data[0].url
    assert httpx.get(url).status_code == 401  # the download takes the key too
    got = httpx.get(url, headers=auth(server.admin))
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"


def test_same_seed_same_image_alone_or_batched(client):
    one = client.images.generate(model="image", prompt="5", extra_body={"steps": 4, "seed": 11})
    two = client.images.generate(model="image", prompt="5", extra_body={"steps": 4, "seed": 11})
    assert one.data[0].b64_json == two.data[0].b64_json


def test_image_edit_inpaints_with_a_mask(client):
    picture = Image.new("RGB", (32, 32), (200, 30, 30))
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    for x in range(8, 24):
        for y in range(8, 24):
            mask.putpixel((x, y), (0, 0, 0, 0))  # transparent: regenerate here
    files = {}
    for name, im in (("image", picture), ("mask", mask)):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        files[name] = buf.getvalue()
    out = client.images.edit(model="t2i", image=("a.png", files["image"]), mask=("m.png", files["mask"]),
                             prompt="a blue square", extra_body={"steps": 3, "seed": 1})
    edited = Image.open(io.BytesIO(base64.b64decode(out.data[0].b64_json))).convert("RGB")
    assert edited.getpixel((1, 1)) == (200, 30, 30)  # kept outside the mask
    img2img = client.images.edit(model="t2i", image=("a.png", files["image"]), prompt="a blue square",
                                 extra_body={"steps": 3, "strength": 0.5})
    assert len(img2img.data) == 1


def test_errors_are_openais_exceptions(client, server):
    svc = server.service
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.BadRequestError, match="not served at"):
        client.completions.create(model="t2i", prompt="x")
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="text", prompt="x", max_tokens=500)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="aigc-wrong", max_retries=0).models.list()
    secret, _ = create_key(svc.db, "only-mt", models=["mt"])
    limited = openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match="may not use"):
        limited.completions.create(model="text", prompt="x")
    revoke_key(svc.db, "only-mt")
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        limited.models.list()
    secret, _ = create_key(svc.db, "two-per-minute", requests_per_minute=2)
    slow = openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0)
    for _ in range(2):
        slow.completions.create(model="text", prompt="x", max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        slow.completions.create(model="text", prompt="x", max_tokens=1)
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_translations(server):
    r = httpx.post(server.url + "/v1/translations", json={"model": "mt", "input": ["the cat", "the dog"], "beam": 2},
                   headers=auth(server.admin), timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["index"] for d in body["data"]] == [0, 1] and body["usage"]["prompt_tokens"] > 0


def test_audio_transcriptions_in_every_format(client, serve_runs):
    clip = serve_runs["asr"].parent / "tones" / "u000.wav"
    out = client.audio.transcriptions.create(model="asr", file=clip.open("rb"))
    assert isinstance(out.text, str)
    text = client.audio.transcriptions.create(model="asr", file=clip.open("rb"), response_format="text")
    assert text.strip() == out.text.strip()
    verbose = client.audio.transcriptions.create(model="asr", file=clip.open("rb"), response_format="verbose_json")
    assert verbose.duration > 0 and verbose.text == out.text
    srt = client.audio.transcriptions.create(model="asr", file=clip.open("rb"), response_format="srt")
    vtt = client.audio.transcriptions.create(model="asr", file=clip.open("rb"), response_format="vtt")
    assert vtt.startswith("WEBVTT") and (out.text == "" or "-->" in srt)
    with pytest.raises(openai.BadRequestError, match="not an audio file|cannot read|audio"):
        client.audio.transcriptions.create(model="asr", file=("notes.wav", b"this is not audio"))
    with pytest.raises(openai.BadRequestError, match="not served at"):
        client.audio.transcriptions.create(model="text", file=clip.open("rb"))
