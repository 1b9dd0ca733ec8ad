"""GET /v1/tags/{slug}/history and /v1/segments/{slug}/history against a real platform: enters and exits per
period by the platform's clock (a clock the tests own), members at each period's end, redelivered change rows,
errors, and a second workspace that sees none of it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from infra.bootstrap import Platform
from infra.broker import free_port
from infra.config import Settings
from domain.times import shown
from infra.server import create_app
from streams.tags import ManualClock
from tests.conftest import Running

START = datetime(2026, 5, 6, 12, 0, tzinfo=timezone.utc)  # a Wednesday


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(scope="module")
def r(tmp_path_factory: pytest.TempPathFactory, chdb_url: str, clock: ManualClock) -> Iterator[Running]:
    """One platform for the module: its tests read one recorded history."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("history") / "data", http_port=free_port(), kafka_port=free_port(),
        kafka_partitions=2, clickhouse_url=chdb_url, clickhouse_database=f"t_{uuid.uuid4().hex[:12]}",
        predictions_every_h=0,
    )  # fmt: skip
    platform = Platform(settings, clock=clock)
    with TestClient(create_app(platform)) as client:
        yield Running(platform, client)


def membership(r: Running, users: dict[str, str], clock: ManualClock, keys: dict[str, str] | None = None) -> None:
    """Sets the trait `hist` of each user (in: a member of `hist-in`, out: not), at the clock's time."""
    batch = [{"type": "identify", "userId": user, "messageId": uuid.uuid4().hex, "timestamp": iso(clock.now()),
              "traits": {"hist": value}} for user, value in users.items()]  # fmt: skip
    auth = ((keys or {}).get("write") or r.write_key, "")
    assert r.http.post("/v1/batch", json={"batch": batch}, auth=auth).status_code == 200
    r.settle()


def history(r: Running, slug: str, key: str | None = None, kind: str = "tags", **params: Any) -> Any:
    return r.http.get(f"/v1/{kind}/{slug}/history", params=params,
                      headers={"Authorization": f"Bearer {key or r.read_key}"})  # fmt: skip


def rows(answer: Any) -> list[tuple[str, int, int, int]]:
    assert answer.status_code == 200, answer.text
    return [(p["period"], p["entered"], p["exited"], p["members"]) for p in answer.json()["series"]]


@pytest.fixture(scope="module")
def recorded(r: Running, clock: ManualClock) -> str:
    """`hist-in` with a known history: 3 enter on day 0 (two by the backfill), one leaves and one enters on day 1,
    one leaves on day 3, nothing on day 2; day 0 is START's day."""
    membership(r, {"h-1": "in", "h-2": "in", "h-3": "out"}, clock)
    defined = r.http.put("/v1/tags/hist-in", json={"name": "In", "rule": {"trait": "hist", "op": "=", "value": "in"}},
                         headers=r.admin_headers)  # fmt: skip
    assert defined.status_code == 200, defined.text
    r.settle()
    membership(r, {"h-3": "in"}, clock)
    clock.advance(timedelta(days=1))
    membership(r, {"h-1": "out", "h-4": "in"}, clock)
    clock.advance(timedelta(days=2))
    membership(r, {"h-2": "out"}, clock)
    clock.advance(timedelta(hours=1))
    return "hist-in"


def test_enters_exits_and_members_per_day_with_every_day_present(r: Running, recorded: str) -> None:
    answer = history(r, recorded, **{"from": "2026-05-05T00:00:00Z", "to": "2026-05-10T00:00:00Z"})
    assert rows(answer) == [("2026-05-05", 0, 0, 0), ("2026-05-06", 3, 0, 3), ("2026-05-07", 1, 1, 3),
                            ("2026-05-08", 0, 0, 3), ("2026-05-09", 0, 1, 2)]  # fmt: skip
    body = answer.json()
    assert (body["id"], body["kind"], body["granularity"]) == ("hist-in", "tag", "day")
    assert (body["from"], body["to"]) == ("2026-05-05T00:00:00.000Z", "2026-05-10T00:00:00.000Z")
    members = r.http.get("/v1/tags/hist-in", headers=r.read_headers).json()["members"]
    assert body["series"][-1]["members"] == members == 2


def test_a_range_that_starts_later_carries_the_members_before_it(r: Running, recorded: str) -> None:
    # From the middle of day 1: that day's changes were decided before noon, so they are before the range.
    answer = history(r, recorded, **{"from": "2026-05-07T18:00:00Z", "to": "2026-05-09T12:00:00Z"})
    assert rows(answer) == [("2026-05-07", 0, 0, 3), ("2026-05-08", 0, 0, 3), ("2026-05-09", 0, 0, 3)]
    # `to` is exclusive: the exit at 12:00 on day 3 is not in a range ending then.
    answer = history(r, recorded, **{"from": "2026-05-09T00:00:00Z", "to": "2026-05-09T12:00:00.001Z"})
    assert rows(answer) == [("2026-05-09", 0, 1, 2)]


def test_weeks_and_months(r: Running, recorded: str) -> None:
    weeks = history(r, recorded, granularity="week", **{"from": "2026-04-27T00:00:00Z", "to": "2026-05-18T00:00:00Z"})
    assert rows(weeks) == [("2026-04-27", 0, 0, 0), ("2026-05-04", 4, 2, 2), ("2026-05-11", 0, 0, 2)]
    months = history(r, recorded, granularity="month", **{"from": "2026-04-15T00:00:00Z", "to": "2026-06-02T00:00:00Z"})
    assert rows(months) == [("2026-04-01", 0, 0, 0), ("2026-05-01", 4, 2, 2), ("2026-06-01", 0, 0, 2)]


def test_the_default_range_is_the_30_days_up_to_the_platforms_clock(r: Running, recorded: str, clock: ManualClock) -> None:
    answer = history(r, recorded)
    series = rows(answer)
    assert (answer.json()["from"], answer.json()["to"]) == (shown(clock.now() - timedelta(days=30)), shown(clock.now()))
    assert len(series) == 31 and series[-1][0] == clock.now().date().isoformat()
    assert sum(e for _, e, _, _ in series) == 4 and sum(x for _, _, x, _ in series) == 2
    assert series[-1][3] == 2


def test_a_change_delivered_twice_counts_once(r: Running, recorded: str) -> None:
    store = r.platform.tags.store  # type: ignore[union-attr]
    window = {"from": "2026-05-05T00:00:00Z", "to": "2026-05-10T00:00:00Z"}
    before = rows(history(r, recorded, **window))
    table = f"{store.db}.tag_changes"
    result = store.client.query(f"SELECT * FROM {table} FINAL WHERE tag_id = 'hist-in'")
    store.client.command(f"SYSTEM STOP MERGES {table}")  # the copies stay apart until this test is done
    try:
        store.client.insert(table, result.result_rows, column_names=list(result.column_names))
        raw = store.client.query(f"SELECT count() FROM {table} WHERE tag_id = 'hist-in'").result_rows[0][0]
        assert raw == 2 * len(result.result_rows) == 12
        assert rows(history(r, recorded, **window)) == before
    finally:
        store.client.command(f"SYSTEM START MERGES {table}")


@pytest.mark.parametrize("params,message", [
    ({"from": "yesterday"}, "not an ISO 8601 time"),
    ({"from": "2026-05-09T00:00:00Z", "to": "2026-05-01T00:00:00Z"}, "'to' must be after 'from'"),
    ({"from": "2000-01-01T00:00:00Z", "to": "2026-05-01T00:00:00Z"}, "above 3660 days"),
    ({"granularity": "hour"}, "granularity must be one of day, week, month"),
])  # fmt: skip
def test_a_bad_range_is_a_400_that_names_it(r: Running, recorded: str, params: dict[str, str], message: str) -> None:
    answer = history(r, recorded, **params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "bad_request" and message in answer.json()["message"]


def test_unknown_slugs_and_segments(r: Running, recorded: str) -> None:
    missing = history(r, "never-defined")
    assert missing.status_code == 404
    assert missing.json() == {"code": "not_found",
                              "message": "no tag 'never-defined' in this workspace; the tags listing shows them"}
    saved = r.http.put("/v1/segments/hist-seg", json={"name": "Seg", "rule": {"tag": "hist-in"}}, headers=r.admin_headers)
    assert saved.status_code == 200, saved.text
    segment = history(r, "hist-seg", kind="segments")
    assert segment.status_code == 400
    assert segment.json()["code"] == "segment_has_no_history"
    assert "define a tag with the same rule" in segment.json()["message"]
    assert history(r, "no-such-segment", kind="segments").status_code == 404
    assert history(r, "hist-seg", kind="tags").status_code == 404  # a segment is not a tag


def test_keys(r: Running, recorded: str) -> None:
    assert r.http.get("/v1/tags/hist-in/history").status_code == 401
    assert history(r, recorded, key=r.write_key).status_code == 403
    made = r.http.post("/v1/keys", json={"kind": "read", "scopes": ["kpis"]}, headers=r.admin_headers)
    assert made.status_code in (200, 201), made.text
    assert history(r, recorded, key=made.json()["key"]).status_code == 403  # no segments scope
    assert history(r, recorded, key=r.admin_key).status_code == 200


def test_another_workspace_sees_only_its_own(r: Running, recorded: str, clock: ManualClock) -> None:
    made = r.http.post("/v1/workspaces", json={"name": "other"}, headers={"Authorization": f"Bearer {r.platform_key}"})
    assert made.status_code == 201, made.text
    keys = {k["kind"]: k["key"] for k in made.json()["keys"]}
    window = {"from": "2026-05-05T00:00:00Z", "to": iso(clock.now() + timedelta(days=1))}
    mine = rows(history(r, recorded, **window))
    assert history(r, recorded, key=keys["read"]).status_code == 404  # the slug is not theirs
    rule = {"name": "In", "rule": {"trait": "hist", "op": "=", "value": "in"}}
    defined = r.http.put("/v1/tags/hist-in", json=rule, headers={"Authorization": f"Bearer {keys['admin']}"})
    assert defined.status_code == 200, defined.text
    r.settle()
    membership(r, {"h-1": "in"}, clock, keys)  # the same user id, in the other workspace
    theirs = rows(history(r, recorded, key=keys["read"], **window))
    assert sum(e for _, e, _, _ in theirs) == 1 and theirs[-1][3] == 1
    assert rows(history(r, recorded, **window)) == mine
