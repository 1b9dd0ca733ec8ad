"""The `cdp` command line."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import httpx
import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from infra.api_client import api_verify
from infra.bootstrap import DERIVED_TOPICS, Platform
from infra.children import Children
from infra.config import ConfigError, Settings, load_settings
from infra.data_dir import secure_data_dir
from infra.instance_lock import NAMES, AlreadyRunning, Holder, InstanceLock
from infra.server import create_app
from infra.startup_checks import PortUnavailable, check_ports
from infra.access_cli import audit, register_key_commands, workspaces_app
from infra.import_cli import import_files
from infra.predict_cli import predict
from infra.tags_cli import tags_app
from infra.webhooks_cli import webhooks_app
from streams.relay import EVENTS_TOPIC

app = typer.Typer(help="Event-sourced customer data platform.", no_args_is_help=True)
app.add_typer(tags_app, name="tags")
app.add_typer(webhooks_app, name="webhooks")
app.command("import")(import_files)
keys_app = typer.Typer(help="Keys: the start keys, a workspace's keys, the master key.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
register_key_commands(keys_app)
app.add_typer(workspaces_app, name="workspaces")
app.command("audit")(audit)
app.command("predict")(predict)
console = Console()


def _settings():  # type: ignore[no-untyped-def]
    try:
        return load_settings()
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _banner(platform: Platform) -> None:
    """What runs where. Keys are shown only on the start that generated them; the master key never."""
    from infra.keyring import master_key_generated

    s = platform.settings
    base = f"{s.http_scheme}://{s.http_host}:{s.http_port}"
    console.print(f"[bold green]cdp is up[/bold green] on {base}  (data in {s.data_dir})")
    if s.ingest_workers:
        console.print(f"  ingest    : {s.http_scheme}://{s.http_host}:{s.ingest_port}  ({s.ingest_workers} worker "
                      "processes; point Segment SDKs here)")  # fmt: skip
    console.print(f"  query API : {base}  (also takes ingest, through the core process)")
    console.print(f"  dashboard : [bold]{base}/dashboard[/bold]  (sign in with the read key)")
    generated = platform.keys.generated
    if "write" in generated:
        console.print(f"  write key : [bold]{platform.keys.write_key}[/bold]  (new; HTTP Basic username for /v1/batch …)")
    if "read" in generated:
        console.print(f"  read key  : [bold]{platform.keys.read_key}[/bold]  (new; Authorization: Bearer for /v1/profiles …)")
    if "admin" in generated:
        console.print(f"  admin key : [bold]{platform.keys.admin_key}[/bold]  (new; rules, tags, keys, regulations, audit)")
    if "platform" in generated:
        console.print(f"  platform key: [bold]{platform.keys.platform_key}[/bold]  (new; workspaces and /metrics)")
    console.print(f"  keys file : {s.keys_path}  (`cdp keys show` prints the keys)")
    if master_key_generated(s):
        console.print(f"  [yellow]master key: generated into {s.master_key_path}[/yellow]: back it up now, apart from "
                      "the data dir's backups (without it sealed data cannot be read; with them, it reads it all)")  # fmt: skip
    broker = "bundled broker" if s.uses_bundled_broker else "broker"
    topics = ", ".join([EVENTS_TOPIC, *DERIVED_TOPICS]) + f"; ingest from {s.ingest_topic}"
    console.print(f"  kafka     : {broker} at {s.bootstrap_servers}, topics {topics}")
    console.print(f"  event store: {'PostgreSQL' if s.uses_postgres else 'SQLite ' + str(s.sqlite_path)}")
    console.print(f"  API docs  : {base}/docs    Ctrl-C stops")


def _tls_options(settings: Settings) -> dict[str, str]:
    """uvicorn's HTTPS arguments when CDP_TLS_CERTFILE and CDP_TLS_KEYFILE are set (else plain HTTP)."""
    return {"ssl_certfile": settings.tls_certfile, "ssl_keyfile": settings.tls_keyfile} if settings.uses_tls else {}


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _wait_ingest(settings: Settings, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until the ingest workers answer on their port (or say why not: their exit shows in the terminal).

    Over HTTPS on a loopback address the certificate is not verified: this asks its own child process, on this
    machine, whether it listens, and sends nothing but GET /healthz (no key, no data); a certificate issued for
    the public name would not match 127.0.0.1. On any other address it is verified as `_verify` says."""
    url = f"{settings.http_scheme}://{settings.http_host}:{settings.ingest_port}/healthz"
    verify = api_verify(settings) if settings.uses_tls and not _is_loopback(settings.http_host) else not settings.uses_tls
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    console.print(f"[yellow]the ingest workers do not answer on {url}[/yellow]: is CDP_INGEST_PORT free? "
                  "Ingest still works through the core's address.")  # fmt: skip


def _exit_with_parent(parent: int) -> None:
    """Stop this process (and so its workers) when the process that started it is gone (`cdp up` killed)."""

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; `cdp up` exits 0 instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _secure(settings: Settings) -> None:
    """The data dir, created owner-only; a data dir that cannot be is said in one line (exit 2)."""
    try:
        secure_data_dir(settings)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _addresses(settings: Settings, role: str) -> list[str]:
    """What a lock file says the process serves (for the message a second one gets)."""
    base = f"{settings.http_scheme}://{settings.http_host}"
    ingest = f"ingest {base}:{settings.ingest_port}"
    if role == "ingest":
        return [ingest]
    if role == "relay":
        return [f"kafka {settings.bootstrap_servers}"]
    return [f"API {base}:{settings.http_port}", *([ingest] if settings.ingest_workers else []),
            f"kafka {settings.bootstrap_servers}"]  # fmt: skip


def _stop_hint(holder: Holder) -> str:
    return f"Ctrl-C in its terminal, or `kill {holder.pid}`" if holder.pid else "Ctrl-C in its terminal"


def _hold(settings: Settings, role: str, command: str, parent: int | None = None) -> InstanceLock:
    """Take the data dir's lock of `role` for this command, or say who has it and exit 1 (nothing opened yet).

    Held until `release` (a `with` block), at the latest until the process exits. A relay or ingest worker that
    a `cdp up` starts (`parent`) waits for one that a `cdp up` killed before left behind: it stops by itself."""
    lock = InstanceLock(settings.data_dir, role)
    try:
        try:
            return lock.acquire(command, _addresses(settings, role), parent)
        except AlreadyRunning as exc:
            if not (parent and exc.holder.parent and exc.holder.parent != parent):
                raise
            lock.wait_released(60)
            return lock.acquire(command, _addresses(settings, role), parent)
    except AlreadyRunning as exc:
        holder, where = exc.holder, settings.data_dir
        if role != "up":
            said = (f"[red]{NAMES[role]} already runs[/red] on the data dir {where}: {holder.describe()}. Stop it "
                    f"first ({_stop_hint(holder)}), or give this one another CDP_DATA_DIR")  # fmt: skip
        elif holder.command in ("", "cdp up") and command == "cdp up":
            said = (f"[red]cdp is already running[/red] on the data dir {where}: {holder.describe()}. Stop it first "
                    f"({_stop_hint(holder)}), or give this one another CDP_DATA_DIR")  # fmt: skip
        elif holder.command in ("", "cdp up"):
            said = (f"[red]cdp is running[/red] on the data dir {where}: {holder.describe()}. `{command}` needs it "
                    f"stopped: stop it first ({_stop_hint(holder)})")  # fmt: skip
        else:
            said = (f"[red]the data dir {where} is in use[/red] by {holder.describe()}: wait until it has finished, "
                    "or give this one another CDP_DATA_DIR")  # fmt: skip
        console.print(said, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _no_other_parts(settings: Settings) -> None:
    """Before `cdp up` starts its relay and ingest workers: none already runs on its data dir.

    One that a `cdp up` started is left by a `cdp up` that is gone (this one holds the data dir now), killed
    before it could stop them: they stop by themselves within seconds, and are waited for. One started on its
    own is refused while `cdp up` would start another (CDP_INGEST_WORKERS=0 runs the core beside ingest workers)."""
    for role in ("ingest", "relay"):
        lock = InstanceLock(settings.data_dir, role)
        holder = lock.holder()
        if holder is not None and holder.parent:
            holder = lock.wait_released(60)
            if holder is not None:
                console.print(f"[red]cdp cannot start:[/red] {holder.describe()}, left by a cdp up that was killed, "
                              f"still runs on the data dir {settings.data_dir}: stop it (`kill {holder.pid}`), then "
                              "start cdp up again", highlight=False, soft_wrap=True)  # fmt: skip
                raise typer.Exit(1)
        needed = settings.ingest_workers if role == "ingest" else settings.processor_driver == "log"
        if holder is not None and needed:
            hint = ("or set CDP_INGEST_WORKERS=0 to run the core beside them" if role == "ingest"
                    else "cdp up starts its own")  # fmt: skip
            console.print(f"[red]cdp cannot start:[/red] {NAMES[role]} already runs on the data dir "
                          f"{settings.data_dir}: {holder.describe()}. Stop it first ({_stop_hint(holder)}), {hint}",
                          highlight=False, soft_wrap=True)  # fmt: skip
            raise typer.Exit(1)


def _ports_free(settings: Settings, command: str, ingest_only: bool = False) -> None:
    try:
        check_ports(settings, ingest_only=ingest_only, command=command)
    except PortUnavailable as exc:
        console.print(f"[red]{command} cannot start:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def up() -> None:
    """Run ingest, processors and queries in the foreground (Ctrl-C or SIGTERM stops cleanly).

    Refused, before anything is opened, while another `cdp up` (or `cdp restore`, `cdp rebuild`) has the data
    dir, and when a port it would listen on is taken."""
    from infra.broker import BrokerError

    settings = _settings()
    _secure(settings)
    _hold(settings, "up", "cdp up")
    _no_other_parts(settings)
    _ports_free(settings, "cdp up")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka", "faust", "mode", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)  # its timing notes, not ours to act on
    platform = Platform(settings, relay_in_process=False)  # the relay in a process of its own (but with Faust)
    children = Children(time.monotonic)  # the relay and the ingest workers, started again if one stops

    def started(platform: Platform) -> None:
        # After the core: the workspace and its keys are in the log, the relay's position is recorded.
        parent = ["--parent", str(os.getpid())]
        if not platform.relay_in_process:
            children.start("the relay", [sys.executable, "-m", "infra.cli", "relay", *parent])
        if settings.ingest_workers:
            workers = children.start("the ingest workers", [sys.executable, "-m", "infra.cli", "ingest", *parent])
            _wait_ingest(settings, workers)  # "is up" means senders can send
        _banner(platform)

    def stopping() -> None:  # before the core (and the bundled broker) stop: they publish and append through them
        children.stop()

    server = _Server(
        uvicorn.Config(
            create_app(platform, on_started=started, on_stopping=stopping),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            timeout_graceful_shutdown=10,
            **_tls_options(settings),  # type: ignore[arg-type]
        )
    )
    # A configuration problem at start (keys, stale projections) is said plainly below, without a traceback.
    plain = (ConfigError, BrokerError)
    logging.getLogger("uvicorn.error").addFilter(lambda _: not isinstance(platform.start_error, plain))
    try:
        server.run()
    except SystemExit:  # uvicorn exits when the app's start failed; say why below
        pass
    finally:
        stopping()  # also when the start failed after the children were started
    if not server.started:
        if isinstance(platform.start_error, plain):
            console.print(f"[red]cdp cannot start:[/red] {platform.start_error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print("cdp stopped cleanly")


@app.command()
def ingest(
    workers: int = typer.Option(0, help="processes sharing the port; by default CDP_INGEST_WORKERS (one per core)"),
    parent: int = typer.Option(0, hidden=True, help="stop when this process is gone (`cdp up` passes its own)"),
) -> None:
    """Run ingest workers only, on CDP_INGEST_PORT: validate, deduplicate, append to the intake log, answer.

    `cdp up` starts them; in distributed mode run this on as many machines as needed in front of PostgreSQL
    (docs/scaling.md). The core process (`cdp up` with CDP_INGEST_WORKERS=0) resolves what they append."""

    settings = _settings()
    _secure(settings)
    if parent and os.getppid() != parent:
        return  # the cdp up that started it is gone already
    _hold(settings, "ingest", "cdp ingest", parent or None)
    _ports_free(settings, "cdp ingest", ingest_only=True)
    if parent:
        _exit_with_parent(parent)
    from infra.ingest_server import serve

    config = uvicorn.Config(
        "infra.ingest_server:create_ingest_app", factory=True, host=settings.http_host, port=settings.ingest_port,
        workers=workers or settings.ingest_workers or 1, log_level="warning", timeout_graceful_shutdown=10,
        # uvicorn kills a worker that does not answer its supervisor within this many seconds, and starts another:
        # its default (5 s) is less than a worker's start on a busy 2-core machine, which then never comes up.
        timeout_worker_healthcheck=60,
        **_tls_options(settings),  # type: ignore[arg-type]
    )  # fmt: skip
    if not serve(config):
        console.print("[red]the ingest workers stopped:[/red] one could not start (its error is above); "
                      "`cdp up` starts them again by itself, a `cdp ingest` of your own needs starting again")
        raise typer.Exit(1)


@app.command()
def relay(
    parent: int = typer.Option(0, hidden=True, help="stop when this process is gone (`cdp up` passes its own)"),
) -> None:
    """Publish the event log to Kafka cdp.events, in a process of its own (`cdp up` starts it)."""
    from infra.relay_process import run_relay

    settings = _settings()
    _secure(settings)
    if parent and os.getppid() != parent:
        return  # the cdp up that started it is gone already
    _hold(settings, "relay", "cdp relay", parent or None)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # its selector's timing notes, not ours to act on
    if parent:
        _exit_with_parent(parent)
    run_relay(settings)


@app.command()
def rebuild(
    verify: bool = typer.Option(
        False, help="Rebuild into a scratch database and compare every table with the live one instead; "
        "exits 1 naming the tables that differ.",
    ),
) -> None:
    """Replay the whole event log into fresh projections (stop `cdp up` first: chDB is one process per data dir).

    Tag history follows the evaluation steps the live run recorded, so it comes back as it was."""
    from rich.progress import Progress

    from infra.bootstrap import rebuild as rebuild_projections
    from infra.bootstrap import verify_rebuild
    from infra.clickhouse import clickhouse_client
    from infra.eventstore import open_event_store

    settings = _settings()
    _secure(settings)
    with _hold(settings, "up", "cdp rebuild"):  # not beside a cdp up (its chDB), and no cdp up starts meanwhile
        store = open_event_store(settings)
        client = clickhouse_client(settings)
        if verify:
            from projections.verify import COMPARED_TABLES

            found = verify_rebuild(store, client, settings.clickhouse_database)
            if found:
                console.print(f"[red]live projections differ from a rebuild in {len(found)} of "
                              f"{len(COMPARED_TABLES)} tables:[/red]")  # fmt: skip
                for line in found:
                    console.print(f"  {line}", markup=False, highlight=False)
                raise typer.Exit(1)
            console.print(f"[green]live projections equal a rebuild from position 0 "
                          f"({len(COMPARED_TABLES)} tables compared)[/green]")  # fmt: skip
            return
        total = store.last_position()
        with Progress(console=console) as progress:
            task = progress.add_task("replaying the log", total=total or 1)
            reached = rebuild_projections(
                store, client, settings.clickhouse_database, progress=lambda p: progress.update(task, completed=p)
            )
            progress.update(task, completed=total or 1)
        from infra.eventstore import open_intake_log
        from ingest.intake_log import RELAY

        open_intake_log(settings).save_position(RELAY, 0)  # fresh projections: cdp.events is published again too
        console.print(f"rebuilt {settings.clickhouse_database} up to log position {reached}")


def _say(text: str, markup: bool = True) -> None:
    """A line of its own whatever the terminal's width: paths and commands in it stay whole for copying."""
    console.print(text, markup=markup, highlight=False, soft_wrap=True)


def _backup_refused(exc: ConfigError, command: str) -> typer.Exit:
    """A backup or restore that cannot be done: its code and the fix, on one line, no traceback."""
    from infra.backup import BackupError

    code = f"{exc.code}: " if isinstance(exc, BackupError) else ""
    _say(f"[red]{command} refused[/red] ({code.rstrip(': ') or 'configuration'}): {exc}")
    return typer.Exit(exc.exit_code if isinstance(exc, BackupError) else 2)


def _master_key_note(settings: Settings, master: dict[str, Any]) -> None:
    if master.get("source") == "CDP_MASTER_KEY":
        _say("  [yellow]master key[/yellow]: CDP_MASTER_KEY, not in the backup. Keep it, apart from the backups: a "
             "restore needs it (set CDP_MASTER_KEY to it), and without it the backup cannot be read")
    elif master.get("included"):
        _say("  [yellow]master key[/yellow]: included (master.key): whoever holds this backup can read all of it; "
             "keep it as you would keep the key itself")
    else:
        _say(f"  [yellow]master key[/yellow]: NOT in the backup. It is {settings.master_key_path}: back it up "
             "separately, not next to this backup (or move it to CDP_MASTER_KEY); without it the backup cannot be "
             "read. `cdp restore DIR --master-key-file FILE` takes it back (--include-master-key puts it in the "
             "backup instead)")


@contextlib.contextmanager
def _file_progress() -> Iterator[Any]:
    """A Rich progress bar per file copied; yields the step callback of infra/backup.py."""
    from rich.progress import Progress

    with Progress(console=console) as progress:
        tasks: dict[str, Any] = {}

        def step(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"copying {name}", total=max(total, 1))
            progress.update(tasks[name], completed=done, total=max(total, 1))

        yield step


@app.command()
def backup(
    directory: Path = typer.Argument(..., help="A new (or empty) directory for this backup; it is made owner-only "
                                     "(0700, its files 0600). Not inside the data dir.", show_default=False),
    include_master_key: bool = typer.Option(False, "--include-master-key", help="Copy the data dir's master.key into "
                                            "the backup too: whoever holds the backup can then read all of it."),
    pg_dump: bool = typer.Option(False, "--pg-dump", help="PostgreSQL event store: run pg_dump of its schema (one "
                                 "snapshot) into the backup, with keys.json and a manifest."),
) -> None:  # fmt: skip
    """Back up, while the platform runs, what cannot be rebuilt: the event store (log and dead letters), the
    intake log, the key store and keys.json, with a manifest. Projections are not backed up: `cdp restore`
    rebuilds them. The generated master.key is not copied unless --include-master-key: back it up apart."""
    from infra.backup import pg_dump_command, take_backup, take_pg_backup

    settings = _settings()
    if settings.uses_postgres and not pg_dump:
        shown = pg_dump_command(settings, directory.resolve()).shown
        _say("[red]cdp backup refused[/red] (postgresql_event_store): the event store is PostgreSQL "
             "(CDP_EVENT_STORE), and `cdp backup` copies SQLite files. Its schema holds the event log, the dead "
             "letters, the intake log and the key store: dump it with pg_dump, or run `cdp backup DIR --pg-dump`, "
             "which runs it in one snapshot and adds keys.json and a manifest:")
        _say(f"  mkdir -m 700 {shlex.quote(str(directory.resolve()))} && {shown}", markup=False)
        _say(f"  Then copy {settings.keys_path} beside the dump, and keep the master key (CDP_MASTER_KEY, or "
             f"{settings.master_key_path}) apart from both.", markup=False)
        raise typer.Exit(2)
    if pg_dump and not settings.uses_postgres:
        _say("[red]cdp backup refused[/red] (not_postgresql): --pg-dump is for a PostgreSQL event store "
             "(CDP_EVENT_STORE=postgresql://...); leave it out to back up the SQLite files")
        raise typer.Exit(2)
    try:
        with _file_progress() as step:
            taken = (take_pg_backup if pg_dump else take_backup)(settings, directory, include_master_key, step)
    except ConfigError as exc:
        raise _backup_refused(exc, "cdp backup") from None
    m = taken.manifest
    held = [f"event log to position {m['log_position']}"]
    if m["event_store"] == "sqlite":
        held[0] += f" ({m['dead_letters']} dead letters)"
        held += [f"intake log to position {m['intake_position']}", f"key store ({m['subject_keys']} subject keys)"]
    held += ["keys.json"] if "keys.json" in m["files"] else []
    _say(f"backed up to {taken.path}: {', '.join(held)}; manifest {taken.path / 'manifest.json'}")
    _say("  not backed up: the projections (`cdp restore` rebuilds them from the log)")
    _master_key_note(settings, m["master_key"])


@app.command()
def restore(
    directory: Path = typer.Argument(..., help="A directory `cdp backup` wrote.", show_default=False),
    master_key_file: Path | None = typer.Option(None, "--master-key-file", help="The master.key the backup was taken "
                                                "with (kept apart from it); copied into the data dir."),
    pg_restore: bool = typer.Option(False, "--pg-restore", help="A --pg-dump backup: run pg_restore into "
                                    "CDP_EVENT_STORE's database (its schema must not exist yet)."),
) -> None:  # fmt: skip
    """Restore a backup into an empty data dir (CDP_DATA_DIR) and rebuild the projections from its log.

    Refused when the data dir already holds an event store or projections. The master key comes from
    --master-key-file, CDP_MASTER_KEY, the backup (if taken with --include-master-key) or a master.key put in the
    data dir beforehand; it is checked against the restored key store before anything is rebuilt."""
    from rich.progress import Progress

    from infra.backup import pg_restore_command, read_manifest, rebuild_projections, restore_files, restore_pg

    settings = _settings()
    _secure(settings)
    with _hold(settings, "up", "cdp restore"):  # no cdp up starts on the data dir while it is restored
        try:
            if not pg_restore:
                manifest = read_manifest(directory.resolve())
                if manifest.get("event_store") == "postgresql":
                    shown = pg_restore_command(settings, directory.resolve()).shown
                    _say(f"[red]cdp restore refused[/red] (postgresql_backup): {directory} is a pg_dump of schema "
                         f"{manifest.get('schema')!r}: run `cdp restore {directory} --pg-restore` with CDP_EVENT_STORE set "
                         "to the database to restore into (it runs the command below, then restores keys.json and "
                         "rebuilds the projections), or run it yourself and then `cdp rebuild`:")
                    _say(f"  {shown}", markup=False)
                    raise typer.Exit(2)
                with _file_progress() as step:
                    restored = restore_files(settings, directory, master_key_file, step)
            else:
                restored = restore_pg(settings, directory, master_key_file)
            m = restored.manifest
            with Progress(console=console) as progress:
                task = progress.add_task("rebuilding the projections", total=max(int(m["log_position"]), 1))
                total, reached = rebuild_projections(settings, lambda p: progress.update(task, completed=p))
                progress.update(task, completed=max(total, 1))
        except ConfigError as exc:
            raise _backup_refused(exc, "cdp restore") from None
        _say(f"restored {directory.resolve()} (taken {m['created_at']}, cdp {m['cdp_version']}) into "
             f"{settings.data_dir}: event log to position {total}, projections rebuilt in {settings.clickhouse_database} "
             f"up to {reached}; master key from {restored.master_key_from}. Start it with `cdp up` (cdp.events is "
             "published again from position 1).")
        if total != m["log_position"]:
            _say(f"[red]the restored log ends at {total}, the manifest says {m['log_position']}[/red]")
            raise typer.Exit(1)


def _key(kind: str) -> str:
    """A start key of this kind: its CDP_* variable (CDP_READ_KEY, ...), else the keys file `cdp up` wrote."""
    settings = _settings()
    keys_file = settings.keys_path
    key = getattr(settings, f"{kind}_key") or (
        json.loads(keys_file.read_text())[f"{kind}_key"] if keys_file.exists() else None
    )
    if not key:
        console.print(f"[red]no {kind} key:[/red] set CDP_{kind.upper()}_KEY or run `cdp up` once to create {keys_file}")
        raise typer.Exit(2)
    return str(key)


@keys_app.command("show")
def keys_show() -> None:
    """Print the start keys: the default workspace's write, read and admin keys and the platform key (from their
    CDP_* variables, else the keys file `cdp up` wrote)."""
    for kind in ("write", "read", "admin", "platform"):
        console.print(f"{kind + ' key:':14}{_key(kind)}", markup=False, highlight=False)


@keys_app.command("rotate-master")
def keys_rotate_master() -> None:
    """Re-wrap every key of the key store with a new master key; the log is not rewritten.

    Stop the platform first (every process that opens this data dir or event store): a process still running
    keeps the old master key. With master.key the new key is generated and replaces it; with CDP_MASTER_KEY
    give the new one as CDP_NEW_MASTER_KEY, then set CDP_MASTER_KEY to it."""
    from infra.chdb_storage import in_use
    from infra.keyring import rotate_master_key

    settings = _settings()
    secure_data_dir(settings)
    health = f"{settings.http_scheme}://{settings.http_host}:{settings.http_port}/healthz"
    with contextlib.suppress(httpx.HTTPError):
        if httpx.get(health, timeout=2, verify=False).status_code == 200:
            console.print(f"[red]cdp is running[/red] ({health} answers): stop it first, then rotate")
            raise typer.Exit(1)
    if in_use(settings.chdb_path):
        console.print(f"[red]cdp is running[/red] (the embedded ClickHouse in {settings.chdb_path} is open): stop it first")
        raise typer.Exit(1)
    try:
        count, where = rotate_master_key(settings, os.environ.get("CDP_NEW_MASTER_KEY"))
    except ConfigError as exc:
        console.print(f"[red]cannot rotate:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"re-wrapped {count} keys with the new master key; it is in {where}", markup=False)


def _call(method: str, path: str, key: str, body: Any = None) -> Any:
    """One request to the running platform; a plain message and exit 1 if it cannot answer."""
    settings = _settings()
    url = f"{settings.http_scheme}://{settings.http_host}:{settings.http_port}{path}"
    try:
        response = httpx.request(method, url, headers={"Authorization": f"Bearer {key}"}, json=body, timeout=60,
                                 verify=api_verify(settings))  # fmt: skip
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {url}:[/red] {exc}. Is `cdp up` running?")
        raise typer.Exit(1) from None
    if response.status_code != 200:
        console.print(f"[red]{url} answered {response.status_code}:[/red] {response.text}")
        raise typer.Exit(1)
    return response.json()


@app.command()
def status() -> None:
    """Ask the running platform for the log position and each projection's applied position."""
    body = _call("GET", "/v1/status", _key("read"))
    table = Table(title=f"log position {body['log_position']}")
    for column in ("part", "position", "lag", "quarantined", "detail"):
        table.add_column(column)
    relay = body["relay"]
    table.add_row("relay → " + relay["topic"], str(relay["position"]), str(relay["lag"]), "", "")
    for name, p in body["projections"].items():
        table.add_row(
            f"projection {name}", str(p["position"]), str(p["lag"]), str(p.get("quarantined", 0)), p.get("driver", "")
        )
    console.print(table)
    console.print("[green]caught up[/green]" if body["caught_up"] else "[yellow]catching up[/yellow]")
    if body.get("quarantined"):
        console.print(
            f"[yellow]{body['quarantined']} log entries quarantined[/yellow]: `cdp quarantine` lists them, "
            "`cdp quarantine --retry` applies them again after a fix"
        )


@app.command()
def quarantine(
    retry: bool = typer.Option(False, help="Apply the quarantined entries again (after a fix); needs the write key."),
    projection: str = typer.Option("", help="Only this projection's entries (profiles, tags, kpis)."),
) -> None:
    """List the log entries a projection could not apply, with the reason, or apply them again."""
    if retry:
        body = {"projection": projection} if projection else {}
        result = _call("POST", "/v1/quarantine/retry", _key("admin"), body)
        console.print(f"applied {len(result['applied'])}, still failing {len(result['failed'])}")
        for failed in result["failed"]:
            console.print(f"  {failed['projection']} @ {failed['position']}: {failed['reason']}")
        raise typer.Exit(1 if result["failed"] else 0)
    entries = _call("GET", "/v1/quarantine", _key("admin"))["entries"]
    entries = [e for e in entries if not projection or e["projection"] == projection]
    if not entries:
        console.print("[green]no quarantined entries[/green]")
        return
    table = Table(title=f"{len(entries)} quarantined log entries")
    for column in ("projection", "position", "kind", "error", "reason", "attempts", "at"):
        table.add_column(column)
    for e in entries:
        table.add_row(e["projection"], str(e["position"]), e["kind"], e["error"], e["reason"][:200],
                      str(e["attempts"]), e["at"])  # fmt: skip
    console.print(table)


@app.command("dead-letters")
def dead_letters(
    code: str = typer.Option("", help="Only this reason code (invalid_event, out_of_range, invalid_json, ...)."),
    source: str = typer.Option("", help="Only this source (http, browser, import, kafka:<topic>, webhook:<name>)."),
    limit: int = typer.Option(50, min=1, max=1000, help="How many to show, oldest first."),
    replay: bool = typer.Option(False, help="Submit the listed ones again (after a fix); needs the write key."),
) -> None:
    """Show the events the platform refused and kept, with the reason, or replay them."""
    filters = {k: v for k, v in (("code", code), ("source", source)) if v}
    if replay:
        if not filters:
            console.print("[red]say which to replay:[/red] --code or --source (or POST /v1/dead-letters/replay with ids)")
            raise typer.Exit(2)
        result = _call("POST", "/v1/dead-letters/replay", _key("admin"), {**filters, "limit": limit})
        console.print(f"replayed {result['replayed']}, refused again {result['refused']}")
        for r in result["results"]:
            if r["outcome"] == "refused":
                console.print(f"  #{r['id']} {r['field']}: {r['reason']}")
        return
    body = _call("GET", "/v1/dead-letters?" + urlencode({**filters, "limit": limit}), _key("admin"))
    letters = body["dead_letters"]
    if not letters:
        console.print("[green]no dead letters[/green]")
        return
    table = Table(title=f"dead letters (open by code: {body['open']})")
    for column in ("id", "received", "source", "code", "field", "reason", "messageId"):
        table.add_column(column)
    for x in letters:
        table.add_row(str(x["id"]), x["received_at"], x["source"], x["code"], x["field"], x["reason"][:160],
                      x["message_id"] or "")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    app()
