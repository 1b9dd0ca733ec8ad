"""One error shape for the whole HTTP API: `{"code": ..., "message": ..., "errors": [...]}`.

`code` is machine-readable and stable (documented in docs/errors.md), `message`
says in words what went wrong and what to do, and `errors`, when present, lists
per-field problems (`field`, `reason`, and for ingest the event's `index`).
Routers raise `ApiError`; FastAPI's own errors (HTTPException, request
validation) are turned into the same shape by the handlers installed here.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, headers=headers, media_type="application/json")


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

    def response(self) -> Response:
        headers = dict(self.headers or {})
        if self.status == 401:
            headers.setdefault("WWW-Authenticate", 'Basic realm="cdp"')
        body = error_body(self.code, self.message, self.errors, **self.extra)
        return json_response(body, status_code=self.status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "(request)"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return exc.response()

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
