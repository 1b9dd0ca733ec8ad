"""`cdp import FILE…`: history files into the running platform, through `POST /v1/batch`.

The files are read by ingest/importer.py (formats, mapping, deterministic
messageIds); this module sends what it reads. Batches of up to about 450 KB go
gzip-compressed to `/v1/batch`, several at a time; 429, 5xx and connection
errors are retried with backoff (safe: the platform deduplicates by messageId).

A checkpoint per file and options (`<data dir>/imports/<key>.json`) records the
position up to which every record is confirmed by the platform, with the
running totals, so that a rerun after Ctrl-C (or a crash) skips that part
quickly. The checkpoint is only for speed: what a rerun sends again is
recognised by its messageId and not stored twice.
"""

from __future__ import annotations

import concurrent.futures as futures
import gzip
import hashlib
import json
import os
import random
import signal
import ssl
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from infra.api_client import api_base, api_verify
from infra.config import ConfigError, Settings, load_settings
from ingest.importer import Defaults, ImportFileError, Position, Source, dumps, load_mapping, parse_map_option

MAX_REQUEST_BYTES = 450 * 1024  # below the platform's 500 KB request limit
MAX_ATTEMPTS = 10  # about 2.5 minutes of backoff before an import gives up (a rerun goes on from the checkpoint)
RETRY_STATUSES = (429, 500, 502, 503, 504)
EXAMPLES = 10  # reasons kept per kind in the summary and the checkpoint
CHECKPOINT_EVERY = 1.0  # seconds

console = Console()
errors = Console(stderr=True)


class Aborted(Exception):
    """The import cannot go on (unknown key, an answer it does not understand, the platform away for too long)."""


class Stopped(Exception):
    """Ctrl-C: a batch not sent (or not confirmed) because the import is stopping."""


@dataclass
class Tally:
    """What happened to a file's records so far; kept in the checkpoint, so a rerun reports the whole file."""

    stored: int = 0
    duplicates: int = 0
    accepted: int = 0  # confirmed by a platform that does not say stored or duplicate
    dead_lettered: int = 0
    refused: int = 0
    dead_letter_examples: list[str] = field(default_factory=list)
    refused_examples: list[str] = field(default_factory=list)

    @property
    def confirmed(self) -> int:
        return self.stored + self.duplicates + self.accepted + self.dead_lettered

    def dead_letter(self, line: int, reason: str) -> None:
        self.dead_lettered += 1
        if len(self.dead_letter_examples) < EXAMPLES:
            self.dead_letter_examples.append(f"line {line}: {reason}")

    def refuse(self, line: int, reason: str) -> None:
        self.refused += 1
        if len(self.refused_examples) < EXAMPLES:
            self.refused_examples.append(f"line {line}: {reason}")


@dataclass
class Batch:
    """Calls for one request (serialised), the line of each, and the records refused here among them."""

    seq: int
    items: list[bytes] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    size: int = 0
    resume: Position = Position()


@dataclass
class Result:
    stored: int = 0
    duplicates: int = 0
    accepted: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # index in the batch → the platform's first reason
    refused: dict[int, str] = field(default_factory=dict)  # index → why the platform took no part of it

    def merge(self, other: "Result", base: int) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.accepted += other.accepted
        self.rejected |= {base + i: r for i, r in other.rejected.items()}
        self.refused |= {base + i: r for i, r in other.refused.items()}


class Sender:
    """Posts batches to `/v1/batch` from worker threads: gzip (unless the platform refuses it), retries, backoff."""

    backoff = 0.5  # seconds before the first retry, doubling up to 30

    def __init__(
        self, base_url: str, write_key: str, compress: bool, stop: threading.Event,
        transport: httpx.BaseTransport | None = None, verify: ssl.SSLContext | bool = True,
    ) -> None:  # fmt: skip
        self.url = f"{base_url}/v1/batch"
        self.transport = transport
        self.verify = verify
        self.auth = (write_key, "")
        self.compress = compress
        self.stop = stop
        self.notes: list[str] = []
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(auth=self.auth, timeout=httpx.Timeout(120.0, connect=5.0), transport=self.transport,
                                  verify=self.verify)  # fmt: skip
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def send(self, batch: Batch) -> Result:
        return self._post(batch.items)

    def _post(self, items: list[bytes]) -> Result:
        body = b'{"batch":[' + b",".join(items) + b"]}"
        attempt = 0
        while True:
            if self.stop.is_set():
                raise Stopped
            compress = self.compress
            headers = {"Content-Type": "application/json", "X-CDP-Source": "import"}  # names it in dead letters
            content = body
            if compress:
                content = gzip.compress(body, compresslevel=1, mtime=0)
                headers["Content-Encoding"] = "gzip"
            wait: float | None = None
            try:
                response = self._client().post(self.url, content=content, headers=headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status == 200:
                    return _result(response, len(items))
                problem = f"{status} {response.text[:300]}"
                if status in RETRY_STATUSES:
                    retry_after = response.headers.get("retry-after", "")
                    wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
                elif status == 413 and len(items) > 1:  # the platform's limit is below ours: halve the batch
                    half = len(items) // 2
                    result = self._post(items[:half])
                    result.merge(self._post(items[half:]), half)
                    return result
                elif status == 413:
                    return Result(refused={0: f"the platform refused it as a whole: {_message(response)}"})
                elif compress and status in (400, 415):
                    with self._lock:
                        if self.compress:  # a platform that does not read gzip bodies: plain JSON from now on
                            self.compress = False
                            self.notes.append(f"the platform did not take a gzip body ({status} {_message(response)}); "
                                              "sent plain JSON instead")  # fmt: skip
                    continue
                elif status == 401:
                    raise Aborted(f"the platform does not know this write key ({_message(response)}); "
                                  "set CDP_WRITE_KEY or use the data dir of the running `cdp up`")  # fmt: skip
                else:
                    raise Aborted(f"{self.url} answered {status}: {response.text[:1000]}")
            attempt += 1
            if attempt >= MAX_ATTEMPTS:
                raise Aborted(f"{self.url}: gave up after {attempt} attempts, the last: {problem}")
            if wait is None:
                wait = min(30.0, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            if self.stop.wait(wait):
                raise Stopped


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body.get("detail") or body)[:300]
    return str(body)[:300]


def _result(response: httpx.Response, count: int) -> Result:
    """The partial-acceptance answer: stored, duplicates, and each rejected event (kept as a dead letter)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict) or "stored" not in body:
        return Result(accepted=count)  # `{"success": true}`: every call is in the log
    result = Result(stored=int(body.get("stored", 0)), duplicates=int(body.get("duplicates", 0)))
    for rejection in body.get("rejected") or []:
        index = rejection.get("index")
        if isinstance(index, int) and 0 <= index < count and index not in result.rejected:
            field_name = rejection.get("field") or "(event)"
            code = rejection.get("code") or "invalid_event"
            result.rejected[index] = f"{field_name}: {rejection.get('reason', '')} ({code})"
    return result


class Checkpoint:
    """`<data dir>/imports/<key>.json`: the confirmed position and totals of one file read with one set of options."""

    def __init__(self, directory: Path, source: Source) -> None:
        resolved = source.path.resolve()
        stat = resolved.stat()
        with resolved.open("rb") as f:
            head = hashlib.sha256(f.read(65536)).hexdigest()
        self.identity = {"file": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head": head,
                         "options": source.fingerprint()}  # fmt: skip
        key = hashlib.sha256(f"{resolved}\0{source.fingerprint()}".encode()).hexdigest()[:24]
        self.path = directory / f"{key}.json"

    def load(self) -> tuple[Position, Tally, bool] | str | None:
        """The position, totals and whether the file was done; a reason when the checkpoint no longer holds."""
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return "its checkpoint could not be read"
        if not isinstance(saved, dict) or saved.get("identity") != self.identity:
            return "the file changed since its checkpoint"
        try:
            return Position(*saved["position"]), Tally(**saved["tally"]), bool(saved["complete"])
        except (KeyError, TypeError):
            return "its checkpoint could not be read"

    def save(self, position: Position, tally: Tally, complete: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # in the data dir: owner-only, as all of it
        data = {"identity": self.identity, "position": list(position), "tally": asdict(tally), "complete": complete,
                "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        temporary = self.path.with_suffix(".tmp")
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(json.dumps(data, indent=1))
        os.replace(temporary, self.path)

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class Outcome:
    file: str
    complete: bool
    tally: Tally
    resumed_from: Position | None
    events: int  # events confirmed in this run
    seconds: float
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        t = self.tally
        return {
            "file": self.file, "complete": self.complete, "stored": t.stored, "duplicates": t.duplicates,
            "accepted": t.accepted, "dead_lettered": t.dead_lettered, "refused": t.refused,
            "dead_letter_examples": t.dead_letter_examples, "refused_examples": t.refused_examples,
            "resumed_from": {"offset": self.resumed_from.offset, "line": self.resumed_from.lines}
            if self.resumed_from else None,
            "events_this_run": self.events, "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events / self.seconds, 1) if self.seconds > 0 else None,
            "error": self.error, "notes": self.notes,
        }  # fmt: skip


class Importer:
    """Reads a source, batches its calls, keeps `concurrency` requests in flight and the checkpoint current."""

    def __init__(self, sender: Sender, concurrency: int, batch_size: int, max_request_bytes: int) -> None:
        self.sender = sender
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.budget = max_request_bytes - len(b'{"batch":[]}')

    def run(self, source: Source, checkpoint: Checkpoint, start: Position, tally: Tally, progress: Progress) -> Outcome:
        began = time.monotonic()
        before = tally.confirmed
        flight = _Flight(self.sender, self.concurrency, checkpoint, tally, start)
        task = progress.add_task(source.path.name, total=source.size or 1, events=0, rate=0.0)

        def show(final: bool = False) -> None:
            events = tally.confirmed - before
            elapsed = max(time.monotonic() - began, 1e-6)
            progress.update(task, completed=source.size if final else source.bytes_read, events=events,
                            rate=events / elapsed)  # fmt: skip

        error: str | None = None
        complete = False
        try:
            try:
                self._read(source, start, flight, show)
                complete = True
            except (Aborted, ImportFileError) as exc:
                error = str(exc)
                flight.stop()
        except KeyboardInterrupt:
            error = "interrupted"
            try:
                flight.stop()  # batches waiting to be retried give up; requests on the wire finish
            except KeyboardInterrupt:  # a second Ctrl-C: keep what is confirmed and leave now
                checkpoint.save(flight.position, tally, False)
                progress.stop()
                errors.print("stopped; run the same command again to go on from the last confirmed batch")
                os._exit(130)
        finally:
            flight.executor.shutdown(wait=False, cancel_futures=True)
        checkpoint.save(flight.position, tally, complete)
        show(final=complete)
        return Outcome(str(source.path), complete, tally, start if start.offset else None, tally.confirmed - before,
                       time.monotonic() - began, error, list(self.sender.notes))  # fmt: skip

    def _read(self, source: Source, start: Position, flight: "_Flight", show: Any) -> None:
        """Cut the source's records into batches within the request budget and send them through `flight`."""
        seq, shown = 0, 0.0
        batch = Batch(seq, resume=start)
        for record in source.records(start):
            if record.refused is not None:
                batch.refused.append((record.line, record.refused))
            else:
                data = dumps(record.call)
                if len(data) > self.budget:
                    batch.refused.append((record.line, f"{len(data)} bytes, above what one request carries"))
                else:
                    if batch.items and (batch.size + len(data) + 1 > self.budget
                                        or len(batch.items) >= self.batch_size):  # fmt: skip
                        flight.submit(batch)
                        seq += 1
                        batch = Batch(seq, resume=batch.resume)
                    batch.items.append(data)
                    batch.lines.append(record.line)
                    batch.size += len(data) + 1
            batch.resume = record.resume
            now = time.monotonic()
            if now - shown > 0.2:
                show()
                shown = now
        flight.submit(batch)
        flight.drain()


class _Flight:
    """The requests in flight of one import: at most `concurrency`, confirmed in order into the tally, with the
    checkpoint moved over batches confirmed in order only (a later batch confirmed first waits for earlier ones)."""

    def __init__(self, sender: Sender, concurrency: int, checkpoint: Checkpoint, tally: Tally, start: Position) -> None:
        self.sender = sender
        self.concurrency = concurrency
        self.checkpoint = checkpoint
        self.tally = tally
        self.executor = futures.ThreadPoolExecutor(concurrency, thread_name_prefix="cdp-import")
        self.in_flight: dict[futures.Future[Result], Batch] = {}
        self.finished: dict[int, tuple[Batch, Result]] = {}
        self.next = 0
        self.position = start
        self.saved = time.monotonic()

    def confirm(self, done: futures.Future[Result]) -> None:
        batch = self.in_flight.pop(done)
        self.finished[batch.seq] = (batch, done.result())  # raises Aborted / Stopped
        while self.next in self.finished:
            batch, result = self.finished.pop(self.next)
            _count(self.tally, batch, result)
            self.position = batch.resume
            self.next += 1
        if time.monotonic() - self.saved >= CHECKPOINT_EVERY:
            self.checkpoint.save(self.position, self.tally, False)
            self.saved = time.monotonic()

    def submit(self, batch: Batch) -> None:
        future: futures.Future[Result]
        if batch.items:
            future = self.executor.submit(self.sender.send, batch)
        else:  # only records refused here: nothing to send, but the checkpoint moves over them
            future = futures.Future()
            future.set_result(Result())
        self.in_flight[future] = batch
        for d in [f for f in self.in_flight if f.done()]:
            self.confirm(d)
        while len(self.in_flight) >= self.concurrency:
            done, _ = futures.wait(list(self.in_flight), return_when=futures.FIRST_COMPLETED)
            for d in done:
                self.confirm(d)

    def drain(self) -> None:
        while self.in_flight:
            done, _ = futures.wait(list(self.in_flight), return_when=futures.FIRST_COMPLETED)
            for d in done:
                self.confirm(d)

    def stop(self) -> None:
        """Stop sending; keep what the requests on the wire confirm (in order), drop the batches never sent."""
        self.sender.stop.set()
        _settle(self.in_flight, self.confirm)


def _settle(in_flight: dict[futures.Future[Result], Batch], confirm: Any) -> None:
    """Wait for the requests on the wire; keep what they confirmed (in order), drop the batches never sent."""
    while in_flight:
        done, _ = futures.wait(list(in_flight), return_when=futures.FIRST_COMPLETED)
        for d in done:
            try:
                confirm(d)
            except (Stopped, Aborted, futures.CancelledError):
                pass


def _count(tally: Tally, batch: Batch, result: Result) -> None:
    tally.stored += result.stored
    tally.duplicates += result.duplicates
    tally.accepted += result.accepted
    for index, reason in sorted(result.rejected.items()):
        tally.dead_letter(batch.lines[index], reason)
    for index, reason in sorted(result.refused.items()):
        tally.refuse(batch.lines[index], reason)
    for line, reason in batch.refused:
        tally.refuse(line, reason)


def _write_key(settings: Settings) -> str:
    key = settings.write_key
    if not key and settings.keys_path.exists():
        key = json.loads(settings.keys_path.read_text()).get("write_key")
    if not key:
        errors.print(f"[red]no write key:[/red] set CDP_WRITE_KEY or run `cdp up` once to create {settings.keys_path}")
        raise typer.Exit(2)
    return str(key)


def _print(outcome: Outcome, out: Console) -> None:
    t = outcome.tally
    if outcome.complete:
        head = f"[green]{outcome.file}: imported[/green]"
    elif outcome.error == "interrupted":
        head = f"[yellow]{outcome.file}: interrupted[/yellow]; run the same command again to go on"
    else:
        head = f"[red]{outcome.file}: stopped:[/red] {outcome.error}; run the same command again to go on"
    out.print(head)
    parts = [f"stored {t.stored:,}", f"duplicates {t.duplicates:,}"]
    if t.accepted:
        parts.append(f"accepted {t.accepted:,}")
    parts += [f"dead-lettered {t.dead_lettered:,}", f"refused here {t.refused:,}"]
    rate = outcome.events / outcome.seconds if outcome.seconds > 0 else 0.0
    out.print("  " + ", ".join(parts) + f"  ({outcome.events:,} events in {outcome.seconds:.1f} s, {rate:,.0f}/s)")
    if outcome.resumed_from:
        out.print(f"  resumed after line {outcome.resumed_from.lines:,}, confirmed by an earlier run")
    for note in outcome.notes:
        out.print(f"  note: {note}")
    if t.dead_lettered:
        out.print(f"  dead-lettered by the platform (kept in its dead-letter store with the reason), first "
                  f"{len(t.dead_letter_examples)}:")  # fmt: skip
        for example in t.dead_letter_examples[:5]:
            out.print(f"    {example}", markup=False)
    if t.refused:
        out.print(f"  refused here (never sent to the platform), first {len(t.refused_examples)}:")
        for example in t.refused_examples[:5]:
            out.print(f"    {example}", markup=False)


def import_files(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                       help="JSONL, JSON ({\"batch\": [...]} or [...]) or CSV files, plain or .gz"),
    format: Optional[str] = typer.Option(None, "--format", help="jsonl, json or csv (default: by extension, content)"),
    type_: Optional[str] = typer.Option(None, "--type", help="The type of calls without one (track, identify, ...)."),
    event: Optional[str] = typer.Option(None, "--event", help="The event of track calls without one."),
    map_: list[str] = typer.Option([], "--map", help="CSV: COLUMN=FIELD[:KIND], e.g. Email=traits.email; repeat it. "
                                   "An empty FIELD ignores the column. KIND: auto, string, number, boolean, json."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", exists=True, dir_okay=False,
                                           help="CSV: a YAML or JSON file with columns:, type:, event:"),
    delimiter: Optional[str] = typer.Option(None, help="CSV: the delimiter (default , or a tab for .tsv)"),
    compress: bool = typer.Option(True, "--gzip/--no-gzip", help="Send gzip-compressed requests."),
    concurrency: int = typer.Option(3, min=1, max=16, help="Requests in flight at once."),
    batch_size: int = typer.Option(1000, min=1, max=10000, help="Calls per request at most (and about 450 KB)."),
    from_start: bool = typer.Option(False, "--from-start", help="Ignore the checkpoint and read the files again "
                                    "from the start (what is already stored is recognised and not stored twice)."),
    as_json: bool = typer.Option(False, "--json", help="Print each file's summary as a JSON line on stdout."),
) -> None:
    """Import history files through the running platform (`cdp up`); a rerun goes on after Ctrl-C.

    (Long only by its Typer options, one per line; the work is in `_import_one` and `Importer`.)
    """
    out = errors if as_json else console
    try:
        settings = load_settings()
        columns: dict[str, str] = {}
        defaults = Defaults()
        if mapping is not None:
            columns, defaults = load_mapping(mapping.read_text())
        for option in map_:
            column, target = parse_map_option(option)
            columns[column] = target
        defaults = Defaults(type_ or defaults.type, event or defaults.event)
        if format is not None:
            format = format.lower()
        sources = [Source(f, format, defaults, columns, delimiter) for f in files]
    except (ConfigError, ImportFileError, OSError) as exc:
        out.print(f"[red]cannot import:[/red] {exc}", markup=True)
        raise typer.Exit(2) from None
    write_key = _write_key(settings)
    base_url = api_base(settings)
    try:
        httpx.get(f"{base_url}/healthz", timeout=5, verify=api_verify(settings)).raise_for_status()
    except httpx.HTTPError as exc:
        out.print(f"[red]cannot reach {base_url}:[/red] {exc}. Is `cdp up` running?")
        raise typer.Exit(1) from None
    budget = min(MAX_REQUEST_BYTES, settings.max_batch_bytes * 9 // 10)
    previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
    code = 0
    try:
        for source in sources:
            outcome = _import_one(source, settings, base_url, write_key, compress, concurrency, batch_size, budget,
                                  from_start, out)  # fmt: skip
            if as_json:
                sys.stdout.write(json.dumps(outcome.to_json()) + "\n")
                sys.stdout.flush()
            _print(outcome, out)
            if outcome.error == "interrupted":
                raise typer.Exit(130)
            if outcome.error or outcome.tally.refused or outcome.tally.dead_lettered:
                code = 1
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    raise typer.Exit(code)


def _import_one(
    source: Source, settings: Settings, base_url: str, write_key: str, compress: bool, concurrency: int,
    batch_size: int, budget: int, from_start: bool, out: Console,
) -> Outcome:  # fmt: skip
    checkpoint = Checkpoint(settings.data_dir / "imports", source)
    start, tally = Position(), Tally()
    saved = None if from_start else checkpoint.load()
    if isinstance(saved, str):
        out.print(f"{source.path}: {saved}; reading it from the start (what is stored already is not stored twice)")
    elif saved is not None:
        start, tally, complete = saved
        if complete:
            return Outcome(str(source.path), True, tally, None, 0, 0.0, None,
                           ["imported before; nothing to send (--from-start reads it again)"])  # fmt: skip
    sender = Sender(base_url, write_key, compress, threading.Event(), verify=api_verify(settings))
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TextColumn("{task.fields[events]:>11,} events  {task.fields[rate]:>7,.0f}/s"), TimeRemainingColumn(),
    ]  # fmt: skip
    try:
        with Progress(*columns, console=out, transient=False) as progress:
            return Importer(sender, concurrency, batch_size, budget).run(source, checkpoint, start, tally, progress)
    finally:
        sender.close()
