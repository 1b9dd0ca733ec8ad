"""Load generator for the benchmark suite, run as its own process so it does not share the server's GIL.

Subcommands print one JSON object on stdout:
  ingest   send the workload in batches of 100 with concurrent clients, as fast as acknowledged
  paced    send at a steady rate while probing freshness (acknowledged → visible in the profile API)
  lookups  time profile lookups by user id
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
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text}")

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
                k = 0
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    user = f"probe-{seed}-{k}"
                    k += 1
                    response = await client.post("/v1/identify", json={"userId": user, "traits": {"k": k}},
                                                 auth=(key, ""))  # fmt: skip
                    acked = time.perf_counter()
                    assert response.status_code == 200, response.text
                    while True:
                        seen = await client.get(f"/v1/profiles/user_id:{user}",
                                                headers={"Authorization": f"Bearer {read_key}"})  # fmt: skip
                        if seen.status_code == 200:
                            samples.append(time.perf_counter() - acked)
                            break
                        await asyncio.sleep(0.005)
                    await asyncio.sleep(0.2)

            await asyncio.gather(sender(), prober())
        return samples

    samples = asyncio.run(run())
    print(json.dumps({"rate": rate, "probes": len(samples), "freshness_p50_s": _percentile(samples, 0.5),
                      "freshness_p99_s": _percentile(samples, 0.99)}))  # fmt: skip


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


if __name__ == "__main__":
    app()
