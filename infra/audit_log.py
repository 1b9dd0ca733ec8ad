"""The audit log's store: an append-only table in the event store's database, exported to Kafka `cdp.audit`.

Entries are appended from a queue by one thread, a batch at a time, so a request never
waits on the store's write lock (the resolver holds it while it appends); the same
thread then publishes what it stored to `cdp.audit` (keyed by workspace) and keeps the
published position with the intake log's stage positions. Entries are only ever
inserted: no route or command updates or deletes them. What the queue holds when the
process is killed (at most `FLUSH_S` of entries) is lost; a clean stop writes it first.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime
from typing import Any, Callable

from eventsourcing.postgres import PostgresDatastore

from domain.times import parse_instant, utc
from services.audit import AuditEntry

log = logging.getLogger(__name__)
TABLE = "cdp_audit"
AUDIT_TOPIC = "cdp.audit"
FLUSH_S = 0.2
POSITION = "audit-export"  # the intake log's stage position: entries published to cdp.audit
_FIELDS = ("workspace_id", "at", "key_id", "key_kind", "action", "method", "endpoint", "target", "address", "status")


class AuditWriter:
    """The store (services/audit.AuditStore) and its export thread."""

    def __init__(
        self, recorder: Any, publish: Callable[[list[dict[str, Any]]], None] | None = None,
        positions: Any = None,
    ) -> None:  # fmt: skip
        """`publish`: sends entries to cdp.audit (None: not exported); `positions`: the intake log."""
        self.datastore = recorder.datastore
        self.postgres = isinstance(self.datastore, PostgresDatastore)
        self.table = f'"{self.datastore.schema}".{TABLE}' if self.postgres and self.datastore.schema else TABLE
        self.mark = "%s" if self.postgres else "?"
        self.publish, self.positions = publish, positions
        self._queue: queue.Queue[AuditEntry] = queue.Queue()
        self._stopping = threading.Event()
        self._flushing = threading.Lock()  # the thread and a listing flush alike, one at a time
        self._thread: threading.Thread | None = None
        self._create()

    def _create(self) -> None:
        key = "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (id {key}, workspace_id TEXT NOT NULL, at TEXT NOT NULL, "
                "key_id TEXT NOT NULL, key_kind TEXT NOT NULL, action TEXT NOT NULL, method TEXT NOT NULL, "
                "endpoint TEXT NOT NULL, target TEXT, address TEXT, status INTEGER NOT NULL)"
            )
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_by_workspace ON {self.table} (workspace_id, id)")

    def start(self) -> "AuditWriter":
        self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)
        self.flush()

    def append(self, entry: AuditEntry) -> None:
        self._queue.put(entry)

    def _run(self) -> None:
        while not self._stopping.wait(FLUSH_S):
            try:
                self.flush()
            except Exception:  # the store or the broker is away for a moment: the next round tries again
                log.warning("writing or exporting the audit log failed; retrying", exc_info=True)

    def flush(self) -> None:
        """Store what is queued, then publish what is stored and not yet published."""
        with self._flushing:
            self._store_queued()
            self._export()

    def _store_queued(self) -> None:
        entries: list[AuditEntry] = []
        while True:
            try:
                entries.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if entries:
            rows = [tuple(self._value(name, getattr(e, name)) for name in _FIELDS) for e in entries]
            statement = (f"INSERT INTO {self.table} ({', '.join(_FIELDS)}) "
                         f"VALUES ({', '.join([self.mark] * len(_FIELDS))})")  # fmt: skip
            try:
                with self.datastore.transaction(commit=True) as cursor:
                    cursor.executemany(statement, rows)
            except Exception:
                for entry in entries:  # kept for the next round, in order
                    self._queue.put(entry)
                raise

    def _export(self) -> None:
        if self.publish is None or self.positions is None:
            return
        done = self.positions.position(POSITION) or 0
        while True:
            page = self._select("id > " + self.mark, (done,), limit=1000)
            if not page:
                return
            self.publish(page)
            done = page[-1]["id"]
            self.positions.save_position(POSITION, done)

    @staticmethod
    def _value(name: str, value: Any) -> Any:
        return utc(value).isoformat(timespec="microseconds") if isinstance(value, datetime) else value

    def _select(self, where: str, params: tuple[Any, ...], limit: int) -> list[dict[str, Any]]:
        statement = f"SELECT id, {', '.join(_FIELDS)} FROM {self.table} WHERE {where} ORDER BY id LIMIT {int(limit)}"
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, params)
            rows = cursor.fetchall()
        found = []
        for row in rows:
            values = dict(row) if not isinstance(row, tuple) else dict(zip(("id", *_FIELDS), row))
            entry = AuditEntry(**{name: values[name] for name in _FIELDS} | {"at": parse_instant(values["at"])})
            found.append(entry.to_json(int(values["id"])))
        return found

    def list(self, workspace_id: str, **filters: Any) -> list[dict[str, Any]]:
        """The workspace's entries, oldest first, filtered (services/audit.AuditLog.entries names the filters)."""
        self.flush()  # what this process noted a moment ago is listed too
        where, params = [f"workspace_id = {self.mark}", f"id > {self.mark}"], [workspace_id, filters.get("after_id", 0)]
        for name, column, op in (("since", "at", ">="), ("until", "at", "<"), ("key_id", "key_id", "="),
                                 ("target", "target", "="), ("action", "action", "=")):  # fmt: skip
            value = filters.get(name)
            if value is not None:
                where.append(f"{column} {op} {self.mark}")
                params.append(self._value(name, value))
        return self._select(" AND ".join(where), tuple(params), limit=filters.get("limit", 100))
