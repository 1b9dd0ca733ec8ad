"""Load generator for the benchmark suite, run as its own process so it does not share the server's GIL.

Subcommands print one JSON object on stdout (its last line):
  ingest   send the workload in batches of 100 with concurrent clients, as fast as acknowledged
  paced    send at a steady rate to the ingest URL while probing freshness (acknowledged → visible in the
           profile and KPI APIs of the core's URL, `--api-url`); reports the rate actually achieved
  lookups  time profile lookups by user id (a count of them, or for `--seconds`)
  kpis     time KPI series, funnel and cohort queries over the whole workload

The senders report their own CPU time while sending (`cpu_s`, `time.process_time()`: user and system
time of this process), so the benchmark can charge the load generator its share per event.

Every seed's messageIds are its own (`s<seed>-m<n>`): the workload numbers its calls from m0 whatever the
seed, and loads with different seeds must not be deduplicated against each other.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from typing import Any, Awaitable, Callable

import httpx
import orjson
import typer

from bench.workload import workload

# How often a probe looks for its profile and KPI: a KPI query holds the embedded ClickHouse for milliseconds, so
# looking every 5 ms loaded the very processors whose freshness it measures; 25 ms still resolves a 1 s target.
PROBE_POLL_S = 0.025

app = typer.Typer(add_completion=False)


def _batches(events: int, seed: int, batch: int = 100) -> tuple[list[tuple[bytes, int]], int]:
    """The workload as request bodies of `batch` calls with their sizes, and the number of distinct calls."""
    calls = [call | {"messageId": f"s{seed}-{call['messageId']}"} for call in workload(events, seed)]
    bodies = [(orjson.dumps({"batch": calls[i : i + batch]}), len(calls[i : i + batch]))
              for i in range(0, len(calls), batch)]  # fmt: skip
    return bodies, len({call["messageId"] for call in calls})


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
    batches, unique = _batches(events, seed)
    sent = sum(n for _, n in batches)
    cpu = time.process_time()
    elapsed = asyncio.run(_send_all(url, key, [body for body, _ in batches], clients))
    print(json.dumps({"events_sent": sent, "unique_events": unique, "seconds": elapsed, "events_per_s": sent / elapsed,
                      "cpu_s": time.process_time() - cpu, "cpu_total_s": time.process_time()}))  # fmt: skip


@app.command()
def paced(
    url: str = typer.Argument(..., help="where the load and the probes are sent: the ingest workers"),
    key: str = typer.Argument(..., help="the write key"),
    read_key: str = typer.Argument(..., help="the read key, for the probes' profile and KPI reads"),
    rate: int = 5000,
    seconds: float = 20.0,
    seed: int = 99,
    api_url: str = typer.Option("", help="where probes read the profile and the KPI (the core); default: url"),
    probe_timeout: float = typer.Option(30.0, help="a probe not visible after this long counts as this long"),
) -> None:
    """Batches of 100 at `rate` events/s for `seconds`, plus a probe every 0.2 s after the previous one is seen.

    Prints `{"sending": true}` when the first batch goes out (a concurrent load can start then), and at the end
    the freshness percentiles and the rate achieved: calls acknowledged over the time from the first scheduled
    send to the last acknowledgement (plus one interval, so a sender exactly on time achieves `rate`)."""
    batches, unique = _batches(int(rate * seconds), seed)
    interval = 100 / rate
    api_url = api_url or url
    samples: list[float] = []
    kpi_samples: list[float] = []
    sent = {"acked": 0, "failed": 0, "errors": 0, "late_s": 0.0, "last_ack": 0.0, "probe_timeouts": 0}
    errors: list[str] = []

    async def run() -> tuple[float, float, float]:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with (
            httpx.AsyncClient(base_url=url, auth=(key, ""), timeout=60, limits=limits) as sender_client,
            httpx.AsyncClient(base_url=url, auth=(key, ""), timeout=60) as probe_client,
            httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {read_key}"}, timeout=60) as reader,
        ):

            async def send(body: bytes, n: int) -> None:
                try:
                    response = await sender_client.post("/v1/batch", content=body,
                                                        headers={"Content-Type": "application/json"})  # fmt: skip
                except httpx.HTTPError as exc:
                    sent["errors"] += 1
                    errors.append(repr(exc))
                    return
                if response.status_code != 200 or response.json().get("rejected"):
                    sent["failed"] += 1
                    errors.append(f"{response.status_code}: {response.text[:500]}")
                    return
                sent["acked"] += n
                sent["last_ack"] = time.perf_counter()

            async def sender() -> float:
                tasks = []
                start = time.perf_counter()
                for i, (body, n) in enumerate(batches):
                    delay = start + i * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        sent["late_s"] = max(sent["late_s"], -delay)
                    tasks.append(asyncio.create_task(send(body, n)))
                await asyncio.gather(*tasks)
                return start

            async def prober() -> None:
                # Each probe is a new customer's identify and first order, on a channel of its own, so
                # "visible" is exact: the profile answers, and the orders KPI counts 1 on that channel.
                k = 0
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    user, channel = f"probe-{seed}-{k}", f"probe-{seed}-{k}"
                    k += 1
                    order = {"type": "track", "userId": user, "event": "Order Completed",
                             "properties": {"revenue": 1, "currency": "EUR", "channel": channel}}  # fmt: skip
                    batch = {"batch": [{"type": "identify", "userId": user, "traits": {"k": k}}, order]}
                    response = await probe_client.post("/v1/batch", json=batch)
                    acked = time.perf_counter()
                    assert response.status_code == 200, response.text
                    kpi = {"channel": channel, "from": time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() - 86400)),
                           "granularity": "month"}  # fmt: skip

                    async def seen(visible: Callable[[], Awaitable[bool]], into: list[float]) -> None:
                        while not await visible():
                            if time.perf_counter() - acked > probe_timeout:
                                sent["probe_timeouts"] += 1
                                break
                            await asyncio.sleep(PROBE_POLL_S)
                        into.append(time.perf_counter() - acked)

                    async def profile_visible() -> bool:
                        return (await reader.get(f"/v1/profiles/user_id:{user}")).status_code == 200

                    async def kpi_visible() -> bool:
                        response = await reader.get("/v1/kpis/orders", params=kpi)
                        return response.status_code == 200 and bool(response.json()["series"])

                    await asyncio.gather(seen(profile_visible, samples), seen(kpi_visible, kpi_samples))
                    await asyncio.sleep(0.2)
                sent["probes"] = k

            print(json.dumps({"sending": True}), flush=True)
            cpu = time.process_time()
            start, _ = await asyncio.gather(sender(), prober())
            return start, cpu, time.process_time()

    start, cpu_started, cpu_ended = asyncio.run(run())
    offered = sum(n for _, n in batches)
    elapsed = (sent["last_ack"] - start + interval) if sent["acked"] else float("inf")
    print(json.dumps({"rate": rate, "events_offered": offered, "events_acked": sent["acked"], "unique_events": unique,
                      "failed_batches": sent["failed"], "error_batches": sent["errors"], "errors": errors[:3],
                      "send_seconds": elapsed, "achieved_events_per_s": sent["acked"] / elapsed,
                      "most_late_s": sent["late_s"], "probes": sent.get("probes", 0),
                      "probe_timeouts": sent["probe_timeouts"], "cpu_s": cpu_ended - cpu_started,
                      "freshness_p50_s": _percentile(samples, 0.5), "freshness_p99_s": _percentile(samples, 0.99),
                      "kpi_freshness_p50_s": _percentile(kpi_samples, 0.5),
                      "kpi_freshness_p99_s": _percentile(kpi_samples, 0.99)}))  # fmt: skip


@app.command()
def lookups(
    url: str, read_key: str, customers: int, count: int = 2000, seed: int = 5,
    seconds: float = typer.Option(0.0, help="look up for this long instead of `count` times"),
) -> None:  # fmt: skip
    rng = random.Random(seed)
    samples = []
    end = time.perf_counter() + seconds
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {read_key}"}) as client:
        while (time.perf_counter() < end) if seconds else (len(samples) < count):
            started = time.perf_counter()
            response = client.get(f"/v1/profiles/user_id:user-{rng.randrange(customers)}")
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code in (200, 404), response.text
    print(json.dumps({"lookups": len(samples), "p50_ms": statistics.median(samples),
                      "p99_ms": _percentile(samples, 0.99)}))  # fmt: skip


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
