"""`cdp rebuild --verify` after a realistic history is exact: no difference, and one corrupted row is one named table.

The history goes through the HTTP API: identifies, tracks (orders, a refund, CRM events), an alias and a
merge, a split, tags and a segment defined with their backfills (one racing with live events), manual
tags, a rule change, a tag deleted, an identity rules change, and time moved on so that timers fire.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from infra.bootstrap import Platform, _keep_steps, rebuild, verify_rebuild
from infra.broker import free_port
from infra.cli import app as cli
from infra.config import Settings
from infra.server import create_app
from projections.migrate import migrate
from projections.store import ProjectionStore
from projections.verify import COMPARED_TABLES, NOT_COMPARED, differences
from streams.tags import ManualClock
from tests.conftest import Running

START = datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc)


def at(days: float) -> str:
    return (START + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def send(r: Running, *calls: dict[str, Any]) -> None:
    batch = [{"messageId": uuid.uuid4().hex, **c} for c in calls]
    response = r.send("/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    assert not response.json().get("rejected"), response.text


def admin(r: Running) -> dict[str, str]:
    return r.admin_headers


def define(r: Running, slug: str, rule: dict[str, Any]) -> None:
    response = r.http.put(f"/v1/tags/{slug}", json={"name": slug, "rule": rule}, headers=admin(r))
    assert response.status_code == 200, response.text


def history(r: Running, clock: ManualClock) -> None:
    send(r,
         {"type": "page", "anonymousId": "dev-ann", "name": "Home", "timestamp": at(-3)},
         {"type": "identify", "userId": "ann", "anonymousId": "dev-ann", "traits": {"email": "ann@example.com",
          "plan": "free"}, "timestamp": at(-3)},
         {"type": "identify", "userId": "bob", "traits": {"plan": "pro"}, "timestamp": at(-2)},
         {"type": "track", "userId": "ann", "event": "Order Completed", "timestamp": at(-2),
          "properties": {"order_id": "o1", "revenue": 120.1, "currency": "EUR",
                         "products": [{"sku": "s1", "price": 60.05, "quantity": 2}]}},
         {"type": "track", "userId": "bob", "event": "Order Completed", "timestamp": at(-1),
          "properties": {"order_id": "o2", "revenue": 0.3, "currency": "EUR"}},
         {"type": "track", "userId": "bob", "event": "Order Refunded", "timestamp": at(-1),
          "properties": {"order_id": "o2"}},
         {"type": "track", "userId": "bob", "event": "Ticket Opened", "timestamp": at(-1),
          "properties": {"ticket_id": "T1", "category": "complaint", "priority": "high"}},
         {"type": "track", "userId": "ann", "event": "Feedback Submitted", "timestamp": at(-1),
          "properties": {"csat": 4, "nps": 9}})  # fmt: skip
    send(r, {"type": "track", "anonymousId": "dev-cat", "event": "Ticket Opened", "timestamp": at(-1),
             "properties": {"ticket_id": "T2", "category": "complaint"}})  # fmt: skip
    r.settle()
    # Tags: an all-time one, windowed ones (timers), a recency one, one referring to a manual tag.
    define(r, "buyer", {"event": "Order Completed"})
    define(r, "spender", {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 100,
                          "within": "5d"})  # fmt: skip
    define(r, "complainer", {"event": "Ticket Opened", "where": [{"property": "category", "op": "=",
                                                                   "value": "complaint"}], "within": "3d"})  # fmt: skip
    define(r, "recent", {"last_seen": {"within": "4d"}})
    r.settle()
    saved = r.http.post("/v1/segments", json={"id": "pros", "name": "Pros", "rule": {"trait": "plan", "op": "=",
                                                                                      "value": "pro"}},
                        headers=admin(r))  # fmt: skip
    assert saved.status_code == 201, saved.text
    define(r, "beta-buyer", {"and": [{"tag": "beta"}, {"tag": "buyer"}]})
    # Live events right behind a definition: its backfill runs while they are applied.
    send(r, {"type": "track", "userId": "cat", "event": "Order Completed", "timestamp": at(0),
             "properties": {"order_id": "o3", "revenue": 200, "currency": "USD"}})  # fmt: skip
    send(r, {"type": "alias", "previousId": "dev-cat", "userId": "cat", "timestamp": at(0)})  # a merge
    added = r.http.post("/v1/profiles/user_id:ann/tags", json={"tag": "beta", "reason": "signed up"}, headers=admin(r))
    assert added.status_code == 201, added.text
    added = r.http.post("/v1/profiles/user_id:bob/tags", json={"tag": "beta"}, headers=admin(r))
    assert added.status_code == 201, added.text
    r.settle()
    removed = r.http.delete("/v1/profiles/user_id:bob/tags/beta", headers=admin(r))
    assert removed.status_code in (200, 204), removed.text
    define(r, "buyer", {"event": "Order Completed", "measure": "sum(revenue)", "op": ">=", "value": 1})  # version 2
    send(r, {"type": "identify", "userId": "dan", "anonymousId": "dev-dan", "traits": {"plan": "pro"}},
         {"type": "track", "anonymousId": "dev-dan", "event": "Order Completed", "timestamp": at(0.5),
          "properties": {"order_id": "o4", "revenue": 101, "currency": "EUR"}})  # fmt: skip
    r.settle()
    split = r.http.post("/v1/profiles/user_id:dan/split", json={"identifiers": ["anonymous_id:dev-dan"]},
                        headers=admin(r))  # fmt: skip
    assert split.status_code == 201, split.text
    rules = r.http.get("/v1/identity/rules", headers=r.read_headers).json()["rules"]
    changed = r.http.put("/v1/identity/rules", json=rules, headers=admin(r))
    assert changed.status_code == 200, changed.text
    assert r.http.delete("/v1/tags/complainer", headers=admin(r)).status_code in (200, 204)
    r.settle()
    # Time passes: windows close and recency lapses, by timers alone (and the timer thread may tick too).
    for days in (2, 3, 4):
        clock.advance(timedelta(days=days))
        r.platform.tags.tick()  # type: ignore[union-attr]
        r.settle()
    send(r, {"type": "track", "userId": "ann", "event": "Order Completed", "timestamp": at(9.5),
             "properties": {"order_id": "o5", "revenue": 150, "currency": "EUR"}})  # fmt: skip
    r.settle()


@pytest.fixture(scope="module")
def lived(tmp_path_factory: pytest.TempPathFactory, chdb_url: str) -> Iterator[Running]:
    """One platform with the whole history (building it takes a while): tests undo what they corrupt."""
    clock = ManualClock(START)
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("verify") / "data", http_port=free_port(), kafka_port=free_port(),
        kafka_partitions=2, clickhouse_url=chdb_url, clickhouse_database=f"t_{uuid.uuid4().hex[:12]}",
        predictions_every_h=0,  # a scheduled run is an entry of the log: one landing during a verify would race it
    )  # fmt: skip
    platform = Platform(settings, clock=clock)
    with TestClient(create_app(platform)) as client:
        r = Running(platform, client)
        history(r, clock)
        yield r


def verify(r: Running) -> list[str]:
    p = r.platform
    return verify_rebuild(p.app, p.store.client, p.settings.clickhouse_database)


def cdp_verify(r: Running) -> Any:
    s = r.platform.settings
    env = {"CDP_DATA_DIR": str(s.data_dir), "CDP_CLICKHOUSE_URL": s.clickhouse_url,
           "CDP_CLICKHOUSE_DATABASE": s.clickhouse_database}  # fmt: skip
    return CliRunner().invoke(cli, ["rebuild", "--verify"], env=env)


def query(r: Running, sql: str) -> list[tuple[Any, ...]]:
    db = r.platform.settings.clickhouse_database
    return [tuple(row) for row in r.platform.store.client.query(sql.replace("{db}", db)).result_rows]


def test_the_history_has_what_the_comparison_must_cover(lived: Running) -> None:
    causes = {row[0] for row in query(lived, "SELECT DISTINCT cause FROM {db}.tag_changes FINAL")}
    assert {"event", "rule", "time", "merge", "manual", "deleted"} <= causes
    kinds = {row[0] for row in query(lived, "SELECT DISTINCT kind FROM {db}.tag_steps")}
    assert kinds == {"page", "tick", "backfill"}
    for table in ("events", "profiles", "kpi_facts", "tag_membership", "tag_changes", "tag_timers", "tag_definitions"):
        assert query(lived, f"SELECT count() FROM {{db}}.{table} FINAL")[0][0] > 0, table


def test_verify_reports_no_difference(lived: Running) -> None:
    assert verify(lived) == []
    result = cdp_verify(lived)
    assert result.exit_code == 0, result.output
    assert "equal a rebuild" in result.output


def test_a_rebuild_in_place_keeps_every_tag_change(lived: Running) -> None:
    """`cdp rebuild` drops the database it rebuilds: the steps it follows are copied aside first."""
    p = lived.platform
    client, live_db = p.store.client, p.settings.clickhouse_database
    copy = f"{live_db}_copy"
    rebuild(p.app, client, copy, steps_from=live_db)
    try:
        rebuild(p.app, client, copy)  # in place, following its own recorded steps
        assert differences(ProjectionStore(client, live_db), ProjectionStore(client, copy)) == []
        assert not query(lived, f"SELECT count() FROM system.databases WHERE name = '{copy}_steps'")[0][0]
        # A rebuild that stopped after dropping the database left the copy of the steps: the next one follows it.
        _keep_steps(client, copy)
        ProjectionStore(client, copy).drop()
        migrate(client, copy)
        rebuild(p.app, client, copy)
        assert differences(ProjectionStore(client, live_db), ProjectionStore(client, copy)) == []
    finally:
        ProjectionStore(client, copy).drop()
        client.command(f"DROP DATABASE IF EXISTS {copy}_steps")


def test_without_the_recorded_steps_only_tag_history_differs_and_verify_says_so(lived: Running) -> None:
    """Projections that recorded no steps (older ones) are replayed in pages of 5000 at the rebuild's clock:
    the other projections do not depend on paging and still compare equal; tag history does, and is reported."""
    p = lived.platform
    client, live_db = p.store.client, p.settings.clickhouse_database
    scratch = f"{live_db}_unstepped"
    rebuild(p.app, client, scratch, steps_from=f"{live_db}_nothing_recorded")
    try:
        found = {line.split(":")[0] for line in differences(ProjectionStore(client, live_db),
                                                            ProjectionStore(client, scratch))}  # fmt: skip
    finally:
        ProjectionStore(client, scratch).drop()
    assert {"tag_changes", "tag_steps"} <= found
    assert found <= {"tag_changes", "tag_membership", "tag_timers", "tag_backfills", "tag_steps"}


# One corrupted row per table: (table, the update that corrupts it, the update that undoes it).
CORRUPTIONS = {
    "events": ("name = concat(name, '!')", "name = substring(name, 1, length(name) - 1)",
               "event_id = (SELECT min(event_id) FROM {db}.events)"),
    "profiles": ("event_count = event_count + 1", "event_count = event_count - 1",
                 "profile_id = (SELECT min(profile_id) FROM {db}.profiles FINAL)"),
    "kpi_facts": ("quantity = quantity + 1", "quantity = quantity - 1",
                  "fact_id = (SELECT min(fact_id) FROM {db}.kpi_facts)"),
    "tag_membership": ("rule_version = rule_version + 7", "rule_version = rule_version - 7",
                       "(tag_id, profile_id) = (SELECT tag_id, profile_id FROM {db}.tag_membership FINAL "
                       "ORDER BY tag_id, profile_id LIMIT 1)"),
    "tag_changes": ("cause = concat(cause, '!')", "cause = substring(cause, 1, length(cause) - 1)",
                    "(profile_id, tag_id, position, change) = (SELECT profile_id, tag_id, position, change "
                    "FROM {db}.tag_changes FINAL ORDER BY position, tag_id LIMIT 1)"),
}  # fmt: skip


@pytest.mark.parametrize("table", list(CORRUPTIONS))
def test_one_corrupted_row_is_reported_for_its_table(lived: Running, table: str) -> None:
    corrupt, undo, which = CORRUPTIONS[table]
    db = lived.platform.settings.clickhouse_database
    rows = query(lived, f"SELECT count() FROM {{db}}.{table} WHERE {which}")[0][0]
    assert rows >= 1
    client = lived.platform.store.client

    def update(assignment: str) -> None:
        client.command(f"ALTER TABLE {db}.{table} UPDATE {assignment} WHERE {which.replace('{db}', db)} "
                       "SETTINGS mutations_sync = 2")  # fmt: skip

    update(corrupt)
    try:
        found = verify(lived)
        assert [line.split(":")[0] for line in found] == [table], found
        result = cdp_verify(lived)
        assert result.exit_code == 1, result.output
        assert "differ from a rebuild" in result.output and f"{table}:" in result.output, result.output
    finally:
        update(undo)
    assert verify(lived) == []


def test_every_table_is_compared_or_left_out_with_a_reason(lived: Running) -> None:
    tables = {row[0] for row in query(lived, "SELECT name FROM system.tables WHERE database = '{db}'")}
    assert tables == set(COMPARED_TABLES) | set(NOT_COMPARED)
    assert all(NOT_COMPARED.values())
