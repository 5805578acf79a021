"""``POST /v1/audio/transcriptions``, as OpenAI's: multipart ``file`` and ``model``, ``response_format``
``json`` | ``text`` | ``verbose_json`` | ``srt`` | ``vtt``; extensions ``method`` and ``beam``. The audio
is read as any file would be (WAV, FLAC, ...; resampled to the model's rate); bad audio is a 400."""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ...errors import ConfigError
from ..service import Service, Timer, route_name

router = APIRouter()
FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
FIELDS = {"model", "response_format", "language", "prompt", "temperature", "method", "beam",
          "timestamp_granularities[]"}
WORDS_PER_CUE = 8  # subtitle cues (srt, vtt, verbose_json segments) hold at most this many words


@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request) -> Any:
    route_name(request, "audio.transcriptions")
    svc: Service = request.app.state.service
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ConfigError("audio/transcriptions takes multipart/form-data with a 'file' and a 'model'")
    form = await request.form(max_files=1, max_fields=16)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ConfigError("audio/transcriptions needs a 'file' (the audio, as a file upload)")
    fields = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise ConfigError(f"Unrecognized request argument supplied: {unknown[0]}")
    served = svc.model(request, fields.get("model"), "/v1/audio/transcriptions")
    key = await svc.key(request, served.name)
    fmt = fields.get("response_format", "json")
    if fmt not in FORMATS:
        raise ConfigError(f"response_format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    options: dict[str, Any] = {}
    if "method" in fields:
        options["method"] = fields["method"]
    if "beam" in fields:
        if not fields["beam"].isdigit():
            raise ConfigError(f"'beam' must be a whole number, not '{fields['beam']}'")
        options["beam"] = int(fields["beam"])
    data = await upload.read()
    suffix = Path(upload.filename or "audio.wav").suffix.lower() or ".wav"
    recognizer = served.model
    reservation = await svc.admit(key, "/v1/audio/transcriptions", served.name)
    timer, status, result = Timer(), "error", None

    def run() -> Any:
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:  # the audio reader takes files
            tmp.write(data)
            tmp.flush()
            with svc.runtime["locks"][served.name]:
                return recognizer.transcribe_verbose(tmp.name, **options)

    try:
        result = await asyncio.shield(run_in_threadpool(run))
        status = "ok"
    finally:
        tokens = len(result.token_times) if result is not None else 0
        await svc.finish(reservation, completion_tokens=tokens, compute_s=timer.seconds, status=status)
    return _respond(result, fmt)


def _respond(result: Any, fmt: str) -> Any:
    text = result.text
    if fmt == "json":
        return {"text": text}
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    cues = _cues(result)
    if fmt == "verbose_json":
        return {"task": "transcribe", "language": "english", "duration": round(result.audio_s, 3), "text": text,
                "segments": [{"id": i, "start": round(a, 3), "end": round(b, 3), "text": t}
                             for i, (a, b, t) in enumerate(cues)]}
    if fmt == "srt":
        blocks = [f"{i + 1}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{t}\n" for i, (a, b, t) in enumerate(cues)]
        return PlainTextResponse("\n".join(blocks), media_type="application/x-subrip")
    blocks = [f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{t}\n" for a, b, t in cues]
    return PlainTextResponse("WEBVTT\n\n" + "\n".join(blocks), media_type="text/vtt")


def _cues(result: Any) -> list[tuple[float, float, str]]:
    """Cues of up to WORDS_PER_CUE words, timed by the first token of each word when the tokens are the
    text's characters (a char tokenizer), else spread evenly over the recording."""
    words = result.text.split()
    if not words:
        return []
    times = result.token_times
    if len(times) == len(result.text):
        starts, at = [], 0
        for word in words:
            at = result.text.index(word, at)
            starts.append(times[at])
            at += len(word)
    else:
        starts = [result.audio_s * i / len(words) for i in range(len(words))]
    cues = []
    for i in range(0, len(words), WORDS_PER_CUE):
        end = starts[i + WORDS_PER_CUE] if i + WORDS_PER_CUE < len(words) else result.audio_s
        cues.append((starts[i], max(end, starts[i]), " ".join(words[i:i + WORDS_PER_CUE])))
    return cues


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"
