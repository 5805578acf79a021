"""Errors of the service that map to an HTTP status (401, 403, 404, 409, 413, 429, 500); each is a user-facing
AigcError."""
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


class ModelNotFound(ServeError):
    """The request names a model this service does not have."""

    http_status = 404


class EndpointNotOffered(ServeError):
    """The model exists but its family is not served at this endpoint."""


class NotFound(ServeError):
    """No such route or resource (or one that belongs to another key)."""

    http_status = 404


class PayloadTooLarge(ServeError):
    """The request body is over the service's limit."""

    http_status = 413


class PermissionDenied(ServeError):
    """The key may not use this endpoint (admin endpoints)."""

    http_status = 403


class JobNotFound(ServeError):
    """No such job or result, or it belongs to another key (the same answer, so ids leak nothing)."""

    http_status = 404


class JobConflict(ServeError):
    """The job's state forbids the request (cancelling a finished job)."""

    http_status = 409


class GenerationFailed(ServeError):
    """The model failed while generating (the message says why; no traceback reaches the client)."""

    http_status = 500
