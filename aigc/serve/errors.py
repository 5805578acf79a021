"""Errors of the service that map to an HTTP status (401, 403, 429); each is still a user-facing AigcError."""
from __future__ import annotations

from ..errors import AigcError


class ServeError(AigcError):
    """Base class: a refused request, with the HTTP status the service answers it with."""

    http_status: int = 400


class AuthError(ServeError):
    """The request carries no valid key."""

    http_status = 401


class UnknownKey(AuthError):
    """No key has this secret."""


class RevokedKey(AuthError):
    """The key was revoked."""


class ExpiredKey(AuthError):
    """The key is past its expiry date."""


class ModelNotAllowed(ServeError):
    """The key is valid but may not use this model."""

    http_status = 403


class QuotaExceeded(ServeError):
    """A rate or daily quota would be exceeded; ``retry_after`` is the wait in whole seconds."""

    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
