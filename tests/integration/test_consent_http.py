"""Consent through the HTTP API on the embedded stack: the profile's consent and its history as of any time,
tags, segments and exports that declare a purpose, the workspace's defaults, KPIs unaffected, and the
real-time exit read from the real `cdp.tag-changes` topic."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import jsonschema_rs
import orjson
import pytest
from fastapi.testclient import TestClient

from infra.bootstrap import Platform
from infra.broker import free_port
from infra.config import Settings
from infra.server import create_app
from streams.log_follower import read_messages
from streams.messages import encode
from streams.tags import ManualClock
from tests.conftest import Running, read_topic

START = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def at(days: float) -> str:
    return (START + timedelta(days=days)).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def consenting(tmp_path_factory: pytest.TempPathFactory, chdb_url: str) -> Iterator[Running]:
    """One platform for the module; each test uses users and purposes of its own."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("consent") / "data", http_port=free_port(), kafka_port=free_port(),
        kafka_partitions=2, clickhouse_url=chdb_url, clickhouse_database=f"t_{uuid.uuid4().hex[:12]}",
        predictions_every_h=0,  # runs only when a test asks: a scheduled one is a log entry at a time of its own
    )  # fmt: skip
    platform = Platform(settings, clock=ManualClock(START))
    with TestClient(create_app(platform)) as client:
        yield Running(platform, client)


def admin(r: Running) -> dict[str, str]:
    return r.admin_headers


def send(r: Running, *calls: dict[str, Any]) -> None:
    batch = [{"messageId": uuid.uuid4().hex, **c} for c in calls]
    response = r.send("/v1/batch", {"batch": batch})
    assert response.status_code == 200 and response.json()["stored"] == len(calls), response.text
    r.settle()


def consent(user: str, purpose: str, granted: bool, when: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": "Consent Changed", "timestamp": when,
            "properties": {"purpose": purpose, "granted": granted, **extra}}  # fmt: skip


def order(user: str, amount: float, when: str) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": "Order Completed", "timestamp": when,
            "properties": {"revenue": amount, "currency": "EUR"}}  # fmt: skip


def members(r: Running, slug: str) -> set[str]:
    return set(r.platform.tags.store.members_of_tag(r.platform.workspace_id, slug))  # type: ignore[union-attr]


def pid(r: Running, user: str) -> str:
    return str(r.profile(f"user_id:{user}").json()["profile_id"])


def changes_of(r: Running, profile_id: str, tag: str, wanted: int) -> list[dict[str, Any]]:
    """The `cdp.tag-changes` messages of one profile and tag, read from the broker, in log order."""

    def mine(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [v for v in values if v["profile_id"] == profile_id and v["tag_id"] == tag]

    received = read_topic(r.platform.settings.bootstrap_servers, "cdp.tag-changes", lambda got: len(mine(got)) >= wanted)
    for record, message in received:
        assert record.key.decode() == message["profile_id"]
    return sorted(mine([m for _, m in received]), key=lambda m: (m["position"], m["change"]))


def test_a_profile_shows_its_consent_per_purpose_with_the_defaults_for_the_rest(consenting: Running) -> None:
    r = consenting
    send(r, {"type": "identify", "userId": "c-ann", "timestamp": at(-5), "traits": {"name": "Ann"}},
         consent("c-ann", "Marketing ", True, at(-4), channel="signup-form"))  # fmt: skip
    doc = r.profile("user_id:c-ann").json()
    assert doc["consent"]["marketing"]["granted"] is True and doc["consent"]["marketing"]["source"] == "event"
    assert doc["consent"]["marketing"]["at"] == at(-4).replace("Z", ".000Z") and doc["consent"]["marketing"]["event_id"]
    assert doc["consent"]["analytics"] == {"granted": True, "source": "default", "at": None, "event_id": None}
    assert doc["consent"]["personalisation"] == {"granted": False, "source": "default", "at": None, "event_id": None}
    listed = r.http.get("/v1/profiles?trait.name=Ann", headers=r.read_headers).json()["profiles"]
    assert listed[0]["consent"] == doc["consent"]
    refused = r.send("/v1/track", {**consent("c-ann", "e-mail marketing!", True, at(-3)), "messageId": "bad-purpose"})
    assert refused.json()["rejected"][0]["field"] == "properties.purpose"


def test_consent_as_of_any_time_and_the_latest_decision_by_event_time_wins(consenting: Running) -> None:
    r = consenting
    send(r, consent("c-bob", "marketing", True, at(-20)))
    granted_by = datetime.now(timezone.utc)
    send(r, consent("c-bob", "marketing", False, at(-2)))
    send(r, consent("c-bob", "marketing", True, at(-10)))  # delivered late: an older decision does not overrule
    now = r.http.get("/v1/profiles/user_id:c-bob/consent", headers=r.read_headers).json()
    assert now["consent"]["marketing"]["granted"] is False
    assert [(h["granted"], h["at"][:10]) for h in now["history"]] == [
        (False, at(-2)[:10]), (True, at(-10)[:10]), (True, at(-20)[:10])]  # fmt: skip
    assert now["defaults"]["version"] == 0 and now["defaults"]["defaults"]["marketing"] == "denied"
    then = granted_by.isoformat().replace("+00:00", "Z")
    past = r.http.get("/v1/profiles/user_id:c-bob/consent", params={"as_of": then}, headers=r.read_headers).json()
    assert past["consent"]["marketing"]["granted"] is True and len(past["history"]) == 1 and past["as_of"]
    profile_then = r.http.get("/v1/profiles/user_id:c-bob", params={"as_of": then}, headers=r.read_headers).json()
    assert profile_then["consent"]["marketing"]["granted"] is True
    assert r.http.get("/v1/profiles/user_id:nobody-here/consent", headers=r.read_headers).status_code == 404


def test_withdrawing_marketing_consent_leaves_a_marketing_segment_in_real_time(consenting: Running) -> None:
    """The issue's test: the profile leaves the marketing tag with an `exited` change on the topic whose cause says
    consent, granting it back brings it in again, and the analytics KPIs count the same throughout."""
    r = consenting
    tag = {"name": "Buyers to mail", "purpose": "marketing", "rule": {"event": "Order Completed", "measure": "exists"}}
    defined = r.http.put("/v1/tags/buyers-to-mail", json=tag, headers=admin(r))
    assert defined.status_code == 200 and defined.json()["purpose"] == "marketing"
    assert defined.json()["rule"]["event"] == "Order Completed" and "and" not in defined.json()["rule"]  # as given
    send(r, consent("c-cat", "marketing", True, at(-3)))
    send(r, order("c-cat", 40, at(-2)), order("c-dan", 60, at(-2)))
    cat, dan = pid(r, "c-cat"), pid(r, "c-dan")
    assert members(r, "buyers-to-mail") >= {cat} and dan not in members(r, "buyers-to-mail")  # dan: default denied
    kpi = {"from": at(-3), "to": at(1)}
    revenue = r.http.get("/v1/kpis/revenue", params=kpi, headers=r.read_headers).json()["series"]

    send(r, consent("c-cat", "marketing", False, at(-1), channel="preference-centre"))
    assert cat not in members(r, "buyers-to-mail")
    entered, exited = changes_of(r, cat, "buyers-to-mail", 2)
    assert (entered["change"], entered["cause"]) == ("entered", "event")
    assert (exited["change"], exited["cause"], exited["reason"]) == ("exited", "consent", "consent for marketing withdrawn")
    assert r.http.get("/v1/kpis/revenue", params=kpi, headers=r.read_headers).json()["series"] == revenue
    assert sum(row["value"] for row in revenue) == 100.0  # both buyers count, whatever they consented to
    history = r.http.get("/v1/profiles/user_id:c-cat/tag-changes", headers=r.read_headers).json()["changes"]
    assert history[0]["change"] == "exited" and history[0]["cause"] == "consent"

    send(r, consent("c-cat", "marketing", True, at(0)))
    again = changes_of(r, cat, "buyers-to-mail", 3)[-1]
    assert (again["change"], again["cause"], again["reason"]) == ("entered", "consent", "consent for marketing granted")
    assert cat in members(r, "buyers-to-mail")


def test_segments_and_exports_that_declare_a_purpose_hold_only_consenting_profiles(consenting: Running) -> None:
    r = consenting
    send(r, *[{"type": "identify", "userId": f"c-seg-{i}", "traits": {"consent_test": True}} for i in range(4)],
         consent("c-seg-0", "surveys", True, at(-1)), consent("c-seg-1", "surveys", True, at(-1)),
         consent("c-seg-1", "surveys", False, at(0)))  # fmt: skip
    rule = {"trait": "consent_test", "op": "=", "value": True}
    query = r.http.post("/v1/segments/query", json={"rule": rule, "purpose": "surveys"}, headers=r.read_headers).json()
    assert query["count"] == 1 and query["members"][0]["identifiers"] == ["user_id:c-seg-0"]
    assert r.http.post("/v1/segments/query", json={"rule": rule}, headers=r.read_headers).json()["count"] == 4
    saved = r.http.post("/v1/segments", json={"id": "survey-panel", "purpose": "surveys", "rule": rule},
                        headers=admin(r))  # fmt: skip
    assert saved.status_code == 201 and saved.json()["count"] == 1 and saved.json()["purpose"] == "surveys"
    everyone = r.http.post("/v1/segments", json={"id": "everyone-tested", "rule": rule}, headers=admin(r))
    assert everyone.status_code == 201, everyone.text
    lines = r.http.get("/v1/segments/everyone-tested/export", params={"purpose": "surveys"}, headers=r.read_headers)
    assert [orjson.loads(x)["identifiers"] for x in lines.content.splitlines()] == [["user_id:c-seg-0"]]
    assert len(r.http.get("/v1/segments/everyone-tested/export", headers=r.read_headers).content.splitlines()) == 4
    bad = r.http.get("/v1/segments/everyone-tested/export", params={"purpose": "Bad Purpose"}, headers=r.read_headers)
    assert bad.status_code == 422
    bad = r.http.post("/v1/segments/query", json={"rule": rule, "purpose": "no way"}, headers=r.read_headers)
    assert bad.status_code == 400 and bad.json()["errors"][0]["path"] == "purpose"
    bad = r.http.put("/v1/tags/x", json={"purpose": "A B", "rule": rule}, headers=admin(r))
    assert bad.status_code == 400 and bad.json()["errors"][0]["path"] == "purpose"


def test_the_workspace_default_is_a_setting_and_changing_it_moves_members(consenting: Running) -> None:
    r = consenting
    built_in = r.http.get("/v1/settings/consent-defaults", headers=r.read_headers).json()
    assert built_in == {"version": 0, "defaults": {"*": "denied", "analytics": "granted", "marketing": "denied",
                                                   "personalisation": "denied"}}  # fmt: skip
    tag = {"purpose": "product-news", "rule": {"trait": "reads_news", "op": "=", "value": True}}
    assert r.http.put("/v1/tags/news-readers", json=tag, headers=admin(r)).status_code == 200
    send(r, {"type": "identify", "userId": "c-eve", "traits": {"reads_news": True}},
         {"type": "identify", "userId": "c-fay", "traits": {"reads_news": True}},
         consent("c-fay", "product-news", False, at(0)))  # fmt: skip
    eve, fay = pid(r, "c-eve"), pid(r, "c-fay")
    assert not members(r, "news-readers") & {eve, fay}  # `*` is denied

    put = r.http.put("/v1/settings/consent-defaults", json={"defaults": {**built_in["defaults"], "product-news": "granted"}},
                     headers=admin(r))  # fmt: skip
    assert put.status_code == 200 and put.json()["version"] == 1 and put.json()["defaults"]["product-news"] == "granted"
    r.settle()
    assert eve in members(r, "news-readers") and fay not in members(r, "news-readers")  # fay said no herself
    [entered] = changes_of(r, eve, "news-readers", 1)
    assert (entered["cause"], entered["reason"]) == ("consent", "workspace default for product-news: granted")
    assert r.profile("user_id:c-eve").json()["consent"]["product-news"]["source"] == "default"

    same = r.http.put("/v1/settings/consent-defaults", json={"defaults": put.json()["defaults"]}, headers=admin(r))
    assert same.json()["version"] == 1  # nothing new to record
    assert r.http.put("/v1/settings/consent-defaults", json={"defaults": built_in["defaults"]},
                      headers=admin(r)).json()["version"] == 2  # fmt: skip
    r.settle()
    exited = changes_of(r, eve, "news-readers", 2)[-1]
    assert (exited["change"], exited["cause"], exited["reason"]) == (
        "exited", "consent", "workspace default for product-news: denied")  # fmt: skip

    bad = r.http.put("/v1/settings/consent-defaults", json={"defaults": {"marketing": "maybe", "Not OK": "granted"}},
                     headers=admin(r))  # fmt: skip
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_consent_defaults"
    assert {e["field"] for e in bad.json()["errors"]} == {"defaults.marketing", "defaults.Not OK"}
    for other in (r.read_headers, {"Authorization": f"Bearer {r.write_key}"}):  # neither sets the defaults
        refused = r.http.put("/v1/settings/consent-defaults", json={"defaults": {}}, headers=other)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), refused.text
    assert r.http.put("/v1/settings/consent-defaults", json={"default": {}}, headers=admin(r)).status_code == 400


def test_a_merge_carries_consent_and_the_latest_decision_of_either_profile_wins(consenting: Running) -> None:
    r = consenting
    send(r, {"type": "identify", "anonymousId": "c-device", "timestamp": at(-2), "traits": {}},
         {"type": "track", "anonymousId": "c-device", "event": "Consent Changed", "timestamp": at(-1),
          "properties": {"purpose": "personalisation", "granted": True}},
         consent("c-gus", "personalisation", False, at(-3)))  # fmt: skip
    send(r, {"type": "alias", "previousId": "c-device", "userId": "c-gus", "timestamp": at(0)})
    doc = r.profile("user_id:c-gus").json()
    assert doc["consent"]["personalisation"]["granted"] is True  # the device's later decision
    assert doc["consent"]["personalisation"]["source"] == "event"


def test_a_decision_is_a_profile_change_on_kafka(consenting: Running) -> None:
    r = consenting
    send(r, {"type": "identify", "userId": "c-hal", "traits": {"plan": "free"}})
    send(r, consent("c-hal", "marketing", True, at(-1)))
    send(r, consent("c-hal", "marketing", False, at(0)))
    hal = pid(r, "c-hal")

    def mine(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [v for v in values if v["profile_id"] == hal and "consent" in v]

    received = read_topic(r.platform.settings.bootstrap_servers, "cdp.profile-changes", lambda got: len(mine(got)) >= 2)
    granted, withdrawn = sorted(mine([v for _, v in received]), key=lambda v: v["position"])
    assert granted["change"] == "updated" and granted["consent"] == {"marketing": {"old": None, "new": True}}
    assert withdrawn["consent"] == {"marketing": {"old": True, "new": False}}
    schema = json.loads((Path(__file__).parents[2] / "docs/schemas/cdp.profile-changes.schema.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    for message in (granted, withdrawn):
        assert validator.is_valid(message), [e.message for e in validator.iter_errors(message)]
    assert not validator.is_valid({**withdrawn, "consent": {"Not A Purpose": {"old": True, "new": False}}})


def test_purposes_and_consent_defaults_on_cdp_events_match_the_schema(consenting: Running) -> None:
    schema = json.loads((Path(__file__).parents[2] / "docs/schemas/cdp.events.schema.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    messages, _ = read_messages(consenting.platform.app, 0, 100_000)
    definitions = [orjson.loads(encode(m)) for m in messages if m.kind == "definition"]
    kinds = {(d["definition_kind"], d["tag_id"]) for d in definitions}
    assert {("consent", "defaults"), ("tag", "buyers-to-mail"), ("segment", "survey-panel")} <= kinds
    for d in definitions:
        assert validator.is_valid(d), [e.message for e in validator.iter_errors(d)]
    consent_defaults = next(d for d in definitions if d["definition_kind"] == "consent")
    assert not validator.is_valid({**consent_defaults, "rule": {"defaults": {"*": "maybe"}}})
    assert not validator.is_valid({**consent_defaults, "definition_kind": "tag"})  # defaults are no rule


def test_consent_projections_equal_a_rebuild(consenting: Running) -> None:
    from infra.bootstrap import verify_rebuild

    platform = consenting.platform
    consenting.settle()
    assert verify_rebuild(platform.app, platform.store.client, platform.settings.clickhouse_database) == []
