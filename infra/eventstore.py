"""The event store: the eventsourcing persistence environment chosen by configuration."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, unquote, urlparse
from uuid import UUID

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from psycopg import sql

from domain.application import CustomerData
from infra.config import ConfigError, Settings
from ingest.intake_log import IntakeLog, IntakeUnavailable, PostgresIntakeLog, SqliteIntakeLog

# Failures of a store that say nothing about what was being written: the same work is tried again.
TRANSIENT_STORE_ERRORS = (OperationalError, InterfaceError, sqlite3.OperationalError, psycopg.OperationalError,
                          IntakeUnavailable)  # fmt: skip


def eventsourcing_env(settings: Settings) -> dict[str, str]:
    """eventsourcing settings for the configured store: SQLite file (default) or PostgreSQL."""
    if settings.uses_postgres:
        url = urlparse(settings.event_store)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_POOL_SIZE": "4",
        }
        schema = parse_qs(url.query).get("schema")
        if schema:
            env["POSTGRES_SCHEMA"] = schema[0]
        env.update({PARAMETER_PREFIX + name: value for name, value in postgres_parameters(settings.event_store).items()})
        return env
    if settings.event_store.startswith("sqlite://"):
        path = urlparse(settings.event_store).path
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path = str(settings.sqlite_path)
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path, "SQLITE_LOCK_TIMEOUT": "30"}


PARAMETER_PREFIX = "CDP_POSTGRES_PARAMETER_"  # in the env of eventsourcing_env: the URL's libpq parameters
_LIBPQ_ENV: set[str] = set()  # the libpq variables prepare_event_store set in this process


def postgres_parameters(url: str) -> dict[str, str]:
    """The connection parameters of a postgresql:// URL's query other than `schema` (sslmode, sslrootcert, ...),
    for every connection to the event store's PostgreSQL; ConfigError for a name libpq does not know."""
    known = {o.keyword.decode(): o for o in psycopg.pq.Conninfo.get_defaults()}
    parameters: dict[str, str] = {}
    for name, values in parse_qs(urlparse(url).query, keep_blank_values=True).items():
        if name == "schema":
            continue
        if name not in known or name in ("dbname", "host", "hostaddr", "port", "user", "password", "service"):
            raise ConfigError(
                f"CDP_EVENT_STORE: {name}={values[-1]!r} is not a connection parameter it can take; use libpq's "
                "(sslmode, sslrootcert, sslcert, sslkey, connect_timeout, application_name, ...) and put the host, "
                "port, user, password and database in the URL itself"
            )
        if known[name].envvar is None:
            raise ConfigError(f"CDP_EVENT_STORE: {name} cannot be given to the event store's connection pool; "
                              "remove it from the URL")  # fmt: skip
        parameters[name] = values[-1]
    return parameters


def _parameters(env: dict[str, str]) -> dict[str, str]:
    return {k[len(PARAMETER_PREFIX) :]: v for k, v in env.items() if k.startswith(PARAMETER_PREFIX)}


def prepare_event_store(settings: Settings, env: dict[str, str]) -> None:
    """What the store needs before eventsourcing opens it: the PostgreSQL schema, if one is named, and the URL's
    connection parameters where libpq reads them for the pool eventsourcing opens (which takes only the host,
    port, database, user and password): its PG* environment variables, in this process."""
    if settings.uses_postgres:
        known = {o.keyword.decode(): o.envvar.decode() for o in psycopg.pq.Conninfo.get_defaults() if o.envvar}
        wanted = {known[name]: value for name, value in _parameters(env).items()}
        for name in _LIBPQ_ENV - wanted.keys():  # set for an earlier store of this process, not this one
            os.environ.pop(name, None)
        os.environ.update(wanted)
        _LIBPQ_ENV.clear()
        _LIBPQ_ENV.update(wanted)
        _ensure_postgres_schema(env)


_opening = threading.RLock()
_opening_depth = 0  # how deep this process is inside opening_stores (the advisory lock is taken once)


@contextmanager
def opening_stores(settings: Settings) -> Iterator[None]:
    """Open the stores inside this: on PostgreSQL, one process at a time per schema, across machines.

    Opening runs DDL (eventsourcing's CREATE TABLE IF NOT EXISTS and CREATE OR REPLACE FUNCTION, the intake
    log's, key store's and dead-letter store's tables), which PostgreSQL does not serialise: two processes
    starting at once (the workers of `cdp ingest`, two ingest machines, the core) fail with "tuple
    concurrently updated" or a duplicate pg_type key. A session advisory lock makes them take turns."""
    global _opening_depth
    if not settings.uses_postgres:
        yield
        return
    with _opening:
        if _opening_depth:  # nested in this process: the lock is already held
            _opening_depth += 1
            try:
                yield
            finally:
                _opening_depth -= 1
            return
        env = eventsourcing_env(settings)
        lock_id = int.from_bytes(hashlib.sha256(f"cdp:{env.get('POSTGRES_SCHEMA', '')}".encode()).digest()[:8],
                                 "big", signed=True)  # fmt: skip
        with psycopg.connect(postgres_conninfo(env), autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_id,))  # released when the connection closes
            _opening_depth = 1
            try:
                yield
            finally:
                _opening_depth = 0


def _ensure_postgres_schema(env: dict[str, str]) -> None:
    schema = env.get("POSTGRES_SCHEMA")
    if not schema:
        return
    import psycopg

    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=int(env["POSTGRES_PORT"]),
        user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"] or None, autocommit=True, **_parameters(env),
    ) as conn:  # fmt: skip
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def existing_ids_query(recorder: Any) -> Callable[[list[UUID]], set[UUID]] | None:
    """One query answering which aggregate ids are stored (dedup of a whole group commit)."""
    if isinstance(recorder, SQLiteAggregateRecorder):

        def sqlite_existing(ids: list[UUID]) -> set[UUID]:
            found: set[UUID] = set()
            for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
                chunk = [i.hex for i in ids[start : start + 500]]
                statement = (
                    f"SELECT DISTINCT originator_id FROM {recorder.events_table_name} "
                    f"WHERE originator_id IN ({','.join('?' * len(chunk))})"
                )
                with recorder.datastore.transaction(commit=False) as cursor:
                    cursor.execute(statement, chunk)
                    found.update(UUID(row[0]) for row in cursor.fetchall())
            return found

        return sqlite_existing
    if isinstance(recorder, PostgresAggregateRecorder):
        statement = sql.SQL("SELECT DISTINCT originator_id FROM {}.{} WHERE originator_id = ANY(%s)").format(
            sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name)
        )

        def postgres_existing(ids: list[UUID]) -> set[UUID]:
            if not ids:
                return set()
            with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
                cursor.execute(statement, [ids])
                return {UUID(str(row["originator_id"])) for row in cursor.fetchall()}

        return postgres_existing
    return None


def open_event_store(settings: Settings) -> CustomerData:
    """The write model on the configured store, with its identity state loaded from the log."""
    env = eventsourcing_env(settings)
    with opening_stores(settings):
        prepare_event_store(settings, env)
        app = CustomerData(env=env, sealer=open_keyring(settings))
    app.existing_ids = existing_ids_query(app.recorder) or app.existing_ids
    return app


def postgres_conninfo(env: dict[str, str]) -> str:
    """A psycopg connection string for the event store's PostgreSQL (the intake log and key store use it)."""
    return psycopg.conninfo.make_conninfo(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"] or None, **_parameters(env),
    )  # fmt: skip


def open_keyring(settings: Settings) -> Any:
    from infra.keyring import open_keyring as keyring_of  # the keyring opens its store through this module

    return keyring_of(settings)


def open_intake_log(settings: Settings) -> IntakeLog:
    """The intake log: a SQLite file of its own in the data dir (next to the event store's), or tables in the
    event store's PostgreSQL schema."""
    if settings.uses_postgres:
        env = eventsourcing_env(settings)
        with opening_stores(settings):
            _ensure_postgres_schema(env)
            return PostgresIntakeLog(postgres_conninfo(env), env.get("POSTGRES_SCHEMA"), open_keyring(settings))
    store = eventsourcing_env(settings)["SQLITE_DBNAME"]
    return SqliteIntakeLog(settings.data_dir / "intake.sqlite3" if store == str(settings.sqlite_path)
                           else Path(f"{store}.intake"), open_keyring(settings))  # fmt: skip
