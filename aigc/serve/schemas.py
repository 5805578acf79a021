"""The request bodies, as OpenAI defines them (and our extensions, marked). Types and shapes are checked
here; the service's configurable limits are checked by the routes. An argument we do not know is a 400,
as it is at OpenAI."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOPS = 4  # OpenAI's limit on stop sequences
SEED_LIMIT = 2 ** 63  # seeds a request may give (JSON-safe in every client)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _stops(value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else list(value or [])
    if len(stops) > MAX_STOPS:
        raise ValueError(f"at most {MAX_STOPS} stop sequences")
    if any(s == "" for s in stops):
        raise ValueError("stop sequences must not be empty")
    return stops


class _Sampling(_Body):
    """What every text request shares."""
    model: str
    max_tokens: int | None = Field(None, ge=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=SEED_LIMIT)
    user: str | None = None
    top_k: int | None = Field(None, ge=1)                       # extension
    repetition_penalty: float = Field(1.0, gt=0, le=10)         # extension
    ignore_eos: bool = False                                     # extension (as vLLM's): run to max_tokens

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: Any) -> list[str]:
        return _stops(value)

    @field_validator("stream_options")
    @classmethod
    def _check_stream_options(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        unknown = sorted(set(value or {}) - {"include_usage"})
        if unknown:
            raise ValueError(f"unknown stream option '{unknown[0]}' (only include_usage)")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and (self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Sampling):
    prompt: str | list[str] = ""
    echo: bool = False


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported ({'type': 'text', 'text': ...})")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)


class ImageRequest(_Body):
    model: str
    prompt: str = ""
    n: int = Field(1, ge=1)
    size: str | None = None                # "WxH": the model's size or a whole multiple of it (upscaled)
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: str | None = None
    quality: str | None = None             # accepted and ignored (one quality here)
    style: str | None = None               # accepted and ignored
    steps: int | None = Field(None, ge=1)  # extensions from here on
    guidance: float | None = Field(None, gt=0, le=100)
    seed: int | None = Field(None, ge=0, lt=SEED_LIMIT)
    sampler: str | None = None
    negative_prompt: str | None = None
    class_: str | int | None = Field(None, alias="class")


class TranslationRequest(_Body):
    model: str
    input: str | list[str]
    beam: int = Field(4, ge=1)
    length_penalty: float = Field(0.6, ge=0, le=5)
    user: str | None = None


class JobRequest(_Body):
    """``POST /v1/jobs``: an image request to run in the background."""
    type: Literal["images.generations"] = "images.generations"
    request: ImageRequest


class KeyRequest(_Body):
    """``POST /v1/admin/keys`` (admin only): the fields of ``aigc keys create``."""
    name: str
    models: list[str] | None = None
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_day: int | None = Field(None, ge=1)
    images_per_day: int | None = Field(None, ge=1)
    expires: str | None = None             # YYYY-MM-DD
    admin: bool = False
