"""The KPI processor: CRM events in, KPI facts and activity days out, KPI updates published.

Facts are extracted once per event (pure `facts_of`), written idempotently, and
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
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Iterable, Protocol
from uuid import UUID

from streams.messages import Message
from streams.processors import source_of

log = logging.getLogger(__name__)
KPI_UPDATES_TOPIC = "cdp.kpi-updates"

FACT_COLUMNS = [
    "workspace_id", "fact_id", "event_id", "position", "anchor", "profile_id", "kind", "timestamp", "entity_id",
    "amount", "has_amount", "currency", "quantity", "probability", "stage", "status", "csat", "nps", "complaint",
    "channel", "campaign", "product", "owner", "category", "priority", "period_start", "period_end",
]  # fmt: skip
_KIND_COLUMN = FACT_COLUMNS.index("kind")
_EPOCH_DAY = date(1970, 1, 1)

_KINDS = {
    "Order Completed": "order",
    "Order Refunded": "refund",
    "Lead Created": "lead",
    "Opportunity Stage Changed": "opportunity",
    "Call Logged": "call",
    "Meeting Logged": "meeting",
    "Ticket Opened": "ticket_opened",
    "Ticket Assigned": "ticket_assigned",
    "Ticket Resolved": "ticket_resolved",
    "Feedback Submitted": "feedback",
    "Email Sent": "message_sent",
    "Email Opened": "message_opened",
    "Email Clicked": "message_clicked",
    "SMS Sent": "message_sent",
    "SMS Opened": "message_opened",
    "SMS Clicked": "message_clicked",
    "Cost Incurred": "cost",
    "Sales Target Set": "target",
}
# Which KPIs a fact kind can move (for the update stream).
KINDS_OF_KPI: dict[str, set[str]] = {
    "revenue": {"order", "refund"},
    "orders": {"order"},
    "average_order_value": {"order"},
    "csat": {"feedback"},
    "nps": {"feedback"},
    "pipeline_value": {"opportunity"},
    "won_revenue": {"opportunity"},
    "open_ticket_backlog": {"ticket_opened", "ticket_resolved"},
}
_KPIS_OF_KIND = {kind: [kpi for kpi, kinds in KINDS_OF_KPI.items() if kind in kinds]
                 for kind in set().union(*KINDS_OF_KPI.values())}  # fmt: skip


def _money(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _day(value: Any) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else _EPOCH_DAY


def facts_of(message: Message) -> list[dict[str, Any]]:
    """The KPI facts of one event message (none for events no KPI counts)."""
    call = message["call"]
    kind = _KINDS.get(call.get("event", "")) if call["type"] == "track" else None
    if kind is None:
        return []
    p: dict[str, Any] = call.get("properties") or {}
    context = call.get("context") or {}
    campaign_context = context.get("campaign") if isinstance(context.get("campaign"), dict) else {}
    event_id = message["event_id"]
    base: dict[str, Any] = {
        "fact_id": event_id,
        "kind": kind,
        "entity_id": event_id,
        "currency": _str(p.get("currency")),
        "channel": _str(p.get("channel")) or source_of(call),
        "campaign": _str(p.get("campaign_id")) or _str(campaign_context.get("name")),
        "owner": _str(p.get("owner") or p.get("assignee")),
        "category": _str(p.get("category")),
        "priority": _str(p.get("priority")),
    }
    facts = [base]
    if kind == "order":
        lines = [x for x in p.get("products") or [] if isinstance(x, dict)]
        amount = p.get("revenue", p.get("total"))
        if amount is None:
            amount = sum(_money(x.get("price")) * int(x.get("quantity", 1)) for x in lines)
        base |= {"entity_id": _str(p.get("order_id")) or event_id, "amount": _money(amount), "has_amount": 1}
        for i, line in enumerate(lines):
            quantity = int(line.get("quantity", 1))
            facts.append(base | {
                "fact_id": f"{event_id}/{i}", "kind": "order_line", "quantity": quantity,
                "amount": _money(line.get("price")) * quantity, "category": _str(line.get("category")),
                "product": _str(line.get("product_id") or line.get("sku") or line.get("name")),
            })  # fmt: skip
    elif kind == "refund":
        base |= {"entity_id": _str(p["order_id"]), "amount": _money(p.get("revenue")),
                 "has_amount": int(p.get("revenue") is not None)}  # fmt: skip
    elif kind == "lead":
        base["entity_id"] = _str(p.get("lead_id")) or event_id
    elif kind == "opportunity":
        base |= {"entity_id": _str(p["opportunity_id"]), "amount": _money(p["amount"]), "has_amount": 1,
                 "probability": float(p["probability"]), "stage": _str(p["stage"]), "status": _str(p["status"])}  # fmt: skip
    elif kind.startswith("ticket_"):
        base |= {"entity_id": _str(p["ticket_id"]), "complaint": int(base["category"].lower() == "complaint")}
    elif kind == "feedback":
        base |= {"csat": p.get("csat"), "nps": p.get("nps")}
    elif kind.startswith("message_"):
        base |= {"channel": "sms" if call["event"].startswith("SMS") else "email", "entity_id": _str(p["campaign_id"])}
    elif kind == "cost":
        base |= {"amount": _money(p["amount"]), "has_amount": 1, "category": _str(p.get("kind") or "marketing")}
    elif kind == "target":
        base |= {"amount": _money(p["amount"]), "has_amount": 1, "period_start": _day(p["period_start"]),
                 "period_end": _day(p["period_end"]),
                 "entity_id": f"{p['owner']}|{p['period_start']}|{p['period_end']}"}  # fmt: skip
    return facts


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def fact_rows(message: Message) -> list[list[Any]]:
    """`kpi_facts` rows of an event message, in FACT_COLUMNS order."""
    rows = []
    for fact in facts_of(message):
        full = {
            "workspace_id": message["workspace_id"], "event_id": UUID(message["event_id"]),
            "position": message["position"], "anchor": message["anchor"], "profile_id": UUID(message["profile_id"]),
            "timestamp": _time(message["call"]["timestamp"]), "amount": Decimal(0), "has_amount": 0, "quantity": 0,
            "probability": 0.0, "stage": "", "status": "", "csat": None, "nps": None, "complaint": 0, "product": "",
            "period_start": _EPOCH_DAY, "period_end": _EPOCH_DAY,
        } | fact  # fmt: skip
        rows.append([full[c] for c in FACT_COLUMNS])
    return rows


class KpiWriter(Protocol):
    """What the processor needs from projections/ (KpiStore implements it)."""

    def insert_facts(self, rows: list[list[Any]]) -> None: ...
    def insert_activity(self, rows: list[list[Any]]) -> None: ...
    def insert_moves(self, rows: list[list[Any]]) -> None: ...


class KpiProcessor:
    """Writes `kpi_facts`, `activity_days` and `identity_moves`; tells `KpiUpdates` which KPIs and days moved."""

    name = "kpis"

    def __init__(self, writer: KpiWriter, updates: "KpiUpdates | None" = None) -> None:
        self.writer = writer
        self.updates = updates

    def process(self, messages: list[Message]) -> int:
        facts: list[list[Any]] = []
        days: dict[tuple[str, str, date], list[Any]] = {}
        moved: dict[str, dict[str, set[date]]] = defaultdict(lambda: defaultdict(set))
        top = 0
        moves: list[list[Any]] = []
        for m in sorted(messages, key=lambda m: m["position"]):
            top = max(top, m["position"])
            if m["kind"] == "identity" and m["change"] in ("absorbed", "split_apart"):
                # absorbed: the absorbed profile's identifiers now belong to this one; split_apart: to the new one.
                owner = m["profile_id"] if m["change"] == "absorbed" else m["new_profile_id"]
                moves += [[m["workspace_id"], i, UUID(owner), m["position"]] for i in m.get("identifiers", [])]
            if m["kind"] != "event":
                continue
            at = _time(m["call"]["timestamp"])
            # One row per anchor and day; the latest position wins here as in the table.
            days[(m["workspace_id"], m["anchor"], at.date())] = [
                m["workspace_id"], m["anchor"], UUID(m["profile_id"]), at.date(), m["position"]
            ]  # fmt: skip
            rows = fact_rows(m)
            facts += rows
            for row in rows:
                for kpi in _KPIS_OF_KIND.get(row[_KIND_COLUMN], ()):
                    moved[m["workspace_id"]][kpi].add(at.date())
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
        publish: Callable[[list[Message]], None],
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
            messages: list[Message] = [{
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
