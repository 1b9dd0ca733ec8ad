"""Identity at scale on the embedded default: write with merges, project, then time profile lookups.

Usage: python -m bench.identity_scale --profiles 100000 --events 1000000
       python -m bench.identity_scale --quick          (10,000 profiles, 100,000 events)

Customers browse anonymously on one or two devices, then log in on each; a login
on a second device that already has history merges two profiles. Everything goes
through the running platform (group committer, event store, log follower,
chDB); lookups go through HTTP. Prints write rate, merge throughput, catch-up
time and profile lookup latency (p50/p99) against the 10 ms p99 target.
"""

from __future__ import annotations

import json
import os
import platform as host
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from domain.segment import call_adapter, normalise
from infra.bootstrap import Platform
from infra.broker import free_port
from infra.config import load_settings
from infra.server import ThreadedServer

console = Console()
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def workload(profiles: int, events: int, seed: int) -> Iterator[dict[str, Any]]:
    """Seeded stream of raw calls: anonymous browsing, logins (some merging two devices), orders."""
    rng = random.Random(seed)
    second_device = {c for c in range(profiles) if rng.random() < 0.3}
    per_profile = max(3, events // profiles)
    n = 0
    for c in range(profiles):
        devices = [f"c{c}-d0"] + ([f"c{c}-d1"] if c in second_device else [])
        for i in range(per_profile):
            if n >= events:
                return
            when = (T0 + timedelta(minutes=c % 5000 + i)).isoformat()
            device = devices[i % len(devices)]
            if i == per_profile - 1 - (len(devices) - 1) or (len(devices) == 2 and i == per_profile - 1):
                call = {"type": "identify", "userId": f"user-{c}", "anonymousId": device,
                        "traits": {"email": f"c{c}@example.com", "plan": rng.choice(["free", "pro"])}}  # fmt: skip
            elif rng.random() < 0.1:
                call = {"type": "track", "anonymousId": device, "event": "Order Completed",
                        "properties": {"revenue": rng.randint(5, 300), "currency": "EUR"}}  # fmt: skip
            else:
                call = {"type": "page", "anonymousId": device, "name": rng.choice(["Home", "Pricing", "Docs"])}
            call |= {"messageId": f"m{n}", "timestamp": when}
            n += 1
            yield call


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(
    profiles: int = typer.Option(100_000),
    events: int = typer.Option(1_000_000),
    lookups: int = typer.Option(2_000),
    quick: bool = typer.Option(False, help="10,000 profiles and 100,000 events"),
    seed: int = typer.Option(11),
    results: Path = typer.Option(Path("bench/results")),
    reuse: Path | None = typer.Option(None, help="data dir of an earlier run: skip writing, time lookups again"),
) -> None:
    if quick:
        profiles, events = 10_000, 100_000
    data_dir = reuse or Path(tempfile.mkdtemp(prefix="cdp-bench-"))
    settings = load_settings({"CDP_DATA_DIR": str(data_dir), "CDP_HTTP_PORT": str(free_port()),
                              "CDP_KAFKA_PORT": str(free_port()), "CDP_RATE_LIMIT": "0"})  # fmt: skip
    platform = Platform(settings)
    server = ThreadedServer(platform).start()
    received = datetime.now(timezone.utc)
    try:
        ws = platform.workspace_id
        batch: list[dict[str, Any]] = []
        started = time.perf_counter()
        with Progress(console=console) as progress:
            task = progress.add_task("recording", total=events)
            for raw in workload(profiles, events, seed) if reuse is None else ():
                batch.append(normalise(call_adapter.validate_python(raw), received))
                if len(batch) == 5000:
                    platform.committer.record_now(ws, batch)
                    progress.advance(task, len(batch))
                    batch = []
            if batch:
                platform.committer.record_now(ws, batch)
                progress.advance(task, len(batch))
        recorded = time.perf_counter()
        while not platform.status()["caught_up"]:
            time.sleep(0.05)
        caught_up = time.perf_counter()
        merges = sum(1 for profile in platform.app.profiles.values() if profile.merged_into)

        headers = {"Authorization": f"Bearer {platform.keys.read_key}"}
        rng = random.Random(seed + 1)
        samples = []
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.http_port}", headers=headers) as client:
            for _ in range(lookups):
                ident = f"user_id:user-{rng.randrange(profiles)}"
                t = time.perf_counter()
                response = client.get(f"/v1/profiles/{ident}")
                samples.append((time.perf_counter() - t) * 1000)
                assert response.status_code in (200, 404), response.text
        write_s, catch_s = max(recorded - started, 1e-9), caught_up - recorded
        figures = {
            "events": events, "profiles": profiles, "merges": merges,
            "write_events_per_s": events / write_s, "merges_per_s": merges / write_s,
            "projection_catch_up_s": catch_s, "end_to_end_events_per_s": events / (caught_up - started),
            "lookup_p50_ms": statistics.median(samples), "lookup_p99_ms": percentile(samples, 0.99),
        }  # fmt: skip
        table = Table(title=f"identity at scale ({os.cpu_count()} cores, {host.platform()})")
        for column in ("figure", "value", "target"):
            table.add_column(column)
        table.add_row("events / profiles / merges", f"{events:,} / {profiles:,} / {merges:,}", "")
        if reuse is None:
            table.add_row("write rate (events/s, with identity)", f"{figures['write_events_per_s']:,.0f}", "")
            table.add_row("merge throughput (merges/s)", f"{figures['merges_per_s']:,.0f}", "")
            table.add_row("projection catch-up after last write (s)", f"{catch_s:.2f}", "")
        else:
            figures = {k: v for k, v in figures.items() if k.startswith("lookup") or k in ("events", "profiles")}
        table.add_row("profile lookup p50 (ms)", f"{figures['lookup_p50_ms']:.2f}", "")
        table.add_row("profile lookup p99 (ms)", f"{figures['lookup_p99_ms']:.2f}", "≤ 10")
        console.print(table)
        results.mkdir(parents=True, exist_ok=True)
        out = results / f"identity-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
        out.write_text(json.dumps({"machine": {"cores": os.cpu_count(), "platform": host.platform()},
                                   "figures": figures}, indent=2))  # fmt: skip
        console.print(f"written to {out}; data kept in {data_dir} (--reuse it to time lookups again)")
    finally:
        server.stop()


if __name__ == "__main__":
    typer.run(main)
