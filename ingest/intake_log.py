"""The intake log: every accepted call, appended durably before the sender is answered.

Ingest workers (any number of processes, on any number of machines in front of
PostgreSQL) validate a request and append its calls here, deduplicated by
`messageId` within the workspace, and answer 200 once the transaction commits.
Nothing else happens on that path: identity is resolved afterwards, in log order,
by the one resolver of the core process (streams/resolver.py), which reads this
log after its own position and records each call with its identity changes in
the event log.

Positions increase in commit order: SQLite takes one write lock per
transaction, and on PostgreSQL each append takes the table's EXCLUSIVE lock (as
eventsourcing's own recorder does for its log), so a reader that sees position n
has seen every position before it. A request's calls are one batch: the last
call of each carries `last = 1`, so the resolver never cuts a batch in two (its
identity is resolved in event-time order within the batch).

Embedded default: a SQLite file of its own next to the event store (its write
lock is then not shared with the resolver's big transactions); with PostgreSQL,
tables in the event store's schema. It also keeps the positions of the stages
that run outside ClickHouse (the resolver's in this log, the relay's in the
event log), so they are backed up and restored with the logs they follow.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import orjson

from domain.errors import Unavailable
from domain.privacy import Sealer, Shredded, call_subject, is_sealed

Batch = tuple[str, Sequence[dict[str, Any]]]
BUSY_TIMEOUT_S = 30.0
RESOLVER = "resolver"  # the stages whose positions live here, with the intake and the log they follow
RELAY = "relay"


class IntakeUnavailable(Unavailable, RuntimeError):
    """The intake log did not take the request; nothing of it was stored."""

    code = "store_unavailable"


@dataclass(frozen=True)
class Appended:
    """One call of a request: stored now, or a duplicate of a `messageId` stored before."""

    message_id: str
    stored: bool


@dataclass(frozen=True)
class Entry:
    """One accepted call, as the resolver reads it."""

    position: int
    workspace_id: str
    batch: str
    last: bool
    call: dict[str, Any] | None  # None: its subject was erased before it was resolved (skip it)


def _encode(call: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(call)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (the limits let some through): as the log does
        return json.dumps(call).encode()


def _fresh(batches: Sequence[Batch]) -> tuple[list[list[Appended]], list[tuple[str, str, str, int, bytes]]]:
    """Per call whether it is new within these batches, and the rows of the new ones (before the store's check).
    A row's body is the call itself until it is encoded (`_bodies`), after the duplicates are out."""
    seen: set[tuple[str, str]] = set()
    results: list[list[Appended]] = []
    rows: list[Any] = []
    for workspace_id, calls in batches:
        batch, out = uuid.uuid4().hex, []
        for call in calls:
            key = (workspace_id, call["messageId"])
            out.append(Appended(call["messageId"], key not in seen))
            if key not in seen:
                seen.add(key)
                rows.append((workspace_id, call["messageId"], batch, 0, call))
        results.append(out)
    return results, rows


def _mark_last(rows: list[tuple[str, str, str, int, bytes]]) -> list[tuple[str, str, str, int, bytes]]:
    """Flag the last row of each batch, after duplicates were taken out."""
    marked = []
    for i, (ws, mid, batch, _, body) in enumerate(rows):
        last = i + 1 == len(rows) or rows[i + 1][2] != batch
        marked.append((ws, mid, batch, int(last), body))
    return marked


def _settle(results: list[list[Appended]], known: set[tuple[str, str]], batches: Sequence[Batch]) -> None:
    for (workspace_id, _), out in zip(batches, results):
        for i, appended in enumerate(out):
            if appended.stored and (workspace_id, appended.message_id) in known:
                out[i] = Appended(appended.message_id, False)


class _ResolverPosition:
    """The resolver's position, as `streams/resolver.AcceptedCalls` reads and saves it, among the stage positions;
    and the sealing of bodies with the key of each call's subject (domain/privacy.py)."""

    sealer: Sealer | None = None

    def _sealed(self, rows: list[tuple[str, str, str, int, bytes]], calls: list[dict[str, Any]]) -> list[Any]:
        """The rows with their bodies sealed (keys created first, in one round trip)."""
        if self.sealer is None or not self.sealer.sealing:
            return rows
        subjects = [call_subject(c) for c in calls]
        return [(ws, mid, b, last, self.sealer.seal(ws, subject, body))
                for (ws, mid, b, last, body), subject in zip(rows, subjects)]  # fmt: skip

    def _have_keys(self, rows: list[Any]) -> None:
        """Create the subject keys of new calls before taking the log's write lock (another store's commit)."""
        if self.sealer is not None and self.sealer.sealing:
            self.sealer.ensure((r[0], call_subject(r[4])) for r in rows)

    def _bodies(self, rows: list[Any]) -> list[Any]:
        """Encode (and seal) the new calls' bodies."""
        encoded = [(ws, mid, b, last, _encode(call)) for ws, mid, b, last, call in rows]
        return self._sealed(encoded, [r[4] for r in rows])

    def _entries(self, rows: list[Any]) -> list[Entry]:
        if self.sealer is not None:
            self.sealer.prefetch(bytes(r[4]) for r in rows)
        return [Entry(p, ws, b, bool(last), self._call(bytes(body))) for p, ws, b, last, body in rows]

    def _call(self, body: bytes) -> dict[str, Any] | None:
        if self.sealer is None or not is_sealed(body):
            return orjson.loads(body)  # type: ignore[no-any-return]
        try:
            return orjson.loads(self.sealer.open(body))  # type: ignore[no-any-return]
        except Shredded:
            return None

    def position(self, name: str) -> int | None:
        raise NotImplementedError

    def save_position(self, name: str, position: int) -> None:
        raise NotImplementedError

    def resolved(self) -> int:
        return self.position(RESOLVER) or 0

    def save_resolved(self, position: int) -> None:
        self.save_position(RESOLVER, position)


class SqliteIntakeLog(_ResolverPosition):
    """The intake log in a SQLite file (WAL, fsync on commit, so a 200 survives a crash of the machine)."""

    def __init__(self, path: Path, sealer: Sealer | None = None) -> None:
        self.path = path
        self.sealer = sealer
        self._local = threading.local()
        with self._connection() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS intake (position INTEGER PRIMARY KEY AUTOINCREMENT, "
                "workspace_id TEXT NOT NULL, message_id TEXT NOT NULL, batch TEXT NOT NULL, last INTEGER NOT NULL, "
                "body BLOB NOT NULL, UNIQUE (workspace_id, message_id))"
            )
            db.execute("CREATE TABLE IF NOT EXISTS stage_positions (name TEXT PRIMARY KEY, position INTEGER NOT NULL)")

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def append(self, batches: Sequence[Batch]) -> list[list[Appended]]:
        """Append every new call of `batches` in one transaction; says per call whether it was new."""
        results, rows = _fresh(batches)
        self._have_keys(rows)
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                known = self._known(db, rows)
                rows = self._bodies(_mark_last([r for r in rows if (r[0], r[1]) not in known]))
                db.executemany(
                    "INSERT INTO intake (workspace_id, message_id, batch, last, body) VALUES (?, ?, ?, ?, ?)", rows
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise IntakeUnavailable(f"the intake log did not take the batch: {exc}") from exc
        _settle(results, known, batches)
        return results

    @staticmethod
    def _known(db: sqlite3.Connection, rows: list[tuple[str, str, str, int, bytes]]) -> set[tuple[str, str]]:
        known: set[tuple[str, str]] = set()
        for start in range(0, len(rows), 400):  # under SQLite's bound-parameter limit
            chunk = rows[start : start + 400]
            where = " OR ".join(["(workspace_id = ? AND message_id = ?)"] * len(chunk))
            params = [v for r in chunk for v in (r[0], r[1])]
            known.update(db.execute(f"SELECT workspace_id, message_id FROM intake WHERE {where}", params).fetchall())
        return known

    def read(self, after: int, limit: int) -> list[Entry]:
        rows = self._connection().execute(
            "SELECT position, workspace_id, batch, last, body FROM intake WHERE position > ? ORDER BY position LIMIT ?",
            (after, limit),
        ).fetchall()
        return self._entries(rows)

    def last_position(self) -> int:
        return int(self._connection().execute("SELECT coalesce(max(position), 0) FROM intake").fetchone()[0])

    def forget(self, position: int) -> None:
        """Take an entry the resolver moved to the dead letters out, so that its replay is not a duplicate."""
        self._connection().execute("DELETE FROM intake WHERE position = ?", (position,))

    def position(self, name: str) -> int | None:
        """What a stage outside ClickHouse (the resolver here, the relay in the event log) has done, if recorded."""
        row = self._connection().execute("SELECT position FROM stage_positions WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else None

    def save_position(self, name: str, position: int) -> None:
        self._connection().execute(
            "INSERT INTO stage_positions (name, position) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position", (name, position)
        )  # fmt: skip

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class PostgresIntakeLog(_ResolverPosition):
    """The intake log in the event store's PostgreSQL schema; appends serialised by the table's EXCLUSIVE lock."""

    def __init__(self, conninfo: str, schema: str | None, sealer: Sealer | None = None) -> None:
        import psycopg
        from psycopg import sql

        self._psycopg, self._sql = psycopg, sql
        self.conninfo = conninfo
        self.sealer = sealer
        prefix = sql.SQL("{}.").format(sql.Identifier(schema)) if schema else sql.SQL("")
        self.table = sql.SQL("{}{}").format(prefix, sql.Identifier("cdp_intake"))
        self.positions_table = sql.SQL("{}{}").format(prefix, sql.Identifier("cdp_stage_positions"))
        self._local = threading.local()
        with self._connection().transaction():
            self._connection().execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (position BIGSERIAL PRIMARY KEY, workspace_id TEXT NOT NULL, "
                "message_id TEXT NOT NULL, batch TEXT NOT NULL, last BOOLEAN NOT NULL, body BYTEA NOT NULL, "
                "UNIQUE (workspace_id, message_id))"
            ).format(self.table))  # fmt: skip
            self._connection().execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
            ).format(self.positions_table))  # fmt: skip

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._psycopg.connect(self.conninfo, autocommit=True)
            self._local.conn = conn
        return conn

    def append(self, batches: Sequence[Batch]) -> list[list[Appended]]:
        results, rows = _fresh(batches)
        self._have_keys(rows)
        sql = self._sql
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(self.table))
                cur.execute(
                    sql.SQL("SELECT workspace_id, message_id FROM {} WHERE (workspace_id, message_id) IN "
                            "(SELECT * FROM unnest(%s::text[], %s::text[]))").format(self.table),
                    ([r[0] for r in rows], [r[1] for r in rows]),
                )  # fmt: skip
                known = {(ws, mid) for ws, mid in cur.fetchall()}
                rows = self._bodies(_mark_last([r for r in rows if (r[0], r[1]) not in known]))
                cur.executemany(
                    sql.SQL("INSERT INTO {} (workspace_id, message_id, batch, last, body) "
                            "VALUES (%s, %s, %s, %s, %s)").format(self.table),
                    [(ws, mid, b, bool(last), body) for ws, mid, b, last, body in rows],
                )  # fmt: skip
        except self._psycopg.Error as exc:
            self._local.conn = None
            raise IntakeUnavailable(f"the intake log did not take the batch: {exc}") from exc
        _settle(results, known, batches)
        return results

    def read(self, after: int, limit: int) -> list[Entry]:
        rows = self._connection().execute(
            self._sql.SQL("SELECT position, workspace_id, batch, last, body FROM {} WHERE position > %s "
                          "ORDER BY position LIMIT %s").format(self.table), (after, limit),
        ).fetchall()  # fmt: skip
        return self._entries(rows)

    def last_position(self) -> int:
        sql = self._sql.SQL("SELECT coalesce(max(position), 0) FROM {}").format(self.table)
        return int(self._connection().execute(sql).fetchone()[0])

    def forget(self, position: int) -> None:
        sql = self._sql.SQL("DELETE FROM {} WHERE position = %s").format(self.table)
        self._connection().execute(sql, (position,))

    def position(self, name: str) -> int | None:
        sql = self._sql.SQL("SELECT position FROM {} WHERE name = %s").format(self.positions_table)
        row = self._connection().execute(sql, (name,)).fetchone()
        return int(row[0]) if row else None

    def save_position(self, name: str, position: int) -> None:
        self._connection().execute(self._sql.SQL(
            "INSERT INTO {} (name, position) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
        ).format(self.positions_table), (name, position))  # fmt: skip

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


IntakeLog = SqliteIntakeLog | PostgresIntakeLog
