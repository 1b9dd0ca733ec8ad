"""Identity as the first stage after the intake log: one resolver, in log order, the single writer.

The ingest workers only append accepted calls to the intake log (ingest/intake_log.py)
and acknowledge; this thread of the core process follows that log in order, page by
page, and records each page with its identity resolved (`CustomerData.record`: links,
merges and refusals under the workspace's rules, in event-time order within each
request's batch) as one transaction of the event log. The relay and the processors
follow the event log as before, so every event reaches them with its profile.

It is also the event log's only writer: write commands (splits, rules changes, tag
definitions) run on its thread between pages, once everything the intake held when
the command was taken is resolved, so a command sees every event acknowledged
before it.

Crash safety: a page is recorded in one transaction and the resolver's position is
saved after it. A crash between the two re-reads the page on restart; `record`
finds its events already stored (by messageId) and writes nothing twice.

Nothing accepted stops it: a page that fails for a reason that is not passing is
recorded batch by batch, then call by call; a call that still cannot be recorded
goes to the dead-letter store (code `unresolvable`) with the reason. A failure of
the store itself (unreachable, locked) is retried with a pause, never skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from itertools import groupby
from typing import Any, Callable, Protocol, Sequence

from prometheus_client import Counter, Gauge

from streams.handoff import Reply
from streams.stages import measured

log = logging.getLogger(__name__)
RESOLVED = Counter("cdp_resolved_events", "Accepted calls recorded in the event log with their identity")
RESOLVER_LAG = Gauge("cdp_resolver_lag", "Accepted calls the resolver has not recorded yet")
PAGE = 5000

Batch = tuple[str, Sequence[dict[str, Any]]]


class AcceptedCalls(Protocol):
    """The intake log as the resolver reads it (ingest/intake_log.py implements it)."""

    def read(self, after: int, limit: int) -> list[Any]: ...

    def last_position(self) -> int: ...

    def resolved(self) -> int: ...

    def save_resolved(self, position: int) -> None: ...


class Resolver:
    def __init__(
        self,
        source: AcceptedCalls,
        record: Callable[[Sequence[Batch]], Any],
        unresolvable: Callable[[Any, BaseException], None],
        transient: tuple[type[BaseException], ...],
        on_commit: Callable[[], None] = lambda: None,
        page: int = PAGE,
        poll: float = 0.01,
    ) -> None:
        self.source = source
        self._record = record
        self._unresolvable = unresolvable
        self.transient = transient
        self._on_commit = on_commit
        self.page = page
        self.poll = poll  # the workers append from other processes: nothing wakes this one, so it looks
        self.position = source.resolved()
        self.error: BaseException | None = None
        self.wake = threading.Event()
        self._commands: queue.Queue[Any] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resolver", daemon=True)

    def start(self) -> "Resolver":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.wake.set()
        self._thread.join(timeout)

    def lag(self) -> int:
        lag = max(0, self.source.last_position() - self.position)
        RESOLVER_LAG.set(lag)
        return lag

    # Commands ---------------------------------------------------------------------------------

    async def run(self, command: Callable[[], Any]) -> Any:
        """Run a write command on the resolver's thread, after everything accepted before it is resolved."""
        reply = Reply.here()
        self._commands.put((command, reply))
        self.wake.set()
        return await reply.wait_async()

    def run_now(self, command: Callable[[], Any]) -> Any:
        """`run` for callers without an event loop (the CLI, tests)."""
        reply = Reply()
        self._commands.put((command, reply))
        self.wake.set()
        return reply.wait()

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until everything the intake holds now is resolved (tests, the CLI)."""
        target, deadline = self.source.last_position(), time.monotonic() + timeout
        while self.position < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the resolver did not reach position {target} within {timeout}s")
            self.wake.set()
            time.sleep(0.005)

    # The loop ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        held = None  # a command taken but not run yet: after a failure it is the next one, not the last
        while not self._stopping.is_set():
            if held is None:
                try:
                    held = self._commands.get_nowait()
                except queue.Empty:
                    pass
            try:
                if held is not None:
                    target = self.source.last_position()
                    while self.position < target and self.step():
                        pass
                    item, held = held, None
                    self._command(item)
                    continue
                if self.step():
                    continue
            except self.transient as exc:  # the store is down or locked: the same page again, after a pause
                self.error = exc
                log.warning("the resolver could not read or write the store (%s); retrying", exc)
                self._stopping.wait(0.5)
                continue
            except Exception as exc:  # a fault of its own: say so, and try again rather than stop
                self.error = exc
                log.exception("the resolver failed; retrying")
                self._stopping.wait(0.5)
                continue
            self.wake.wait(self.poll)
            self.wake.clear()

    def _command(self, item: tuple[Callable[[], Any], Reply]) -> None:
        command, reply = item
        try:
            result = command()
        except Exception as exc:
            reply.settle(error=exc)
            return
        self._on_commit()
        reply.settle(result=result)

    def step(self) -> bool:
        """Record the next page of whole batches; returns whether there was one."""
        limit = self.page
        while True:
            entries = self.source.read(self.position, limit)
            if not entries:
                return False
            ends = [i for i, e in enumerate(entries) if e.last]
            if ends:
                break
            limit *= 4  # one batch longer than a page: read on to its end
        entries = entries[: ends[-1] + 1]
        with measured("resolver", len(entries)):
            self._record_entries(entries)
            self.position = entries[-1].position
            self.source.save_resolved(self.position)
        self.error = None
        RESOLVED.inc(len(entries))
        self._on_commit()
        return True

    def _record_entries(self, entries: list[Any]) -> None:
        batches = [list(group) for _, group in groupby(entries, key=lambda e: e.batch)]
        try:
            # An entry without its call was erased before it was resolved: nothing of it is recorded.
            calls = [(b[0].workspace_id, [e.call for e in b if e.call is not None]) for b in batches]
            self._record([(ws, c) for ws, c in calls if c])
            return
        except self.transient:
            raise
        except Exception as exc:
            if len(entries) == 1:
                log.warning("accepted call at intake position %s cannot be recorded (%s); dead-lettered",
                            entries[0].position, type(exc).__name__)  # fmt: skip
                self._unresolvable(entries[0], exc)
                return
        if len(batches) > 1:
            for batch in batches:
                self._record_entries(batch)
        else:  # one batch that fails as a whole: find its calls that fail on their own
            for entry in entries:
                self._record_entries([entry])
