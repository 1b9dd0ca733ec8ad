"""Dynamic tags through the HTTP API, with changes on the real broker and time moved by a clock the tests own."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from infra.bootstrap import Platform
from infra.broker import free_port
from infra.config import Settings
from infra.server import create_app
from streams.tags import ManualClock
from tests.conftest import Running, read_topic

START = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def at(days: float) -> str:
    """An event time `days` after START (negative: before)."""
    return (START + timedelta(days=days)).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory, chdb_url: str, clock: ManualClock) -> Iterator[Running]:
    """One platform for the module (tests use their own ids): starting one per test would dominate the run time."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("tags") / "data", http_port=free_port(), kafka_port=free_port(),
        kafka_partitions=2, clickhouse_url=chdb_url, clickhouse_database=f"t_{uuid.uuid4().hex[:12]}",
        predictions_every_h=0,  # runs only when a test asks: a scheduled one is a log entry at a time of its own
    )  # fmt: skip
    platform = Platform(settings, clock=clock)
    with TestClient(create_app(platform)) as client:
        yield Running(platform, client)


def admin(r: Running) -> dict[str, str]:
    return r.admin_headers


def send(r: Running, *calls: dict[str, Any]) -> None:
    batch = [{"messageId": uuid.uuid4().hex, **c} for c in calls]
    response = r.send("/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text


def define(r: Running, slug: str, rule: dict[str, Any], name: str = "") -> dict[str, Any]:
    response = r.http.put(f"/v1/tags/{slug}", json={"name": name or slug, "rule": rule}, headers=admin(r))
    assert response.status_code == 200, response.text
    return response.json()


def members(r: Running, slug: str) -> set[str]:
    return set(r.platform.tags.store.members_of_tag(r.platform.workspace_id, slug))  # type: ignore[union-attr]


def pid(r: Running, identifier: str) -> str:
    response = r.profile(identifier)
    assert response.status_code == 200, response.text
    return response.json()["profile_id"]


def tag_changes(r: Running, wanted: int, timeout: float = 10) -> list[dict[str, Any]]:
    received = read_topic(r.platform.settings.bootstrap_servers, "cdp.tag-changes", lambda got: len(got) >= wanted,
                          timeout)  # fmt: skip
    for record, message in received:
        assert record.key.decode() == message["profile_id"]
        assert dict(record.headers)["position"].decode() == str(message["position"])
    return [message for _, message in received]


# Each operator and window kind: (tag, rule, the users it must hold). The users' data is below.
CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("t-eq", {"trait": "plan", "op": "=", "value": "pro"}, {"op-a"}),
    ("t-ne", {"trait": "plan", "op": "!=", "value": "pro"}, {"op-b", "op-c"}),
    ("t-lt", {"trait": "age", "op": "<", "value": 30}, {"op-b"}),
    ("t-le", {"trait": "age", "op": "<=", "value": 41}, {"op-a", "op-b"}),
    ("t-gt", {"trait": "age", "op": ">", "value": 41}, {"op-c"}),
    ("t-ge", {"trait": "age", "op": ">=", "value": 41}, {"op-a", "op-c"}),
    ("t-in", {"trait": "plan", "op": "in", "value": ["free", "team"]}, {"op-b", "op-c"}),
    ("t-contains-text", {"trait": "email", "op": "contains", "value": "@corp"}, {"op-a", "op-c"}),
    ("t-contains-list", {"trait": "interests", "op": "contains", "value": "golf"}, {"op-c"}),
    ("t-exists", {"trait": "interests", "op": "exists"}, {"op-b", "op-c"}),
    ("t-between", {"trait": "age", "op": "between", "value": [20, 45]}, {"op-a", "op-b"}),
    ("t-nested", {"trait": "address.city", "op": "=", "value": "Berlin"}, {"op-a"}),
    ("t-bool", {"trait": "newsletter", "op": "=", "value": True}, {"op-b"}),
    ("c-orders", {"computed": "orders_count", "op": ">=", "value": 2}, {"op-a"}),
    ("c-revenue-eur", {"computed": "revenue.EUR", "op": ">", "value": 100}, {"op-a"}),
    ("c-csat", {"computed": "average_csat", "op": "exists"}, {"op-b"}),
    ("c-first-seen", {"computed": "first_seen", "op": "<", "value": at(-50)}, {"op-a", "op-c"}),
    ("e-count", {"event": "Order Completed", "op": ">=", "value": 2}, {"op-a"}),
    ("e-exists", {"event": "Order Completed", "measure": "exists"}, {"op-a", "op-b"}),
    ("e-sum", {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 100}, {"op-a"}),
    ("e-min", {"event": "Order Completed", "measure": "min(revenue)", "op": "<", "value": 50}, {"op-b"}),
    ("e-max", {"event": "Order Completed", "measure": "max(revenue)", "op": ">=", "value": 100}, {"op-a"}),
    ("e-where", {"event": "Ticket Opened", "where": [{"property": "category", "op": "=", "value": "complaint"}]},
     {"op-c"}),
    ("e-within", {"event": "Order Completed", "within": "30d"}, {"op-a"}),
    ("e-between", {"event": "page", "between": [at(-70), at(-40)]}, {"op-c"}),
    ("r-older", {"last_seen": {"older_than": "30d"}}, {"op-c"}),
    ("r-within", {"last_seen": {"within": "7d"}}, {"op-a", "op-b"}),
    ("b-and", {"and": [{"trait": "plan", "op": "=", "value": "pro"}, {"computed": "orders_count", "op": ">", "value": 0}]},
     {"op-a"}),
    ("b-or", {"or": [{"trait": "plan", "op": "=", "value": "free"}, {"trait": "age", "op": ">", "value": 50}]},
     {"op-b", "op-c"}),
    ("b-not", {"not": {"event": "Order Completed", "measure": "exists"}}, {"op-c"}),
    ("b-tag", {"and": [{"tag": "e-exists"}, {"not": {"tag": "e-count"}}]}, {"op-b"}),
]


def test_each_operator_and_window_kind(tagged: Running) -> None:
    r = tagged
    send(r,
         {"type": "identify", "userId": "op-a", "timestamp": at(-60), "traits": {
             "plan": "pro", "age": 41, "email": "a@corp.example", "address": {"city": "Berlin"}}},
         {"type": "track", "userId": "op-a", "event": "Order Completed", "timestamp": at(-10),
          "properties": {"revenue": 80, "currency": "EUR"}},
         {"type": "track", "userId": "op-a", "event": "Order Completed", "timestamp": at(-2),
          "properties": {"revenue": 100, "currency": "EUR"}},
         {"type": "identify", "userId": "op-b", "timestamp": at(-3), "traits": {
             "plan": "free", "age": 25, "interests": ["tennis"], "newsletter": True}},
         {"type": "track", "userId": "op-b", "event": "Order Completed", "timestamp": at(-45), "properties": {"revenue": 20, "currency": "EUR"}},
         {"type": "track", "userId": "op-b", "event": "Feedback Submitted", "timestamp": at(-1), "properties": {"csat": 4}},
         {"type": "identify", "userId": "op-c", "timestamp": at(-80), "traits": {
             "plan": "team", "age": 52, "email": "c@corp.example", "interests": ["golf", "chess"]}},
         {"type": "page", "userId": "op-c", "name": "Pricing", "timestamp": at(-60)},
         {"type": "track", "userId": "op-c", "event": "Ticket Opened", "timestamp": at(-40),
          "properties": {"category": "complaint", "ticket_id": "T1"}},
         {"type": "track", "userId": "op-c", "event": "Ticket Opened", "timestamp": at(-40),
          "properties": {"category": "billing", "ticket_id": "T2"}})  # fmt: skip
    r.settle()
    for slug, rule, _ in CASES:
        define(r, slug, rule)
    r.settle()
    ids = {user: pid(r, f"user_id:{user}") for user in ("op-a", "op-b", "op-c")}
    for slug, _, expected in CASES:
        assert members(r, slug) & set(ids.values()) == {ids[u] for u in expected}, slug
    tag = r.http.get("/v1/tags/e-count", headers=r.read_headers).json()
    assert tag["members"] == 1 and tag["rule_version"] == 1
    assert tag["backfill"]["state"] == "done" and tag["backfill"]["done"] == tag["backfill"]["total"] >= 3
    shown = r.profile("user_id:op-a").json()["tags"]
    assert {t["id"] for t in shown} >= {"t-eq", "e-count", "c-orders"}
    assert all(t["kind"] == "dynamic" and t["rule_version"] == 1 for t in shown)


def test_vip_and_complainers_enter_live_and_leave_when_the_window_expires(tagged: Running, clock: ManualClock) -> None:
    r = tagged
    define(r, "vip", {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 1000, "within": "90d"},
           name="VIP: revenue over 1000 in 90 days")  # fmt: skip
    define(r, "complainers", {"event": "Ticket Opened", "where": [{"property": "category", "op": "=", "value": "complaint"}],
                              "op": ">=", "value": 2, "within": "30d"}, name="Complainers")  # fmt: skip
    r.settle()
    now = clock.now()

    def t(days: float) -> str:
        return (now + timedelta(days=days)).isoformat().replace("+00:00", "Z")

    send(r, {"type": "track", "userId": "vip-1", "event": "Order Completed", "timestamp": t(-20), "properties": {"revenue": 600, "currency": "EUR"}})
    r.settle()
    vip = pid(r, "user_id:vip-1")
    assert vip not in members(r, "vip")
    send(r, {"type": "track", "userId": "vip-1", "event": "Order Completed", "timestamp": t(-1), "properties": {"revenue": 500, "currency": "EUR"}})
    send(r, *[{"type": "track", "userId": "grumpy", "event": "Ticket Opened", "timestamp": t(-d),
               "properties": {"category": "complaint", "ticket_id": f"C{d}"}} for d in (25, 5)])  # fmt: skip
    r.settle()
    grumpy = pid(r, "user_id:grumpy")
    assert vip in members(r, "vip") and grumpy in members(r, "complainers")

    clock.advance(timedelta(days=5, hours=1))  # grumpy's first complaint is now 30 days and 1 hour old
    assert r.platform.tags.tick() >= 1  # type: ignore[union-attr]
    assert grumpy not in members(r, "complainers") and vip in members(r, "vip")
    clock.advance(timedelta(days=65))  # the 600 order left the 90-day window: 500 remains
    r.platform.tags.tick()  # type: ignore[union-attr]
    assert vip not in members(r, "vip")

    changes = [m for m in tag_changes(r, 4) if m["profile_id"] in (vip, grumpy) and m["tag_id"] in ("vip", "complainers")]
    summary = [(m["tag_id"], m["change"], m["cause"]) for m in changes]
    assert sorted(summary) == sorted([("vip", "entered", "event"), ("vip", "exited", "time"),
                                      ("complainers", "entered", "event"), ("complainers", "exited", "time")])
    exit_vip = next(m for m in changes if m["tag_id"] == "vip" and m["change"] == "exited")
    assert exit_vip["rule_version"] == 1 and exit_vip["kind"] == "dynamic"
    schema = orjson.loads(Path(__file__).parents[2].joinpath("docs/schemas/cdp.tag-changes.schema.json").read_bytes())
    assert set(exit_vip) == set(schema["required"])
    assert exit_vip["tag_name"] == "VIP: revenue over 1000 in 90 days"
    assert exit_vip["at"] == (now + timedelta(days=70, hours=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    history = r.http.get("/v1/profiles/user_id:vip-1/tag-changes", headers=r.read_headers).json()["changes"]
    assert [(c["tag_id"], c["change"]) for c in history if c["tag_id"] == "vip"] == [("vip", "exited"), ("vip", "entered")]


def test_time_alone_can_bring_a_profile_in(tagged: Running, clock: ManualClock) -> None:
    r = tagged
    define(r, "dormant", {"and": [{"last_seen": {"older_than": "14d"}}, {"trait": "plan", "op": "=", "value": "sleepy"}]})
    send(r, {"type": "identify", "userId": "sleeper", "traits": {"plan": "sleepy"},
             "timestamp": clock.now().isoformat().replace("+00:00", "Z")})  # fmt: skip
    r.settle()
    sleeper = pid(r, "user_id:sleeper")
    assert sleeper not in members(r, "dormant")
    clock.advance(timedelta(days=13))
    r.platform.tags.tick()  # type: ignore[union-attr]
    assert sleeper not in members(r, "dormant")
    clock.advance(timedelta(days=1))
    r.platform.tags.tick()  # type: ignore[union-attr]
    assert sleeper in members(r, "dormant")
    send(r, {"type": "page", "userId": "sleeper", "name": "Back", "timestamp": clock.now().isoformat().replace("+00:00", "Z")})
    r.settle()
    assert sleeper not in members(r, "dormant")


def test_a_rule_change_is_a_new_version_and_a_delete_exits_everyone(tagged: Running) -> None:
    r = tagged
    send(r, *[{"type": "identify", "userId": f"ver-{i}", "traits": {"score": i}} for i in range(5)])
    r.settle()
    first = define(r, "scored", {"trait": "score", "op": ">=", "value": 3})
    r.settle()
    ids = {i: pid(r, f"user_id:ver-{i}") for i in range(5)}
    assert members(r, "scored") == {ids[3], ids[4]} and first["rule_version"] == 1
    second = define(r, "scored", {"trait": "score", "op": ">=", "value": 1})
    assert second["rule_version"] == 2
    r.settle()
    assert members(r, "scored") == {ids[1], ids[2], ids[3], ids[4]}
    body = r.http.get("/v1/tags/scored", headers=r.read_headers).json()
    assert body["backfill"]["rule_version"] == 2 and body["backfill"]["state"] == "done"
    assert {t["rule_version"] for t in r.profile("user_id:ver-4").json()["tags"] if t["id"] == "scored"} == {2}
    deleted = r.http.delete("/v1/tags/scored", headers=admin(r))
    assert deleted.status_code == 200 and deleted.json()["rule_version"] == 3
    r.settle()
    assert members(r, "scored") == set()
    assert r.http.get("/v1/tags/scored", headers=r.read_headers).status_code == 404
    history = r.http.get("/v1/profiles/user_id:ver-1/tag-changes", headers=r.read_headers).json()["changes"]
    assert [(c["change"], c["cause"], c["rule_version"]) for c in history if c["tag_id"] == "scored"] == [("exited", "deleted", 3),
                                                                               ("entered", "rule", 2)]


def test_manual_tags_are_events_on_the_profile_and_move_with_a_merge(tagged: Running) -> None:
    r = tagged
    send(r, {"type": "identify", "userId": "man-1"})  # first: the older profile survives the merge below
    send(r, {"type": "page", "anonymousId": "man-anon", "name": "Home"})
    r.settle()
    added = r.http.post("/v1/profiles/anonymous_id:man-anon/tags", json={"tag": "beta-tester", "reason": "signed up"},
                        headers=admin(r))  # fmt: skip
    assert added.status_code == 201, added.text
    define(r, "beta-pro", {"and": [{"tag": "beta-tester"}, {"event": "alias", "measure": "exists"}]})
    r.settle()
    anon = pid(r, "anonymous_id:man-anon")
    shown = [t for t in r.profile("anonymous_id:man-anon").json()["tags"] if t["id"].startswith("beta")]
    assert shown == [{"id": "beta-tester", "name": "beta-tester", "kind": "manual", "since": shown[0]["since"],
                      "rule_version": None}]  # fmt: skip
    send(r, {"type": "alias", "previousId": "man-anon", "userId": "man-1"})
    r.settle()
    survivor = r.profile("user_id:man-1").json()
    mine = {t["id"]: t["kind"] for t in survivor["tags"] if t["id"].startswith("beta")}
    assert mine == {"beta-tester": "manual", "beta-pro": "dynamic"}
    assert anon not in members(r, "beta-tester")
    removed = r.http.delete("/v1/profiles/user_id:man-1/tags/beta-tester", headers=admin(r))
    assert removed.status_code == 200, removed.text
    r.settle()
    assert [t for t in r.profile("user_id:man-1").json()["tags"] if t["id"].startswith("beta")] == []  # beta-pro needed it
    assert r.http.delete("/v1/profiles/user_id:man-1/tags/beta-tester", headers=admin(r)).status_code == 404
    refused = r.http.post("/v1/profiles/user_id:man-1/tags", json={"tag": "beta-pro"}, headers=admin(r))
    assert refused.status_code == 400 and "dynamic tag" in refused.json()["errors"][0]["reason"]
    for other in (r.read_headers, {"Authorization": f"Bearer {r.write_key}"}):  # neither opens manual tags
        assert r.http.post("/v1/profiles/user_id:man-1/tags", json={"tag": "x"}, headers=other).status_code == 403


def test_merges_qualify_on_the_combined_history_and_splits_undo_it(tagged: Running) -> None:
    r = tagged
    define(r, "two-complaints", {"event": "Ticket Opened", "where": [{"property": "category", "op": "=",
                                                                       "value": "complaint"}], "value": 2})  # fmt: skip
    send(r,
         {"type": "track", "userId": "mrg-1", "event": "Ticket Opened", "properties": {"category": "complaint", "ticket_id": "M1"}},
         {"type": "track", "anonymousId": "mrg-dev", "event": "Ticket Opened", "properties": {"category": "complaint", "ticket_id": "M2"}})
    r.settle()
    user, device = pid(r, "user_id:mrg-1"), pid(r, "anonymous_id:mrg-dev")
    assert user not in members(r, "two-complaints") and device not in members(r, "two-complaints")
    send(r, {"type": "identify", "userId": "mrg-1", "anonymousId": "mrg-dev"})
    r.settle()
    survivor = pid(r, "user_id:mrg-1")
    assert survivor in (user, device)
    assert members(r, "two-complaints") & {user, device} == {survivor}  # the absorbed one left, if it was in
    split = r.http.post("/v1/profiles/user_id:mrg-1/split", json={"identifiers": ["anonymous_id:mrg-dev"]},
                        headers=admin(r))  # fmt: skip
    assert split.status_code == 201, split.text
    r.settle()
    assert members(r, "two-complaints") & {survivor, split.json()["new_profile_id"]} == set()
    causes = [(c["change"], c["cause"]) for c in r.http.get(f"/v1/profiles/{survivor}/tag-changes",
              headers=r.read_headers).json()["changes"] if c["tag_id"] == "two-complaints"]  # fmt: skip
    assert causes == [("exited", "split"), ("entered", "merge")]


BAD_RULES: list[tuple[Any, str, str]] = [
    ({"colour": "red"}, "rule", "exactly one of the keys"),
    ({"and": []}, "rule.and", "at least 1 item"),
    ({"and": [{"trait": "a", "op": "=", "value": 1}, {"event": "x", "within": "90x"}]}, "rule.and[1].within",
     "'90x' is not a duration"),
    ({"or": [{"trait": "a", "op": "exists"}, {"event": "x", "whithin": "2d"}]}, "rule.or[1].whithin",
     "Extra inputs are not permitted"),
    ({"not": {"trait": "a", "op": "in", "value": 3}}, "rule.not", "'in' needs 'value' to be a non-empty list"),
    ({"trait": "a", "op": "like", "value": "x"}, "rule.op", "Input should be '=', '!=', '<', '<=', '>', '>='"),
    ({"trait": "a", "op": "exists", "value": 1}, "rule", "'exists' takes no value"),
    ({"trait": "a", "op": "between", "value": [3, 1]}, "rule", "'between' bounds must be in order"),
    ({"trait": "a", "op": "between", "value": [1, "z"]}, "rule", "both be numbers or both be strings"),
    ({"trait": "a", "op": ">", "value": True}, "rule", "compares numbers or strings, not booleans"),
    ({"computed": "rfm", "op": "=", "value": 1}, "rule.computed", "unknown computed trait 'rfm'"),
    ({"computed": "last_seen", "op": ">", "value": "yesterday"}, "rule", "is not a time"),
    ({"computed": "orders_count", "op": "contains", "value": 1}, "rule", "'contains' applies to traits"),
    ({"event": "x", "measure": "sum"}, "rule.measure", "sum needs the property to read"),
    ({"event": "x", "measure": "count(revenue)"}, "rule.measure", "count takes no property"),
    ({"event": "x", "measure": "avg(revenue)"}, "rule.measure", "is not a measure"),
    ({"event": "x", "measure": "exists", "value": 3}, "rule", "'exists' takes no value"),
    ({"event": "x", "within": "1d", "between": [at(0), at(1)]}, "rule", "either 'within'"),
    ({"event": "x", "between": [at(1), at(0)]}, "rule.between", "must go forwards"),
    ({"event": "x", "where": [{"property": "p", "op": "=", "value": [1]}]}, "rule.where[0]", "needs 'value' to be a"),
    ({"event": ""}, "rule.event", "at least 1 character"),
    ({"last_seen": {}}, "rule.last_seen", "exactly one of 'older_than' or 'within'"),
    ({"last_seen": {"older_than": "0d"}}, "rule.last_seen.older_than", "not a duration"),
    ({"tag": "Not A Slug"}, "rule.tag", "is not a tag id"),
    ({"tag": "bad-self"}, "rule.tag", "cannot refer to itself"),
    ("everyone", "rule", "exactly one of the keys"),
]


@pytest.mark.parametrize("rule,path,reason", BAD_RULES, ids=[str(i) for i in range(len(BAD_RULES))])
def test_invalid_rules_are_a_400_naming_the_node(tagged: Running, rule: Any, path: str, reason: str) -> None:
    response = tagged.http.put("/v1/tags/bad-self", json={"rule": rule}, headers=admin(tagged))
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert any(e["path"] == path and reason in e["reason"] for e in errors), errors
    assert tagged.http.get("/v1/tags/bad-self", headers=tagged.read_headers).status_code == 404


def test_definition_errors_yaml_cycles_and_conflicts(tagged: Running) -> None:
    r = tagged
    yaml_body = b"id: yaml-vip\nname: VIP\nrule:\n  event: Order Completed\n  measure: sum(revenue)\n  op: '>'\n  value: 1000\n  within: 90d\n"
    created = r.http.post("/v1/tags", content=yaml_body, headers={**admin(r), "Content-Type": "application/yaml"})
    assert created.status_code == 201, created.text
    assert created.json()["rule"]["within"] == "90d"
    again = r.http.post("/v1/tags", content=yaml_body, headers={**admin(r), "Content-Type": "application/yaml"})
    assert again.status_code == 409 and again.json()["code"] == "conflict" and "replace it" in again.json()["message"]
    broken = r.http.post("/v1/tags", content=b"id: [unclosed", headers={**admin(r), "Content-Type": "application/yaml"})
    assert broken.status_code == 400 and broken.json()["errors"][0]["path"] == "(body)"
    define(r, "cyc-a", {"tag": "cyc-b"})
    define(r, "cyc-b", {"trait": "x", "op": "exists"})
    cycle = r.http.put("/v1/tags/cyc-b", json={"rule": {"not": {"tag": "cyc-a"}}}, headers=admin(r))
    assert cycle.status_code == 400
    assert cycle.json()["errors"] == [{"path": "rule.not.tag", "reason": "'cyc-a' refers back to 'cyc-b': a cycle; remove one of them"}]
    mismatch = r.http.put("/v1/tags/one", json={"id": "two", "rule": {"tag": "x"}}, headers=admin(r))
    assert mismatch.status_code == 400 and mismatch.json()["errors"][0]["path"] == "id"
    bad_id = r.http.post("/v1/tags", json={"id": "Bad Id", "rule": {"tag": "x"}}, headers=admin(r))
    assert bad_id.status_code == 400 and bad_id.json()["errors"][0]["path"] == "id"
    assert r.http.delete("/v1/tags/never-defined", headers=admin(r)).status_code == 404
    for other in (r.read_headers, {"Authorization": f"Bearer {r.write_key}"}):  # neither changes tags
        refused = r.http.put("/v1/tags/x", json={"rule": {"tag": "y"}}, headers=other)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), refused.text


def test_segments_count_page_save_and_export(tagged: Running) -> None:
    r = tagged
    send(r, *[{"type": "identify", "userId": f"seg-{i}", "traits": {"segment_test": True, "tier": i % 3}}
              for i in range(7)])  # fmt: skip
    send(r, *[{"type": "track", "userId": f"seg-{i}", "event": "Order Completed", "properties": {"revenue": 10 * i, "currency": "EUR"}}
              for i in range(7)])  # fmt: skip
    r.settle()
    rule = {"and": [{"trait": "segment_test", "op": "=", "value": True},
                    {"event": "Order Completed", "measure": "sum(revenue)", "op": ">=", "value": 20}]}  # fmt: skip
    seen, cursor = [], None
    while True:
        page = r.http.post("/v1/segments/query", json={"rule": rule, "limit": 2, "cursor": cursor},
                           headers=r.read_headers).json()  # fmt: skip
        assert page["count"] == 5 and len(page["members"]) <= 2
        seen += page["members"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len({m["profile_id"] for m in seen}) == 5
    assert {m["identifiers"][0] for m in seen} == {f"user_id:seg-{i}" for i in range(2, 7)}
    bad = r.http.post("/v1/segments/query", json={"rule": {"and": [{"trait": "x", "op": "~"}]}}, headers=r.read_headers)
    assert bad.status_code == 400 and bad.json()["errors"][0]["path"] == "rule.and[0].op"
    assert r.http.post("/v1/segments/query", json={"rule": rule, "limit": 0}, headers=r.read_headers).status_code == 400

    saved = r.http.post("/v1/segments", json={"id": "big-spenders", "name": "Big spenders", "rule": rule},
                        headers=admin(r))  # fmt: skip
    assert saved.status_code == 201 and saved.json()["count"] == 5
    listed = r.http.get("/v1/segments", headers=r.read_headers).json()["segments"]
    assert [(s["id"], s["count"]) for s in listed] == [("big-spenders", 5)]
    send(r, {"type": "track", "userId": "seg-1", "event": "Order Completed", "properties": {"revenue": 15, "currency": "EUR"}})
    r.settle()
    assert r.http.get("/v1/segments/big-spenders", headers=r.read_headers).json()["count"] == 6  # live
    jsonl = r.http.get("/v1/segments/big-spenders/export?format=jsonl", headers=r.read_headers)
    assert jsonl.status_code == 200 and jsonl.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in jsonl.content.splitlines()]
    assert len(lines) == 6 and all(line["traits"]["segment_test"] is True for line in lines)
    csv_text = r.http.get("/v1/segments/big-spenders/export?format=csv", headers=r.read_headers).text.splitlines()
    assert csv_text[0] == "profile_id,identifiers,traits" and len(csv_text) == 7
    assert sorted(row.split(",")[0] for row in csv_text[1:]) == sorted(line["profile_id"] for line in lines)
    assert r.http.get("/v1/segments/big-spenders/export?format=xml", headers=r.read_headers).status_code == 422
    assert r.http.delete("/v1/segments/big-spenders", headers=admin(r)).status_code == 200
    assert r.http.get("/v1/segments/big-spenders/export", headers=r.read_headers).status_code == 404
