"""The dead-letter store: events that reached the platform but were refused, kept with the reason.

Every refused event (from HTTP, an import, the Kafka ingest topic, a webhook) is
stored here with its raw body, workspace, source, reason code, field path and
time, in the event store's own database (SQLite file or PostgreSQL schema), so
a backup of the store keeps them too. They never enter the log or the
projections; a replay submits the body again through the same intake as any
other call, and messageId deduplication keeps a replay idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

import orjson
from eventsourcing.postgres import PostgresDatastore
from prometheus_client import Counter

from domain.privacy import Sealer, Shredded, call_subject, is_sealed
from domain.times import UTC, parse_instant, shown, utc

DEAD_LETTERS = Counter("cdp_dead_letters", "Events refused and kept in the dead-letter store, by reason code", ["code"])
TABLE = "cdp_dead_letters"
MAX_REASON = 2000


@dataclass(frozen=True)
class NewDeadLetter:
    workspace_id: str
    source: str
    code: str
    field: str
    reason: str
    body: bytes
    message_id: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    id: int
    workspace_id: str
    source: str
    received_at: datetime
    code: str
    field: str
    reason: str
    message_id: str | None
    body: bytes
    replayed_at: datetime | None
    replay_outcome: str | None

    def to_json(self) -> dict[str, Any]:
        try:
            body: Any = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            body = self.body.decode("utf-8", "replace")  # kept as received: not JSON at all
        return {
            "id": self.id, "source": self.source, "received_at": shown(self.received_at), "code": self.code,
            "field": self.field, "reason": self.reason, "message_id": self.message_id, "body": body,
            "replayed_at": shown(self.replayed_at),
            "replay_outcome": self.replay_outcome,
        }  # fmt: skip


_COLUMNS = "id, workspace_id, source, received_at, code, field, reason, message_id, body, replayed_at, replay_outcome"


class DeadLetterStore:
    """Dead letters in the event store's database, through eventsourcing's own datastore (same file or schema)."""

    def __init__(self, recorder: Any, sealer: Sealer | None = None) -> None:
        self.sealer = sealer  # raw bodies sealed with their sender's subject key (domain/privacy.py)
        self.datastore = recorder.datastore
        self.postgres = isinstance(self.datastore, PostgresDatastore)
        self.table = f'"{self.datastore.schema}".{TABLE}' if self.postgres and self.datastore.schema else TABLE
        self.mark = "%s" if self.postgres else "?"
        self._create()

    def _create(self) -> None:
        if self.postgres:
            statements = [
                f"CREATE TABLE IF NOT EXISTS {self.table} (id BIGSERIAL PRIMARY KEY, workspace_id TEXT NOT NULL, "
                "source TEXT NOT NULL, received_at TIMESTAMPTZ NOT NULL, code TEXT NOT NULL, field TEXT NOT NULL, "
                "reason TEXT NOT NULL, message_id TEXT, body BYTEA NOT NULL, replayed_at TIMESTAMPTZ, "
                "replay_outcome TEXT)",
                f"CREATE INDEX IF NOT EXISTS {TABLE}_by_time ON {self.table} (workspace_id, received_at)",
            ]
        else:
            statements = [
                f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, workspace_id TEXT NOT "
                "NULL, source TEXT NOT NULL, received_at TEXT NOT NULL, code TEXT NOT NULL, field TEXT NOT NULL, "
                "reason TEXT NOT NULL, message_id TEXT, body BLOB NOT NULL, replayed_at TEXT, replay_outcome TEXT)",
                f"CREATE INDEX IF NOT EXISTS {TABLE}_by_time ON {TABLE} (workspace_id, received_at)",
            ]
        with self.datastore.transaction(commit=True) as cursor:
            for statement in statements:
                cursor.execute(statement)

    def _time(self, value: datetime) -> Any:
        # SQLite keeps ISO text in UTC with microseconds: it sorts and compares as time. The text is written as
        # the rows already stored were (`+00:00`, not the log's `Z`), so old and new rows compare alike.
        return value if self.postgres else utc(value).isoformat(timespec="microseconds")

    def _read_time(self, value: Any) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return parse_instant(value)

    def add(self, letters: Sequence[NewDeadLetter]) -> None:
        """Store refused events (one transaction); nothing is kept in memory."""
        if not letters:
            return
        now = self._time(datetime.now(UTC))
        rows = [
            (x.workspace_id, x.source, now, x.code, x.field, x.reason[:MAX_REASON], x.message_id, self._seal(x))
            for x in letters
        ]
        marks = ", ".join([self.mark] * 8)
        statement = (
            f"INSERT INTO {self.table} (workspace_id, source, received_at, code, field, reason, message_id, body) "
            f"VALUES ({marks})"
        )
        with self.datastore.transaction(commit=True) as cursor:
            cursor.executemany(statement, rows)
        for letter in letters:
            DEAD_LETTERS.labels(letter.code).inc()

    def list(
        self,
        workspace_id: str,
        code: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        include_replayed: bool = False,
        after_id: int = 0,
        limit: int = 100,
        ids: Iterable[int] | None = None,
    ) -> list[DeadLetter]:
        """The workspace's dead letters, oldest first, filtered; page with `after_id`."""
        m = self.mark
        conditions, params = [f"workspace_id = {m}", f"id > {m}"], [workspace_id, after_id]
        for column, value in (("code", code), ("source", source)):
            if value is not None:
                conditions.append(f"{column} = {m}")
                params.append(value)
        if since is not None:
            conditions.append(f"received_at >= {m}")
            params.append(self._time(since))
        if until is not None:
            conditions.append(f"received_at < {m}")
            params.append(self._time(until))
        if not include_replayed:
            conditions.append("replayed_at IS NULL")
        if ids is not None:
            wanted = [int(i) for i in ids][:1000] or [-1]
            conditions.append(f"id IN ({', '.join([m] * len(wanted))})")
            params += wanted
        statement = (
            f"SELECT {_COLUMNS} FROM {self.table} WHERE {' AND '.join(conditions)} ORDER BY id LIMIT {int(limit)}"
        )
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, params)
            rows = cursor.fetchall()
        return [self._letter(row) for row in rows]

    def _seal(self, letter: NewDeadLetter) -> bytes:
        """The raw body sealed with the key of the subject it names, else the workspace's unattributed key."""
        if self.sealer is None or not self.sealer.sealing:
            return letter.body
        subject = f"unattributed:{letter.workspace_id}"
        try:
            parsed = orjson.loads(letter.body)
            if isinstance(parsed, dict) and (parsed.get("userId") or parsed.get("anonymousId")):
                subject = call_subject(parsed)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            pass
        return self.sealer.seal(letter.workspace_id, subject, letter.body)

    def _open(self, body: bytes) -> bytes:
        if self.sealer is None or not is_sealed(body):
            return body
        try:
            return self.sealer.open(body)
        except Shredded:
            return b""  # its sender was erased: nothing of the body is left

    def _letter(self, row: Any) -> DeadLetter:
        values = [row[c] for c in _COLUMNS.split(", ")] if isinstance(row, dict) else list(row)
        values[3] = self._read_time(values[3])
        values[8] = self._open(bytes(values[8]))
        values[9] = self._read_time(values[9])
        return DeadLetter(*values)

    def replayed(self, letter_id: int, outcome: str) -> None:
        """The letter was submitted again: `outcome` says how (stored, duplicate)."""
        m = self.mark
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                f"UPDATE {self.table} SET replayed_at = {m}, replay_outcome = {m} WHERE id = {m}",
                (self._time(datetime.now(UTC)), outcome, letter_id),
            )

    def refused_again(self, letter_id: int, code: str, field: str, reason: str) -> None:
        """A replay was refused again: the letter stays, with today's reason."""
        m = self.mark
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                f"UPDATE {self.table} SET code = {m}, field = {m}, reason = {m} WHERE id = {m}",
                (code, field, reason[:MAX_REASON], letter_id),
            )

    def counts(self, workspace_id: str | None = None) -> dict[str, int]:
        """Dead letters not yet replayed, per reason code."""
        where, params = ("AND workspace_id = " + self.mark, [workspace_id]) if workspace_id else ("", [])
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT code, count(*) AS n FROM {self.table} WHERE replayed_at IS NULL {where} GROUP BY code", params
            )
            rows = cursor.fetchall()
        return {(r["code"] if isinstance(r, dict) else r[0]): int(r["n"] if isinstance(r, dict) else r[1]) for r in rows}
