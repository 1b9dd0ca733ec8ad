"""Records audited requests once answered: the note api/auth.Requires left, the route and the status.

An ASGI middleware rather than a dependency, so the outcome is the status really sent
(a 404 from the service, a 403 from the key check, a 200 streamed) and a failure to
record never changes the answer.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable

from domain.times import UTC
from services.audit import AuditEntry

log = logging.getLogger(__name__)


class AuditMiddleware:
    def __init__(self, app: Any, recorder: Callable[[], Callable[[AuditEntry], None] | None]) -> None:
        """`recorder`: the running platform's `AuditLog.record` (None while it starts)."""
        self.app, self.recorder = app, recorder

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            noted = scope.get("state", {}).get("audit")
            if noted:
                self._record(scope, noted, status)

    def _record(self, scope: dict[str, Any], noted: dict[str, Any], status: int) -> None:
        record = self.recorder()
        if record is None:
            return
        route = scope.get("route")
        client = scope.get("client")
        try:
            record(AuditEntry(
                workspace_id=noted["workspace_id"], at=datetime.now(UTC), key_id=noted["key_id"],
                key_kind=noted["key_kind"], action=noted["action"], method=scope["method"],
                endpoint=getattr(route, "path", None) or "(unrouted)", target=noted.get("target"),
                address=client[0] if client else None, status=status,
            ))  # fmt: skip
        except Exception:  # the answer is sent; the audit log says nothing of this request
            log.exception("an audit entry could not be recorded")
