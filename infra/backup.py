"""Online backups of what cannot be rebuilt, and their restore into an empty data dir (`cdp backup`, `cdp restore`).

What cannot be rebuilt: the event log (with the dead letters and everything else of its database), the intake
log (accepted calls, and the positions of the resolver and the relay), the key store (without it nothing sealed
can be read again) and `keys.json` (the write and read keys themselves: the log holds only their hashes). Left
out: the ClickHouse projections, which the restore rebuilds from the log; the bundled broker's log and pid; the
import checkpoints (`imports/`, a rerun of an import sends again and its duplicates are dropped); Faust's state;
and the generated `master.key`, unless asked for: next to the ciphertexts it wraps, it would open them all.

Consistent while the platform runs. Each SQLite database is copied with SQLite's online backup API, step by step
(the progress shown), from a connection that holds one read transaction for the whole copy: the copy is the
database as of one commit however much is written meanwhile (without that transaction SQLite starts the copy
again after every write of another process, and under steady ingest never finishes). The three databases are
copied in the order that keeps them consistent with one another:

1. the intake log first: the positions it keeps are at most what the event log copied next holds (the resolver
   saves its position after the event log has committed, the relay after it published what it read there);
2. the event log: calls resolved after the intake was copied are in it and not in the intake copy; a restored
   resolver reads the intake after its position again and finds what it had recorded stored (by `messageId`);
3. the key store last: every key of sealed data in the two copies was created before that data was written. A key
   destroyed meanwhile (an erasure) leaves its tombstone, and its subject reads as erased.

On PostgreSQL all of it is in the event store's schema, which `pg_dump` copies in one snapshot (`--pg-dump`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, quote, unquote, urlparse

from domain.times import UTC
from infra.config import ConfigError, Settings

FORMAT = "cdp-backup/1"
MANIFEST = "manifest.json"
PG_DUMP_FILE = "cdp.pgdump"
PAGES_PER_STEP = 1024  # SQLite pages copied per step of the online backup (4 MB at the default page size)

# (name in the backup, what it holds), in the order they are copied.
SQLITE_FILES = (
    ("intake.sqlite3", "intake log: accepted calls, the resolver's and the relay's positions"),
    ("events.sqlite3", "event store: the event log, the dead letters"),
    ("keystore.sqlite3", "key store: subject keys and data keys, wrapped by the master key"),
)
LEFT_OUT = {
    "clickhouse/": "the projections: derived from the event log, rebuilt by `cdp restore`",
    "master.key": "the master key: back it up apart from the data (or pass --include-master-key)",
    "broker.log, broker.pid": "the bundled broker's log: it keeps no data across restarts",
    "imports/": "import checkpoints: a rerun of `cdp import` sends again, and its duplicates are dropped",
    "faust/": "the Kafka driver's local state: rebuilt from cdp.events",
}

Step = Callable[[str, int, int], None]  # (file, done, total): progress of one file


class BackupError(ConfigError):
    """A backup or restore that cannot be done as asked; `code` names the case, the message says the fix."""

    def __init__(self, code: str, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = exit_code


def cdp_version() -> str:
    try:
        return metadata.version("cdp")
    except metadata.PackageNotFoundError:
        return "unknown"


# Where the configured SQLite files are ------------------------------------------------------------------------


def sqlite_paths(settings: Settings) -> dict[str, Path]:
    """The configured SQLite files, by their name in a backup: the data dir's, or those of `CDP_EVENT_STORE=
    sqlite:///path` (`path`, `path.intake`, `path.keys`, as infra/eventstore.py and infra/keyring.py name them)."""
    if settings.event_store.startswith("sqlite://"):
        store = Path(urlparse(settings.event_store).path)
        return {"events.sqlite3": store, "intake.sqlite3": Path(f"{store}.intake"),
                "keystore.sqlite3": Path(f"{store}.keys")}  # fmt: skip
    return {"events.sqlite3": settings.sqlite_path, "intake.sqlite3": settings.data_dir / "intake.sqlite3",
            "keystore.sqlite3": settings.key_store_path}  # fmt: skip


def _with_journals(path: Path) -> list[Path]:
    return [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]


# Files and directories, owner-only ---------------------------------------------------------------------------


def _new_file(path: Path) -> None:
    """An empty file only the owner can read and write (whatever this process's umask)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _backup_dir(target: Path, settings: Settings) -> bool:
    """Create the backup dir owner-only (0700); refuse one that holds anything. Returns whether it was created."""
    target = target.resolve()
    data_dir = settings.data_dir.resolve()
    if target == data_dir or data_dir in target.parents:
        raise BackupError("backup_in_data_dir", f"{target} is inside the data dir {data_dir}: a backup kept with "
                          "the data is lost with it; give a directory elsewhere (another disk, or a mount that "
                          "is copied off the machine)")  # fmt: skip
    if target.exists():
        if not target.is_dir():
            raise BackupError("backup_dir_not_a_directory", f"{target} is a file: give a new directory")
        if any(target.iterdir()):
            raise BackupError("backup_dir_not_empty", f"{target} is not empty: give a new directory for each "
                              "backup (an earlier backup there is left as it is)", exit_code=1)  # fmt: skip
        os.chmod(target, 0o700)
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    os.mkdir(target, 0o700)
    os.chmod(target, 0o700)  # whatever the umask
    return True


# SQLite copies -------------------------------------------------------------------------------------------------


def _connect_existing(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """A connection to a database that must exist (never creates one)."""
    mode = "ro" if read_only else "rw"
    return sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True, timeout=30.0, isolation_level=None)


def copy_sqlite(source: Path, target: Path, name: str, step: Step, read_only: bool = False) -> None:
    """Copy a database that may be written meanwhile, as of one commit, into a new owner-only single file."""
    src = _connect_existing(source, read_only)
    try:
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the read transaction, and its snapshot, start
        _new_file(target)
        dst = sqlite3.connect(target, isolation_level=None)
        total = [1]

        def copied(_status: int, remaining: int, pages: int) -> None:
            total[0] = pages
            step(name, pages - remaining, pages)

        try:
            step(name, 0, 1)
            src.backup(dst, pages=PAGES_PER_STEP, progress=copied)
            dst.execute("PRAGMA journal_mode=DELETE")  # one file, no WAL beside it
            checked = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
        src.execute("ROLLBACK")
    finally:
        src.close()
    if checked != "ok":
        raise BackupError("copy_damaged", f"the copy of {source} does not pass SQLite's check ({checked}): the "
                          "database itself may be damaged; run `sqlite3 FILE 'PRAGMA integrity_check'` on it")  # fmt: skip
    step(name, total[0], total[0])


def _one(db: sqlite3.Connection, sql: str, default: int = 0) -> int:
    try:
        row = db.execute(sql).fetchone()
    except sqlite3.OperationalError:  # a table not created yet (a store never written)
        return default
    return int(row[0]) if row and row[0] is not None else default


def _positions(copies: dict[str, Path]) -> dict[str, int]:
    """What the copies hold: the log's last position, the intake's, the stage positions, the dead letters."""
    with contextlib.closing(_connect_existing(copies["events.sqlite3"], read_only=True)) as events:
        log_position = _one(events, "SELECT max(rowid) FROM stored_events")
        dead_letters = _one(events, "SELECT count(*) FROM cdp_dead_letters")
    with contextlib.closing(_connect_existing(copies["intake.sqlite3"], read_only=True)) as intake:
        found = {
            "intake_position": _one(intake, "SELECT max(position) FROM intake"),
            "resolver_position": _one(intake, "SELECT position FROM stage_positions WHERE name = 'resolver'"),
            "relay_position": _one(intake, "SELECT position FROM stage_positions WHERE name = 'relay'"),
        }
    with contextlib.closing(_connect_existing(copies["keystore.sqlite3"], read_only=True)) as keys:
        subject_keys = _one(keys, "SELECT count(*) FROM subject_keys")
        destroyed = _one(keys, "SELECT count(*) FROM shredded")
    return {"log_position": log_position, **found, "dead_letters": dead_letters, "subject_keys": subject_keys,
            "destroyed_keys": destroyed}  # fmt: skip


# The backup ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backup:
    path: Path
    manifest: dict[str, Any]


def _master_key(settings: Settings, include: bool) -> dict[str, Any]:
    if settings.master_key:
        if include:
            raise BackupError("master_key_in_environment", "--include-master-key: the master key is CDP_MASTER_KEY, "
                              "in the environment, and is never written to a file by cdp; keep it where you keep "
                              "that environment's secrets, and leave out --include-master-key")  # fmt: skip
        return {"source": "CDP_MASTER_KEY", "included": False}
    return {"source": "master.key", "path": str(settings.master_key_path), "included": include}


def _manifest(settings: Settings, kind: str, files: dict[str, dict[str, Any]], master: dict[str, Any],
              found: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {
        "format": FORMAT,
        "cdp_version": cdp_version(),
        "created_at": datetime.now(UTC).isoformat(),
        "event_store": kind,
        **found,
        "files": files,
        "master_key": master,
        "data_dir": str(settings.data_dir),
        "left_out": {k: v for k, v in LEFT_OUT.items() if k != "master.key" or not master["included"]},
    }


def _private_copy(source: Path, target: Path) -> None:
    _write_private(target, source.read_bytes())  # keys.json and master.key are replaced whole, never in place


@contextlib.contextmanager
def _cleaned_up_on_failure(target: Path, created: bool) -> Iterator[None]:
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for entry in target.iterdir():
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        raise


def take_backup(settings: Settings, target: Path, include_master_key: bool, step: Step) -> Backup:
    """Back up the configured SQLite stores and keys.json into `target` (new or empty), online; manifest last."""
    if settings.uses_postgres:
        raise BackupError("postgresql_event_store", "the event store is PostgreSQL (CDP_EVENT_STORE): back it up "
                          "with pg_dump (`cdp backup DIR --pg-dump` runs it)")  # fmt: skip
    sources = sqlite_paths(settings)
    missing = [str(p) for p in sources.values() if not p.exists()]
    if len(missing) == len(sources):
        raise BackupError("no_event_store", f"no event store at {sources['events.sqlite3']}: nothing to back up. Is "
                          "CDP_DATA_DIR (or CDP_EVENT_STORE) the one `cdp up` runs with?")  # fmt: skip
    if missing:
        raise BackupError("store_incomplete", f"{', '.join(missing)} missing beside {sources['events.sqlite3']}: the "
                          "stores are created together by `cdp up`; start it once on this data dir, or check "
                          "CDP_DATA_DIR")  # fmt: skip
    master = _master_key(settings, include_master_key)
    if include_master_key and not settings.master_key_path.exists():
        raise BackupError("no_master_key", f"--include-master-key: there is no {settings.master_key_path}")
    target = target.resolve()
    created = _backup_dir(target, settings)
    with _cleaned_up_on_failure(target, created):
        copies: dict[str, Path] = {}
        for name, _ in SQLITE_FILES:
            copies[name] = target / name
            copy_sqlite(sources[name], copies[name], name, step)
        if settings.keys_path.exists():
            _private_copy(settings.keys_path, target / "keys.json")
        if include_master_key:
            _private_copy(settings.master_key_path, target / "master.key")
        what = dict(SQLITE_FILES) | {"keys.json": "the write and read keys", "master.key": "the master key"}
        files = {p.name: {"holds": what[p.name], "bytes": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(target.iterdir())}  # fmt: skip
        manifest = _manifest(settings, "sqlite", files, master, _positions(copies))
        _write_private(target / MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
        _fsync_dir(target)
    return Backup(target, manifest)


# PostgreSQL ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgCommand:
    argv: list[str]
    env: dict[str, str]  # PGPASSWORD, when the URL has a password
    shown: str  # the command as the user would type it, without the password


def _pg_target(settings: Settings) -> tuple[str, str, str]:
    """(libpq URL without password or schema, the password, the schema) of CDP_EVENT_STORE."""
    from infra.eventstore import postgres_parameters

    url = urlparse(settings.event_store)
    schema = (parse_qs(url.query).get("schema") or ["public"])[0]
    user = quote(unquote(url.username or "postgres"), safe="")
    host = url.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in postgres_parameters(settings.event_store).items())
    libpq = f"postgresql://{user}@{host}:{url.port or 5432}/{url.path.lstrip('/') or 'postgres'}"
    return libpq + (f"?{query}" if query else ""), unquote(url.password or ""), schema


def pg_dump_command(settings: Settings, target: Path, snapshot: str | None = None) -> PgCommand:
    libpq, password, schema = _pg_target(settings)
    argv = ["pg_dump", "--format=custom", f"--schema={schema}", f"--file={target / PG_DUMP_FILE}",
            *([f"--snapshot={snapshot}"] if snapshot else []), f"--dbname={libpq}"]  # fmt: skip
    shown = " ".join(shlex.quote(a) for a in argv if not a.startswith("--snapshot"))
    if password:
        shown = f"PGPASSWORD=<the password in CDP_EVENT_STORE> {shown}"
    return PgCommand(argv, {"PGPASSWORD": password} if password else {}, shown)


def pg_restore_command(settings: Settings, source: Path) -> PgCommand:
    libpq, password, _ = _pg_target(settings)
    argv = ["pg_restore", "--no-owner", "--exit-on-error", "--single-transaction", f"--dbname={libpq}",
            str(source / PG_DUMP_FILE)]  # fmt: skip
    shown = " ".join(shlex.quote(a) for a in argv)
    if password:
        shown = f"PGPASSWORD=<the password in CDP_EVENT_STORE> {shown}"
    return PgCommand(argv, {"PGPASSWORD": password} if password else {}, shown)


def _pg_conninfo(settings: Settings) -> str:
    from infra.eventstore import eventsourcing_env, postgres_conninfo

    return postgres_conninfo(eventsourcing_env(settings))


def _pg_run(command: PgCommand, what: str) -> None:
    program = shutil.which(command.argv[0])
    if program is None:
        raise BackupError(f"no_{command.argv[0]}", f"{command.argv[0]} is not on PATH: install PostgreSQL's client "
                          f"programs (the server's major version or newer), or run {what} yourself")  # fmt: skip
    done = subprocess.run([program, *command.argv[1:]], env={**os.environ, **command.env}, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0:
        said = " ".join(done.stderr.split())[:1500]
        raise BackupError(f"{command.argv[0]}_failed", f"{command.argv[0]} exited {done.returncode}: {said}", 1)


def take_pg_backup(settings: Settings, target: Path, include_master_key: bool, step: Step) -> Backup:
    """pg_dump of the event store's schema (one snapshot: the log, intake, dead letters, key store) and keys.json."""
    import psycopg
    from psycopg import sql

    master = _master_key(settings, include_master_key)
    if include_master_key and not settings.master_key_path.exists():
        raise BackupError("no_master_key", f"--include-master-key: there is no {settings.master_key_path}")
    _, _, schema = _pg_target(settings)
    target = target.resolve()
    created = _backup_dir(target, settings)
    with _cleaned_up_on_failure(target, created):
        with psycopg.connect(_pg_conninfo(settings)) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            table = conn.execute("SELECT table_name FROM information_schema.columns WHERE table_schema = %s AND "
                                 "column_name = 'notification_id' LIMIT 1", (schema,)).fetchone()  # fmt: skip
            if table is None:
                raise BackupError("no_event_store", f"no event store in schema {schema!r} of CDP_EVENT_STORE: nothing "
                                  "to back up. Is it the URL `cdp up` runs with?")  # fmt: skip
            log_position = conn.execute(sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table[0]))).fetchone()[0]  # type: ignore[index]  # fmt: skip
            step(PG_DUMP_FILE, 0, 1)
            _pg_run(pg_dump_command(settings, target, snapshot), "pg_dump")  # while the snapshot is exported
        os.chmod(target / PG_DUMP_FILE, 0o600)
        step(PG_DUMP_FILE, 1, 1)
        if settings.keys_path.exists():
            _private_copy(settings.keys_path, target / "keys.json")
        if include_master_key:
            _private_copy(settings.master_key_path, target / "master.key")
        what = {PG_DUMP_FILE: f"pg_dump of schema {schema}: the event log, the dead letters, the intake log, the "
                "key store", "keys.json": "the write and read keys", "master.key": "the master key"}  # fmt: skip
        files = {p.name: {"holds": what[p.name], "bytes": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(target.iterdir())}  # fmt: skip
        manifest = _manifest(settings, "postgresql", files, master, {"log_position": int(log_position)})
        manifest["schema"] = schema
        _write_private(target / MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
        _fsync_dir(target)
    return Backup(target, manifest)


# Restore -------------------------------------------------------------------------------------------------------


def read_manifest(source: Path) -> dict[str, Any]:
    """The backup's manifest, its files there and unchanged (sizes and SHA-256 as written)."""
    path = source / MANIFEST
    if not source.is_dir():
        raise BackupError("no_backup", f"{source} is not a directory: give the directory `cdp backup` wrote")
    if not path.exists():
        raise BackupError("no_manifest", f"{source} has no {MANIFEST}: it is not a backup of `cdp backup`, or one "
                          "cut short (the manifest is written last); use another backup")  # fmt: skip
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise BackupError("bad_manifest", f"{path} is not JSON ({exc}): the backup is damaged; use another") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("bad_manifest", f"{path} is not a manifest this cdp reads (format "
                          f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {FORMAT!r})")  # fmt: skip
    for name, meta in manifest.get("files", {}).items():
        file = source / name
        if not file.is_file():
            raise BackupError("backup_incomplete", f"{file} is missing: the manifest lists it; the backup is "
                              "incomplete, use another")  # fmt: skip
        if file.stat().st_size != meta.get("bytes") or _sha256(file) != meta.get("sha256"):
            raise BackupError("backup_damaged", f"{file} is not the file the backup wrote (its size or SHA-256 "
                              "differs from the manifest's): the backup is damaged; use another")  # fmt: skip
    return manifest


def _occupied(settings: Settings) -> list[str]:
    """What in the target would be overwritten or mixed with the restored stores."""
    found = [str(p) for path in sqlite_paths(settings).values() for p in _with_journals(path) if p.exists()]
    if settings.keys_path.exists():
        found.append(str(settings.keys_path))
    chdb = settings.chdb_path if not settings.clickhouse_url else None
    if chdb is not None and chdb.exists() and any(chdb.iterdir()):
        found.append(f"{chdb}/")
    return found


def _restore_master_key(settings: Settings, source: Path, manifest: dict[str, Any], key_file: Path | None) -> str:
    """Put the master key where the restored data dir reads it; says where it came from. Never generates one."""
    taken_with = manifest.get("master_key", {}).get("source", "master.key")
    how = (f"set CDP_MASTER_KEY to the key the platform ran with" if taken_with == "CDP_MASTER_KEY" else
           f"pass the copy of {manifest.get('master_key', {}).get('path', 'master.key')} you keep apart from the "
           f"backups as `cdp restore {source} --master-key-file FILE`, or put it at {settings.master_key_path}, or set "
           "CDP_MASTER_KEY to its contents")  # fmt: skip
    if key_file is not None:
        if settings.master_key:
            raise BackupError("two_master_keys", "--master-key-file and CDP_MASTER_KEY are both given: give one")
        if not key_file.is_file():
            raise BackupError("no_master_key", f"--master-key-file {key_file}: no such file")
        _private_copy(key_file, settings.master_key_path)
        return str(key_file)
    if settings.master_key:
        return "CDP_MASTER_KEY"
    included = source / "master.key"
    if included.exists():
        if settings.master_key_path.exists() and settings.master_key_path.read_bytes() != included.read_bytes():
            raise BackupError("two_master_keys", f"{settings.master_key_path} is not the master.key in the backup: "
                              "remove one of them")  # fmt: skip
        _private_copy(source / "master.key", settings.master_key_path)
        return f"{source / 'master.key'} (in the backup)"
    if settings.master_key_path.exists():
        return str(settings.master_key_path)
    raise BackupError("master_key_missing", "no master key to open the backup's key store with: the backup does not "
                      f"hold it (it was taken with {taken_with}, without --include-master-key). Give it: {how}")  # fmt: skip


def _check_master_key(settings: Settings, where: str, manifest: dict[str, Any], source: Path) -> None:
    from infra.keyring import Keyring, MasterKeyMismatch, load_master_key, open_key_store

    master, _ = load_master_key(settings)  # never generated here: _restore_master_key put it there, or it is set
    store = open_key_store(settings)
    try:
        Keyring(store, master)
    except MasterKeyMismatch:
        taken_with = manifest.get("master_key", {}).get("source", "master.key")
        raise BackupError("wrong_master_key", f"the master key from {where} does not open the backup's key store: "
                          f"the backup was taken with another one ({taken_with}; after a rotation, the one current "
                          f"when the backup was taken). Give that one: `cdp restore {source} --master-key-file FILE`, "
                          f"{settings.master_key_path}, or CDP_MASTER_KEY") from None  # fmt: skip
    finally:
        store.close()


@dataclass(frozen=True)
class Restored:
    manifest: dict[str, Any]
    master_key_from: str


def restore_files(settings: Settings, source: Path, key_file: Path | None, step: Step) -> Restored:
    """Put a SQLite backup's files in place in an empty data dir, owner-only, and check the master key opens them.

    Nothing is left behind when it fails: the target is as empty as it was. Projections are rebuilt afterwards
    (`rebuild_projections`)."""
    from infra.data_dir import secure_data_dir

    source = source.resolve()
    manifest = read_manifest(source)
    if manifest.get("event_store") != "sqlite":
        raise BackupError("postgresql_backup", f"{source} is a pg_dump of a PostgreSQL event store: restore it with "
                          "`cdp restore DIR --pg-restore` and CDP_EVENT_STORE set to the database")  # fmt: skip
    if settings.uses_postgres:
        raise BackupError("sqlite_backup", f"{source} holds SQLite files, and CDP_EVENT_STORE is PostgreSQL: unset "
                          "CDP_EVENT_STORE to restore into the data dir")  # fmt: skip
    occupied = _occupied(settings)
    if occupied:
        raise BackupError("data_dir_not_empty", f"the data dir {settings.data_dir} already holds an event store or "
                          f"its projections ({', '.join(occupied)}): restore into a new, empty data dir (set "
                          "CDP_DATA_DIR to it); nothing was changed", exit_code=1)  # fmt: skip
    secure_data_dir(settings)
    targets = sqlite_paths(settings)
    written: list[Path] = []
    master_existed = settings.master_key_path.exists()
    try:
        where = _restore_master_key(settings, source, manifest, key_file)
        for name, _ in SQLITE_FILES:
            partial = targets[name].with_name(f".{targets[name].name}.restoring")
            written.append(partial)
            partial.unlink(missing_ok=True)
            targets[name].parent.mkdir(parents=True, exist_ok=True)
            copy_sqlite(source / name, partial, name, step, read_only=True)
        for name, _ in SQLITE_FILES:
            os.replace(targets[name].with_name(f".{targets[name].name}.restoring"), targets[name])
            written.append(targets[name])
        _check_master_key(settings, where, manifest, source)
        if (source / "keys.json").exists():
            _private_copy(source / "keys.json", settings.keys_path)
            written.append(settings.keys_path)
        _fsync_dir(settings.data_dir)
    except BaseException:
        for path in written:
            for p in _with_journals(path):
                p.unlink(missing_ok=True)
        if not master_existed and not settings.master_key:
            settings.master_key_path.unlink(missing_ok=True)
        raise
    return Restored(manifest, where)


def rebuild_projections(settings: Settings, progress: Callable[[int], None]) -> tuple[int, int]:
    """Replay the restored log into fresh projections (as `cdp rebuild` does); cdp.events is published again from
    position 1. Returns (the log's last position, the position reached)."""
    from infra.bootstrap import rebuild
    from infra.clickhouse import clickhouse_client
    from infra.eventstore import open_event_store, open_intake_log
    from ingest.intake_log import RELAY

    store = open_event_store(settings)
    client = clickhouse_client(settings)
    total = store.last_position()
    reached = rebuild(store, client, settings.clickhouse_database, progress=progress)
    open_intake_log(settings).save_position(RELAY, 0)
    return total, reached


def restore_pg(settings: Settings, source: Path, key_file: Path | None) -> Restored:
    """pg_restore a `--pg-dump` backup into the schema it was taken from, which must hold no event store."""
    import psycopg
    from psycopg import sql

    from infra.data_dir import secure_data_dir

    source = source.resolve()
    manifest = read_manifest(source)
    if manifest.get("event_store") != "postgresql":
        raise BackupError("sqlite_backup", f"{source} holds SQLite files, not a pg_dump: leave out --pg-restore and "
                          "unset CDP_EVENT_STORE to restore it into the data dir")  # fmt: skip
    if not settings.uses_postgres:
        raise BackupError("no_postgresql", f"{source} is a pg_dump: set CDP_EVENT_STORE to the PostgreSQL database to "
                          f"restore it into (schema {manifest.get('schema')!r})")  # fmt: skip
    _, _, schema = _pg_target(settings)
    if schema != manifest.get("schema"):
        raise BackupError("other_schema", f"the dump holds schema {manifest.get('schema')!r} and CDP_EVENT_STORE names "
                          f"{schema!r}: pg_restore puts it back under its own name; set ?schema="
                          f"{manifest.get('schema')} in CDP_EVENT_STORE")  # fmt: skip
    if settings.keys_path.exists():
        raise BackupError("data_dir_not_empty", f"{settings.keys_path} exists: restore into a new data dir (set "
                          "CDP_DATA_DIR to it); nothing was changed", exit_code=1)  # fmt: skip
    with psycopg.connect(_pg_conninfo(settings), autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                             "%s", (schema,)).fetchall()]  # fmt: skip
        if tables:
            listed = ", ".join(sorted(tables)[:6])
            raise BackupError("schema_not_empty", f"schema {schema!r} already holds tables ({listed}): restore into "
                              "a database where it does not exist (or drop it first, if it is meant to go); nothing "
                              "was changed", exit_code=1)  # fmt: skip
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(schema)))  # empty: the dump creates it
    secure_data_dir(settings)
    master_existed = settings.master_key_path.exists()
    restored = False
    try:
        where = _restore_master_key(settings, source, manifest, key_file)
        _pg_run(pg_restore_command(settings, source), "pg_restore")
        restored = True
        _check_master_key(settings, where, manifest, source)
        if (source / "keys.json").exists():
            _private_copy(source / "keys.json", settings.keys_path)
    except BaseException:
        if restored:
            with psycopg.connect(_pg_conninfo(settings), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        if not master_existed and not settings.master_key:
            settings.master_key_path.unlink(missing_ok=True)
        raise
    return Restored(manifest, where)
