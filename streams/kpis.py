"""The KPI processor: CRM events in, KPI facts and activity days out, KPI updates published.

Facts are extracted once per event (`domain.crm.facts_of`), written idempotently, and
aggregated at read time by projections/kpis.py; the processor needs no state,
so redelivery, late events and merges never leave a wrong number behind.
Headline KPI updates go to `cdp.kpi-updates`, at most once per second per KPI
and workspace (`KpiUpdates`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from datetime import date
from typing import Any, Callable, Iterable, Protocol
from uuid import UUID

from domain.crm import facts_of
from domain.kpis import KPIS_MOVED_BY
from domain.segment import source_of
from domain.times import parse_instant
from projections.kpis import fact_rows
from streams.messages import ErasureMessage, EventMessage, IdentityMessage, Message, Outgoing, by_erasures

log = logging.getLogger(__name__)
KPI_UPDATES_TOPIC = "cdp.kpi-updates"


class KpiWriter(Protocol):
    """What the processor needs from projections/ (KpiStore implements it)."""

    def insert_facts(self, rows: list[list[Any]]) -> None: ...
    def insert_activity(self, rows: list[list[Any]]) -> None: ...
    def erase(self, workspace_id: str, profile_ids: list[str]) -> None: ...
    def insert_moves(self, rows: list[list[Any]]) -> None: ...


class KpiProcessor:
    """Writes `kpi_facts`, `activity_days` and `identity_moves`; tells `KpiUpdates` which KPIs and days moved."""

    name = "kpis"

    def __init__(self, writer: KpiWriter, updates: "KpiUpdates | None" = None) -> None:
        self.writer = writer
        self.updates = updates

    def process(self, messages: list[Message]) -> int:
        top = 0
        for part in by_erasures(messages):
            if isinstance(part, ErasureMessage):
                self.writer.erase(part.workspace_id, list(part.profile_ids))  # their facts count no more
                top = max(top, part.position)
            else:
                top = max(top, self._apply(part))
        return top

    def _apply(self, messages: list[Message]) -> int:
        facts: list[list[Any]] = []
        days: dict[tuple[str, str, date], list[Any]] = {}
        moved: dict[str, dict[str, set[date]]] = defaultdict(lambda: defaultdict(set))
        top = 0
        moves: list[list[Any]] = []
        for m in sorted(messages, key=lambda m: m.position):
            top = max(top, m.position)
            match m:
                case IdentityMessage(change="absorbed" | "split_apart"):
                    # absorbed: the absorbed profile's identifiers now belong to this one; split_apart: to the new one.
                    owner = m.profile_id if m.change == "absorbed" else m.new_profile_id
                    moves += [[m.workspace_id, i, UUID(owner), m.position] for i in m.identifiers]
                case EventMessage():
                    at = parse_instant(m.call["timestamp"])
                    # One row per anchor and day; the latest position wins here as in the table.
                    days[(m.workspace_id, m.anchor, at.date())] = [
                        m.workspace_id, m.anchor, UUID(m.profile_id), at.date(), m.position
                    ]  # fmt: skip
                    found = facts_of(m.call, m.event_id, source_of(m.call))
                    facts += fact_rows(found, workspace_id=m.workspace_id, event_id=m.event_id, position=m.position,
                                       anchor=m.anchor, profile_id=m.profile_id, timestamp=at)  # fmt: skip
                    for fact in found:
                        for kpi in KPIS_MOVED_BY.get(fact.kind, ()):
                            moved[m.workspace_id][kpi].add(at.date())
        self.writer.insert_moves(moves)
        self.writer.insert_facts(facts)
        self.writer.insert_activity(list(days.values()))
        if self.updates is not None:
            for ws, kpis in moved.items():
                for kpi, touched in kpis.items():
                    self.updates.touch(ws, kpi, touched)
        return top


class KpiUpdates:
    """Publishes the new daily values of moved headline KPIs, at most once per second per KPI and workspace.

    `touch` only notes what moved; `flush` (called by a timer thread every
    `interval`) computes and publishes. A KPI touched again within the interval is
    published once, with the latest values of every day that moved.
    """

    def __init__(
        self,
        daily_values: Callable[[str, str, list[date]], list[dict[str, Any]]],
        publish: Callable[[list[Outgoing]], None],
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.daily_values = daily_values
        self.publish = publish
        self.interval = interval
        self.clock = clock
        self._pending: dict[tuple[str, str], set[date]] = defaultdict(set)
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0

    def touch(self, workspace_id: str, kpi: str, days: Iterable[date]) -> None:
        with self._lock:
            self._pending[(workspace_id, kpi)].update(days)

    def flush(self) -> int:
        """Publish every pending KPI whose last update is at least `interval` old; returns messages sent."""
        now = self.clock()
        with self._lock:
            due = {k: d for k, d in self._pending.items() if now - self._last.get(k, -1e18) >= self.interval}
            for key in due:
                del self._pending[key]
        if not due:
            return 0
        try:
            messages: list[Outgoing] = [{
                "workspace_id": ws, "kpi": kpi, "granularity": "day",
                "points": self.daily_values(ws, kpi, sorted(days)), "published_at": time.time(),
            } for (ws, kpi), days in sorted(due.items())]  # fmt: skip
            self.publish(messages)
        except BaseException:
            with self._lock:  # nothing is lost: the days stay pending for the next flush
                for key, days in due.items():
                    self._pending[key].update(days)
            raise
        with self._lock:
            self._last.update({key: now for key in due})
        self.published += len(messages)
        return len(messages)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kpi-updates", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval / 4):
            try:
                self.flush()
            except Exception:
                log.exception("publishing KPI updates failed; retrying")
