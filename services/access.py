"""Which workspace a key opens, and for what (keys are recorded in the log: domain/access.py).

`check` answers every request that names a requirement (`write`, `admin`, `read`,
`read:<scope>`): the key's grant, or an `Unauthorised` (no key, unknown, revoked,
expired) or `Forbidden` (a key of the workspace without that scope) error.
"""

from __future__ import annotations

import hmac

from domain.access import KeyGrant, hash_key, needs
from domain.application import CustomerData
from domain.directory import Directory
from domain.errors import Forbidden, Unauthorised
from services.rate_limit import RateLimit

PLATFORM = KeyGrant(workspace_id="", kind="platform", key_id="platform", origin="start")


class Access:
    def __init__(
        self, app: CustomerData | Directory, platform_key: str | None = None, rate: RateLimit | None = None
    ) -> None:
        """`platform_key`: the one key that manages workspaces (the core only; ingest workers have none).
        `rate`: requests per key over HTTP (none: unlimited)."""
        self.app = app
        self._platform_hash = hash_key(platform_key) if platform_key else None
        self.rate = rate or RateLimit(0)

    def authorise_write(self, key: str, limited: bool = False) -> str | None:
        """The workspace a write key sends to, or None. `limited`: a request over HTTP, counted against the
        key's rate (TooMany when over it); the Kafka ingest topic is not limited (it is read at its own pace)."""
        grant = self.app.authorise(key)
        if grant is None or grant.kind != "write":
            return None
        if limited:
            self.rate.take(grant.key_id)
        return grant.workspace_id

    def grant(self, key: str) -> KeyGrant | None:
        return self.app.authorise(key) if key else None

    def is_platform(self, key: str) -> bool:
        return bool(key) and self._platform_hash is not None and hmac.compare_digest(hash_key(key), self._platform_hash)

    def check(self, key: str, requirement: str, what: str = "this", grant: KeyGrant | None = None) -> KeyGrant:
        """The grant of a key that meets `requirement`; Unauthorised or Forbidden with the fix otherwise.
        `grant`: the key's grant when the caller looked it up already (`self.grant(key)`)."""
        kind, scope = needs(requirement)
        wanted = f"a read key with the {scope} scope, or an admin key" if scope else (
            "a read key or an admin key" if kind == "read" else f"an {kind} key" if kind == "admin" else "a write key")
        if not key:
            raise Unauthorised(f"missing key: {what} needs {wanted} of your workspace, as 'Authorization: Bearer <key>'",
                               code="unauthorized")  # fmt: skip
        grant = grant or self.grant(key)
        if grant is None:
            raise Unauthorised(f"unknown, revoked or expired key: {what} needs {wanted} of your workspace "
                               "(`cdp keys list` shows the live ones)")  # fmt: skip
        if not grant.allows(requirement):
            raise Forbidden(f"this {grant.kind} key ({grant.key_id}) cannot do {what}: it needs {wanted}; an admin "
                            "creates one with `cdp keys create`", code="forbidden")  # fmt: skip
        self.rate.take(grant.key_id)
        return grant

    def check_platform(self, key: str) -> None:
        """The platform key, which manages workspaces; Unauthorised otherwise."""
        if not self.is_platform(key):
            raise Unauthorised("workspaces are managed with the platform key (`cdp keys show` prints it, or set "
                               "CDP_PLATFORM_KEY), as 'Authorization: Bearer <platform key>'")  # fmt: skip
        self.rate.take("platform")
