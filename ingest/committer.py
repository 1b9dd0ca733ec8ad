"""Group commit: many concurrent requests, one transaction, each acknowledged only after it.

Requests queue their validated batches; one writer thread per process takes
everything queued, appends it to the intake log in one transaction
(ingest/intake_log.py), then resolves each request. A batch stays
all-or-nothing: if a group fails, its batches are retried one by one so a single
bad batch cannot fail its neighbours. Write commands (splits, rules changes) do
not come here: they run on the event log's one writer, the resolver.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Sequence

from domain.errors import Unavailable
from streams.handoff import Reply

log = logging.getLogger(__name__)

Batch = tuple[str, Sequence[dict[str, Any]]]
RecordFn = Callable[[Sequence[Batch]], list[list[Any]]]


class StoreUnavailable(Unavailable, RuntimeError):
    """The intake log did not take the batch; nothing of it was stored."""

    code = "store_unavailable"


class GroupCommitter:
    def __init__(self, record: RecordFn, on_commit: Callable[[], None] = lambda: None, max_events: int = 5000) -> None:
        self._record = record
        self._on_commit = on_commit
        self._max_events = max_events
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    async def submit(self, workspace_id: str, calls: Sequence[dict[str, Any]]) -> list[Any]:
        """Append `calls` durably; returns one `Appended` per call."""
        reply = Reply.here()
        self._queue.put(((workspace_id, calls), reply))
        return await reply.wait_async()  # type: ignore[no-any-return]

    def record_now(self, workspace_id: str, calls: Sequence[dict[str, Any]]) -> list[Any]:
        """Synchronous variant for callers without an event loop (imports, tests)."""
        reply = Reply()
        self._queue.put(((workspace_id, calls), reply))
        return reply.wait()  # type: ignore[no-any-return]

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            size = len(first[0][1])
            stopping = False
            while size < self._max_events:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True  # after this group
                    break
                group.append(item)
                size += len(item[0][1])
            self._commit(group)
            if stopping:
                return

    def _commit(self, group: list[Any]) -> None:
        try:
            results = self._record([batch for batch, _ in group])
        except Exception as exc:
            if len(group) > 1:
                for item in group:
                    self._commit([item])
                return
            log.exception("recording a batch failed")
            group[0][1].settle(error=StoreUnavailable(f"the intake log did not take the batch: {exc}"))
            return
        self._on_commit()
        for (_, reply), result in zip(group, results):
            reply.settle(result=result)
