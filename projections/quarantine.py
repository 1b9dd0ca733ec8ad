"""The quarantine table: log entries a projection could not apply, with the reason.

Written by the pipeline (streams/pipeline.py) through `QuarantineStore.record`;
read by the API and `cdp status`. Which errors are worth a retry rather than a
quarantine is ClickHouse's knowledge, so it lives here too (`TRANSIENT_ERRORS`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.exceptions import OperationalError

from domain.times import UTC, shown

# A connection that failed or timed out says nothing about the entry: the page is retried, not quarantined.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, ConnectionError, TimeoutError)
COLUMNS = [
    "processor", "position", "event_id", "workspace_id", "kind", "error", "reason", "attempts", "resolved", "at",
    "version",
]  # fmt: skip
MAX_REASON = 2000


@dataclass(frozen=True)
class Quarantined:
    projection: str
    position: int
    event_id: str
    workspace_id: str
    kind: str
    error: str
    reason: str
    attempts: int
    resolved: bool
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "projection": self.projection, "position": self.position, "event_id": self.event_id,
            "workspace_id": self.workspace_id, "kind": self.kind, "error": self.error, "reason": self.reason,
            "attempts": self.attempts, "resolved": self.resolved,
            "at": shown(self.at),
        }  # fmt: skip


class QuarantineStore:
    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.db = database

    def record(self, projection: str, message: Any, exc: BaseException) -> None:
        """A log message (streams/messages.py) `projection` could not apply."""
        self._write(projection, message.position, message.event_id, message.workspace_id, message.kind, exc, 1)

    def failed_again(self, entry: Quarantined, exc: BaseException) -> None:
        """A retry of the entry failed too: it stays open, with the new reason and one more attempt."""
        self._write(entry.projection, entry.position, entry.event_id, entry.workspace_id, entry.kind, exc,
                    entry.attempts + 1)  # fmt: skip

    def resolved(self, entry: Quarantined) -> None:
        """A retry applied the entry: it leaves the list of open entries."""
        row = [
            entry.projection, entry.position, entry.event_id, entry.workspace_id, entry.kind, entry.error,
            entry.reason, entry.attempts + 1, 1, datetime.now(UTC), time.time_ns(),
        ]  # fmt: skip
        self.client.insert(f"{self.db}.quarantine", [row], column_names=COLUMNS)

    def _write(
        self, projection: str, position: int, event_id: str, workspace_id: str, kind: str, exc: BaseException,
        attempts: int,
    ) -> None:  # fmt: skip
        reason = str(exc) or type(exc).__name__
        row = [
            projection, position, event_id, workspace_id, kind, type(exc).__name__, reason[:MAX_REASON], attempts, 0,
            datetime.now(UTC), time.time_ns(),
        ]  # fmt: skip
        self.client.insert(f"{self.db}.quarantine", [row], column_names=COLUMNS)

    def entries(
        self, projection: str | None = None, include_resolved: bool = False, limit: int = 1000
    ) -> list[Quarantined]:
        conditions = ["1"]
        if projection is not None:
            conditions.append("processor = {projection:String}")
        if not include_resolved:
            conditions.append("resolved = 0")
        rows = self.client.query(
            f"SELECT {', '.join(COLUMNS[:-1])} FROM {self.db}.quarantine FINAL WHERE {' AND '.join(conditions)} "
            "ORDER BY position, processor LIMIT {limit:UInt32}",
            parameters={"projection": projection or "", "limit": limit},
        ).result_rows
        return [Quarantined(*row[:8], bool(row[8]), row[9]) for row in rows]  # type: ignore[misc]

    def counts(self) -> dict[str, int]:
        """Open (unresolved) entries per projection."""
        rows = self.client.query(
            f"SELECT processor, count() FROM {self.db}.quarantine FINAL WHERE resolved = 0 GROUP BY processor"
        ).result_rows
        return {name: int(n) for name, n in rows}
