"""One error shape for the whole HTTP API: `{"code": ..., "message": ..., "errors": [...]}`.

`code` is machine-readable and stable (documented in docs/errors.md), `message`
says in words what went wrong and what to do, and `errors`, when present, lists
per-field problems (`field`, `reason`, and for ingest the event's `index`).

The layers below raise `domain.errors` kinds (or their subclasses with a code of
their own); `STATUS` maps each kind to a status, so no adapter reads a message to
choose one. Adapters raise `ApiError` for what only HTTP knows (keys, bodies,
sizes); FastAPI's own errors (HTTPException, request validation) get the same
shape from the handlers installed here.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.responses import json_response
from domain.errors import CdpError
from projections.analyst_sql import SqlRefused
from projections.kpis import KpiQueryError

# The code an HTTPException without one of its own gets, by status.
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}

# The status of each kind of domain.errors.CdpError.
STATUS = {"invalid": 400, "unauthorised": 401, "forbidden": 403, "not_found": 404, "conflict": 409, "too_many": 429,
          "unavailable": 503}


def error_body(code: str, message: str, errors: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if errors:
        body["errors"] = errors
    return body | extra


class ApiError(Exception):
    """An answer other than success: status, code, message and optional per-field errors."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or []
        self.headers = headers
        self.extra = extra

    def response(self, request: Request | None = None) -> Response:
        headers = dict(self.headers or {})
        if self.status == 401:
            # The challenge of the scheme the client used: a Basic one makes a browser's fetch() wait for a
            # password dialog, so a Bearer request (the dashboard's) gets a Bearer challenge (RFC 6750).
            sent = request.headers.get("authorization", "") if request is not None else ""
            scheme = "Bearer" if sent[:7].lower() == "bearer " else "Basic"
            headers.setdefault("WWW-Authenticate", f'{scheme} realm="cdp"')
        body = error_body(self.code, self.message, self.errors, **self.extra)
        return json_response(body, status_code=self.status, headers=headers)


def _code(exc: CdpError) -> str:
    # KPI errors carry codes of their own (unknown_kpi, funnel_kpi, ...); the API has answered them with
    # the generic codes of docs/errors.md, which clients branch on, so those stay.
    if isinstance(exc, KpiQueryError):
        return CODES[STATUS.get(exc.kind, 400)]
    return exc.code


def from_domain(exc: CdpError) -> ApiError:
    """The answer to an error of the layers below: status from its kind, its code, message and errors."""
    extra = getattr(exc, "extra", None) or {}
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return ApiError(STATUS.get(exc.kind, 400), _code(exc), exc.message, exc.errors, headers, **extra)


def from_sql(refused: SqlRefused) -> ApiError:
    code = {400: "invalid_query", 403: "forbidden"}.get(refused.status, "query_limit")
    return ApiError(refused.status, code, refused.message, reason=refused.reason, **refused.details)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "(request)"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return exc.response(request)

    @app.exception_handler(CdpError)
    async def domain_error(request: Request, exc: CdpError) -> Response:
        return from_domain(exc).response(request)

    @app.exception_handler(SqlRefused)
    async def sql_refused(_: Request, exc: SqlRefused) -> Response:
        return from_sql(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.detail, dict) and "code" in exc.detail:
            body = exc.detail
        else:
            body = error_body(CODES.get(exc.status_code, "error"), str(exc.detail))
        return json_response(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": _field(tuple(e.get("loc", ()))), "reason": e.get("msg", "")} for e in exc.errors()]
        where = ", ".join(e["field"] for e in errors[:5])
        return json_response(
            error_body("invalid_request", f"the request does not match the API: {where}", errors), status_code=422
        )
