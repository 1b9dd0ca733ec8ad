"""Requests per key: a token bucket each, so one sender cannot starve the others.

Each process keeps its own buckets (an ingest worker its own, the core its own): with
N ingest workers a key may send up to N times the rate through them. That is enough
to stop one runaway sender without a shared store on the hot path; docs/access.md says so.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from domain.errors import TooMany


class RateLimit:
    def __init__(self, per_second: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        """`per_second` requests a key may send on average (0: no limit), `burst` at once (default: 2 s worth)."""
        self.per_second = per_second
        self.burst = burst if burst else max(1.0, 2 * per_second)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id → (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, key_id: str) -> None:
        """Count one request of this key; TooMany (with the seconds to wait) when its bucket is empty."""
        if self.per_second <= 0:
            return
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.per_second)
            if tokens < 1:
                self._buckets[key_id] = (tokens, now)
                wait = (1 - tokens) / self.per_second
                raise TooMany(f"too many requests with this key ({self.per_second:g} a second allowed, "
                              f"{self.burst:g} at once); retry in {wait:.1f} s", retry_after=wait)  # fmt: skip
            self._buckets[key_id] = (tokens - 1, now)
