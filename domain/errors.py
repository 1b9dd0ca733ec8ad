"""Errors that carry their meaning: a stable `code` and a kind the edges map to a status.

The layers below the HTTP adapters raise these; the adapters turn `kind` into a
status code (invalid → 400, unauthorised → 401, forbidden → 403, not_found → 404, conflict → 409,
too_many → 429, unavailable → 503)
and never read the message to decide. Messages say what to change in words and
name no HTTP route: the same error reaches a CLI user too.
"""

from __future__ import annotations

from typing import Any


class CdpError(Exception):
    """Base of the platform's own errors; subclasses fix `kind` and a default `code`."""

    kind = "invalid"
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.errors = errors or []


class Invalid(CdpError, ValueError):
    """The request cannot be answered as asked; the message says what to change."""

    kind = "invalid"
    code = "invalid_request"


class NotFound(CdpError, LookupError):
    """What the request names does not exist (in this workspace)."""

    kind = "not_found"
    code = "not_found"


class Conflict(CdpError):
    """The request contradicts the current state (e.g. a version that moved on)."""

    kind = "conflict"
    code = "conflict"


class Unavailable(CdpError):
    """A part the answer needs is not running or not reachable; trying again later can succeed."""

    kind = "unavailable"
    code = "unavailable"


class Unauthorised(CdpError):
    """No key, or one that is unknown, revoked or expired."""

    kind = "unauthorised"
    code = "unauthorized"


class Forbidden(CdpError):
    """A live key that does not open what was asked (another kind, or a read key without the scope)."""

    kind = "forbidden"
    code = "forbidden"


class TooMany(CdpError):
    """A key sent more requests than its rate allows; `retry_after` seconds until the next is taken."""

    kind = "too_many"
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
