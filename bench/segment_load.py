"""Send N events with the real Segment SDK to a running `cdp up`, then time the catch-up.

Usage: python -m bench.segment_load --events 10000 [--data-dir .cdp] [--url http://127.0.0.1:8000]
Prints the ingest rate (events acknowledged per second) and the time from the last
acknowledgement until /v1/status shows every projection caught up.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import httpx
import typer
from segment.analytics.client import Client


def main(
    events: int = typer.Option(10_000),
    data_dir: Path = typer.Option(Path(".cdp")),
    url: str = typer.Option("http://127.0.0.1:8000"),
    customers: int = typer.Option(2_000),
    seed: int = typer.Option(7),
) -> None:
    keys = json.loads((data_dir / "keys.json").read_text())
    rng = random.Random(seed)
    errors: list[Exception] = []
    client = Client(
        write_key=keys["write_key"], host=url, upload_size=100, max_queue_size=events + 1,
        thread=2, on_error=lambda e, batch: errors.append(e),
    )  # fmt: skip
    started = time.perf_counter()
    for i in range(events):
        c = rng.randrange(customers)
        anonymous_id, user_id = f"anon-{c}", f"user-{c}"
        roll = rng.random()
        if roll < 0.05:
            client.identify(user_id, {"email": f"customer{c}@example.com", "plan": rng.choice(["free", "pro"])},
                            anonymous_id=anonymous_id)  # fmt: skip
        elif roll < 0.07:
            client.alias(anonymous_id, user_id)
        elif roll < 0.5:
            client.page(anonymous_id=anonymous_id, name=rng.choice(["Home", "Pricing", "Docs"]))
        else:
            client.track(anonymous_id=anonymous_id, event=rng.choice(["Viewed", "Added", "Order Completed"]),
                         properties={"revenue": rng.randint(1, 200), "currency": "EUR"})  # fmt: skip
    client.flush()
    client.join()
    acked = time.perf_counter()
    headers = {"Authorization": f"Bearer {keys['read_key']}"}
    while True:
        status = httpx.get(f"{url}/v1/status", headers=headers).json()
        if status["caught_up"]:
            break
        time.sleep(0.01)
    caught_up = time.perf_counter()
    print(f"errors: {len(errors)}")
    print(f"ingest: {events} events acknowledged in {acked - started:.2f}s = {events / (acked - started):,.0f} events/s")
    print(f"catch-up after the last acknowledgement: {caught_up - acked:.3f}s (log position {status['log_position']})")


if __name__ == "__main__":
    typer.run(main)
