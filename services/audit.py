"""The audit log: every admin action and every read of personal data, who, what, when, from where, outcome.

The HTTP edge (api/audit.py) notes each audited request; `AuditLog.record` hands the
entry to the store (infra/audit_log.py: an append-only table in the event store's
database, exported to Kafka `cdp.audit`). An entry names the key by id, the route by
its template (`/v1/profiles/{identifier}`, never the identifier in the URL) and the
profile read by its id: the audit log itself holds no personal data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from domain.times import shown


@dataclass(frozen=True)
class AuditEntry:
    workspace_id: str
    at: datetime
    key_id: str  # "platform" for the platform key
    key_kind: str  # write | read | admin | platform
    action: str  # "read" (personal data), "admin" (a change or an admin read), "platform" (workspaces)
    method: str
    endpoint: str  # the route's template
    target: str | None  # the profile id read, the slug or key id changed; None when the route names none
    address: str | None  # the client's address
    status: int  # the HTTP status answered

    def to_json(self, entry_id: int | None = None) -> dict[str, Any]:
        body = asdict(self) | {"at": shown(self.at)}
        return {"id": entry_id, **body} if entry_id is not None else body


class AuditStore(Protocol):
    """Where entries are kept (infra/audit_log.AuditWriter): appended, listed, never changed."""

    def append(self, entry: AuditEntry) -> None: ...

    def list(self, workspace_id: str, **filters: Any) -> list[dict[str, Any]]: ...


class AuditLog:
    def __init__(self, store: AuditStore) -> None:
        self.store = store

    def record(self, entry: AuditEntry) -> None:
        self.store.append(entry)

    def entries(
        self, workspace_id: str, since: datetime | None = None, until: datetime | None = None, key_id: str | None = None,
        target: str | None = None, action: str | None = None, after_id: int = 0, limit: int = 100,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Entries of the workspace, oldest first, after `after_id` (the page before's last id)."""
        return self.store.list(workspace_id, since=since, until=until, key_id=key_id, target=target, action=action,
                               after_id=after_id, limit=limit)  # fmt: skip
