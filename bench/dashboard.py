"""The dashboard's first render on a large history: every page, in a real browser, against its target.

Usage: python -m bench.dashboard --events 1000000     (the full run, part of `make bench`)
       python -m bench.dashboard --quick              (50,000 events)

`cdp up` on a fresh data dir (embedded defaults), the customer journeys of bench/workload.py spread over the
365 days before now sent through the ingest workers, then, once the projections caught up, each page opened
in a new signed-in tab of Debian's Chromium (Playwright) `--rounds` times. First render: from the start of
the navigation to the moment no panel of the page is loading any more, as the page's own clock
(performance.now()) tells it; the API requests the page made are counted too. The target: every page under
1 s at 1,000,000 events on 2 cores.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import typer
from rich.console import Console
from rich.table import Table

from bench.run import Server
from bench.workload import customer_journey

TARGET_MS = 1000.0
DAYS = 365
CHROMIUM = os.environ.get("CDP_BENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip
PAGES = ["overview", "sales", "service", "marketing", "customers", "segments", "profile?id=user_id:user-1"]
# Rendered: the page's heading is there and no panel shows its loading state or is fetching again.
RENDERED = "document.querySelector('main h1') && !document.querySelector('.state.loading, .refreshing')"
console = Console()


def batches(events: int, seed: int = 7, size: int = 500) -> Iterator[list[dict[str, Any]]]:
    """`events` tracking calls of customers arriving evenly over the last DAYS days, in batches."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    customers = max(events // 12, 1)  # a journey is about a dozen calls
    step = timedelta(days=DAYS) / customers
    sent, c, batch = 0, 0, []
    last = now.isoformat()
    while sent < events:
        for call in customer_journey(rng, c, now - timedelta(days=DAYS) + c * step):
            if call["timestamp"] >= last or sent >= events:
                continue
            batch.append(call | {"messageId": f"d{sent}"})
            sent += 1
            if len(batch) == size:
                yield batch
                batch = []
        c += 1
    if batch:
        yield batch


def send(server: Server, events: int, clients: int = 4) -> float:
    began = time.perf_counter()
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(clients) as pool:
        answers = pool.map(lambda b: client.post(f"{server.ingest_url}/v1/batch", json={"batch": b},
                                                 auth=(server.write_key, "")), batches(events))  # fmt: skip
        for answer in answers:
            answer.raise_for_status()
    return events / (time.perf_counter() - began)


def projected(server: Server, timeout: float = 3600) -> None:
    """Until the resolver and every projection applied the log: what the pages read (the relay to Kafka, in a
    process of its own, may still be behind)."""
    deadline = time.monotonic() + timeout
    while True:
        status = server.status()
        if status["resolver"]["lag"] == 0 and all(p["lag"] == 0 for p in status["projections"].values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the projections did not catch up within {timeout:.0f} s: {status}")
        time.sleep(1)


def first_renders(url: str, read_key: str, rounds: int) -> dict[str, dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, dict[str, Any]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for page_id in PAGES:
                times, requests = [], []
                for _ in range(rounds):
                    # bypass_csp: the page forbids eval, which Playwright's wait_for_function uses
                    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", bypass_csp=True)
                    context.add_init_script(f"sessionStorage.setItem('cdp.readKey', {json.dumps(read_key)})")
                    page = context.new_page()
                    asked: list[str] = []
                    page.on("request", lambda r, asked=asked: asked.append(r.url) if "/v1/" in r.url else None)
                    page.goto(f"{url}/dashboard#/{page_id}")
                    page.wait_for_function(RENDERED, timeout=60_000, polling=10)
                    times.append(page.evaluate("performance.now()"))
                    requests.append(len([u for u in asked if "/v1/live" not in u]))
                    context.close()
                out[page_id.split("?")[0]] = {"p50_ms": statistics.median(times), "max_ms": max(times),
                                              "api_requests": max(requests), "rounds": rounds}  # fmt: skip
        finally:
            browser.close()
    return out


def main(
    events: int = typer.Option(1_000_000, help="events of history before the pages are opened"),
    quick: bool = typer.Option(False, help="50,000 events, 2 rounds"),
    rounds: int = typer.Option(5, help="first renders per page (each in a new tab)"),
    ingest_workers: int = typer.Option(2),
    reuse: Path | None = typer.Option(None, help="the data dir of an earlier run (its `work`/data): no new history"),
    results: Path = typer.Option(Path("bench/results")),
) -> None:
    if quick:
        events, rounds = 50_000, 2
    work = reuse.parent if reuse else Path(tempfile.mkdtemp(prefix="cdp-bench-dashboard-"))
    console.print(f"[bold]dashboard benchmark[/bold]: {events:,} events over {DAYS} days, {rounds} rounds, in {work}")
    began = time.perf_counter()
    server = Server(work / "data", ingest_workers, work / "cdp-up.log").start(timeout=1800 if reuse else 120)
    # With --reuse, a restart on a large log: the write model's identity load and the processors' catch-up.
    figures: dict[str, Any] = {"events": events, "rounds": rounds, "ingest_events_per_s": None,
                               "start_s": time.perf_counter() - began}  # fmt: skip
    console.print(f"platform up in {figures['start_s']:,.1f} s")
    try:
        if not reuse:
            console.print("sending the history through the ingest workers …")
            figures["ingest_events_per_s"] = send(server, events)
        began = time.perf_counter()
        projected(server)
        figures["catch_up_s"] = time.perf_counter() - began
        figures["log_position"] = server.status()["log_position"]
        console.print("first render of each page in Chromium …")
        figures["pages"] = first_renders(server.url, server.read_key, rounds)
    finally:
        server.stop()
    _report(figures, results)


def _report(figures: dict[str, Any], results: Path) -> None:
    ingest = f"ingest {figures['ingest_events_per_s']:,.0f} ev/s, " if figures["ingest_events_per_s"] else "reused, "
    table = Table(title=f"dashboard first render — {os.cpu_count()} cores, {figures['events']:,} events "
                        f"({ingest}catch-up {figures['catch_up_s']:,.0f} s, log position {figures['log_position']:,})")
    for column in ("page", "p50 ms", "max ms", "API requests", "target", "met"):
        table.add_column(column, justify="left" if column == "page" else "right")
    met = {}
    for page, figure in figures["pages"].items():
        met[page] = figure["max_ms"] <= TARGET_MS
        table.add_row(page, f"{figure['p50_ms']:,.0f}", f"{figure['max_ms']:,.0f}", str(figure["api_requests"]),
                      f"≤ {TARGET_MS:,.0f}", "[green]yes[/green]" if met[page] else "[red]no[/red]")  # fmt: skip
    console.print(table)
    figures["targets_met"] = met
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"dashboard-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"machine": {"cores": os.cpu_count()}, "target_ms": TARGET_MS, "figures": figures},
                              indent=2))  # fmt: skip
    console.print(f"written to {out}")


if __name__ == "__main__":
    typer.run(main)
