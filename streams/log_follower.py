"""Drive processors by following the event store's notification log in-process.

The embedded default's processor driver: no broker hop, one global position,
woken by the writer after each commit and polling as a fallback.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from domain.privacy import SealingMapper, Shredded
from streams.messages import Message, erased_entry, stored_event_message, to_message
from streams.stages import STAGE_CPU, STAGE_ENTRIES

log = logging.getLogger(__name__)


def read_messages(app: Any, after: int, limit: int) -> tuple[list[Message], int]:
    """Messages of the log entries after `after`, and the last position read (`after` if none)."""
    started = time.thread_time()
    notifications = app.read_log(after, limit)
    mapper = app.mapper
    sealed = isinstance(mapper, SealingMapper)
    plain = sealed or (mapper.cipher is None and mapper.compressor is None)  # rows are JSON once opened
    if sealed:
        mapper.sealer.prefetch(n.state for n in notifications)
    read: list[Message | None] = []
    rest: list[tuple[int, Any]] = []  # (index, notification): entries read through the mapper
    for notification in notifications:
        try:
            state = mapper.plain_state(notification.state) if sealed else notification.state
            message = stored_event_message(notification, state) if plain else None
        except Shredded:  # an erased person's entry: applied by no reader, ever; its position still counts
            message = erased_entry(notification)
        if message is None:
            rest.append((len(read), notification))
        read.append(message)
    # Identity entries seal each identifier with its own key: opened together, the page's keys load at once.
    if sealed:
        events = mapper.to_domain_events([n for _, n in rest])
    else:
        events = [mapper.to_domain_event(n) for _, n in rest]
    for (i, notification), event in zip(rest, events):
        read[i] = erased_entry(notification) if isinstance(event, Shredded) else to_message(event, notification.id)
    messages = [m for m in read if m is not None]
    STAGE_CPU.labels("log_read").inc(time.thread_time() - started)
    STAGE_ENTRIES.labels("log_read").inc(len(notifications))
    return messages, (notifications[-1].id if notifications else after)


class LogFollower:
    """Feeds `process(messages)` with the log from `start`, in order, recording `save(position)`."""

    def __init__(
        self,
        app: Any,
        process: Callable[[list[Message]], Any],
        save: Callable[[int], None],
        start: int,
        batch: int = 5000,
        idle_wait: float = 0.25,
        coalesce: float = 0.0,
        name: str = "log-follower",
        tail: Any = None,
    ) -> None:
        self.app = app
        self.tail = tail  # a CommittedTail: the newest entries without reading the log
        self.process = process
        self.save = save
        self.position = start
        self.batch = batch
        self.idle_wait = idle_wait
        self.coalesce = coalesce
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake.set()
        self._thread.join(timeout)

    def step(self) -> int:
        """Apply one page of the log; returns how many log entries it covered."""
        held = self.tail.after(self.position, self.batch) if self.tail is not None else None
        messages, last = held if held is not None else read_messages(self.app, self.position, self.batch)
        if last == self.position:
            return 0
        self.process(messages)
        self.save(last)
        covered = last - self.position
        self.position = last
        return covered

    def _run(self) -> None:
        while not self._stop.is_set():
            self.wake.clear()  # before reading: a commit after this point wakes the wait below
            try:
                covered = self.step()
                self.error = None
                if covered:
                    if covered < self.batch and self.coalesce:
                        # Under a steady stream, let a few commits gather: fewer, larger projection writes.
                        self._stop.wait(self.coalesce)
                    continue
            except Exception as exc:  # keep following; the same page is retried
                self.error = exc
                log.exception("processing the log after position %s failed; retrying", self.position)
                self._stop.wait(1.0)
                continue
            self.wake.wait(self.idle_wait)
