"""Reading a request body into its schema: bad JSON, a wrong type or an unknown argument is a 400 that
says which field and why."""
from __future__ import annotations

import json
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from ...errors import ConfigError

B = TypeVar("B", bound=BaseModel)


async def parse_body(request: Request, schema: type[B]) -> B:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError("the request body must be a JSON object")
    return validate(schema, data)


def validate(schema: type[B], data: dict) -> B:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first problem, as a sentence naming the field."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    if err["type"] == "extra_forbidden":
        return f"Unrecognized request argument supplied: {where}"
    if err["type"] == "missing":
        return f"'{where}' is a required property"
    message = err["msg"]
    message = message[len("Value error, "):] if message.startswith("Value error, ") else message
    more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
    return f"'{where}': {message}{more}"
