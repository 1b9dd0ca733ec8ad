"""The live feed: what the dashboard shows moving, pushed to each open stream rather than polled.

Two sources feed it, both in the core process: the KPI publisher (the same messages it puts on
`cdp.kpi-updates`, at most one per KPI and second) and every commit of the log, counted per
workspace so each stream tells its own events per second. A stream gets a `status` message once
a second (events per second, profiles, each projection's lag) and every KPI update of its
workspace as it is published. Subscribers that read too slowly lose the oldest KPI updates, never
the platform's time: the publisher only ever puts into bounded queues.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from typing import Any, AsyncIterator, Callable, Iterable

STATUS_EVERY_S = 1.0
PROFILES_EVERY_S = 5.0  # the profile count is a ClickHouse query: shared by every stream of the workspace
RATE_WINDOW_S = 5.0
QUEUE_SIZE = 256


class LiveFeed:
    """Fans KPI updates and status ticks out to the open streams of each workspace."""

    def __init__(self, status: Callable[[str], dict[str, Any]], count_profiles: Callable[[str], int],
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.status = status
        self.count_profiles = count_profiles
        self.clock = clock
        self._lock = threading.Lock()
        self._streams: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]]] = defaultdict(set)
        self._arrivals: dict[str, deque[tuple[float, int]]] = defaultdict(deque)  # (when, events) per commit
        self._totals: dict[str, int] = defaultdict(int)
        self._profiles: dict[str, tuple[float, int]] = {}
        self._snapshots: dict[str, tuple[float, dict[str, Any]]] = {}

    # -- fed by the platform (any thread) --------------------------------------------------------------------

    def committed(self, recordings: Iterable[Any]) -> None:
        """Every commit of the log (`Application.on_saved`): customer events counted per workspace."""
        counts: dict[str, int] = defaultdict(int)
        for recording in recordings:
            event = recording.domain_event
            if type(event).__qualname__ == "CustomerEvent.Recorded":
                counts[event.workspace_id] += 1
        if not counts:
            return
        now = self.clock()
        with self._lock:
            for workspace_id, n in counts.items():
                self._arrivals[workspace_id].append((now, n))
                self._totals[workspace_id] += n

    def kpi_updates(self, messages: list[dict[str, Any]]) -> None:
        """The KPI publisher's messages, as put on `cdp.kpi-updates`."""
        for message in messages:
            self._send(message["workspace_id"], {"type": "kpi", **message})

    # -- read by the HTTP adapter ---------------------------------------------------------------------------

    def events_per_second(self, workspace_id: str) -> float:
        now = self.clock()
        with self._lock:
            arrivals = self._arrivals[workspace_id]
            while arrivals and arrivals[0][0] < now - RATE_WINDOW_S:
                arrivals.popleft()
            return sum(n for _, n in arrivals) / RATE_WINDOW_S

    def snapshot(self, workspace_id: str) -> dict[str, Any]:
        """The status message: the platform's parts and this workspace's rates and counts. Every open stream of
        a workspace asks each second: within half that, they share one (the status reads the dead letters)."""
        now = self.clock()
        shared = self._snapshots.get(workspace_id)
        if shared is not None and now - shared[0] < STATUS_EVERY_S / 2:
            return shared[1]
        status = self.status(workspace_id)
        counted = self._profiles.get(workspace_id)
        if counted is None or now - counted[0] >= PROFILES_EVERY_S:
            counted = (now, self.count_profiles(workspace_id))
            self._profiles[workspace_id] = counted
        lags = {name: p["lag"] for name, p in status["projections"].items()}
        lags["resolver"] = status["resolver"]["lag"]
        lags["relay"] = status["relay"]["lag"]
        snapshot = {
            "type": "status", "at": time.time(), "events_per_second": self.events_per_second(workspace_id),
            "events_seen": self._totals.get(workspace_id, 0), "profiles": counted[1], "lag": lags,
            "caught_up": status["caught_up"], "log_position": status["log_position"],
            "quarantined": status["quarantined"], "dead_letters": sum(status["dead_letters"].values()),
        }  # fmt: skip
        self._snapshots[workspace_id] = (now, snapshot)
        return snapshot

    async def stream(self, workspace_id: str) -> AsyncIterator[dict[str, Any]]:
        """Messages for one open stream: a status at once and every second, KPI updates as they come."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        entry = (loop, queue)
        with self._lock:
            self._streams[workspace_id].add(entry)
        try:
            next_status = 0.0
            while True:
                wait = next_status - self.clock()
                if wait <= 0:
                    yield await asyncio.to_thread(self.snapshot, workspace_id)
                    next_status = self.clock() + STATUS_EVERY_S
                    continue
                try:
                    yield await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    continue
        finally:
            with self._lock:
                self._streams[workspace_id].discard(entry)

    def streams(self, workspace_id: str) -> int:
        with self._lock:
            return len(self._streams[workspace_id])

    def _send(self, workspace_id: str, message: dict[str, Any]) -> None:
        with self._lock:
            targets = list(self._streams.get(workspace_id, ()))
        for loop, queue in targets:
            try:
                loop.call_soon_threadsafe(_put_dropping_oldest, queue, message)
            except RuntimeError:  # that stream's loop has closed; its `finally` removes it
                pass


def _put_dropping_oldest(queue: asyncio.Queue[dict[str, Any]], message: dict[str, Any]) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(message)
