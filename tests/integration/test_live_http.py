"""GET /v1/live over real HTTP: each workspace's stream carries its own status and KPI updates, nothing of another."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

import httpx

from tests.conftest import Running


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def read_stream(r: Running, key: str, until: Callable[[list[tuple[str, dict[str, Any]]]], bool],
                timeout: float = 15, act: Callable[[], None] | None = None) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
    """The (event, data) pairs of a stream until `until` holds; `act` runs once the first message arrived."""
    seen: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    with r.http.stream("GET", "/v1/live", headers=bearer(key), timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                seen.append((event, json.loads(line[5:])))
                if act is not None and len(seen) == 1:
                    act()
                if until(seen):
                    return seen
            assert time.monotonic() < deadline, f"the stream did not show it within {timeout}s: {seen}"
    return seen


def order(user: str, revenue: float) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": "Order Completed", "messageId": str(uuid.uuid4()),
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "properties": {"order_id": str(uuid.uuid4()), "revenue": revenue, "currency": "EUR"}}  # fmt: skip


def test_the_stream_needs_a_read_key(live: Running) -> None:
    assert live.http.get("/v1/live").status_code == 401
    answer = live.http.get("/v1/live", headers=bearer("rk_unknown"))
    assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
    assert answer.headers["www-authenticate"] == 'Bearer realm="cdp"'  # no browser password dialog for a Bearer call
    answer = live.http.get("/v1/live", headers=bearer(live.write_key))
    assert answer.status_code == 403 and answer.json()["code"] == "forbidden"


def test_a_status_comes_at_once_then_every_second(live: Running) -> None:
    started = time.monotonic()
    seen = read_stream(live, live.read_key, lambda s: len(s) >= 3)
    assert [event for event, _ in seen] == ["status"] * 3
    assert time.monotonic() - started >= 1.5  # the first at once, then one a second
    status = seen[0][1]
    assert set(status) >= {"events_per_second", "profiles", "events_seen", "lag", "caught_up", "log_position"}
    assert set(status["lag"]) >= {"kpis", "profiles", "tags", "resolver", "relay"}


def test_an_order_brings_a_kpi_update_and_counts_in_its_workspace_only(live: Running) -> None:
    other = live.http.post("/v1/workspaces", json={"name": "other"}, headers=bearer(live.platform_key)).json()
    keys = {k["kind"]: k["key"] for k in other["keys"]}

    def send() -> None:
        assert live.send("/v1/batch", {"batch": [order("live-1", 10), order("live-2", 20)]}).status_code == 200

    seen = read_stream(live, live.read_key, act=send, until=lambda s: any(
        e == "kpi" and m["kpi"] == "revenue" for e, m in s) and any(
        e == "status" and m["events_seen"] >= 2 and m["profiles"] >= 2 for e, m in s))  # fmt: skip
    revenue = next(m for e, m in seen if e == "kpi" and m["kpi"] == "revenue")
    assert revenue["workspace_id"] == live.platform.workspace_id
    today = datetime.now(timezone.utc).date().isoformat()
    assert {"period": today, "currency": "EUR", "value": 30.0} in [
        {k: p[k] for k in ("period", "currency", "value")} for p in revenue["points"]]  # fmt: skip
    assert max(m["events_per_second"] for e, m in seen if e == "status") > 0
    # The other workspace's stream: a status of its own, none of these events, no KPI update of the first.
    theirs = read_stream(live, keys["read"], until=lambda s: len(s) >= 2)
    assert [e for e, _ in theirs] == ["status", "status"]
    assert all(m["events_seen"] == 0 and m["profiles"] == 0 for _, m in theirs)


def test_a_closed_stream_is_let_go(live: Running) -> None:
    read_stream(live, live.read_key, lambda s: len(s) >= 1)
    deadline = time.monotonic() + 10
    while live.platform.services.live.streams(live.platform.workspace_id):
        assert time.monotonic() < deadline, "the server still feeds a stream its client closed"
        time.sleep(0.1)


def test_a_bearer_challenge_for_a_bearer_request_and_basic_for_basic(live: Running) -> None:
    assert live.http.get("/v1/status", headers=bearer("nope")).headers["www-authenticate"] == 'Bearer realm="cdp"'
    basic = live.http.post("/v1/batch", json={"batch": []}, auth=("wk_nope", ""))
    assert basic.status_code == 401 and basic.headers["www-authenticate"] == 'Basic realm="cdp"'
    assert isinstance(live.http, httpx.Client)
