"""The benchmark suite: figures against targets, with ceilings measured in the same run.

Usage: python -m bench.run --events 1000000      (the full run)
       python -m bench.run --quick               (a smoke run, well under 2 minutes)

Everything goes through the real platform (`cdp up` in its own process, embedded
defaults) and a load generator in another process. Results print as a table and
are written to bench/results/<timestamp>.json with the machine's description.
"""

from __future__ import annotations

import json
import os
import platform as host
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

from bench.workload import workload
from infra.broker import free_port

console = Console()
TARGETS = {
    "ingest_events_per_s": (50_000, ">="),
    "freshness_p99_s": (1.0, "<="),
    "kpi_freshness_p99_s": (1.0, "<="),
    "lookup_p99_ms": (10.0, "<="),
    "kpi_query_p95_ms": (100.0, "<="),
    "rebuild_events_per_s": (100_000, ">="),
    "peak_rss_gib": (2.0, "<="),
}


def _client(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.load_client", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"load client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def http_ceiling(events: int, clients: int) -> float:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.ceiling_app:app", "--port", str(port), "--log-level", "warning"]
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/docs")
        return _client("ingest", f"http://127.0.0.1:{port}", "any", "--events", str(events),
                       "--clients", str(clients))["events_per_s"]  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)


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


class Server:
    """`cdp up` in its own process, on the embedded defaults."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "CDP_DATA_DIR": str(data_dir), "CDP_HTTP_PORT": str(self.port),
                    "CDP_KAFKA_PORT": str(free_port())}  # fmt: skip
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Server":
        self.process = subprocess.Popen([sys.executable, "-m", "infra.cli", "up"], env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        _wait_http(f"{self.url}/healthz")
        keys = json.loads((self.data_dir / "keys.json").read_text())
        self.write_key, self.read_key = keys["write_key"], keys["read_key"]
        return self

    def status(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/v1/status", headers={"Authorization": f"Bearer {self.read_key}"}).json()

    def wait_caught_up(self) -> None:
        while not self.status()["caught_up"]:
            time.sleep(0.02)

    def peak_rss_gib(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024 / 1024
        return float("nan")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


def main(
    events: int = typer.Option(1_000_000, help="events for the ingest, lookup and rebuild figures"),
    clients: int = typer.Option(8, help="concurrent HTTP clients"),
    rate: int = typer.Option(5_000, help="steady rate for the freshness figure (events/s)"),
    quick: bool = typer.Option(False, help="a smoke run: 20,000 events, 5 s of steady load"),
    results: Path = typer.Option(Path("bench/results")),
) -> None:
    paced_seconds = 20.0
    if quick:
        events, paced_seconds, rate = 20_000, 5.0, min(rate, 2_000)
    work = Path(tempfile.mkdtemp(prefix="cdp-bench-"))
    customers = len({c["userId"] for c in workload(events) if "userId" in c})
    figures: dict[str, Any] = {"events": events, "clients": clients}

    console.print(f"[bold]cdp benchmark[/bold]: {events:,} events, {clients} clients, in {work}")
    console.print("ceilings: bare HTTP + pydantic, raw SQLite and chDB inserts …")
    figures["http_ceiling_events_per_s"] = http_ceiling(events, clients)
    figures["raw_event_store_rows_per_s"] = raw_event_store_insert(events, work)
    figures["raw_clickhouse_rows_per_s"] = raw_clickhouse_insert(events, work)

    server = Server(work / "data").start()
    try:
        console.print("ingest through the platform …")
        ingest = _client("ingest", server.url, server.write_key, "--events", str(events), "--clients", str(clients))
        acked = time.perf_counter()
        server.wait_caught_up()
        figures["ingest_events_per_s"] = ingest["events_per_s"]
        figures["catch_up_after_ingest_s"] = time.perf_counter() - acked
        console.print("profile lookups …")
        lookup = _client("lookups", server.url, server.read_key, str(customers), "--count", "300" if quick else "2000")
        figures["profiles"] = customers
        figures["lookup_p50_ms"], figures["lookup_p99_ms"] = lookup["p50_ms"], lookup["p99_ms"]
        console.print(f"freshness at a steady {rate:,} events/s …")
        fresh = _client("paced", server.url, server.write_key, server.read_key, "--rate", str(rate),
                        "--seconds", str(paced_seconds))  # fmt: skip
        figures["freshness_rate"] = rate
        figures["freshness_p50_s"], figures["freshness_p99_s"] = fresh["freshness_p50_s"], fresh["freshness_p99_s"]
        figures["kpi_freshness_p50_s"] = fresh["kpi_freshness_p50_s"]
        figures["kpi_freshness_p99_s"] = fresh["kpi_freshness_p99_s"]
        server.wait_caught_up()
        console.print("KPI, funnel and cohort queries …")
        kpis = _client("kpis", server.url, server.read_key, "--rounds", "2" if quick else "5")
        figures["kpi_query_p50_ms"], figures["kpi_query_p95_ms"] = kpis["p50_ms"], kpis["p95_ms"]
        figures["kpi_slowest_median_ms"] = kpis["slowest_median_ms"]
        figures["log_position"] = server.status()["log_position"]
        figures["peak_rss_gib"] = server.peak_rss_gib()
    finally:
        server.stop()

    console.print("rebuild from the log …")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "infra.cli", "rebuild"], env=server.env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    rebuild_s = time.perf_counter() - started
    stored = figures["log_position"]
    figures["rebuild_log_entries_per_s"] = stored / rebuild_s
    figures["rebuild_events_per_s"] = (events + int(rate * paced_seconds)) / rebuild_s

    figures["ingest_over_http_ceiling"] = figures["ingest_events_per_s"] / figures["http_ceiling_events_per_s"]
    figures["rebuild_over_raw_clickhouse"] = figures["rebuild_events_per_s"] / figures["raw_clickhouse_rows_per_s"]
    figures["ingest_over_raw_event_store"] = figures["ingest_events_per_s"] / figures["raw_event_store_rows_per_s"]
    _report(figures, results)


def _report(figures: dict[str, Any], results: Path) -> None:
    machine = {"cores": os.cpu_count(), "platform": host.platform(), "python": host.python_version(),
               "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}  # fmt: skip
    table = Table(title=f"cdp benchmark — {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['platform']}")
    for column in ("figure", "value", "target", "met"):
        table.add_column(column)
    for name, (target, op) in TARGETS.items():
        value = figures.get(name)
        met = value >= target if op == ">=" else value <= target
        table.add_row(name, f"{value:,.3f}" if value < 100 else f"{value:,.0f}", f"{op} {target:,}",
                      "[green]yes[/green]" if met else "[red]no[/red]")  # fmt: skip
    for name in ("http_ceiling_events_per_s", "raw_event_store_rows_per_s", "raw_clickhouse_rows_per_s",
                 "ingest_over_http_ceiling", "ingest_over_raw_event_store", "rebuild_over_raw_clickhouse",
                 "catch_up_after_ingest_s", "lookup_p50_ms", "freshness_p50_s", "kpi_freshness_p50_s",
                 "kpi_query_p50_ms", "profiles"):  # fmt: skip
        value = figures[name]
        table.add_row(name, f"{value:,.3f}" if value < 100 else f"{value:,.0f}", "", "")
    console.print(table)
    console.print(f"slowest KPI queries (median ms): {figures['kpi_slowest_median_ms']}")
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"machine": machine, "targets": TARGETS, "figures": figures}, indent=2))
    console.print(f"written to {out}")


if __name__ == "__main__":
    typer.run(main)
