"""No entry in the log stops the read side: poison events are quarantined and everything after them is projected.

The poison is written straight into the log through the committer, bypassing the
ingest validation that refuses these values (domain/limits.py), as an event from
an older version, or a bug in validation, would be.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from infra.bootstrap import verify_rebuild
from streams.kpis import KpiProcessor
from streams.messages import EventMessage, Message
from tests.conftest import Running

NOW = "2026-11-30T12:00:00.000000Z"


def _call(user: str, **fields: Any) -> dict[str, Any]:
    """A call as ingest stores it (normalised), without going through ingest."""
    return {
        "type": "track", "event": "Viewed", "userId": user, "messageId": str(uuid.uuid4()), "properties": {},
        "context": {}, "integrations": {}, "timestamp": NOW, "originalTimestamp": NOW, "receivedAt": NOW,
    } | fields  # fmt: skip


def _deep(levels: int) -> dict[str, Any]:
    """`levels` objects wrapped around an empty one."""
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


POISONS = {
    "event time in year 9999": {"timestamp": "9999-12-31T23:59:59.000000Z"},
    "event time before ClickHouse dates": {"timestamp": "1900-01-01T00:00:00.000000Z"},
    "order revenue of 1e33": {"event": "Order Completed", "properties": {"revenue": 1e33, "currency": "EUR"}},
    "product price of 1e33": {
        "event": "Order Completed", "properties": {"currency": "EUR", "products": [{"price": 1e33, "quantity": 1}]},
    },
    "product quantity of 2^63": {
        "event": "Order Completed",
        "properties": {"currency": "EUR", "products": [{"price": 1.0, "quantity": 2**63}]},
    },
    "sales target starting in year 1": {
        "event": "Sales Target Set",
        "properties": {"owner": "ann", "amount": 10.0, "currency": "EUR", "period_start": "0001-01-01",
                       "period_end": "2026-12-31"},
    },
    "properties 300 levels deep": {"properties": _deep(300)},
}  # fmt: skip


def _revenue(running: Running) -> float:
    response = running.http.get(
        "/v1/kpis/revenue", params={"from": "2026-11-01", "to": "2026-12-31"}, headers=running.read_headers
    )
    assert response.status_code == 200, response.text
    return sum(row["value"] for row in response.json()["series"] if row["currency"] == "EUR")


def _order(user: str, revenue: float) -> dict[str, Any]:
    return _call(user, event="Order Completed", properties={"revenue": revenue, "currency": "EUR"})


@pytest.mark.parametrize("poison", list(POISONS), ids=list(POISONS))
def test_a_poison_event_is_quarantined_and_every_later_event_is_projected(running: Running, poison: str) -> None:
    platform = running.platform
    ws = platform.workspace_id
    platform.committer.record_now(ws, [_order("before", 10.0)])
    platform.committer.record_now(ws, [_call("poisoned", **POISONS[poison])])
    # Later events, in the same page as the poison and in pages after it.
    platform.committer.record_now(ws, [_order("after-1", 20.0), _call("after-2")])
    platform.committer.record_now(ws, [_order("after-3", 30.0)])
    status = running.wait_caught_up()

    for user in ("before", "after-1", "after-2", "after-3"):
        assert running.profile(f"user_id:{user}").status_code == 200, user
    assert _revenue(running) == pytest.approx(60.0)

    entries = running.http.get("/v1/quarantine", headers=running.admin_headers).json()["entries"]
    assert entries, "the poison must be recorded, not silently skipped"
    poisoned_positions = {e["position"] for e in entries}
    assert len(poisoned_positions) == 1  # only the poison, in whichever projections it could not enter
    assert all(e["kind"] == "event" and e["reason"] and e["attempts"] == 1 for e in entries)
    assert status["quarantined"] == len(entries)
    in_parts = status["relay"]["quarantined"] + sum(p["quarantined"] for p in status["projections"].values())
    assert in_parts == len(entries)
    # A rebuild quarantines the same entries and builds the same projections.
    assert verify_rebuild(platform.app, platform.store.client, platform.settings.clickhouse_database) == []


def test_a_quarantined_entry_applies_after_the_fix(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = running.platform
    ws = platform.workspace_id
    original = KpiProcessor.process

    def buggy(self: KpiProcessor, messages: list[Message]) -> int:
        if any(isinstance(m, EventMessage) and m.call.get("userId") == "unlucky" for m in messages):
            raise ValueError("a bug in the KPI processor")
        return original(self, messages)

    monkeypatch.setattr(KpiProcessor, "process", buggy)
    platform.committer.record_now(ws, [_order("unlucky", 40.0), _order("lucky", 2.0)])
    running.wait_caught_up()
    entries = running.http.get("/v1/quarantine", headers=running.admin_headers).json()["entries"]
    assert [(e["projection"], e["reason"]) for e in entries] == [("kpis", "a bug in the KPI processor")]

    # Retrying before the fix: still failing, tried once more.
    retried = running.http.post("/v1/quarantine/retry", json={}, headers=running.admin_headers).json()
    assert retried["applied"] == [] and len(retried["failed"]) == 1
    again = running.http.get("/v1/quarantine", headers=running.admin_headers).json()["entries"]
    assert again[0]["attempts"] == 2

    monkeypatch.setattr(KpiProcessor, "process", original)  # the fix
    retried = running.http.post("/v1/quarantine/retry", json={"projection": "kpis"}, headers=running.admin_headers)
    assert retried.status_code == 200
    assert retried.json() == {"applied": [{"projection": "kpis", "position": entries[0]["position"]}], "failed": []}
    assert running.http.get("/v1/quarantine", headers=running.admin_headers).json()["entries"] == []
    history = running.http.get(
        "/v1/quarantine", params={"include_resolved": "true"}, headers=running.admin_headers
    ).json()["entries"]
    assert [e["resolved"] for e in history] == [True]
    assert _revenue(running) == pytest.approx(42.0)
    assert running.platform.status()["quarantined"] == 0
    assert verify_rebuild(platform.app, platform.store.client, platform.settings.clickhouse_database) == []


def test_quarantine_needs_keys(running: Running) -> None:
    assert running.http.get("/v1/quarantine").status_code == 401
    assert running.http.post("/v1/quarantine/retry", json={}).status_code == 401
    write = {"Authorization": f"Bearer {running.write_key}"}
    for other in (running.read_headers, write):  # quarantined entries hold what was sent: neither key opens them
        for response in (running.http.get("/v1/quarantine", headers=other),
                         running.http.post("/v1/quarantine/retry", json={}, headers=other)):  # fmt: skip
            assert (response.status_code, response.json()["code"]) == (403, "forbidden"), response.text
    bad = running.http.post("/v1/quarantine/retry", json={"positions": "all"}, headers=running.admin_headers)
    assert bad.status_code in (400, 422)


def test_ingest_refuses_what_the_projections_cannot_hold(running: Running) -> None:
    now = datetime.now(timezone.utc).isoformat()
    cases = [
        ({"type": "track", "event": "x", "userId": "u", "timestamp": "9999-12-31T23:59:59Z"}, "timestamp"),
        ({"type": "track", "event": "x", "userId": "u", "timestamp": now, "sentAt": "2300-01-01T00:00:00Z"}, "sentAt"),
        ({"type": "track", "event": "x", "userId": "u", "timestamp": now, "sentAt": "2250-01-01T00:00:00Z"},
         "timestamp"),
        ({"type": "track", "event": "x", "userId": "u", "timestamp": "1969-12-31T23:59:59Z"}, "timestamp"),
        ({"type": "track", "event": "Order Completed", "userId": "u",
          "properties": {"revenue": 1e33, "currency": "EUR"}}, "properties.revenue"),
        ({"type": "track", "event": "Order Completed", "userId": "u",
          "properties": {"currency": "EUR", "products": [{"price": 1e33}]}}, "properties.products.0.price"),
        ({"type": "track", "event": "Order Completed", "userId": "u",
          "properties": {"currency": "EUR", "products": [{"price": 1, "quantity": 2**63}]}},
         "properties.products.0.quantity"),
        ({"type": "track", "event": "Sales Target Set", "userId": "u",
          "properties": {"owner": "a", "amount": 1, "currency": "EUR", "period_start": "0001-01-01",
                         "period_end": "2026-01-01"}}, "properties.period_start"),
        ({"type": "track", "event": "x", "userId": "u", "properties": _deep(64)}, "properties"),  # 65 objects deep
    ]  # fmt: skip
    for body, field in cases:
        response = running.send("/v1/batch", {"batch": [body]})
        assert response.status_code == 200 and response.json()["stored"] == 0, body
        errors = response.json()["rejected"]
        assert [e["field"] for e in errors] == [field], errors
        assert errors[0]["reason"]
    assert running.stored_event_count() == 0
    assert len(running.platform.dead_letters.list(running.platform.workspace_id)) == len(cases)  # kept, not lost
    # The edges of the window are accepted.
    ok = running.send("/v1/batch", {"batch": [
        {"type": "track", "event": "x", "userId": "u", "timestamp": "1970-01-01T00:00:00Z"},
        {"type": "track", "event": "x", "userId": "u", "properties": _deep(63)},  # 64 objects deep
    ]})  # fmt: skip
    assert ok.status_code == 200 and ok.json()["stored"] == 2, ok.text
