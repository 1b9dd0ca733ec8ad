"""The benchmark suite: each stage at its own speed, against its target, with ceilings measured in the same run.

Usage: python -m bench.run --events 1000000      (the full run)
       python -m bench.run --quick               (a smoke run of a few minutes)

Everything goes through the real platform (`cdp up` in its own process, embedded
defaults: the core with the query API, resolver, processors, chDB and the bundled
broker, plus the ingest workers it starts on a port of their own) and a load
generator in other processes. The figures:

- ceilings: a bare FastAPI app validating the same batches with the same models
  (as many worker processes as the ingest workers), and raw SQLite and chDB inserts;
- ingest: the workload through the ingest workers as fast as they acknowledge,
  its ratio to the HTTP ceiling, then the catch-up (last acknowledgement →
  `caught_up`) and the end-to-end rate (events over both);
- the CPU of that ingest and catch-up in µs per event: per stage of the core (its
  `/metrics` counters), the core outside the stages, the ingest workers, the
  broker and the load generator;
- profile lookups when idle; KPI, funnel and cohort queries;
- the sustained rate: steady rates stepped up until one fails (profile or KPI
  freshness p99 over 1 s, or the sender achieving under 95% of the offered rate);
  the highest that passes, and profile lookups while that rate runs;
- peak RSS of the core alone and of all the platform's processes together;
- a rebuild of the projections from the log, against raw chDB inserts;
- encryption at rest on vs off: the ingest, catch-up and rebuild again with `CDP_ENCRYPTION=off` on a fresh
  data dir (the same workload, the log topped up to as many events as the main run's before its rebuild), side
  by side with the main run's (encryption on) and their ratio on/off (`--no-compare-encryption` skips it).

Results print as tables and are written to bench/results/<timestamp>.json with the
machine's description.
"""

from __future__ import annotations

import json
import math
import os
import platform as host
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import psutil
import typer
from rich.console import Console
from rich.table import Table

from bench.workload import workload
from infra.broker import free_port

console = Console(width=None if sys.stdout.isatty() else 120)  # a log or pipe gets the tables whole

HTTP_CEILING, RAW_CLICKHOUSE = "http_ceiling_events_per_s", "raw_clickhouse_rows_per_s"
CEILING_LABELS = {HTTP_CEILING: "HTTP ceiling", RAW_CLICKHOUSE: "raw chDB"}
# The figures in the order they print: (name, (target, comparison) or None, the ceiling it is a share of).
FIGURES: list[tuple[str, tuple[float, str] | None, str | None]] = [
    (HTTP_CEILING, None, None),
    ("raw_event_store_rows_per_s", None, None),
    (RAW_CLICKHOUSE, None, None),
    ("ingest_events_per_s", (50_000, ">="), HTTP_CEILING),
    ("ingest_over_http_ceiling", (0.7, ">="), None),
    ("ingest_over_raw_event_store", None, None),
    ("catch_up_after_ingest_s", None, None),
    ("end_to_end_events_per_s", None, HTTP_CEILING),
    ("sustained_events_per_s", (10_000, ">="), HTTP_CEILING),
    ("freshness_p50_s", None, None),
    ("freshness_p99_s", (1.0, "<="), None),
    ("kpi_freshness_p50_s", None, None),
    ("kpi_freshness_p99_s", (1.0, "<="), None),
    ("lookup_p50_ms", None, None),
    ("lookup_p99_ms", (10.0, "<="), None),
    ("lookup_under_load_p50_ms", None, None),
    ("lookup_under_load_p99_ms", (10.0, "<="), None),
    ("kpi_query_p50_ms", None, None),
    ("kpi_query_p95_ms", (100.0, "<="), None),
    ("rebuild_events_per_s", (100_000, ">="), RAW_CLICKHOUSE),
    ("rebuild_over_raw_clickhouse", (0.5, ">="), None),
    ("rebuild_log_entries_per_s", None, None),
    ("peak_rss_core_gib", None, None),
    ("peak_rss_all_gib", (2.0, "<="), None),
    ("profiles", None, None),
]
TARGETS = {name: target for name, target, _ in FIGURES if target is not None}

STEPS = [1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000]  # offered rates of the sustained-rate figure, events/s
QUICK_STEPS = [1_000, 2_000]
FRESH_S = 1.0  # a step passes when profile and KPI freshness p99 are within this …
ACHIEVED = 0.95  # … and the sender achieved at least this share of the offered rate
# How often the catch-up wait asks for /v1/status: each answer reads the stores (ClickHouse among them, under the
# embedded engine's one lock), so asking every few milliseconds would slow the catch-up it measures.
POLL_S = 0.2
STAGES = ("resolver", "kpis", "profiles", "tags", "relay", "log_read")


def _load_client(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.load_client", *args]


def _client(*args: str) -> dict[str, Any]:
    out = subprocess.run(_load_client(*args), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"load client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _client_while_paced(paced: list[str], other: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`paced` load-client arguments run; `other` runs once the paced load's first batch is out. Both results."""
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(_load_client("paced", *paced), stdout=subprocess.PIPE, stderr=errors, text=True)
        assert process.stdout is not None
        try:
            if not process.stdout.readline():  # {"sending": true}, after the workload is prepared
                process.wait(10)
                errors.seek(0)
                raise RuntimeError(f"paced load client failed: {errors.read()[-2000:]}")
            result = _client(*other)
            lines = process.stdout.read().strip().splitlines()
            if process.wait() != 0 or not lines:
                errors.seek(0)
                raise RuntimeError(f"paced load client failed: {errors.read()[-2000:]}")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return json.loads(lines[-1]), result


def _wait_http(url: str, timeout: float = 120, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}) before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def http_ceiling(events: int, clients: int, workers: int) -> float:
    """The bare app served by as many uvicorn worker processes as the platform's ingest workers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.ceiling_app:app", "--port", str(port), "--log-level", "warning",
         "--workers", str(workers)]  # fmt: skip
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/docs", process=server)  # type: ignore[arg-type]
        return _client("ingest", f"http://127.0.0.1:{port}", "any", "--events", str(events),
                       "--clients", str(clients))["events_per_s"]  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)


def raw_event_store_insert(events: int, directory: Path) -> float:
    """Rows of the same shape and size as stored events, batched 100 per transaction into SQLite (WAL)."""
    db = sqlite3.connect(directory / "raw.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, topic TEXT, "
               "state BLOB, PRIMARY KEY (originator_id, originator_version))")  # fmt: skip
    rows = [(f"{i:032x}", 1, "domain.model:CustomerEvent.Recorded", orjson.dumps(c))
            for i, c in enumerate(workload(events))]  # fmt: skip
    started = time.perf_counter()
    for i in range(0, len(rows), 100):
        db.execute("BEGIN")
        db.executemany("INSERT INTO stored_events VALUES (?, ?, ?, ?)", rows[i : i + 100])
        db.execute("COMMIT")
    return len(rows) / (time.perf_counter() - started)


def raw_clickhouse_insert(events: int, directory: Path) -> float:
    """The events projection's rows inserted straight into chDB in batches of 5,000."""
    import clickhouse_connect

    from domain.segment import call_adapter, normalise
    from projections.migrate import migrate
    from projections.store import ProjectionStore
    from domain.identity import IdentityRules
    from streams.messages import EventMessage
    from streams.processors import event_row

    client = clickhouse_connect.get_client(interface="chdb", path=str(directory / "raw-clickhouse"))
    migrate(client, "raw")
    store = ProjectionStore(client, "raw")
    now = datetime.now(timezone.utc)
    rules = IdentityRules()
    rows = []
    for i, raw in enumerate(workload(events)):
        call = normalise(call_adapter.validate_python(raw), now)
        message = EventMessage(workspace_id="ws", event_id=f"00000000-0000-0000-0000-{i:012x}", message_id=str(i),
                               anchor=f"user_id:{i % 997}", profile_id="00000000-0000-0000-0000-000000000001",
                               position=i + 1, recorded_at=now, call=call)  # fmt: skip
        rows.append(event_row(message, rules))
    started = time.perf_counter()
    for i in range(0, len(rows), 5000):
        store.insert_events(rows[i : i + 5000])
    elapsed = time.perf_counter() - started
    client.close()
    return len(rows) / elapsed


def _vm_hwm_gib(pid: int) -> float:
    """The process's peak resident set (VmHWM), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


class Server:
    """`cdp up` in its own process, on the embedded defaults: the core on `url`, its ingest workers on `ingest_url`.

    `encryption` sets CDP_ENCRYPTION whatever this shell has set: on (the default) or off (new data in plain text)."""

    def __init__(self, data_dir: Path, ingest_workers: int, log: Path, encryption: bool = True) -> None:
        self.port = free_port()
        self.ingest_port = free_port()
        while self.ingest_port == self.port:
            self.ingest_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"  # the core: query API, status, metrics
        self.ingest_url = f"http://127.0.0.1:{self.ingest_port}"  # the ingest workers
        self.env = {**os.environ, "CDP_DATA_DIR": str(data_dir), "CDP_HTTP_PORT": str(self.port),
                    "CDP_INGEST_PORT": str(self.ingest_port), "CDP_INGEST_WORKERS": str(ingest_workers),
                    "CDP_KAFKA_PORT": str(free_port()), "CDP_ENCRYPTION": "on" if encryption else "off",
                    "CDP_RATE_LIMIT": "0"}  # fmt: skip  # the benchmark measures capacity: no per-key limit
        for name in ("CDP_EVENT_STORE", "CDP_CLICKHOUSE_URL", "CDP_KAFKA_BOOTSTRAP", "CDP_WRITE_KEY", "CDP_READ_KEY",
                     "CDP_ADMIN_KEY", "CDP_PLATFORM_KEY"):
            self.env.pop(name, None)  # the embedded defaults, whatever this shell has set
        self.data_dir = data_dir
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 120) -> "Server":
        """`timeout`: for the core to answer (a data dir with a long log takes longer to open)."""
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "infra.cli", "up"], env=self.env,
                                        stdout=self._log, stderr=subprocess.STDOUT)  # fmt: skip
        _wait_http(f"{self.url}/healthz", timeout=timeout, process=self.process)
        _wait_http(f"{self.ingest_url}/healthz", process=self.process)  # the workers start after the core
        keys = json.loads((self.data_dir / "keys.json").read_text())
        self.write_key, self.read_key, self.platform_key = keys["write_key"], keys["read_key"], keys["platform_key"]
        return self

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/v1/status", headers={"Authorization": f"Bearer {self.read_key}"}, timeout=30)
        return response.json()  # type: ignore[no-any-return]

    def wait_caught_up(self, timeout: float = 1800) -> None:
        deadline = time.monotonic() + timeout
        while not (status := self.status())["caught_up"]:
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the platform did not catch up: {status}")
            time.sleep(POLL_S)

    def stage_counters(self) -> dict[str, dict[str, float]]:
        """The core's per-stage counters from /metrics: {stage: {"cpu_s": …, "entries": …}}."""
        counters: dict[str, dict[str, float]] = {stage: {"cpu_s": 0.0, "entries": 0.0} for stage in STAGES}
        pattern = re.compile(r'^cdp_stage_(cpu_seconds|entries)_total\{stage="([^"]+)"\} (\S+)$')
        metrics = httpx.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {self.platform_key}"}, timeout=30)
        for line in metrics.text.splitlines():
            if match := pattern.match(line):
                kind, stage, value = match.groups()
                counters.setdefault(stage, {"cpu_s": 0.0, "entries": 0.0})
                counters[stage]["cpu_s" if kind == "cpu_seconds" else "entries"] = float(value)
        return counters

    def processes(self) -> dict[int, tuple[str, psutil.Process]]:
        """The platform's processes by pid, each with its part: core, relay, ingest supervisor and workers, broker."""
        assert self.process is not None
        core = psutil.Process(self.process.pid)
        found = {core.pid: ("core", core)}
        for child in core.children():
            try:
                command = " ".join(child.cmdline())
                if "tansu" in command:
                    found[child.pid] = ("broker", child)
                elif "infra.cli relay" in command:
                    found[child.pid] = ("relay process", child)
                elif "ingest" in command:
                    found[child.pid] = ("ingest supervisor", child)
                    for worker in child.children(recursive=True):
                        worker_command = " ".join(worker.cmdline())
                        part = "ingest workers" if "spawn_main" in worker_command else "ingest supervisor"
                        found[worker.pid] = (part, worker)
                else:
                    found[child.pid] = ("other", child)
                    for grandchild in child.children(recursive=True):
                        found[grandchild.pid] = ("other", grandchild)
            except psutil.Error:  # gone while it was looked at
                continue
        return found

    def cpu_times(self) -> dict[int, tuple[str, float]]:
        """User plus system CPU seconds of each of the platform's processes, by pid, with its part."""
        times = {}
        for pid, (part, process) in self.processes().items():
            try:
                cpu = process.cpu_times()
                times[pid] = (part, cpu.user + cpu.system)
            except psutil.Error:
                continue
        return times

    def peak_rss_gib(self) -> tuple[float, float]:
        """VmHWM of the core alone, and summed over the core and all its descendants (supervisor, workers, broker).

        The sum of each process's own peak is an upper bound of the peak of them together: the peaks need not
        have been at the same moment."""
        assert self.process is not None
        core = psutil.Process(self.process.pid)
        pids = [core.pid] + [child.pid for child in core.children(recursive=True)]
        return _vm_hwm_gib(core.pid), sum(_vm_hwm_gib(pid) for pid in pids)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()


def _cpu_profile(
    before: tuple[dict[str, dict[str, float]], dict[int, tuple[str, float]]],
    after: tuple[dict[str, dict[str, float]], dict[int, tuple[str, float]]],
    events: int,
    load_generator_cpu_s: float,
) -> list[dict[str, Any]]:
    """CPU between two snapshots (stage counters, process CPU times): rows of part, CPU s, entries, µs/entry, µs/event.

    A process only in `after` (started in between) counts whole; one gone by `after` is left out."""
    (stages_before, procs_before), (stages_after, procs_after) = before, after
    rows: list[dict[str, Any]] = []

    def row(part: str, cpu_s: float, entries: float | None = None, processes: int | None = None) -> None:
        rows.append({"part": part, "cpu_s": cpu_s, "entries": entries, "processes": processes,
                     "us_per_entry": cpu_s / entries * 1e6 if entries else None,
                     "us_per_event": cpu_s / events * 1e6 if events else None})  # fmt: skip

    stage_total = 0.0
    zero = {"cpu_s": 0.0, "entries": 0.0}
    for stage in [*STAGES, *sorted(set(stages_after) - set(STAGES))]:  # any stage added later prints last
        was, now = stages_before.get(stage, zero), stages_after.get(stage, zero)
        cpu_s = now["cpu_s"] - was["cpu_s"]
        stage_total += cpu_s
        row(f"core stage: {stage}", cpu_s, now["entries"] - was["entries"])
    parts: dict[str, list[float]] = {}
    for pid, (part, cpu) in procs_after.items():
        parts.setdefault(part, []).append(cpu - procs_before.get(pid, (part, 0.0))[1])
    core = sum(parts.get("core", [0.0]))
    row("core, all stages", stage_total)
    row("core, outside the stages", core - stage_total)
    row("core process", core, processes=len(parts.get("core", [])))
    for part in ("relay process", "ingest workers", "ingest supervisor", "broker", "other"):
        if part in parts:
            row(part, sum(parts[part]), processes=len(parts[part]))
    row("load generator", load_generator_cpu_s, processes=1)
    row("all processes", sum(sum(v) for v in parts.values()) + load_generator_cpu_s)
    return rows


def _ingest_burst(server: Server, events: int, clients: int) -> dict[str, Any]:
    """The workload through the ingest workers as fast as they acknowledge, then the wait for `caught_up`.

    The load client's result, with `catch_up_s` (last acknowledgement → caught up), `end_to_end_events_per_s`
    (events over both) and `cpu_per_event` (the CPU of both, per event sent)."""
    before = server.stage_counters(), server.cpu_times()
    ingest = _client("ingest", server.ingest_url, server.write_key, "--events", str(events),
                     "--clients", str(clients))  # fmt: skip
    acked = time.perf_counter()
    server.wait_caught_up()
    catch_up_s = time.perf_counter() - acked
    after = server.stage_counters(), server.cpu_times()
    return {**ingest, "catch_up_s": catch_up_s,
            "end_to_end_events_per_s": ingest["events_sent"] / (ingest["seconds"] + catch_up_s),
            "cpu_per_event": _cpu_profile(before, after, ingest["events_sent"], ingest["cpu_s"])}  # fmt: skip


def _rebuild_s(server: Server) -> float:
    """`cdp rebuild` on the stopped server's data dir, with its environment: the seconds it took."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "infra.cli", "rebuild"], env=server.env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - started


# The figures compared with encryption at rest on and off, and the name of each one's ratio on/off.
ENCRYPTION_FIGURES = {
    "ingest_events_per_s": "ingest_encryption_cost",
    "catch_up_after_ingest_s": "catch_up_encryption_cost",
    "end_to_end_events_per_s": "end_to_end_encryption_cost",
    "rebuild_events_per_s": "rebuild_encryption_cost",
    "rebuild_log_entries_per_s": "rebuild_log_entries_encryption_cost",
}


def encryption_off(work: Path, events: int, clients: int, ingest_workers: int, stored: int) -> dict[str, Any]:
    """The ingest and rebuild figures again with CDP_ENCRYPTION=off, on a fresh data dir.

    The same workload as the main run's ingest, timed the same way; then, untimed, the log topped up with other
    events (another seed) to `stored`, the events the main run's log held when it was rebuilt, so that both
    rebuilds replay as many events; then `cdp rebuild`."""
    server = Server(work / "data-encryption-off", ingest_workers, work / "cdp-up-encryption-off.log",
                    encryption=False).start()  # fmt: skip
    try:
        burst = _ingest_burst(server, events, clients)
        top_up = max(0, stored - burst["unique_events"])
        if top_up:
            _client("ingest", server.ingest_url, server.write_key, "--events", str(top_up), "--clients", str(clients),
                    "--seed", "300")  # fmt: skip
            server.wait_caught_up()
        log_position = server.status()["log_position"]
    finally:
        server.stop()
    rebuild_s = _rebuild_s(server)
    off_stored = burst["unique_events"] + top_up
    return {"ingest_events_per_s": burst["events_per_s"], "catch_up_after_ingest_s": burst["catch_up_s"],
            "end_to_end_events_per_s": burst["end_to_end_events_per_s"], "events_topped_up": top_up,
            "events_stored": off_stored, "log_position": log_position,
            "rebuild_events_per_s": off_stored / rebuild_s, "rebuild_log_entries_per_s": log_position / rebuild_s,
            "cpu_per_event": burst["cpu_per_event"]}  # fmt: skip


def main(
    events: int = typer.Option(1_000_000, help="events for the ingest, lookup and rebuild figures"),
    clients: int = typer.Option(8, help="concurrent HTTP clients of the ingest load"),
    ingest_workers: int = typer.Option(os.cpu_count() or 1, help="ingest worker processes (CDP_INGEST_WORKERS)"),
    quick: bool = typer.Option(False, help="a smoke run: 20,000 events, steps of 1,000 and 2,000 events/s for 5 s"),
    compare_encryption: bool = typer.Option(
        True, "--compare-encryption/--no-compare-encryption",
        help="then the ingest and rebuild again with CDP_ENCRYPTION=off on a fresh data dir, side by side",
    ),
    results: Path = typer.Option(Path("bench/results")),
) -> None:
    steps, step_seconds, lookups = STEPS, 15.0, 2000
    if quick:
        events, steps, step_seconds, lookups = 20_000, QUICK_STEPS, 5.0, 300
    work = Path(tempfile.mkdtemp(prefix="cdp-bench-"))
    customers = len({c["userId"] for c in workload(events) if "userId" in c})
    figures: dict[str, Any] = {"events": events, "clients": clients, "ingest_workers": ingest_workers,
                               "sustained_step_seconds": step_seconds}  # fmt: skip

    console.print(f"[bold]cdp benchmark[/bold]: {events:,} events, {clients} clients, "
                  f"{ingest_workers} ingest workers, in {work}")  # fmt: skip
    console.print("ceilings: bare HTTP + pydantic, raw SQLite and chDB inserts …")
    figures[HTTP_CEILING] = http_ceiling(events, clients, ingest_workers)
    figures["raw_event_store_rows_per_s"] = raw_event_store_insert(events, work)
    figures[RAW_CLICKHOUSE] = raw_clickhouse_insert(events, work)

    server = Server(work / "data", ingest_workers, work / "cdp-up.log").start()
    stored = 0  # distinct events sent, for the rebuild figure
    try:
        console.print("ingest through the ingest workers, then catch-up …")
        burst = _ingest_burst(server, events, clients)
        stored += burst["unique_events"]
        figures["ingest_events_per_s"] = burst["events_per_s"]
        figures["catch_up_after_ingest_s"] = burst["catch_up_s"]
        figures["end_to_end_events_per_s"] = burst["end_to_end_events_per_s"]
        figures["cpu_per_event"] = burst["cpu_per_event"]

        console.print("profile lookups …")
        lookup = _client("lookups", server.url, server.read_key, str(customers), "--count", str(lookups))
        figures["profiles"] = customers
        figures["lookup_p50_ms"], figures["lookup_p99_ms"] = lookup["p50_ms"], lookup["p99_ms"]
        console.print("KPI, funnel and cohort queries …")
        kpis = _client("kpis", server.url, server.read_key, "--rounds", "2" if quick else "5")
        figures["kpi_query_p50_ms"], figures["kpi_query_p95_ms"] = kpis["p50_ms"], kpis["p95_ms"]
        figures["kpi_slowest_median_ms"] = kpis["slowest_median_ms"]

        sustained_steps: list[dict[str, Any]] = []
        for k, rate in enumerate(steps):
            server.wait_caught_up()
            console.print(f"sustained rate: {rate:,} events/s for {step_seconds:g} s …")
            paced = _client("paced", server.ingest_url, server.write_key, server.read_key, "--api-url", server.url,
                            "--rate", str(rate), "--seconds", str(step_seconds), "--seed", str(100 + k))  # fmt: skip
            stored += paced["unique_events"] + 2 * paced["probes"]
            passed = (paced["freshness_p99_s"] <= FRESH_S and paced["kpi_freshness_p99_s"] <= FRESH_S
                      and paced["achieved_events_per_s"] >= ACHIEVED * rate)  # fmt: skip
            sustained_steps.append(
                {"rate": rate, "achieved_events_per_s": paced["achieved_events_per_s"], "passed": passed,
                 "freshness_p50_s": paced["freshness_p50_s"], "freshness_p99_s": paced["freshness_p99_s"],
                 "kpi_freshness_p50_s": paced["kpi_freshness_p50_s"],
                 "kpi_freshness_p99_s": paced["kpi_freshness_p99_s"], "probes": paced["probes"],
                 "probe_timeouts": paced["probe_timeouts"], "failed_batches": paced["failed_batches"],
                 "error_batches": paced["error_batches"], "errors": paced["errors"],
                 "most_late_s": paced["most_late_s"], "load_generator_cpu_s": paced["cpu_s"],
                 "send_seconds": paced["send_seconds"]}  # fmt: skip
            )
            if not passed:
                break
        figures["sustained_steps"] = sustained_steps
        passing = [step for step in sustained_steps if step["passed"]]
        figures["sustained_events_per_s"] = passing[-1]["rate"] if passing else 0
        at = passing[-1] if passing else sustained_steps[0]  # the freshness figures: at the sustained rate
        figures["freshness_rate"] = at["rate"]
        for name in ("freshness_p50_s", "freshness_p99_s", "kpi_freshness_p50_s", "kpi_freshness_p99_s"):
            figures[name] = at[name]

        server.wait_caught_up()
        under = figures["sustained_events_per_s"] or steps[0]
        console.print(f"profile lookups while {under:,} events/s are ingested …")
        paced, lookup = _client_while_paced(
            [server.ingest_url, server.write_key, server.read_key, "--api-url", server.url, "--rate", str(under),
             "--seconds", str(step_seconds), "--seed", "200"],
            ["lookups", server.url, server.read_key, str(customers), "--seconds", str(step_seconds * 0.9)],
        )  # fmt: skip
        stored += paced["unique_events"] + 2 * paced["probes"]
        figures["lookup_under_load"] = {"rate": under, "lookups": lookup["lookups"],
                                        "achieved_events_per_s": paced["achieved_events_per_s"],
                                        "freshness_p99_s": paced["freshness_p99_s"],
                                        "kpi_freshness_p99_s": paced["kpi_freshness_p99_s"]}  # fmt: skip
        figures["lookup_under_load_p50_ms"] = lookup["p50_ms"]
        figures["lookup_under_load_p99_ms"] = lookup["p99_ms"]

        server.wait_caught_up()
        figures["log_position"] = server.status()["log_position"]
        # Sampled last, just before stopping; a sum of each process's own peak, so an upper bound.
        figures["peak_rss_core_gib"], figures["peak_rss_all_gib"] = server.peak_rss_gib()
    finally:
        server.stop()

    console.print("rebuild from the log …")
    rebuild_s = _rebuild_s(server)
    figures["events_stored"] = stored
    figures["rebuild_log_entries_per_s"] = figures["log_position"] / rebuild_s
    figures["rebuild_events_per_s"] = stored / rebuild_s

    if compare_encryption:
        console.print(f"encryption at rest off (CDP_ENCRYPTION=off, a fresh data dir): ingest, catch-up, the log "
                      f"topped up to {stored:,} events, rebuild …")  # fmt: skip
        off = figures["encryption_off"] = encryption_off(work, events, clients, ingest_workers, stored)
        for name, cost in ENCRYPTION_FIGURES.items():
            figures[cost] = figures[name] / off[name] if off[name] else None

    figures["ingest_over_http_ceiling"] = figures["ingest_events_per_s"] / figures[HTTP_CEILING]
    figures["rebuild_over_raw_clickhouse"] = figures["rebuild_events_per_s"] / figures[RAW_CLICKHOUSE]
    figures["ingest_over_raw_event_store"] = figures["ingest_events_per_s"] / figures["raw_event_store_rows_per_s"]
    _report(figures, results)


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"


def _met(value: Any, target: tuple[float, str]) -> bool:
    if value is None or math.isnan(value):
        return False
    return bool(value >= target[0] if target[1] == ">=" else value <= target[0])


def _report(figures: dict[str, Any], results: Path) -> None:
    machine = {"cores": os.cpu_count(), "platform": host.platform(), "python": host.python_version(),
               "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}  # fmt: skip
    table = Table(title=f"cdp benchmark — {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['platform']}")
    for column in ("figure", "value", "target", "of ceiling", "met"):
        table.add_column(column, justify="right" if column in ("value", "of ceiling") else "left")
    met: dict[str, bool] = {}
    for name, target, ceiling in FIGURES:
        value = figures.get(name)
        ratio = ""
        if ceiling is not None and value is not None and figures.get(ceiling):
            ratio = f"{value / figures[ceiling]:.2f} of {CEILING_LABELS[ceiling]}"
        if target is None:
            table.add_row(name, _number(value), "", ratio, "")
            continue
        met[name] = _met(value, target)
        table.add_row(name, _number(value), f"{target[1]} {target[0]:,}", ratio,
                      "[green]yes[/green]" if met[name] else "[red]no[/red]")  # fmt: skip
    figures["targets_met"] = met
    console.print(table)
    console.print(f"freshness figures at {figures['freshness_rate']:,} events/s; lookups under load at "
                  f"{figures['lookup_under_load']['rate']:,} events/s "
                  f"(achieved {figures['lookup_under_load']['achieved_events_per_s']:,.0f})")  # fmt: skip

    steps = Table(title=f"sustained rate: steps (pass: freshness p99 ≤ {FRESH_S:g} s, achieved ≥ {ACHIEVED:.0%})")
    for column in ("offered/s", "achieved/s", "profile p50 s", "profile p99 s", "KPI p50 s", "KPI p99 s", "probes",
                   "passed"):  # fmt: skip
        steps.add_column(column, justify="right")
    for step in figures["sustained_steps"]:
        steps.add_row(f"{step['rate']:,}", f"{step['achieved_events_per_s']:,.0f}", _number(step["freshness_p50_s"]),
                      _number(step["freshness_p99_s"]), _number(step["kpi_freshness_p50_s"]),
                      _number(step["kpi_freshness_p99_s"]), str(step["probes"]),
                      "[green]yes[/green]" if step["passed"] else "[red]no[/red]")  # fmt: skip
    console.print(steps)

    cpu = Table(title="CPU of the ingest and catch-up, per event acknowledged (user + system)")
    for column in ("part", "processes", "CPU s", "entries", "µs/entry", "µs/event"):
        cpu.add_column(column, justify="left" if column == "part" else "right")
    for row in figures["cpu_per_event"]:
        cpu.add_row(row["part"], str(row["processes"] or ""), f"{row['cpu_s']:,.2f}",
                    f"{row['entries']:,.0f}" if row["entries"] is not None else "",
                    f"{row['us_per_entry']:,.1f}" if row["us_per_entry"] is not None else "",
                    f"{row['us_per_event']:,.1f}" if row["us_per_event"] is not None else "")  # fmt: skip
    console.print(cpu)
    console.print(f"slowest KPI queries (median ms): {figures['kpi_slowest_median_ms']}")
    if "encryption_off" in figures:
        _report_encryption(figures)
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    targets = {name: {"target": t[0], "comparison": t[1]} for name, t in TARGETS.items()}
    out.write_text(json.dumps({"machine": machine, "targets": targets, "figures": figures}, indent=2))
    console.print(f"written to {out}")


def _report_encryption(figures: dict[str, Any]) -> None:
    off = figures["encryption_off"]
    table = Table(title="encryption at rest: on vs off")
    for column in ("figure", "encryption on", "encryption off", "on/off"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for name, cost in ENCRYPTION_FIGURES.items():
        ratio = figures.get(cost)
        table.add_row(name, _number(figures.get(name)), _number(off.get(name)),
                      f"{ratio:.2f}" if ratio is not None else "n/a")  # fmt: skip
    table.add_row("events rebuilt", f"{figures['events_stored']:,}", f"{off['events_stored']:,}", "")
    console.print(table)
    on_cpu = {row["part"]: row for row in figures["cpu_per_event"]}
    cpu = Table(title="CPU per event of the ingest and catch-up (µs, user + system): encryption on vs off")
    for column in ("part", "encryption on", "encryption off", "on − off"):
        cpu.add_column(column, justify="left" if column == "part" else "right")
    for row in off["cpu_per_event"]:
        on, off_us = on_cpu.get(row["part"], {}).get("us_per_event"), row["us_per_event"]
        if on is None or off_us is None:
            continue
        cpu.add_row(row["part"], f"{on:,.1f}", f"{off_us:,.1f}", f"{on - off_us:+,.1f}")
    console.print(cpu)
    console.print("on/off: a rate's ratio under 1, or a time's over 1, is what encryption costs; the rebuilds replay "
                  "logs of as many events (the one with encryption off topped up, untimed, with other events)")


if __name__ == "__main__":
    typer.run(main)
