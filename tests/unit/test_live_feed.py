"""The live feed without a server: events counted per workspace, the profile count shared, slow streams bounded."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from services.live import QUEUE_SIZE, RATE_WINDOW_S, LiveFeed


class Recorded:  # the shape of an eventsourcing recording of a CustomerEvent.Recorded
    __qualname__ = "CustomerEvent.Recorded"

    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id


class Other:
    __qualname__ = "Profile.Merged"
    workspace_id = "a"


def status(_: str) -> dict[str, Any]:
    return {"projections": {"kpis": {"lag": 3}}, "resolver": {"lag": 1}, "relay": {"lag": 0}, "caught_up": False,
            "log_position": 9, "quarantined": 0, "dead_letters": {"invalid": 2}}  # fmt: skip


def recordings(*events: Any) -> list[Any]:
    return [SimpleNamespace(domain_event=e) for e in events]


def test_events_per_second_counts_customer_events_of_the_workspace_over_the_window() -> None:
    now = [100.0]
    feed = LiveFeed(status, lambda ws: 0, clock=lambda: now[0])
    feed.committed(recordings(Recorded("a"), Recorded("a"), Recorded("b"), Other()))
    assert feed.events_per_second("a") == 2 / RATE_WINDOW_S
    assert feed.events_per_second("b") == 1 / RATE_WINDOW_S
    now[0] += RATE_WINDOW_S + 0.1
    assert feed.events_per_second("a") == 0
    assert feed.snapshot("a")["events_seen"] == 2  # the total stays


def test_the_profile_count_is_asked_once_per_interval() -> None:
    asked: list[str] = []
    now = [0.0]
    feed = LiveFeed(status, lambda ws: asked.append(ws) or 7, clock=lambda: now[0])
    snap = feed.snapshot("a")
    feed.snapshot("a")
    assert asked == ["a"] and snap["profiles"] == 7
    assert snap["lag"] == {"kpis": 3, "resolver": 1, "relay": 0} and snap["dead_letters"] == 2
    now[0] += 5
    feed.snapshot("a")
    assert asked == ["a", "a"]


def test_a_stream_that_does_not_read_loses_the_oldest_updates_not_the_publisher() -> None:
    feed = LiveFeed(status, lambda ws: 0)

    async def main() -> list[Any]:
        stream = feed.stream("a").__aiter__()
        first = await stream.__anext__()  # registered, and the first status
        assert first["type"] == "status"
        for i in range(QUEUE_SIZE + 10):
            feed.kpi_updates([{"workspace_id": "a", "kpi": "orders", "n": i}])
            feed.kpi_updates([{"workspace_id": "b", "kpi": "orders", "n": -1}])  # another workspace's
        await asyncio.sleep(0.05)  # the loop runs the puts the publisher handed it
        got = [await stream.__anext__() for _ in range(3)]
        await stream.aclose()
        return got

    got = asyncio.run(main())
    assert [m["n"] for m in got] == [10, 11, 12]  # the oldest ten dropped
    assert feed.streams("a") == 0


def test_streams_of_one_workspace_share_a_status_within_half_a_second() -> None:
    asked: list[str] = []
    now = [0.0]

    def counted_status(ws: str) -> dict[str, Any]:
        asked.append(ws)
        return status(ws)

    feed = LiveFeed(counted_status, lambda ws: 0, clock=lambda: now[0])
    assert feed.snapshot("a") is feed.snapshot("a") and asked == ["a"]
    feed.snapshot("b")
    now[0] += 0.5
    feed.snapshot("a")
    assert asked == ["a", "b", "a"]
