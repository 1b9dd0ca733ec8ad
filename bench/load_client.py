"""Load generator for the benchmark suite, run as its own process so it does not share the server's GIL.

Subcommands print one JSON object on stdout:
  ingest   send the workload in batches of 100 with concurrent clients, as fast as acknowledged
  paced    send at a steady rate while probing freshness (acknowledged → visible in the profile API)
  lookups  time profile lookups by user id
  kpis     time KPI series, funnel and cohort queries over the whole workload
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from typing import Any

import httpx
import orjson
import typer

from bench.workload import workload

app = typer.Typer(add_completion=False)


def _bodies(events: int, seed: int, batch: int = 100) -> tuple[list[bytes], int]:
    calls = list(workload(events, seed))
    bodies = [orjson.dumps({"batch": calls[i : i + batch]}) for i in range(0, len(calls), batch)]
    return bodies, len(calls)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def _send_all(url: str, key: str, bodies: list[bytes], clients: int) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, auth=(key, ""), timeout=120, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                response = await client.post("/v1/batch", content=body, headers={"Content-Type": "application/json"})
                if response.status_code != 200 or response.json().get("rejected"):
                    # A figure only counts stored events: a refused one means the workload is wrong.
                    raise RuntimeError(f"{response.status_code}: {response.text[:2000]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - started


@app.command()
def ingest(url: str, key: str, events: int = 100_000, clients: int = 8, seed: int = 7) -> None:
    bodies, sent = _bodies(events, seed)
    elapsed = asyncio.run(_send_all(url, key, bodies, clients))
    print(json.dumps({"events_sent": sent, "seconds": elapsed, "events_per_s": sent / elapsed}))


@app.command()
def paced(url: str, key: str, read_key: str, rate: int = 5000, seconds: float = 20.0, seed: int = 99) -> None:
    bodies, _ = _bodies(int(rate * seconds), seed)
    interval = 100 / rate

    async def run() -> list[float]:
        samples: list[float] = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:

            async def sender() -> None:
                start = time.perf_counter()
                for i, body in enumerate(bodies):
                    delay = start + i * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    asyncio.create_task(client.post("/v1/batch", content=body, auth=(key, ""),
                                                    headers={"Content-Type": "application/json"}))  # fmt: skip

            async def prober() -> None:
                # Each probe is a new customer's identify and first order, on a channel of its own, so
                # "visible" is exact: the profile answers, and the orders KPI counts 1 on that channel.
                k = 0
                end = time.perf_counter() + seconds
                reader = {"Authorization": f"Bearer {read_key}"}
                while time.perf_counter() < end:
                    user, channel = f"probe-{seed}-{k}", f"probe-{seed}-{k}"
                    k += 1
                    order = {"type": "track", "userId": user, "event": "Order Completed",
                             "properties": {"revenue": 1, "currency": "EUR", "channel": channel}}  # fmt: skip
                    batch = {"batch": [{"type": "identify", "userId": user, "traits": {"k": k}}, order]}
                    response = await client.post("/v1/batch", json=batch, auth=(key, ""))
                    acked = time.perf_counter()
                    assert response.status_code == 200, response.text
                    kpi = {"channel": channel, "from": time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() - 86400)),
                           "granularity": "month"}  # fmt: skip

                    async def profile_seen() -> None:
                        while (await client.get(f"/v1/profiles/user_id:{user}", headers=reader)).status_code != 200:
                            await asyncio.sleep(0.005)
                        samples.append(time.perf_counter() - acked)

                    async def kpi_seen() -> None:
                        while not (await client.get("/v1/kpis/orders", params=kpi, headers=reader)).json()["series"]:
                            await asyncio.sleep(0.005)
                        kpi_samples.append(time.perf_counter() - acked)

                    await asyncio.gather(profile_seen(), kpi_seen())
                    await asyncio.sleep(0.2)

            await asyncio.gather(sender(), prober())
        return samples

    kpi_samples: list[float] = []
    samples = asyncio.run(run())
    print(json.dumps({"rate": rate, "probes": len(samples), "freshness_p50_s": _percentile(samples, 0.5),
                      "freshness_p99_s": _percentile(samples, 0.99),
                      "kpi_freshness_p50_s": _percentile(kpi_samples, 0.5),
                      "kpi_freshness_p99_s": _percentile(kpi_samples, 0.99)}))  # fmt: skip


@app.command()
def lookups(url: str, read_key: str, customers: int, count: int = 2000, seed: int = 5) -> None:
    rng = random.Random(seed)
    samples = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {read_key}"}) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.get(f"/v1/profiles/user_id:user-{rng.randrange(customers)}")
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code in (200, 404), response.text
    print(json.dumps({"lookups": count, "p50_ms": statistics.median(samples), "p99_ms": _percentile(samples, 0.99)}))


KPI_RANGE = {"from": "2025-12-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}
KPI_QUERIES: list[tuple[str, dict[str, str]]] = [
    ("revenue", {}), ("revenue", {"by": "channel"}), ("orders", {"granularity": "week"}),
    ("average_order_value", {}), ("repeat_purchase_rate", {"granularity": "month"}), ("csat", {}), ("nps", {}),
    ("active_customers", {}), ("retention_rate", {"granularity": "week"}), ("customer_lifetime_value", {}),
    ("customer_acquisition_cost", {"granularity": "month"}), ("rfm_tiers", {}), ("pipeline_value", {}),
    ("win_rate", {"by": "owner", "granularity": "month"}), ("average_sales_cycle", {}), ("budget_attainment", {}),
    ("sales_activities", {"by": "owner"}), ("first_response_time", {}), ("resolution_time", {}),
    ("open_ticket_backlog", {}), ("complaints_per_1000_customers", {}), ("campaign_open_rate", {"by": "campaign"}),
    ("campaign_click_rate", {}), ("campaign_conversion_rate", {"by": "campaign"}),
]  # fmt: skip
FUNNEL = {"steps": [{"type": "page"}, {"type": "identify"}, {"event": "Order Completed"}], "within": "7d",
          "from": KPI_RANGE["from"], "to": KPI_RANGE["to"]}  # fmt: skip


@app.command()
def kpis(url: str, read_key: str, rounds: int = 5) -> None:
    """Every KPI query `rounds` times (after one warm-up round), plus a funnel and the cohort table."""
    timings: dict[str, list[float]] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {read_key}"}, timeout=120) as client:
        for round_ in range(rounds + 1):
            for name, params in KPI_QUERIES:
                started = time.perf_counter()
                response = client.get(f"/v1/kpis/{name}", params=KPI_RANGE | params)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200 and response.json()["series"], (name, response.text[:500])
                if round_:
                    timings.setdefault(name + "".join(f" {k}={v}" for k, v in params.items()), []).append(elapsed)
            for label, call in (("funnel", lambda: client.post("/v1/funnels", json=FUNNEL)),
                                ("cohorts", lambda: client.get("/v1/cohorts/retention", params=KPI_RANGE))):  # fmt: skip
                started = time.perf_counter()
                response = call()
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, response.text[:500]
                if round_:
                    timings.setdefault(label, []).append(elapsed)
    every = [t for samples in timings.values() for t in samples]
    slowest = sorted(((statistics.median(v), k) for k, v in timings.items()), reverse=True)[:5]
    print(json.dumps({"queries": len(every), "p50_ms": _percentile(every, 0.5), "p95_ms": _percentile(every, 0.95),
                      "slowest_median_ms": {k: round(v, 1) for v, k in slowest}}))  # fmt: skip


if __name__ == "__main__":
    app()
