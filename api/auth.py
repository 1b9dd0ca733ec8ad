"""Keys in requests, read one way for every adapter, and the dependencies that turn them into a workspace.

A key comes as `Authorization: Bearer <key>`, as the HTTP Basic username (what
Segment's libraries send), or, for webhook receivers only, as `?key=`. A key
the access service does not know is a 401 in the one error shape.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import Depends, Request

from api.errors import ApiError
from services import Services
from services.access import Access


class BadCredentials(ValueError):
    """An `Authorization: Basic` header that is not base64 of UTF-8 text."""


def basic_username(request: Request) -> str | None:
    """The HTTP Basic username, None without Basic credentials; BadCredentials if they cannot be read."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise BadCredentials("the Authorization header is not valid HTTP Basic credentials") from None
    return decoded.partition(":")[0] or None


def bearer(request: Request) -> str:
    """The Bearer token ("" for none)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def key_of(request: Request) -> str:
    """The key sent as Bearer or as the HTTP Basic username ("" for none or unreadable credentials)."""
    try:
        return bearer(request) or basic_username(request) or ""
    except BadCredentials:
        return ""


def services(request: Request) -> Services:
    """The services of the running platform; 503 while it starts."""
    built = getattr(request.app.state.platform, "services", None)
    if built is None:
        raise ApiError(503, "unavailable", "the platform is still starting; retry in a moment")
    return built


def access(built: Services = Depends(services)) -> Access:
    return built.access


class ReadKey:
    """Dependency: the workspace of the read key sent as Bearer, 401 otherwise."""

    def __init__(
        self,
        missing: str = "missing read key: send it as 'Authorization: Bearer <read key>'",
        unknown: str = "unknown read key; use a read key of your workspace (see `cdp up` output)",
    ) -> None:
        self.missing, self.unknown = missing, unknown

    def __call__(self, request: Request, keys: Access = Depends(access)) -> str:
        token = bearer(request)
        if not token:
            raise ApiError(401, "unauthorized", self.missing)
        workspace_id = keys.authorise_read(token)
        if workspace_id is None:
            raise ApiError(401, "unauthorized", self.unknown)
        return workspace_id


class WriteKey:
    """Dependency: the workspace of the write key sent as Bearer or HTTP Basic username, 401 otherwise."""

    def __init__(
        self,
        unknown: str,
        missing: str = "missing write key: this changes data; send 'Authorization: Bearer <write key>'",
        basic: bool = True,
    ) -> None:
        self.unknown, self.missing, self.basic = unknown, missing, basic

    def __call__(self, request: Request, keys: Access = Depends(access)) -> str:
        key = key_of(request) if self.basic else bearer(request)
        if not key:
            raise ApiError(401, "unauthorized", self.missing)
        workspace_id = keys.authorise_write(key)
        if workspace_id is None:
            raise ApiError(401, "unauthorized", self.unknown)
        return workspace_id


read_key = ReadKey()
