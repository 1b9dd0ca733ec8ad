"""The newest committed log entries, handed from the writer to the followers in memory.

After each commit the writer turns the entries it has just stored into messages
(`to_message`, once) and appends them here; the relay and the processors take
their next page from here instead of reading and decoding the log again. The log
stays the source: a follower whose next position is not held (at start, after a
restart, or when it fell further behind than the tail keeps) reads the log as
before, so positions and at-least-once delivery are exactly those of the log.

Only a run of consecutive positions is kept: an entry that does not follow the
last one (a position the store skipped, or a commit made elsewhere) starts a new
run, and a follower before it reads the log.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable

from streams.messages import Message, to_message

CAPACITY = 20_000


class CommittedTail:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._start = 0  # position of the first entry held
        self._entries: list[Message | None] = []  # one per position; None for entries that stay internal
        self._lock = threading.Lock()

    def committed(self, recordings: Iterable[Any]) -> None:
        """eventsourcing recordings just committed, in position order (called on the writer thread)."""
        self.append([(r.notification.id, to_message(r.domain_event, r.notification.id)) for r in recordings])

    def append(self, entries: list[tuple[int, Message | None]]) -> None:
        with self._lock:
            for position, message in entries:
                if self._entries and position != self._start + len(self._entries):
                    self._entries = []  # not consecutive: start a new run
                if not self._entries:
                    self._start = position
                self._entries.append(message)
            extra = len(self._entries) - self.capacity
            if extra > 0:
                del self._entries[:extra]
                self._start += extra

    def after(self, position: int, limit: int) -> tuple[list[Message], int] | None:
        """Messages of up to `limit` entries after `position` and the last position they cover,
        or None if the entry right after `position` is not held (read the log instead)."""
        with self._lock:
            i = position + 1 - self._start
            if not self._entries or i < 0 or i >= len(self._entries):
                return None
            page = self._entries[i : i + limit]
        return [m for m in page if m is not None], position + len(page)
