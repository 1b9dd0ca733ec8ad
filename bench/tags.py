"""Tag figures: backfill rate over N events, and enter latency from HTTP ack to `cdp.tag-changes`.

Usage: python -m bench.tags --events 1000000     (the full run; several minutes)
       python -m bench.tags --quick              (100,000 events, 20 latency samples)

The backfill runs the real evaluation (one ClickHouse query per page of profiles)
over synthetic projections written straight into a scratch embedded ClickHouse:
10 events per profile, a third of them orders. Latency runs the whole platform
(uvicorn, SQLite, chDB, bundled broker) and a Kafka consumer in this process.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer
from kafka import KafkaConsumer, TopicPartition

from domain.tags import parse_rule
from infra.bootstrap import Platform
from infra.broker import free_port
from infra.clickhouse import clickhouse_client
from infra.config import Settings
from infra.server import ThreadedServer
from projections.migrate import migrate
from projections.store import EVENT_COLUMNS, ProfileView, ProjectionStore
from projections.tags import TagStore
from streams.tags import SystemClock, TagEngine

VIP = {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 1000, "within": "90d"}
cli = typer.Typer(add_completion=False)


def backfill_rate(events: int, directory: Path) -> dict[str, Any]:
    # chDB is one engine per process: the same path as the latency run, another database.
    settings = Settings(data_dir=directory, clickhouse_url=f"chdb://{directory / 'ch'}", clickhouse_database="bench_tags")
    client = clickhouse_client(settings)
    migrate(client, "bench_tags")
    store = ProjectionStore(client, "bench_tags")
    ws, now, rng = "bench", datetime.now(timezone.utc), random.Random(7)
    profiles = max(1, events // 10)
    started = time.perf_counter()
    for first in range(0, profiles, 20_000):
        ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{i}")) for i in range(first, min(first + 20_000, profiles))]
        rows, views = [], []
        for n, pid in enumerate(ids):
            anchor = f"user_id:u{first + n}"
            for k in range(10):
                order = k % 3 == 0
                at = now - timedelta(days=rng.uniform(0, 180))
                rows.append([ws, uuid.uuid4(), f"m{first + n}-{k}", anchor, uuid.UUID(pid), (first + n) * 10 + k,
                             "track", "Order Completed" if order else "Viewed", "", "", f"u{first + n}", "", "", "", "",
                             at, at, None, at, orjson.dumps({"revenue": rng.randint(10, 600), "currency": "EUR"} if order else {}).decode(),
                             "{}", "{}"])  # fmt: skip
            views.append(ProfileView(profile_id=pid, identifiers=[anchor], event_count=10, first_seen=now, last_seen=now))
        client.insert("bench_tags.events", rows, column_names=EVENT_COLUMNS)
        store.insert_profile_identifiers([[ws, uuid.UUID(v.profile_id), v.identifiers[0], 1, 0] for v in views])
        store.write_profiles(ws, views, [], 1)
    loaded = time.perf_counter() - started
    engine = TagEngine(TagStore(client, "bench_tags"), SystemClock(), page_size=20_000)
    started = time.perf_counter()
    engine.define(ws, "vip", "VIP", 1, parse_rule(VIP), 1)  # runs the backfill inline
    seconds = time.perf_counter() - started
    members = len(engine.store.members_of_tag(ws, "vip"))
    return {"events": events, "profiles": profiles, "load_s": round(loaded, 1), "backfill_s": round(seconds, 2),
            "backfill_events_per_s": round(events / seconds), "members": members}  # fmt: skip


def enter_latency(samples: int, directory: Path) -> dict[str, Any]:
    settings = Settings(data_dir=directory / "data", http_port=free_port(), kafka_port=free_port(), rate_limit=0,
                        kafka_partitions=2, clickhouse_url=f"chdb://{directory / 'ch'}")  # fmt: skip
    platform = Platform(settings)
    server = ThreadedServer(platform).start()
    base = f"http://127.0.0.1:{settings.http_port}"
    latencies = []
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            auth = {"Authorization": f"Bearer {platform.keys.admin_key}"}
            assert http.put("/v1/tags/vip", json={"name": "VIP", "rule": VIP}, headers=auth).status_code == 200
            consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, consumer_timeout_ms=100)
            parts = [TopicPartition("cdp.tag-changes", p) for p in consumer.partitions_for_topic("cdp.tag-changes")]
            consumer.assign(parts)
            consumer.seek_to_end(*parts)
            for i in range(samples):
                call = {"userId": f"lat-{i}", "event": "Order Completed", "properties": {"revenue": 1500, "currency": "EUR"}}
                response = http.post("/v1/track", json=call, auth=(platform.keys.write_key, ""))
                acked = time.perf_counter()
                assert response.status_code == 200, response.text
                seen = False
                while not seen:
                    for records in consumer.poll(timeout_ms=20).values():
                        seen = seen or any(orjson.loads(r.value)["change"] == "entered" for r in records)
                    if time.perf_counter() - acked > 10:
                        raise RuntimeError("no entry on cdp.tag-changes within 10 s")
                latencies.append(time.perf_counter() - acked)
            consumer.close()
    finally:
        server.stop()
    ordered = sorted(latencies)
    return {"samples": samples, "enter_p50_ms": round(statistics.median(ordered) * 1000, 1),
            "enter_p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
            "enter_max_ms": round(ordered[-1] * 1000, 1)}  # fmt: skip


@cli.command()
def main(
    events: int = typer.Option(1_000_000, help="Events in the backfill history."),
    samples: int = typer.Option(50, help="Enter latency samples."),
    quick: bool = typer.Option(False, help="100,000 events and 20 samples."),
) -> None:
    if quick:
        events, samples = 100_000, 20
    with tempfile.TemporaryDirectory() as directory:
        latency = enter_latency(samples, Path(directory))
        backfill = backfill_rate(events, Path(directory))
    print(json.dumps({**latency, **backfill}))


if __name__ == "__main__":
    cli()
