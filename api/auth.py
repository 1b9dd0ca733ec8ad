"""Keys in requests, read one way for every adapter, and the dependencies that turn them into a workspace.

A key comes as `Authorization: Bearer <key>`, as the HTTP Basic username (what
Segment's libraries send: write keys only), or, for webhook receivers only, as
`?key=`. A key the access service does not know is a 401 in the one error shape,
one that does not open the route a 403 (services/access.py).
"""

from __future__ import annotations

import base64
import binascii

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBearer

from api.errors import ApiError
from domain.access import needs
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


PERSONAL = {"profiles", "events", "segments", "sql"}  # read scopes whose reads the audit log records
# The schemes the OpenAPI document names (so /docs has an Authorize button); the keys are read below, not by them.
BEARER = HTTPBearer(auto_error=False, scheme_name="key", description="a read, admin or platform key (docs/access.md)")


class _DocumentedBasic(HTTPBasic):
    """HTTP Basic as the OpenAPI document shows it, reading nothing: the ingest routes read the key themselves and
    answer unreadable credentials in their own words (HTTPBasic raises on them even with auto_error off)."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


BASIC = _DocumentedBasic(auto_error=False, scheme_name="writeKey", description="the write key as the username, no "
                         "password")  # fmt: skip


class Requires:
    """Dependency: the workspace of a key that meets `requirement` (domain/access.py), sent as Bearer.

    401 without a live key, 403 for a key of another kind or without the scope, 429 over
    the key's rate. Admin actions and reads of personal data are noted for the audit log
    (api/audit.py records them once answered), also when refused for a known key."""

    def __init__(self, requirement: str, what: str, audit: bool | None = None) -> None:
        kind, scope = needs(requirement)
        self.requirement, self.what = requirement, what
        self.audit = audit if audit is not None else (kind == "admin" or scope in PERSONAL)
        self.action = "admin" if kind == "admin" else "read"

    def __call__(
        self, request: Request, keys: Access = Depends(access),
        _: HTTPAuthorizationCredentials | None = Security(BEARER),
    ) -> str:  # fmt: skip
        key = bearer(request)
        known = keys.grant(key)
        if self.audit and known is not None:
            note(request, known.workspace_id, known.key_id, known.kind, self.action)
        return keys.check(key, self.requirement, self.what, known).workspace_id


class PlatformKey:
    """Dependency: the platform key (it manages workspaces), sent as Bearer; 401 otherwise."""

    def __call__(
        self, request: Request, keys: Access = Depends(access),
        _: HTTPAuthorizationCredentials | None = Security(BEARER),
    ) -> None:  # fmt: skip
        keys.check_platform(bearer(request))


def note(request: Request, workspace_id: str, key_id: str, key_kind: str, action: str) -> None:
    """What the audit log records of this request once answered (api/audit.py)."""
    request.state.audit = {"workspace_id": workspace_id, "key_id": key_id, "key_kind": key_kind, "action": action,
                           "target": getattr(request.state, "audit", {}).get("target")}  # fmt: skip


def audit_target(request: Request, target: str | None) -> None:
    """The profile id read, or the slug or key id changed, for the audit entry (never an identifier's value)."""
    noted = getattr(request.state, "audit", None)
    if noted is not None:
        noted["target"] = target


platform_key = PlatformKey()


def check_metrics_key(request: Request, built: object, open_: bool) -> None:
    """/metrics answers the platform key only, unless CDP_METRICS_OPEN (`open_`); 401 otherwise. `built`: the
    process's services, None while it starts."""
    access = getattr(built, "access", None)
    if not open_ and (access is None or not access.is_platform(bearer(request))):
        raise ApiError(401, "unauthorized", "metrics need the platform key as 'Authorization: Bearer <platform key>' "
                       "(Prometheus: authorization.credentials), or CDP_METRICS_OPEN=on on a private network")


def write_key_scheme(_: None = Security(BASIC)) -> None:
    """Names the write key's scheme in the OpenAPI document of the ingest routes (which read the key themselves)."""


def described(dependency: object) -> str | None:
    """A key dependency in words, for the OpenAPI document (api/openapi.document_keys)."""
    if isinstance(dependency, PlatformKey):
        return "the platform key"
    if dependency is write_key_scheme:
        return "a write key (HTTP Basic username, `writeKey` in the body, or Bearer)"
    if not isinstance(dependency, Requires):
        return None
    kind, scope = needs(dependency.requirement)
    if kind == "read":
        return f"a read key with the `{scope}` scope, or an admin key" if scope else "any read key, or an admin key"
    return "an admin key" if kind == "admin" else "a write key"
