"""The key store: subject keys and data keys, wrapped by the master key, kept outside the log.

Rows hold only wrapped keys and keyed hashes of subjects, never an identifier.
A destroyed key leaves a tombstone (`shredded`), so that a reader can tell an
erased subject (skip it) from a key store restored from the wrong backup (stop
and say so).

Embedded default: a SQLite file of its own (`keystore.sqlite3`), so that key
creation at ingest never waits on the event store's write lock, with
`secure_delete` on so a destroyed key's bytes are overwritten in the file, and
the WAL checkpointed after each destruction. PostgreSQL: tables in the event
store's schema. Back it up with the logs (docs/privacy.md).
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

from domain.times import UTC

KeyRow = tuple[str, str, str, bytes]  # key id (hex), workspace, subject hash, wrapped key


class SqliteKeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        db = self._db()
        db.execute(
            "CREATE TABLE IF NOT EXISTS subject_keys (key_id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, "
            "subject TEXT NOT NULL, wrapped BLOB NOT NULL, created_at TEXT NOT NULL, UNIQUE (workspace_id, subject))"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS shredded (key_id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, "
            "regulation_id TEXT NOT NULL, shredded_at TEXT NOT NULL)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS data_keys (name TEXT PRIMARY KEY, wrapped BLOB NOT NULL)")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA secure_delete=ON")
            self._local.db = db
        return db

    def by_subject(self, workspace_subjects: Sequence[tuple[str, str]]) -> list[KeyRow]:
        found: list[KeyRow] = []
        for start in range(0, len(workspace_subjects), 400):
            chunk = workspace_subjects[start : start + 400]
            where = " OR ".join(["(workspace_id = ? AND subject = ?)"] * len(chunk))
            found += self._db().execute(
                f"SELECT key_id, workspace_id, subject, wrapped FROM subject_keys WHERE {where}",
                [v for pair in chunk for v in pair],
            ).fetchall()
        return found

    def by_id(self, key_ids: Sequence[str]) -> list[KeyRow]:
        found: list[KeyRow] = []
        for start in range(0, len(key_ids), 800):
            chunk = list(key_ids[start : start + 800])
            found += self._db().execute(
                f"SELECT key_id, workspace_id, subject, wrapped FROM subject_keys "
                f"WHERE key_id IN ({','.join('?' * len(chunk))})", chunk,
            ).fetchall()  # fmt: skip
        return found

    def shredded(self, key_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(key_ids), 800):
            chunk = list(key_ids[start : start + 800])
            rows = self._db().execute(
                f"SELECT key_id FROM shredded WHERE key_id IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            found.update(r[0] for r in rows)
        return found

    def add(self, rows: Sequence[KeyRow]) -> None:
        """Insert new keys; a subject another process gave a key first keeps that one (read it back)."""
        if not rows:
            return
        now = datetime.now(UTC).isoformat()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO subject_keys (key_id, workspace_id, subject, wrapped, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (workspace_id, subject) DO NOTHING", [(*r, now) for r in rows],
            )  # fmt: skip
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def destroy(self, workspace_id: str, subjects: Sequence[str], regulation_id: str) -> list[str]:
        """Delete the keys of `subjects`, leaving tombstones; returns the destroyed key ids."""
        rows = self.by_subject([(workspace_id, s) for s in subjects])
        if not rows:
            return []
        now = datetime.now(UTC).isoformat()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO shredded VALUES (?, ?, ?, ?)",
                           [(r[0], workspace_id, regulation_id, now) for r in rows])  # fmt: skip
            db.executemany("DELETE FROM subject_keys WHERE key_id = ?", [(r[0],) for r in rows])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the deleted bytes leave the WAL too
        return [r[0] for r in rows]

    def data_key(self, name: str) -> bytes | None:
        row = self._db().execute("SELECT wrapped FROM data_keys WHERE name = ?", (name,)).fetchone()
        return bytes(row[0]) if row else None

    def add_data_key(self, name: str, wrapped: bytes) -> None:
        self._db().execute("INSERT OR IGNORE INTO data_keys VALUES (?, ?)", (name, wrapped))

    def all_wrapped(self) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        """(subject key id, wrapped) and (data key name, wrapped) of every key, for a re-wrap."""
        db = self._db()
        subjects = [(r[0], bytes(r[1])) for r in db.execute("SELECT key_id, wrapped FROM subject_keys")]
        data = [(r[0], bytes(r[1])) for r in db.execute("SELECT name, wrapped FROM data_keys")]
        return subjects, data

    def rewrap(self, subjects: Iterable[tuple[str, bytes]], data: Iterable[tuple[str, bytes]]) -> None:
        """Replace every wrapped key in one transaction (a master key rotation)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("UPDATE subject_keys SET wrapped = ? WHERE key_id = ?", [(w, k) for k, w in subjects])
            db.executemany("UPDATE data_keys SET wrapped = ? WHERE name = ?", [(w, n) for n, w in data])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class PostgresKeyStore:
    """The same tables in the event store's PostgreSQL schema (`cdp_subject_keys`, `cdp_shredded_keys`,
    `cdp_data_keys`)."""

    def __init__(self, conninfo: str, schema: str | None) -> None:
        import psycopg
        from psycopg import sql

        self._psycopg, self._sql = psycopg, sql
        self.conninfo = conninfo
        prefix = sql.SQL("{}.").format(sql.Identifier(schema)) if schema else sql.SQL("")
        self.keys = sql.SQL("{}{}").format(prefix, sql.Identifier("cdp_subject_keys"))
        self.tombs = sql.SQL("{}{}").format(prefix, sql.Identifier("cdp_shredded_keys"))
        self.data = sql.SQL("{}{}").format(prefix, sql.Identifier("cdp_data_keys"))
        self._local = threading.local()
        conn = self._conn()
        with conn.transaction():
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key_id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, "
                "subject TEXT NOT NULL, wrapped BYTEA NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
                "UNIQUE (workspace_id, subject))").format(self.keys))  # fmt: skip
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key_id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, "
                "regulation_id TEXT NOT NULL, shredded_at TIMESTAMPTZ NOT NULL DEFAULT now())").format(self.tombs))  # fmt: skip
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY, wrapped BYTEA NOT NULL)").format(self.data))  # fmt: skip

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._psycopg.connect(self.conninfo, autocommit=True)
            self._local.conn = conn
        return conn

    def _rows(self, rows: Iterable[Any]) -> list[KeyRow]:
        return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def by_subject(self, workspace_subjects: Sequence[tuple[str, str]]) -> list[KeyRow]:
        if not workspace_subjects:
            return []
        q = self._sql.SQL("SELECT key_id, workspace_id, subject, wrapped FROM {} WHERE (workspace_id, subject) IN "
                          "(SELECT * FROM unnest(%s::text[], %s::text[]))").format(self.keys)  # fmt: skip
        return self._rows(self._conn().execute(q, ([w for w, _ in workspace_subjects],
                                                   [s for _, s in workspace_subjects])).fetchall())  # fmt: skip

    def by_id(self, key_ids: Sequence[str]) -> list[KeyRow]:
        q = self._sql.SQL("SELECT key_id, workspace_id, subject, wrapped FROM {} WHERE key_id = ANY(%s)")
        return self._rows(self._conn().execute(q.format(self.keys), (list(key_ids),)).fetchall())

    def shredded(self, key_ids: Sequence[str]) -> set[str]:
        q = self._sql.SQL("SELECT key_id FROM {} WHERE key_id = ANY(%s)").format(self.tombs)
        return {r[0] for r in self._conn().execute(q, (list(key_ids),)).fetchall()}

    def add(self, rows: Sequence[KeyRow]) -> None:
        if not rows:
            return
        q = self._sql.SQL("INSERT INTO {} (key_id, workspace_id, subject, wrapped) VALUES (%s, %s, %s, %s) "
                          "ON CONFLICT (workspace_id, subject) DO NOTHING").format(self.keys)  # fmt: skip
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(q, list(rows))

    def destroy(self, workspace_id: str, subjects: Sequence[str], regulation_id: str) -> list[str]:
        rows = self.by_subject([(workspace_id, s) for s in subjects])
        if not rows:
            return []
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(self._sql.SQL("INSERT INTO {} (key_id, workspace_id, regulation_id) VALUES (%s, %s, %s) "
                                          "ON CONFLICT DO NOTHING").format(self.tombs),
                            [(r[0], workspace_id, regulation_id) for r in rows])  # fmt: skip
            cur.execute(self._sql.SQL("DELETE FROM {} WHERE key_id = ANY(%s)").format(self.keys), ([r[0] for r in rows],))
        return [r[0] for r in rows]

    def data_key(self, name: str) -> bytes | None:
        row = self._conn().execute(self._sql.SQL("SELECT wrapped FROM {} WHERE name = %s").format(self.data),
                                   (name,)).fetchone()  # fmt: skip
        return bytes(row[0]) if row else None

    def add_data_key(self, name: str, wrapped: bytes) -> None:
        self._conn().execute(self._sql.SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT DO NOTHING").format(self.data),
                             (name, wrapped))  # fmt: skip

    def all_wrapped(self) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        conn = self._conn()
        subjects = [(r[0], bytes(r[1])) for r in conn.execute(self._sql.SQL("SELECT key_id, wrapped FROM {}").format(self.keys))]
        data = [(r[0], bytes(r[1])) for r in conn.execute(self._sql.SQL("SELECT name, wrapped FROM {}").format(self.data))]
        return subjects, data

    def rewrap(self, subjects: Iterable[tuple[str, bytes]], data: Iterable[tuple[str, bytes]]) -> None:
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(self._sql.SQL("UPDATE {} SET wrapped = %s WHERE key_id = %s").format(self.keys),
                            [(w, k) for k, w in subjects])  # fmt: skip
            cur.executemany(self._sql.SQL("UPDATE {} SET wrapped = %s WHERE name = %s").format(self.data),
                            [(w, n) for n, w in data])  # fmt: skip

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


KeyStore = SqliteKeyStore | PostgresKeyStore
